//! The versioned envelope: `byok1.<kek id>.<nonce>.<ciphertext+tag>` (base64url, no padding).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

/// The envelope version this build writes and reads. A later format gets a new `byok<N>`: an older
/// operator then refuses it by name (EnvelopeError::Version) instead of calling it damaged.
pub const VERSION: &str = "byok1";
pub(super) const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Additional authenticated data: the identity of the ByokKey a ciphertext belongs to.
/// A ciphertext copied to any other object (another name, namespace, uid or provider) fails to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aad(Vec<u8>);

impl Aad {
    pub fn new(namespace: &str, name: &str, uid: &str, provider: &str) -> Self {
        // Length-prefixed fields, so no two identities share an encoding.
        let mut out = b"launchgate.ai/byokkey/v1".to_vec();
        for part in [namespace, name, uid, provider] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
        Self(out)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Why an envelope string could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("not a byok envelope (expected {VERSION}.<kek>.<nonce>.<ciphertext>)")]
    Format,
    #[error(
        "envelope version {0:?} is not one this operator knows (it reads {VERSION}): it was written by a newer \
         byok-operator; run that version again (a downgrade past it is not supported)"
    )]
    Version(String),
    #[error("envelope field is not base64url")]
    Encoding,
    #[error("envelope nonce or ciphertext has the wrong length")]
    Length,
}

/// An encrypted key: which KEK sealed it, the nonce, and ciphertext with its GCM tag.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    kek_id: String,
    nonce: [u8; NONCE_LEN],
    ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope").field("kek_id", &self.kek_id).finish_non_exhaustive()
    }
}

impl Envelope {
    pub(super) fn new(kek_id: String, nonce: [u8; NONCE_LEN], ciphertext: Vec<u8>) -> Self {
        Self { kek_id, nonce, ciphertext }
    }

    pub fn kek_id(&self) -> &str {
        &self.kek_id
    }

    pub(super) fn nonce(&self) -> &[u8; NONCE_LEN] {
        &self.nonce
    }

    pub(super) fn ciphertext(&self) -> &[u8] {
        &self.ciphertext
    }

    pub fn encode(&self) -> String {
        format!("{VERSION}.{}.{}.{}", self.kek_id, B64.encode(self.nonce), B64.encode(&self.ciphertext))
    }

    pub fn parse(text: &str) -> Result<Self, EnvelopeError> {
        let mut parts = text.trim().split('.');
        let (Some(version), Some(kek_id), Some(nonce), Some(ct), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(EnvelopeError::Format);
        };
        if version != VERSION {
            return Err(unknown_version(version));
        }
        if kek_id.is_empty() {
            return Err(EnvelopeError::Format);
        }
        let nonce = B64.decode(nonce).map_err(|_| EnvelopeError::Encoding)?;
        let ciphertext = B64.decode(ct).map_err(|_| EnvelopeError::Encoding)?;
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| EnvelopeError::Length)?;
        if ciphertext.len() < TAG_LEN {
            return Err(EnvelopeError::Length);
        }
        Ok(Self { kek_id: kek_id.to_string(), nonce, ciphertext })
    }
}

/// `byok<digits>` is a version of this format this build does not know; anything else is not an envelope.
fn unknown_version(version: &str) -> EnvelopeError {
    match version.strip_prefix("byok") {
        Some(n) if !n.is_empty() && n.len() <= 4 && n.bytes().all(|b| b.is_ascii_digit()) => {
            EnvelopeError::Version(version.to_string())
        }
        _ => EnvelopeError::Format,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_parse_round_trip() {
        let env = Envelope::new("kek-1".into(), [7; NONCE_LEN], vec![1; 40]);
        assert_eq!(Envelope::parse(&env.encode()), Ok(env));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(Envelope::parse(""), Err(EnvelopeError::Format));
        assert_eq!(Envelope::parse("byok1.k.a"), Err(EnvelopeError::Format));
        assert_eq!(Envelope::parse("byok9.k.AAAA.AAAA"), Err(EnvelopeError::Version("byok9".into())));
        assert_eq!(Envelope::parse("byok12.k.AAAA.AAAA"), Err(EnvelopeError::Version("byok12".into())));
        // Not a later version of this format: damaged or foreign.
        assert_eq!(Envelope::parse("abc.k.AAAA.AAAA"), Err(EnvelopeError::Format));
        assert_eq!(Envelope::parse("byokx.k.AAAA.AAAA"), Err(EnvelopeError::Format));
        assert_eq!(Envelope::parse("byok123456789.k.AAAA.AAAA"), Err(EnvelopeError::Format));
        assert_eq!(Envelope::parse("byok1.k.!!.AAAA"), Err(EnvelopeError::Encoding));
        assert_eq!(Envelope::parse("byok1.k.AAAA.AAAAAAAAAAAAAAAAAAAAAAA"), Err(EnvelopeError::Length));
        assert_eq!(Envelope::parse("byok1..AAAA.AAAA"), Err(EnvelopeError::Format));
    }

    #[test]
    fn aad_fields_cannot_be_shifted() {
        assert_ne!(Aad::new("ab", "c", "u", "p"), Aad::new("a", "bc", "u", "p"));
    }

    #[test]
    fn debug_shows_no_ciphertext() {
        let env = Envelope::new("kek-1".into(), [0; NONCE_LEN], vec![0xAB; 20]);
        let text = format!("{env:?}");
        assert!(text.contains("kek-1") && !text.contains("171"));
    }
}
