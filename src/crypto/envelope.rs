//! The versioned envelopes (fields base64url, no padding):
//! - `byok1.<kek id>.<nonce>.<ciphertext+tag>`: sealed under a KEK of the keyring Secret;
//! - `byok2.<remote key id>.<wrapped DEK>.<annotations>.<nonce>.<ciphertext+tag>`: sealed under a
//!   data encryption key that an external KMS wrapped (KMS v2's envelope: the remote key id and
//!   the KMS's annotations are what it needs to unwrap the DEK again).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

/// The envelope version of keys sealed under the keyring Secret. A later format gets a new
/// `byok<N>`: an older operator then refuses it by name (EnvelopeError::Version) instead of calling
/// it damaged.
pub const VERSION: &str = "byok1";
/// The envelope version of keys sealed under a DEK wrapped by an external KMS.
pub const VERSION_WRAPPED: &str = "byok2";
pub(super) const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Bounds on what a KMS hands back, so a damaged envelope cannot make the parser allocate much.
const MAX_WRAPPED_LEN: usize = 8192;
const MAX_ANNOTATIONS: usize = 16;
/// KMS v2's own bound on a key id; ids end up in status, metrics and logs.
pub const MAX_KEY_ID_LEN: usize = 1024;

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

    /// This AAD bound to a `byok2` envelope's header too (the remote key id, the wrapped DEK and
    /// its annotations), so that no part of the envelope can be changed without the open failing:
    /// relabelling an old key version as the current one, or a wrapped DEK rewritten to unwrap to
    /// the same DEK under another cache entry, is refused by GCM.
    pub(super) fn bound_to_header(&self, key_id: &str, wrapped: &WrappedDek) -> Self {
        let mut out = self.0.clone();
        let mut part = |bytes: &[u8]| {
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            out.extend_from_slice(bytes);
        };
        part(VERSION_WRAPPED.as_bytes());
        part(key_id.as_bytes());
        part(&wrapped.ciphertext);
        for (k, v) in &wrapped.annotations {
            part(k.as_bytes());
            part(v);
        }
        Self(out)
    }
}

/// Why an envelope string could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("not a byok envelope (expected {VERSION}.<kek>.<nonce>.<ciphertext>)")]
    Format,
    #[error(
        "envelope version {0:?} is not one this operator knows (it reads {VERSION} and {VERSION_WRAPPED}): it was \
         written by a newer byok-operator; run that version again (a downgrade past it is not supported)"
    )]
    Version(String),
    #[error("envelope field is not base64url")]
    Encoding,
    #[error("envelope nonce or ciphertext has the wrong length")]
    Length,
    #[error("envelope's wrapped data key or its annotations are malformed or too large")]
    Wrapped,
}

/// A data encryption key as an external KMS wrapped it: its ciphertext and the annotations the
/// KMS returned with it (KMS v2 plugins need them back to unwrap). Not secret.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WrappedDek {
    pub ciphertext: Vec<u8>,
    pub annotations: BTreeMap<String, Vec<u8>>,
}

