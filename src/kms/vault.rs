//! Vault's Transit secrets engine as the KMS: it wraps and unwraps DEKs under a named key that
//! never leaves Vault (`POST <mount>/encrypt/<key>`, `decrypt/<key>`; `GET <mount>/keys/<key>`
//! for the key's latest version). The remote key id is `vault:<key>:v<version>`, the version
//! Vault writes into each ciphertext (`vault:v3:...`), so a rotation of the Transit key shows.
//!
//! Auth: a token read from a file, or Vault's Kubernetes auth method with the operator's own
//! projected service-account token (re-logging in when the token expires or is refused).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::{Kms, KmsError, Wrapped};
use crate::crypto::WrappedDek;

/// How the operator logs in to Vault.
#[derive(Clone, Debug)]
pub enum VaultAuth {
    /// A Vault token in a file (read again on every login, so it can be rotated in place).
    TokenFile(PathBuf),
    /// The Kubernetes auth method: `mount` (e.g. `kubernetes`), a Vault `role`, and the service
    /// account token in `jwt_file`.
    Kubernetes { mount: String, role: String, jwt_file: PathBuf },
}

#[derive(Clone, Debug)]
pub struct VaultConfig {
    /// `https://vault.example:8200` (http only for a local dev server).
    pub address: String,
    /// The Transit engine's mount path (`transit`).
    pub mount: String,
    /// The Transit key's name.
    pub key: String,
    pub auth: VaultAuth,
    /// A PEM CA bundle to trust for Vault's certificate, besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Per request.
    pub timeout: Duration,
}

pub struct VaultTransit {
    cfg: VaultConfig,
    http: reqwest::Client,
    token: tokio::sync::Mutex<Option<(Zeroizing<String>, Option<Instant>)>>,
}

fn unavailable(e: impl std::fmt::Display) -> KmsError {
    KmsError::Unavailable(e.to_string())
}

/// Vault's error messages (`{"errors": [...]}`), never a body that could hold key material.
fn vault_errors(body: &Value) -> String {
    body.get("errors")
        .and_then(Value::as_array)
        .map(|e| e.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "no error message".into())
}

/// `vault:v<N>:...` → N.
fn ciphertext_version(ciphertext: &str) -> Option<u64> {
    ciphertext.strip_prefix("vault:v")?.split(':').next()?.parse().ok()
}

impl VaultTransit {
    pub fn new(cfg: VaultConfig) -> Result<Self, KmsError> {
        // The token, the JWT and data keys go to this address and nowhere else: no redirects, and
        // plain HTTP only to a Vault on this host (a dev server).
        let url = reqwest::Url::parse(&cfg.address)
            .map_err(|e| KmsError::Refused(format!("the Vault address {:?} is not a URL: {e}", cfg.address)))?;
        let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]" | "::1"));
        if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
            return Err(KmsError::Refused(format!(
                "the Vault address {} must be https (http only on loopback)",
                cfg.address
            )));
        }
        let mut builder = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &cfg.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| KmsError::Refused(format!("reading Vault's CA file {}: {e}", path.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| KmsError::Refused(format!("Vault's CA file {} is not PEM: {e}", path.display())))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|e| KmsError::Refused(format!("Vault HTTP client: {e}")))?;
        Ok(Self { cfg, http, token: tokio::sync::Mutex::new(None) })
    }

    fn key_id(&self, version: u64) -> String {
        format!("vault:{}:v{version}", self.cfg.key)
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/{}/{path}", self.cfg.address.trim_end_matches('/'), self.cfg.mount.trim_matches('/'))
    }

    async fn login(&self) -> Result<(Zeroizing<String>, Option<Instant>), KmsError> {
        let read = |path: &PathBuf| {
            std::fs::read_to_string(path)
                .map(|s| Zeroizing::new(s.trim().to_string()))
                .map_err(|e| KmsError::Refused(format!("reading {}: {e}", path.display())))
        };
        match &self.cfg.auth {
            VaultAuth::TokenFile(path) => Ok((read(path)?, None)),
            VaultAuth::Kubernetes { mount, role, jwt_file } => {
                let jwt = read(jwt_file)?;
                let url =
                    format!("{}/v1/auth/{}/login", self.cfg.address.trim_end_matches('/'), mount.trim_matches('/'));
                let body = json!({ "role": role, "jwt": jwt.as_str() });
                let resp = self.http.post(url).json(&body).send().await.map_err(unavailable)?;
                let (status, answer) = (resp.status(), resp.json::<Value>().await.map_err(unavailable)?);
                if !status.is_success() {
                    return Err(KmsError::Refused(format!("Vault login ({status}): {}", vault_errors(&answer))));
                }
                let auth = &answer["auth"];
                let token = auth["client_token"]
                    .as_str()
                    .ok_or_else(|| KmsError::Refused("Vault's login answer has no auth.client_token".into()))?;
                // Renew a little before the lease ends.
                let lease = auth["lease_duration"].as_u64().filter(|s| *s > 0);
                let until = lease.map(|s| Instant::now() + Duration::from_secs(s.saturating_sub(s / 10 + 1)));
                Ok((Zeroizing::new(token.to_string()), until))
            }
        }
    }

    async fn token(&self, fresh: bool) -> Result<Zeroizing<String>, KmsError> {
        let mut held = self.token.lock().await;
        let valid = held.as_ref().filter(|(_, until)| !fresh && until.is_none_or(|u| Instant::now() < u));
        if let Some((token, _)) = valid {
            return Ok(token.clone());
        }
        let (token, until) = self.login().await?;
        *held = Some((token.clone(), until));
        Ok(token)
    }

    /// One call, logging in again once if Vault refuses the token (expired, revoked).
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<Value, KmsError> {
        for fresh in [false, true] {
            let token = self.token(fresh).await?;
            let mut req = self.http.request(method.clone(), self.url(path)).header("X-Vault-Token", token.as_str());
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await.map_err(unavailable)?;
            let status = resp.status();
            // Classified by status first: an error page that is not JSON (a proxy's) is still a refusal.
            let body = resp.bytes().await.map_err(unavailable)?;
            let answer: Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(_) if status.is_success() => {
                    return Err(unavailable(format!("Vault answered {status} with no JSON")));
                }
                Err(_) => Value::Null,
            };
            match status.as_u16() {
                200..=299 => return Ok(answer),
                403 if !fresh => continue,
                429 | 500..=599 => return Err(unavailable(format!("Vault ({status}): {}", vault_errors(&answer)))),
                _ => return Err(KmsError::Refused(format!("Vault ({status}): {}", vault_errors(&answer)))),
            }
        }
        Err(KmsError::Refused("Vault refused a fresh token".into()))
    }
}

