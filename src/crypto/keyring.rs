//! The KEK keyring: several 256-bit key-encryption keys with ids, one of them active.
//! Stored as one Secret: data `active` names the active id, every other entry is `<id>: <32 bytes>`.

use std::collections::BTreeMap;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use zeroize::Zeroizing;

use super::CryptoError;
use super::envelope::{Aad, Envelope, NONCE_LEN};

/// Data key of the keyring Secret that names the active KEK.
pub const KEYRING_ACTIVE_KEY: &str = "active";

/// Why a keyring Secret could not be loaded. Never carries key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyringError {
    #[error("keyring has no {KEYRING_ACTIVE_KEY:?} entry naming the active KEK")]
    NoActive,
    #[error("keyring's active KEK {0:?} is not in the keyring")]
    ActiveMissing(String),
    #[error("KEK {0:?} is {1} bytes long; a KEK is 32 bytes (AES-256)")]
    BadLength(String, usize),
    #[error("KEK id {0:?} is not valid (lower-case letters, digits and '-', at most 63)")]
    BadId(String),
}

/// One key-encryption key. Its bytes are wiped on drop and never printed.
pub struct Kek {
    id: String,
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kek").field("id", &self.id).finish_non_exhaustive()
    }
}

impl Kek {
    fn generate(id: String) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(key.as_mut_slice());
        Self { id, key }
    }

    /// A data encryption key (an external KMS's mode): `bytes` as the KMS unwrapped them, or fresh
    /// from [`Kek::fresh_dek`], named by the remote key id that wraps them.
    pub fn from_dek(id: String, bytes: &[u8]) -> Result<Self, KeyringError> {
        let key: [u8; 32] = bytes.try_into().map_err(|_| KeyringError::BadLength(id.clone(), bytes.len()))?;
        Ok(Self { id, key: Zeroizing::new(key) })
    }

    /// 32 fresh random bytes for a new data encryption key, to be wrapped by an external KMS.
    pub fn fresh_dek() -> Zeroizing<[u8; 32]> {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(key.as_mut_slice());
        key
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(self.key.as_slice().into())
    }

    pub(super) fn seal(&self, aad: &Aad, plaintext: &[u8]) -> Result<Envelope, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let payload = Payload { msg: plaintext, aad: aad.as_bytes() };
        // AES-GCM encryption only fails for messages over 64 GiB; keys are capped far below.
        let ciphertext = self.cipher().encrypt(Nonce::from_slice(&nonce), payload).map_err(|_| CryptoError::Encrypt)?;
        Ok(Envelope::new(self.id.clone(), nonce, ciphertext))
    }

    pub(super) fn open(&self, aad: &Aad, envelope: &Envelope) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let payload = Payload { msg: envelope.ciphertext(), aad: aad.as_bytes() };
        self.cipher()
            .decrypt(Nonce::from_slice(envelope.nonce()), payload)
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Authentication)
    }
}

/// All KEKs the operator can decrypt with, and the one it encrypts with.
#[derive(Debug)]
pub struct Keyring {
    keks: BTreeMap<String, Kek>,
    active: String,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 63
        && id != KEYRING_ACTIVE_KEY
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn new_id() -> String {
    let date = jiff::Timestamp::now().strftime("%Y%m%d");
    format!("kek-{date}-{:06x}", rand::rng().next_u32() & 0xff_ffff)
}

impl Keyring {
    /// A new keyring with one freshly generated active KEK.
    pub fn generate() -> Self {
        let kek = Kek::generate(new_id());
        let active = kek.id.clone();
        Self { keks: BTreeMap::from([(active.clone(), kek)]), active }
    }

    /// Adds a freshly generated KEK and makes it active; returns its id. Old KEKs stay for decryption.
    pub fn rotate(&mut self) -> String {
        let mut id = new_id();
        while self.keks.contains_key(&id) {
            id = new_id();
        }
        self.keks.insert(id.clone(), Kek::generate(id.clone()));
        self.active = id.clone();
        id
    }

