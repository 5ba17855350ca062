//! The key file shared by the init container (writes it) and the judge container (reads it), on
//! an in-memory emptyDir. The key is only ever in zeroizing or secret types here.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use secrecy::SecretString;
use zeroize::Zeroizing;

use super::client::ClientError;
use super::wire::{KeyResponse, PanelKey};

/// Writes the key for the judge container: mode 0400, written to a temporary file in the same
/// directory and renamed into place, so a crash (or an init container restart) never leaves half
/// a key. Overwrites an existing key file.
pub fn write_key_file(path: &Path, key: &KeyResponse) -> Result<(), ClientError> {
    write_secret(path, &key.key)
}

/// Where a panel judge's key is kept: next to the EvalJob's key file, named by its ByokKey. A name
/// that is not a Kubernetes object name (a path, dots only) is refused.
pub fn panel_key_path(key_file: &Path, byok_key: &str) -> Result<std::path::PathBuf, ClientError> {
    let valid = !byok_key.is_empty()
        && byok_key.len() <= 253
        && byok_key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && byok_key.as_bytes()[0].is_ascii_alphanumeric();
    if !valid {
        let message = format!("{byok_key:?} is not a ByokKey name");
        return Err(ClientError::KeyFile { path: key_file.to_path_buf(), message });
    }
    let Some(file) = key_file.file_name() else {
        return Err(ClientError::KeyFile { path: key_file.to_path_buf(), message: "not a file path".into() });
    };
    let mut name = file.to_os_string();
    name.push(format!(".{byok_key}"));
    Ok(key_file.with_file_name(name))
}

/// Writes each panel key the broker handed out next to `key_file` (see [`panel_key_path`]);
/// returns the refused ones' names and reasons.
pub fn write_panel_keys(key_file: &Path, panel: &[PanelKey]) -> Result<Vec<(String, String)>, ClientError> {
    let mut refused = Vec::new();
    for entry in panel {
        match &entry.key {
            Some(key) => write_secret(&panel_key_path(key_file, &entry.byok_key)?, key)?,
            None => {
                let reason = entry.refused.clone().unwrap_or_else(|| "no key and no reason given".into());
                refused.push((entry.byok_key.clone(), reason));
            }
        }
    }
    Ok(refused)
}

fn write_secret(path: &Path, key: &str) -> Result<(), ClientError> {
    let file_error = |message: String| ClientError::KeyFile { path: path.to_path_buf(), message };
    let name = path.file_name().ok_or_else(|| file_error("not a file path".into()))?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let temp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    // Left over by a crash of this very pid number: it is ours to replace.
    let _ = fs::remove_file(&temp);
    let written = (|| {
        let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o400).open(&temp)?;
        file.write_all(key.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if let Err(error) = written {
        let _ = fs::remove_file(&temp);
        return Err(file_error(error.to_string()));
    }
    Ok(())
}

/// Reads a key file. `Ok(None)` when there is no such file; an empty file is an error.
pub fn read_key_file(path: &Path) -> Result<Option<SecretString>, ClientError> {
    let file_error = |message: &str| ClientError::KeyFile { path: path.to_path_buf(), message: message.into() };
    let text = match fs::read_to_string(path) {
        Ok(text) => Zeroizing::new(text),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(file_error(&error.to_string())),
    };
    match text.trim() {
        "" => Err(file_error("the file is empty")),
        key => Ok(Some(SecretString::from(key))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret as _;
    use std::os::unix::fs::PermissionsExt as _;

    fn key(value: &str) -> KeyResponse {
        KeyResponse { key: value.into(), key_prefix: value.chars().take(8).collect(), panel: vec![] }
    }

    #[test]
    fn key_file_is_0400_and_replaced_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        write_key_file(&path, &key("sk-first-key")).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o400);
        write_key_file(&path, &key("sk-second")).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o400);
        assert_eq!(read_key_file(&path).unwrap().unwrap().expose_secret(), "sk-second");
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(read_key_file(&dir.path().join("absent")).unwrap().is_none());
        assert!(write_key_file(&dir.path().join("no-such-dir/key"), &key("k")).is_err());
    }

    #[test]
    fn panel_keys_sit_next_to_the_key_file_under_their_byokkey_names_only() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("key");
        let panel = |name: &str, key: Option<&str>| PanelKey {
            byok_key: name.into(),
            key: key.map(str::to_string),
            key_prefix: String::new(),
            refused: key.is_none().then(|| "KeyRevoked".into()),
        };
        let refused = write_panel_keys(&main, &[panel("anthropic", Some("sk-ant-1")), panel("google", None)]).unwrap();
        assert_eq!(refused, [("google".to_string(), "KeyRevoked".to_string())]);
        let path = panel_key_path(&main, "anthropic").unwrap();
        assert_eq!(path, dir.path().join("key.anthropic"));
        assert_eq!(read_key_file(&path).unwrap().unwrap().expose_secret(), "sk-ant-1");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o400);
        assert!(panel_key_path(Path::new("/"), "anthropic").is_err(), "a key file path that names no file");
        for bad in ["../etc", "a/b", "", ".hidden", "UPPER"] {
            assert!(panel_key_path(&main, bad).is_err(), "{bad:?}");
            assert!(write_panel_keys(&main, &[panel(bad, Some("k"))]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn empty_key_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        fs::write(&path, " \n").unwrap();
        assert!(matches!(read_key_file(&path), Err(ClientError::KeyFile { .. })));
    }
}
