//! Reading a provider key: from stdin when it is piped, else from a prompt that does not echo.
//! Never from argv, never to disk; the key lives in a `SecretString` (zeroized on drop).

use std::io::{IsTerminal, Read};

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::error::Error;
use crate::controller::byokkey::import::{MAX_KEY_LEN, MIN_KEY_LEN};
use crate::crd::Provider;

/// Reads the key for `provider`: all of stdin when it is not a terminal, else a hidden prompt.
pub fn read_key(provider: Provider) -> Result<SecretString, Error> {
    let raw = if std::io::stdin().is_terminal() {
        let prompt = format!("{provider} API key (input is hidden): ");
        Zeroizing::new(rpassword::prompt_password(prompt).map_err(Error::io("reading the key from the terminal"))?)
    } else {
        let mut buf = Zeroizing::new(String::new());
        std::io::stdin()
            .take(MAX_KEY_LEN as u64 * 4)
            .read_to_string(&mut buf)
            .map_err(Error::io("reading the key from stdin (it must be UTF-8 text)"))?;
        buf
    };
    check(raw.trim())?;
    Ok(SecretString::from(raw.trim()))
}

/// The same rules the operator applies on import, checked before anything is written.
/// Messages never contain the key.
fn check(key: &str) -> Result<(), Error> {
    let hint =
        "pipe the key on stdin (e.g. `printf %s \"$API_KEY\" | kubectl byok create ...`) or type it at the prompt";
    if key.is_empty() {
        return Err(Error::Usage(format!("no key was given; {hint}")));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Error::Usage(format!("the key is {} bytes; a provider key is at most {MAX_KEY_LEN}", key.len())));
    }
    if !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(Error::Usage(format!(
            "the key contains whitespace or non-ASCII characters; pass only the key itself ({hint})"
        )));
    }
    if key.len() < MIN_KEY_LEN {
        return Err(Error::Usage(format!(
            "the key is {} characters; a provider key has at least {MIN_KEY_LEN}: was it cut off?",
            key.len()
        )));
    }
    Ok(())
}

/// The 8-character prefix that may be shown.
pub fn prefix(key: &SecretString) -> String {
    key.expose_secret().chars().take(8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_keys_without_echoing_them() {
        for bad in ["", "short", "sk-proj-with space-0123456789", "sk-proj-ünïcode-0123456789"] {
            let msg = check(bad).expect_err("refused").to_string();
            assert!(bad.is_empty() || !msg.contains(bad), "{msg}");
        }
        assert!(check("sk-proj-0123456789abcdef").is_ok());
    }
}