    /// Removes a KEK that is no longer active. Returns whether it was there.
    pub fn remove(&mut self, id: &str) -> bool {
        id != self.active && self.keks.remove(id).is_some()
    }

    pub fn active(&self) -> &Kek {
        // `active` always names a member: every constructor and mutator keeps that true.
        &self.keks[&self.active]
    }

    pub fn get(&self, id: &str) -> Option<&Kek> {
        self.keks.get(id)
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keks.keys().map(String::as_str)
    }

    /// Loads a keyring from Secret data.
    pub fn from_secret_data(data: &BTreeMap<String, Vec<u8>>) -> Result<Self, KeyringError> {
        let active = data.get(KEYRING_ACTIVE_KEY).ok_or(KeyringError::NoActive)?;
        let active = String::from_utf8_lossy(active).trim().to_string();
        let mut keks = BTreeMap::new();
        for (id, bytes) in data.iter().filter(|(k, _)| k.as_str() != KEYRING_ACTIVE_KEY) {
            if !valid_id(id) {
                return Err(KeyringError::BadId(id.chars().take(64).collect()));
            }
            let key: [u8; 32] =
                bytes.as_slice().try_into().map_err(|_| KeyringError::BadLength(id.clone(), bytes.len()))?;
            keks.insert(id.clone(), Kek { id: id.clone(), key: Zeroizing::new(key) });
        }
        if !keks.contains_key(&active) {
            return Err(KeyringError::ActiveMissing(active.chars().take(64).collect()));
        }
        Ok(Self { keks, active })
    }

    /// The Secret data for this keyring. The caller must not log it.
    pub fn to_secret_data(&self) -> BTreeMap<String, Vec<u8>> {
        let mut data: BTreeMap<String, Vec<u8>> =
            self.keks.iter().map(|(id, kek)| (id.clone(), kek.key.to_vec())).collect();
        data.insert(KEYRING_ACTIVE_KEY.to_string(), self.active.as_bytes().to_vec());
        data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_data_round_trip() {
        let mut ring = Keyring::generate();
        ring.rotate();
        let back = Keyring::from_secret_data(&ring.to_secret_data()).expect("loads");
        assert_eq!(back.active().id(), ring.active().id());
        assert_eq!(back.ids().count(), 2);
    }

    #[test]
    fn rejects_malformed_keyrings() {
        let ring = Keyring::generate();
        let mut data = ring.to_secret_data();
        data.remove(KEYRING_ACTIVE_KEY);
        assert_eq!(Keyring::from_secret_data(&data).unwrap_err(), KeyringError::NoActive);

        let mut data = ring.to_secret_data();
        data.insert(KEYRING_ACTIVE_KEY.into(), b"kek-nope".to_vec());
        assert!(matches!(Keyring::from_secret_data(&data), Err(KeyringError::ActiveMissing(_))));

        let mut data = ring.to_secret_data();
        data.insert("kek-short".into(), vec![0; 16]);
        assert!(matches!(Keyring::from_secret_data(&data), Err(KeyringError::BadLength(_, 16))));

        let mut data = ring.to_secret_data();
        data.insert("Bad_Id".into(), vec![0; 32]);
        assert!(matches!(Keyring::from_secret_data(&data), Err(KeyringError::BadId(_))));
    }

    #[test]
    fn active_kek_cannot_be_removed() {
        let mut ring = Keyring::generate();
        let old = ring.active().id().to_string();
        assert!(!ring.remove(&old));
        ring.rotate();
        assert!(ring.remove(&old));
        assert!(ring.get(&old).is_none());
    }

    #[test]
    fn debug_prints_no_key_bytes() {
        let ring = Keyring::generate();
        let text = format!("{ring:?}");
        assert!(text.contains(ring.active().id()));
        assert!(!text.contains("key:"));
    }
}
