//! Reading a provider key out of a source Secret's data: pure, so every bad input is unit-tested.

use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::keystore;

/// Keys shorter than this are refused: the shown prefix ([`keystore::PREFIX_LEN`]) would give away
/// most of the key.
pub const MIN_KEY_LEN: usize = 16;
/// Real provider keys are a few hundred bytes at most; anything larger is a mistake.
pub const MAX_KEY_LEN: usize = 4096;
/// A Secret of this type may be imported by any ByokKey of its namespace.
pub const SOURCE_SECRET_TYPE: &str = "launchgate.ai/byok-source";
/// A Secret with this annotation may be imported by the ByokKey it names (`kubectl byok create`
/// sets it). Any other Secret (a database password, a registry credential) is never read as a key.
pub const SOURCE_ANNOTATION: &str = "launchgate.ai/byokkey";

/// Whether a Secret opted in to being imported by ByokKey `byokkey`.
pub fn opted_in(
    secret_type: Option<&str>,
    annotations: &std::collections::BTreeMap<String, String>,
    byokkey: &str,
) -> bool {
    secret_type == Some(SOURCE_SECRET_TYPE) || annotations.get(SOURCE_ANNOTATION).is_some_and(|v| v == byokkey)
}

/// Why a source Secret's value cannot be imported. Messages never contain the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error("source Secret {secret:?} was not found in this namespace")]
    SecretNotFound { secret: String },
    #[error(
        "source Secret {secret:?} did not opt in to being imported: give it type {SOURCE_SECRET_TYPE} or the annotation \
         {SOURCE_ANNOTATION}={byokkey} (kubectl byok create does); it was left untouched"
    )]
    NotOptedIn { secret: String, byokkey: String },
    #[error(
        "keys are never imported from the operator's own namespace (Secret {secret:?} was left untouched): \
         create the ByokKey in a team namespace"
    )]
    OperatorNamespace { secret: String },
    #[error(
        "Secret {secret:?} already exists and is not this key's ciphertext (it was left untouched): delete or \
         rename it, or give the ByokKey another name"
    )]
    CiphertextNameTaken { secret: String },
    #[error("source Secret {secret:?} has no data key {key:?}")]
    KeyMissing { secret: String, key: String },
    #[error("data key {key:?} of Secret {secret:?} is empty")]
    Empty { secret: String, key: String },
    #[error("data key {key:?} of Secret {secret:?} is not valid UTF-8 text")]
    NotUtf8 { secret: String, key: String },
    #[error("data key {key:?} of Secret {secret:?} is {len} bytes; a provider key is at most {MAX_KEY_LEN}")]
    TooLarge { secret: String, key: String, len: usize },
    #[error("data key {key:?} of Secret {secret:?} is {len} characters; a provider key has at least {MIN_KEY_LEN}")]
    TooShort { secret: String, key: String, len: usize },
    #[error("data key {key:?} of Secret {secret:?} contains whitespace or control characters inside the key")]
    InvalidCharacters { secret: String, key: String },
}

impl ImportError {
    /// CamelCase reason for conditions and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::SecretNotFound { .. } => "SecretNotFound",
            Self::NotOptedIn { .. } => "SourceNotOptedIn",
            Self::OperatorNamespace { .. } => "SourceInOperatorNamespace",
            Self::CiphertextNameTaken { .. } => "CiphertextNameTaken",
            Self::KeyMissing { .. } => "SecretKeyMissing",
            Self::Empty { .. } => "EmptyKey",
            Self::NotUtf8 { .. } => "NotUtf8",
            Self::TooLarge { .. } => "KeyTooLarge",
            Self::TooShort { .. } => "KeyTooShort",
            Self::InvalidCharacters { .. } => "InvalidCharacters",
        }
    }
}

/// A key read from a source Secret: the secret value and the prefix that may be shown.
pub struct ImportedKey {
    pub key: SecretString,
    pub prefix: String,
}

