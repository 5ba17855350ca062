//! Sealed keys for GitOps: a client encrypts a provider key to the operator's public sealing key
//! (an anonymous X25519 sealed box), producing text that is safe to commit. The sealed payload
//! names the ByokKey it is for; the operator refuses it anywhere else.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use crypto_box::{PublicKey, SecretKey};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

const PREFIX: &str = "byoksealed1.";

/// Why a sealed key cannot be used. Never carries key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("not a sealed key (expected {PREFIX}<base64>)")]
    Format,
    #[error("the sealed key does not open with this operator's sealing key (sealed for another cluster, or altered)")]
    Open,
    #[error("the sealing public key is not 32 bytes of base64")]
    PublicKey,
    #[error("the sealed key was made for {0}, not for this ByokKey; seal it again for this name and namespace")]
    WrongObject(String),
    #[error(
        "the sealed Azure key was made for endpoint {sealed_for}, not for this ByokKey's spec.azure; \
         seal it again for the endpoint and deployment it is meant for"
    )]
    WrongAzureTarget { sealed_for: String },
}

/// Where a sealed Azure OpenAI key may be sent: bound into the sealed payload, so that whoever
/// edits `spec.azure` in git cannot redirect the key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AzureTarget {
    pub endpoint: String,
    pub deployment: String,
}

impl AzureTarget {
    pub fn new(endpoint: &str, deployment: &str) -> Self {
        Self {
            endpoint: endpoint.trim().trim_end_matches('/').to_ascii_lowercase(),
            deployment: deployment.trim().into(),
        }
    }
}

/// What is inside a sealed key: the key, and the object it may be imported into.
#[derive(Serialize, Deserialize)]
struct Payload {
    namespace: String,
    name: String,
    provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    azure: Option<AzureTarget>,
    key: String,
}

impl Drop for Payload {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

/// The operator's private sealing key. Its bytes are wiped on drop and never printed.
pub struct SealingKey(SecretKey);

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey(..)")
    }
}

impl SealingKey {
    pub fn generate() -> Self {
        Self(SecretKey::generate(&mut crypto_box::aead::OsRng))
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(Self(SecretKey::from(arr)))
    }

    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.0.to_bytes().to_vec())
    }

    /// The public key clients seal to, as base64.
    pub fn public_base64(&self) -> String {
        B64.encode(self.0.public_key().as_bytes())
    }

    /// Opens a sealed key and checks it was made for this object.
    /// An Azure key (`azure` is Some) must also have been sealed for that endpoint and deployment.
    pub fn unseal(
        &self,
        sealed: &str,
        namespace: &str,
        name: &str,
        provider: &str,
        azure: Option<&AzureTarget>,
    ) -> Result<SecretString, SealError> {
        let raw = sealed.trim().strip_prefix(PREFIX).ok_or(SealError::Format)?;
        let bytes = B64.decode(raw).map_err(|_| SealError::Format)?;
        let plain = Zeroizing::new(self.0.unseal(&bytes).map_err(|_| SealError::Open)?);
        let payload: Payload = serde_json::from_slice(&plain).map_err(|_| SealError::Open)?;
        if (payload.namespace.as_str(), payload.name.as_str(), payload.provider.as_str()) != (namespace, name, provider)
        {
            return Err(SealError::WrongObject(format!(
                "{}/{} ({})",
                payload.namespace, payload.name, payload.provider
            )));
        }
        if payload.azure.as_ref() != azure {
            let sealed_for = payload
                .azure
                .as_ref()
                .map_or_else(|| "(none)".into(), |a| format!("{} ({})", a.endpoint, a.deployment));
            return Err(SealError::WrongAzureTarget { sealed_for });
        }
        Ok(SecretString::from(payload.key.as_str()))
    }
}

