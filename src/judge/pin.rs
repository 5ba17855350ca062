//! Files the judge pod reads from ConfigMaps that tenants can write (the cases, the judge config,
//! the broker CA): the operator pins each by SHA-256 in the Job's command, which is immutable, and
//! the judge refuses a file whose bytes no longer match.

use std::path::{Path, PathBuf};

use ring::digest::{SHA256, digest};

/// Lowercase hex SHA-256 of `bytes`: the form pins take on the command line.
pub fn sha256_hex(bytes: &[u8]) -> String {
    digest(&SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a pinned file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path} was changed after the operator wrote it (SHA-256 {actual}, pinned {expected}): refusing to use it")]
    Tampered { path: PathBuf, expected: String, actual: String },
}

impl PinError {
    /// CamelCase reason, for logs and termination messages.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Read { .. } => "PinnedFileUnreadable",
            Self::Tampered { .. } => "PinnedFileTampered",
        }
    }
}

/// A file and the digest its bytes must have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedFile {
    pub path: PathBuf,
    pub sha256: String,
}

impl PinnedFile {
    pub fn new(path: impl Into<PathBuf>, sha256: impl Into<String>) -> Self {
        Self { path: path.into(), sha256: sha256.into() }
    }

    /// Reads the file once and returns those bytes only if they match the pin (so nothing can
    /// change between the check and the use).
    pub fn read(&self) -> Result<Vec<u8>, PinError> {
        let bytes = std::fs::read(&self.path)
            .map_err(|e| PinError::Read { path: self.path.clone(), message: e.to_string() })?;
        check(&self.path, &bytes, &self.sha256)?;
        Ok(bytes)
    }

    /// [`PinnedFile::read`] as UTF-8 text.
    pub fn read_text(&self) -> Result<String, PinError> {
        String::from_utf8(self.read()?)
            .map_err(|_| PinError::Read { path: self.path.clone(), message: "not UTF-8 text".into() })
    }
}

fn check(path: &Path, bytes: &[u8], expected: &str) -> Result<(), PinError> {
    let actual = sha256_hex(bytes);
    if actual.eq_ignore_ascii_case(expected.trim()) {
        return Ok(());
    }
    Err(PinError::Tampered { path: path.to_path_buf(), expected: expected.trim().to_string(), actual })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_file_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("config.json");
        std::fs::write(&path, b"{\"a\":1}").expect("write");
        let pin = PinnedFile::new(&path, sha256_hex(b"{\"a\":1}"));
        assert_eq!(pin.read().expect("matches"), b"{\"a\":1}");
        std::fs::write(&path, b"{\"a\":2}").expect("write");
        assert_eq!(pin.read().err().map(|e| e.reason()), Some("PinnedFileTampered"));
        let missing = PinnedFile::new(dir.path().join("nope"), "00");
        assert_eq!(missing.read().err().map(|e| e.reason()), Some("PinnedFileUnreadable"));
        assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
