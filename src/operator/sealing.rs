//! The operator's sealing key pair: private half in a Secret of the operator's namespace, public
//! half published as a ConfigMap that `kubectl byok seal --fetch-cert` reads.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{ObjectMeta, Patch, PatchParams};
use kube::{Api, Client};

use crate::bootstrap::{self, Loaded};
use crate::controller::Error;
use crate::crypto::sealing::SealingKey;
use crate::labels::FIELD_MANAGER;

/// Name of both the private-key Secret and the public-key ConfigMap.
pub const SEALING_KEY_NAME: &str = "byok-sealing-key";
const PRIVATE_KEY: &str = "privateKey";
/// Data key of the public-key ConfigMap (base64 X25519 public key).
pub const PUBLIC_KEY: &str = "publicKey";

fn meta(namespace: &str) -> ObjectMeta {
    bootstrap::meta(namespace, SEALING_KEY_NAME, "sealing-key")
}

fn from_secret(s: &Secret) -> Result<SealingKey, Error> {
    let bytes = s.data.as_ref().and_then(|d| d.get(PRIVATE_KEY)).map(|b| b.0.clone()).unwrap_or_default();
    SealingKey::from_bytes(&bytes)
        .ok_or_else(|| Error::Internal(format!("Secret {SEALING_KEY_NAME} has no 32-byte {PRIVATE_KEY}")))
}

fn private_secret(namespace: &str, key: &SealingKey) -> Secret {
    let data = [(PRIVATE_KEY.to_string(), ByteString(key.to_bytes().to_vec()))].into();
    bootstrap::secret(meta(namespace), None, data)
}

/// Reads the sealing key (or generates and stores one), and publishes its public half.
pub async fn load_or_create(client: &Client, namespace: &str) -> Result<SealingKey, Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let generate = async {
        let key = SealingKey::generate();
        let secret = private_secret(namespace, &key);
        Ok((key, secret))
    };
    let key = match bootstrap::load_or_create(&secrets, SEALING_KEY_NAME, from_secret, generate).await? {
        Loaded::Found(key) => key,
        Loaded::Created(key, _) => {
            tracing::info!(namespace, "generated the sealing key");
            key
        }
    };
    let cm = ConfigMap {
        metadata: meta(namespace),
        data: Some([(PUBLIC_KEY.to_string(), key.public_base64())].into()),
        ..Default::default()
    };
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    cms.patch(SEALING_KEY_NAME, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&cm)).await?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_private_secret_reads_back_as_the_key() {
        let key = SealingKey::generate();
        let secret = private_secret("ops", &key);
        assert_eq!(secret.metadata.name.as_deref(), Some(SEALING_KEY_NAME));
        assert_eq!(from_secret(&secret).expect("reads").public_base64(), key.public_base64());
        assert!(from_secret(&Secret::default()).is_err());
    }
}