impl Kms for VaultTransit {
    fn kind(&self) -> &'static str {
        "vault-transit"
    }

    fn current_key_id(&self) -> BoxFuture<'_, Result<String, KmsError>> {
        Box::pin(async move {
            let answer = self.call(reqwest::Method::GET, &format!("keys/{}", self.cfg.key), None).await?;
            let version = answer["data"]["latest_version"]
                .as_u64()
                .ok_or_else(|| KmsError::Refused("Vault's key answer has no data.latest_version".into()))?;
            Ok(self.key_id(version))
        })
    }

    fn wrap<'a>(&'a self, dek: &'a [u8]) -> BoxFuture<'a, Result<Wrapped, KmsError>> {
        Box::pin(async move {
            let plaintext = Zeroizing::new(B64.encode(dek));
            let body = json!({ "plaintext": plaintext.as_str() });
            let answer = self.call(reqwest::Method::POST, &format!("encrypt/{}", self.cfg.key), Some(&body)).await?;
            let ciphertext = answer["data"]["ciphertext"]
                .as_str()
                .ok_or_else(|| KmsError::Refused("Vault's encrypt answer has no data.ciphertext".into()))?;
            let version = ciphertext_version(ciphertext)
                .ok_or_else(|| KmsError::Refused("Vault's ciphertext does not start with vault:v<N>:".into()))?;
            let dek = WrappedDek { ciphertext: ciphertext.as_bytes().to_vec(), annotations: Default::default() };
            Ok(Wrapped { key_id: self.key_id(version), dek })
        })
    }

    fn unwrap<'a>(
        &'a self,
        key_id: &'a str,
        dek: &'a WrappedDek,
    ) -> BoxFuture<'a, Result<Zeroizing<Vec<u8>>, KmsError>> {
        Box::pin(async move {
            let ciphertext = std::str::from_utf8(&dek.ciphertext)
                .map_err(|_| KmsError::Refused("the wrapped DEK is not a Vault ciphertext".into()))?;
            // The id in the envelope must be what the ciphertext says: an edited id is refused here.
            if ciphertext_version(ciphertext).map(|v| self.key_id(v)).as_deref() != Some(key_id) {
                return Err(KmsError::Refused(format!("the wrapped DEK was not made by the Vault key {key_id}")));
            }
            let body = json!({ "ciphertext": ciphertext });
            let answer = self.call(reqwest::Method::POST, &format!("decrypt/{}", self.cfg.key), Some(&body)).await?;
            let plaintext = answer["data"]["plaintext"]
                .as_str()
                .ok_or_else(|| KmsError::Refused("Vault's decrypt answer has no data.plaintext".into()))?;
            B64.decode(plaintext)
                .map(Zeroizing::new)
                .map_err(|_| KmsError::Refused("Vault's decrypt answer is not base64".into()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_read_from_the_ciphertext() {
        assert_eq!(ciphertext_version("vault:v3:abc"), Some(3));
        assert_eq!(ciphertext_version("vault:v12:abc:def"), Some(12));
        assert_eq!(ciphertext_version("vault:vx:abc"), None);
        assert_eq!(ciphertext_version("v3:abc"), None);
    }

    #[test]
    fn errors_come_from_vaults_errors_field_only() {
        assert_eq!(vault_errors(&json!({"errors": ["permission denied", "x"]})), "permission denied; x");
        assert_eq!(vault_errors(&json!({"data": {"plaintext": "c2VjcmV0"}})), "no error message");
    }
}
