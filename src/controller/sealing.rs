//! The operator's sealing key pair: private half in a Secret of the operator's namespace, public
//! half published as a ConfigMap that `kubectl byok seal --fetch-cert` reads.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};

use super::Error;
use crate::crypto::sealing::SealingKey;
use crate::labels::{self, FIELD_MANAGER};

/// Name of both the private-key Secret and the public-key ConfigMap.
pub const SEALING_KEY_NAME: &str = "byok-sealing-key";
const PRIVATE_KEY: &str = "privateKey";
/// Data key of the public-key ConfigMap (base64 X25519 public key).
pub const PUBLIC_KEY: &str = "publicKey";

fn meta(namespace: &str) -> ObjectMeta {
    let mut l = labels::managed();
    l.insert(labels::COMPONENT.into(), "sealing-key".into());
    ObjectMeta {
        name: Some(SEALING_KEY_NAME.into()),
        namespace: Some(namespace.into()),
        labels: Some(l),
        ..Default::default()
    }
}

/// Reads the sealing key (or generates and stores one), and publishes its public half.
pub async fn load_or_create(client: &Client, namespace: &str) -> Result<SealingKey, Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let from = |s: &Secret| {
        let bytes = s.data.as_ref().and_then(|d| d.get(PRIVATE_KEY)).map(|b| b.0.clone()).unwrap_or_default();
        SealingKey::from_bytes(&bytes)
            .ok_or_else(|| Error::Internal(format!("Secret {SEALING_KEY_NAME} has no 32-byte {PRIVATE_KEY}")))
    };
    let key = match secrets.get_opt(SEALING_KEY_NAME).await? {
        Some(s) => from(&s)?,
        None => {
            let key = SealingKey::generate();
            let secret = Secret {
                metadata: meta(namespace),
                data: Some([(PRIVATE_KEY.to_string(), ByteString(key.to_bytes().to_vec()))].into()),
                ..Default::default()
            };
            match secrets.create(&PostParams::default(), &secret).await {
                Ok(_) => {
                    tracing::info!(namespace, "generated the sealing key");
                    key
                }
                Err(kube::Error::Api(s)) if s.code == 409 => from(&secrets.get(SEALING_KEY_NAME).await?)?,
                Err(e) => return Err(e.into()),
            }
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