/// Seals `key` for the ByokKey `namespace/name` of `provider`, to the operator's public key (base64).
pub fn seal(
    public_base64: &str,
    namespace: &str,
    name: &str,
    provider: &str,
    azure: Option<&AzureTarget>,
    key: &SecretString,
) -> Result<String, SealError> {
    let bytes = B64.decode(public_base64.trim()).map_err(|_| SealError::PublicKey)?;
    let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| SealError::PublicKey)?;
    let public = PublicKey::from(arr);
    let payload = Payload {
        namespace: namespace.into(),
        name: name.into(),
        provider: provider.into(),
        azure: azure.cloned(),
        key: key.expose_secret().to_string(),
    };
    let plain = Zeroizing::new(serde_json::to_vec(&payload).map_err(|_| SealError::Format)?);
    let sealed = public.seal(&mut crypto_box::aead::OsRng, &plain).map_err(|_| SealError::PublicKey)?;
    Ok(format!("{PREFIX}{}", B64.encode(sealed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_unseal_for_the_same_object() {
        let k = SealingKey::generate();
        let sealed = seal(&k.public_base64(), "team-a", "openai", "openai", None, &"sk-proj-0123456789abcdef".into())
            .expect("seal");
        assert!(!sealed.contains("sk-proj"));
        let key = k.unseal(&sealed, "team-a", "openai", "openai", None).expect("opens");
        assert_eq!(key.expose_secret(), "sk-proj-0123456789abcdef");
    }

    #[test]
    fn a_sealed_key_moved_elsewhere_is_refused() {
        let k = SealingKey::generate();
        let sealed = seal(&k.public_base64(), "team-a", "openai", "openai", None, &"sk-proj-0123456789abcdef".into())
            .expect("seal");
        assert!(matches!(k.unseal(&sealed, "team-b", "openai", "openai", None), Err(SealError::WrongObject(_))));
        assert!(matches!(k.unseal(&sealed, "team-a", "other", "openai", None), Err(SealError::WrongObject(_))));
        assert!(matches!(k.unseal(&sealed, "team-a", "openai", "anthropic", None), Err(SealError::WrongObject(_))));
        assert_eq!(
            SealingKey::generate().unseal(&sealed, "team-a", "openai", "openai", None).err(),
            Some(SealError::Open)
        );
        assert_eq!(k.unseal("garbage", "team-a", "openai", "openai", None).err(), Some(SealError::Format));
    }

    #[test]
    fn a_sealed_azure_key_is_bound_to_its_endpoint_and_deployment() {
        let k = SealingKey::generate();
        let team = AzureTarget::new("https://team.openai.azure.com/", "gpt-4o");
        let key = "0123456789abcdef0123".into();
        let sealed = seal(&k.public_base64(), "a", "az", "azure_openai", Some(&team), &key).expect("seal");
        let same = AzureTarget::new("https://TEAM.openai.azure.com", "gpt-4o");
        assert!(k.unseal(&sealed, "a", "az", "azure_openai", Some(&same)).is_ok());
        let moved = AzureTarget::new("https://attacker.openai.azure.com", "gpt-4o");
        let err = k.unseal(&sealed, "a", "az", "azure_openai", Some(&moved)).err();
        assert!(matches!(err, Some(SealError::WrongAzureTarget { .. })));
        let other_deployment = AzureTarget::new("https://team.openai.azure.com", "other");
        assert!(k.unseal(&sealed, "a", "az", "azure_openai", Some(&other_deployment)).is_err());
        // Sealed without a target (an older blob): refused for an Azure key.
        let unbound = seal(&k.public_base64(), "a", "az", "azure_openai", None, &key).expect("seal");
        assert!(matches!(
            k.unseal(&unbound, "a", "az", "azure_openai", Some(&team)),
            Err(SealError::WrongAzureTarget { .. })
        ));
    }

    #[test]
    fn key_bytes_round_trip() {
        let k = SealingKey::generate();
        let back = SealingKey::from_bytes(&k.to_bytes()).expect("32 bytes");
        assert_eq!(back.public_base64(), k.public_base64());
        assert!(!format!("{k:?}").contains(&k.public_base64()));
    }
}