/// Extracts the key at `key` from Secret `data`. Surrounding whitespace (a trailing newline from
/// `echo` or a file) is trimmed; anything else unusual is refused with a reason.
pub fn extract(secret: &str, key: &str, data: Option<&[u8]>) -> Result<ImportedKey, ImportError> {
    let names = || (secret.to_string(), key.to_string());
    let Some(raw) = data else {
        let (secret, key) = names();
        return Err(ImportError::KeyMissing { secret, key });
    };
    if raw.len() > MAX_KEY_LEN {
        let (secret, key) = names();
        return Err(ImportError::TooLarge { secret, key, len: raw.len() });
    }
    let text = std::str::from_utf8(raw).map_err(|_| {
        let (secret, key) = names();
        ImportError::NotUtf8 { secret, key }
    })?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        let (secret, key) = names();
        return Err(ImportError::Empty { secret, key });
    }
    if !trimmed.chars().all(|c| c.is_ascii_graphic()) {
        let (secret, key) = names();
        return Err(ImportError::InvalidCharacters { secret, key });
    }
    if trimmed.len() < MIN_KEY_LEN {
        let (secret, key) = names();
        return Err(ImportError::TooShort { secret, key, len: trimmed.len() });
    }
    let owned = Zeroizing::new(trimmed.to_string());
    Ok(ImportedKey { prefix: keystore::prefix(trimmed), key: SecretString::from(owned.as_str()) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn run(data: Option<&[u8]>) -> Result<ImportedKey, ImportError> {
        extract("src", "apiKey", data)
    }

    #[test]
    fn trims_and_keeps_prefix() {
        let k = run(Some(b"  sk-proj-0123456789abcdef\n")).expect("imports");
        assert_eq!(k.key.expose_secret(), "sk-proj-0123456789abcdef");
        assert_eq!(k.prefix, "sk-proj-");
    }

    #[test]
    fn refuses_bad_values_with_reasons() {
        assert_eq!(run(None).err().map(|e| e.reason()), Some("SecretKeyMissing"));
        assert_eq!(run(Some(b"")).err().map(|e| e.reason()), Some("EmptyKey"));
        assert_eq!(run(Some(b" \n\t")).err().map(|e| e.reason()), Some("EmptyKey"));
        assert_eq!(run(Some(&[0xff, 0xfe, 0x41, 0x42])).err().map(|e| e.reason()), Some("NotUtf8"));
        assert_eq!(run(Some(&vec![b'a'; 1 << 20])).err().map(|e| e.reason()), Some("KeyTooLarge"));
        assert_eq!(run(Some(b"sk-short")).err().map(|e| e.reason()), Some("KeyTooShort"));
        assert_eq!(run(Some(b"sk-proj-0123 456789abcdef")).err().map(|e| e.reason()), Some("InvalidCharacters"));
        assert_eq!(
            run(Some("sk-proj-0123456789abcdé".as_bytes())).err().map(|e| e.reason()),
            Some("InvalidCharacters")
        );
    }

    #[test]
    fn only_secrets_that_opted_in_are_sources() {
        let none = std::collections::BTreeMap::new();
        let named = std::collections::BTreeMap::from([(SOURCE_ANNOTATION.to_string(), "openai-main".to_string())]);
        assert!(opted_in(Some(SOURCE_SECRET_TYPE), &none, "openai-main"));
        assert!(opted_in(Some("Opaque"), &named, "openai-main"));
        assert!(!opted_in(Some("Opaque"), &named, "another-key"), "the annotation names one ByokKey");
        assert!(!opted_in(Some("Opaque"), &none, "openai-main"));
        assert!(!opted_in(Some("kubernetes.io/dockerconfigjson"), &none, "openai-main"));
        assert!(!opted_in(None, &none, "openai-main"));
    }

    #[test]
    fn errors_never_carry_the_value() {
        let secret_value = b"sk-proj-THIS-IS-SECRET 0123456789";
        let err = run(Some(secret_value)).err().expect("refused");
        assert!(!err.to_string().contains("THIS-IS-SECRET"));
    }
}
