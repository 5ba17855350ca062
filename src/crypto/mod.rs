//! Key encryption: the KEK keyring, the envelope format, and the additional authenticated
//! data that binds a ciphertext to the ByokKey it belongs to.

mod envelope;
mod keyring;
pub mod sealing;

pub use envelope::{
    Aad, Envelope, EnvelopeError, MAX_KEY_ID_LEN, VERSION as ENVELOPE_VERSION, VERSION_WRAPPED, WrappedDek,
};
pub use keyring::{KEYRING_ACTIVE_KEY, Kek, Keyring, KeyringError};

use secrecy::SecretString;

/// Errors from sealing or opening a key.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the keyring has no KEK with id {0:?}; restore it from backup or re-import the key")]
    UnknownKek(String),
    #[error("decryption failed: the ciphertext does not belong to this object, or was altered")]
    Authentication,
    #[error("encryption failed")]
    Encrypt,
    #[error("the decrypted key is not valid UTF-8")]
    NotUtf8,
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
}

/// Encrypts `plaintext` under the keyring's active KEK, bound to `aad`.
pub fn seal(keyring: &Keyring, aad: &Aad, plaintext: &SecretString) -> Result<Envelope, CryptoError> {
    use secrecy::ExposeSecret;
    keyring.active().seal(aad, plaintext.expose_secret().as_bytes())
}

/// Encrypts `plaintext` under a data encryption key that an external KMS wrapped as `wrapped`:
/// a `byok2` envelope naming the remote key id and carrying the wrapped DEK.
pub fn seal_wrapped(
    dek: &Kek,
    wrapped: &WrappedDek,
    aad: &Aad,
    plaintext: &SecretString,
) -> Result<Envelope, CryptoError> {
    use secrecy::ExposeSecret;
    let bound = aad.bound_to_header(dek.id(), wrapped);
    Ok(dek.seal(&bound, plaintext.expose_secret().as_bytes())?.with_wrapped(wrapped.clone()))
}

/// Decrypts an envelope with the given KEK or unwrapped DEK (the caller picked it by the envelope);
/// a `byok2` envelope's header is part of what GCM authenticates.
pub fn open_with(kek: &Kek, aad: &Aad, envelope: &Envelope) -> Result<SecretString, CryptoError> {
    match envelope.wrapped() {
        Some(wrapped) => text(kek.open(&aad.bound_to_header(envelope.kek_id(), wrapped), envelope)?),
        None => text(kek.open(aad, envelope)?),
    }
}

/// Decrypts an envelope with the KEK it names. Fails when `aad` is not the one it was sealed with.
pub fn open(keyring: &Keyring, aad: &Aad, envelope: &Envelope) -> Result<SecretString, CryptoError> {
    let kek = keyring.get(envelope.kek_id()).ok_or_else(|| CryptoError::UnknownKek(envelope.kek_id().to_string()))?;
    if envelope.wrapped().is_some() {
        // A byok2 envelope's id is a remote key's, never a keyring KEK's.
        return Err(CryptoError::UnknownKek(envelope.kek_id().to_string()));
    }
    open_with(kek, aad, envelope)
}

fn text(bytes: zeroize::Zeroizing<Vec<u8>>) -> Result<SecretString, CryptoError> {
    let text = String::from_utf8(bytes.to_vec()).map_err(|e| {
        // The failed String still owns the bytes: wipe them before dropping.
        let mut raw = e.into_bytes();
        zeroize::Zeroize::zeroize(&mut raw);
        CryptoError::NotUtf8
    })?;
    Ok(SecretString::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn aad(uid: &str) -> Aad {
        Aad::new("team-a", "openai-main", uid, "openai")
    }

    #[test]
    fn round_trip() {
        let ring = Keyring::generate();
        let env = seal(&ring, &aad("u1"), &SecretString::from("sk-proj-abc123")).expect("seals");
        let back = open(&ring, &aad("u1"), &env).expect("opens");
        assert_eq!(back.expose_secret(), "sk-proj-abc123");
    }

    #[test]
    fn ciphertext_moved_to_another_object_fails() {
        let ring = Keyring::generate();
        let env = seal(&ring, &aad("u1"), &SecretString::from("sk-proj-abc123")).expect("seals");
        for other in [
            aad("u2"),
            Aad::new("team-b", "openai-main", "u1", "openai"),
            Aad::new("team-a", "openai-other", "u1", "openai"),
            Aad::new("team-a", "openai-main", "u1", "anthropic"),
        ] {
            assert!(matches!(open(&ring, &other, &env), Err(CryptoError::Authentication)));
        }
    }

    #[test]
    fn fresh_nonce_every_time() {
        let ring = Keyring::generate();
        let key = SecretString::from("same");
        let a = seal(&ring, &aad("u"), &key).expect("seals").encode();
        let b = seal(&ring, &aad("u"), &key).expect("seals").encode();
        assert_ne!(a, b);
    }

    #[test]
    fn unknown_kek_is_reported() {
        let ring = Keyring::generate();
        let env = seal(&ring, &aad("u"), &SecretString::from("k")).expect("seals");
        let other = Keyring::generate();
        assert!(matches!(open(&other, &aad("u"), &env), Err(CryptoError::UnknownKek(_))));
    }

    #[test]
    fn rotation_keeps_old_ciphertexts_readable() {
        let mut ring = Keyring::generate();
        let old = seal(&ring, &aad("u"), &SecretString::from("k1")).expect("seals");
        let new_id = ring.rotate();
        assert_eq!(ring.active().id(), new_id);
        let new = seal(&ring, &aad("u"), &SecretString::from("k1")).expect("seals");
        assert_eq!(new.kek_id(), new_id);
        assert_ne!(old.kek_id(), new_id);
        assert_eq!(open(&ring, &aad("u"), &old).expect("old opens").expose_secret(), "k1");
    }
}
