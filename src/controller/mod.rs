//! Controllers and what they share.

pub mod byokkey;
mod context;
pub mod evaljob;
pub mod keyring;
pub mod labels;
pub mod leader;
pub mod loglevel;
pub mod memo;
pub mod names;
pub mod operator;
pub mod sealing;

pub use context::{Context, OperatorConfig};

/// The one field manager every server-side apply of the operator uses.
pub const FIELD_MANAGER: &str = "byok-operator";

/// Errors a reconcile can end with. None of them carries key material.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("object has no {0}")]
    MissingField(&'static str),
    #[error("{0}")]
    Internal(String),
    #[error("encryption: {0}")]
    Crypto(#[from] crate::crypto::CryptoError),
    #[error("keyring: {0}")]
    Keyring(#[from] crate::crypto::KeyringError),
    #[error("serialization: {0}")]
    Serialization(#[from] serde_json::Error),
    #[error(
        "the KEK keyring Secret {namespace}/{name} is missing but encrypted keys exist (e.g. {example}): \
         restore the keyring from its backup (docs/operations.md); refusing to start, and generating no new keyring"
    )]
    KeyringMissing { namespace: String, name: String, example: String },
}

impl Error {
    /// Short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::MissingField(_) => "missing_field",
            Self::Internal(_) => "internal",
            Self::Crypto(_) => "crypto",
            Self::Keyring(_) => "keyring",
            Self::Serialization(_) => "serialization",
            Self::KeyringMissing { .. } => "keyring_missing",
        }
    }
}