/// An encrypted key: which KEK sealed it (a keyring KEK id, or for a wrapped DEK the remote key id
/// that wrapped it), the wrapped DEK if any, the nonce, and ciphertext with its GCM tag.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    kek_id: String,
    wrapped: Option<WrappedDek>,
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
        Self { kek_id, wrapped: None, nonce, ciphertext }
    }

    /// The same envelope carrying the wrapped DEK it was sealed under (a `byok2` envelope).
    pub(super) fn with_wrapped(self, wrapped: WrappedDek) -> Self {
        Self { wrapped: Some(wrapped), ..self }
    }

    pub fn kek_id(&self) -> &str {
        &self.kek_id
    }

    /// The wrapped DEK of a `byok2` envelope; `None` for a keyring (`byok1`) one.
    pub fn wrapped(&self) -> Option<&WrappedDek> {
        self.wrapped.as_ref()
    }

    pub(super) fn nonce(&self) -> &[u8; NONCE_LEN] {
        &self.nonce
    }

    pub(super) fn ciphertext(&self) -> &[u8] {
        &self.ciphertext
    }

    pub fn encode(&self) -> String {
        let (nonce, ct) = (B64.encode(self.nonce), B64.encode(&self.ciphertext));
        match &self.wrapped {
            None => format!("{VERSION}.{}.{nonce}.{ct}", self.kek_id),
            Some(w) => {
                let annotations: BTreeMap<&str, String> =
                    w.annotations.iter().map(|(k, v)| (k.as_str(), B64.encode(v))).collect();
                // A map of strings always serializes.
                let annotations = serde_json::to_vec(&annotations).unwrap_or_default();
                let (id, dek, ann) = (B64.encode(&self.kek_id), B64.encode(&w.ciphertext), B64.encode(annotations));
                format!("{VERSION_WRAPPED}.{id}.{dek}.{ann}.{nonce}.{ct}")
            }
        }
    }

    pub fn parse(text: &str) -> Result<Self, EnvelopeError> {
        let parts: Vec<&str> = text.trim().splitn(7, '.').collect();
        let (kek_id, wrapped, nonce, ct) = match parts.as_slice() {
            [VERSION, kek_id, nonce, ct] => ((*kek_id).to_string(), None, nonce, ct),
            [VERSION_WRAPPED, id, dek, ann, nonce, ct] => {
                if id.len() > MAX_KEY_ID_LEN * 2 {
                    return Err(EnvelopeError::Wrapped);
                }
                let id = String::from_utf8(B64.decode(id).map_err(|_| EnvelopeError::Encoding)?)
                    .map_err(|_| EnvelopeError::Wrapped)?;
                if id.len() > MAX_KEY_ID_LEN || id.chars().any(char::is_control) {
                    return Err(EnvelopeError::Wrapped);
                }
                (id, Some(parse_wrapped(dek, ann)?), nonce, ct)
            }
            [version, ..] if *version != VERSION && *version != VERSION_WRAPPED => {
                return Err(unknown_version(version));
            }
            _ => return Err(EnvelopeError::Format),
        };
        if kek_id.is_empty() {
            return Err(EnvelopeError::Format);
        }
        let nonce = B64.decode(nonce).map_err(|_| EnvelopeError::Encoding)?;
        let ciphertext = B64.decode(ct).map_err(|_| EnvelopeError::Encoding)?;
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| EnvelopeError::Length)?;
        if ciphertext.len() < TAG_LEN {
            return Err(EnvelopeError::Length);
        }
        Ok(Self { kek_id, wrapped, nonce, ciphertext })
    }
}

/// The wrapped DEK and annotations fields of a `byok2` envelope.
fn parse_wrapped(dek: &str, annotations: &str) -> Result<WrappedDek, EnvelopeError> {
    if dek.len() > MAX_WRAPPED_LEN * 2 || annotations.len() > MAX_WRAPPED_LEN * 2 {
        return Err(EnvelopeError::Wrapped);
    }
    let ciphertext = B64.decode(dek).map_err(|_| EnvelopeError::Encoding)?;
    let raw = B64.decode(annotations).map_err(|_| EnvelopeError::Encoding)?;
    let map: BTreeMap<String, String> = serde_json::from_slice(&raw).map_err(|_| EnvelopeError::Wrapped)?;
    if ciphertext.is_empty() || map.len() > MAX_ANNOTATIONS {
        return Err(EnvelopeError::Wrapped);
    }
    let annotations = map
        .into_iter()
        .map(|(k, v)| B64.decode(v).map(|v| (k, v)).map_err(|_| EnvelopeError::Wrapped))
        .collect::<Result<_, _>>()?;
    Ok(WrappedDek { ciphertext, annotations })
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
    fn wrapped_envelope_round_trip() {
        let wrapped = WrappedDek {
            ciphertext: b"vault:v3:abc".to_vec(),
            annotations: [("kms.example/alg".to_string(), b"\x00aes".to_vec())].into(),
        };
        let env = Envelope::new("vault:byok:v3".into(), [9; NONCE_LEN], vec![2; 40]).with_wrapped(wrapped);
        let text = env.encode();
        assert!(text.starts_with("byok2."), "{text}");
        let back = Envelope::parse(&text).expect("parses");
        assert_eq!(back, env);
        assert_eq!(back.kek_id(), "vault:byok:v3");
    }

    #[test]
    fn rejects_damaged_wrapped_envelopes() {
        let env = Envelope::new("k".into(), [9; NONCE_LEN], vec![2; 40])
            .with_wrapped(WrappedDek { ciphertext: vec![1], annotations: BTreeMap::new() });
        let text = env.encode();
        let fields: Vec<&str> = text.split('.').collect();
        let with = |i: usize, v: &str| {
            let mut f = fields.clone();
            f[i] = v;
            f.join(".")
        };
        assert_eq!(Envelope::parse(&with(3, "bm90IGpzb24")), Err(EnvelopeError::Wrapped)); // "not json"
        assert_eq!(Envelope::parse(&with(2, "")), Err(EnvelopeError::Wrapped));
        assert_eq!(Envelope::parse(&with(1, "")), Err(EnvelopeError::Format));
        assert_eq!(Envelope::parse(&with(2, "!!")), Err(EnvelopeError::Encoding));
        assert_eq!(Envelope::parse(&fields[..5].join(".")), Err(EnvelopeError::Format));
        assert_eq!(Envelope::parse(&format!("{text}.x")), Err(EnvelopeError::Format));
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
