//! Which KEK source the operator uses and the id new keys are sealed under, published in a
//! ConfigMap of its namespace: with an external KMS there is no keyring Secret to read that from,
//! and `kek status` counts the keys still sealed under anything else (an older remote key version,
//! or the keyring Secret before a migration).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

use crate::labels::FIELD_MANAGER;

pub const KEK_STATE_CONFIGMAP: &str = "byok-operator-kek-state";
const SOURCE_KEY: &str = "source";
const ACTIVE_KEY: &str = "activeKekId";

/// What the ConfigMap says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KekState {
    /// `keyring`, `vault-transit` or `kms-v2`.
    pub source: String,
    /// The id new keys are sealed under; empty while the KMS has not answered yet.
    pub active: String,
}

pub async fn publish(client: &Client, namespace: &str, state: &KekState) -> Result<(), kube::Error> {
    let data: BTreeMap<String, String> =
        [(SOURCE_KEY.to_string(), state.source.clone()), (ACTIVE_KEY.to_string(), state.active.clone())].into();
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(KEK_STATE_CONFIGMAP.into()),
            namespace: Some(namespace.into()),
            labels: Some(crate::labels::component("kek-state")),
            ..ObjectMeta::default()
        },
        data: Some(data),
        ..ConfigMap::default()
    };
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    api.patch(KEK_STATE_CONFIGMAP, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&cm)).await?;
    Ok(())
}

/// The published state, if the operator has published one.
pub async fn read(client: &Client, namespace: &str) -> Result<Option<KekState>, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    Ok(api.get_opt(KEK_STATE_CONFIGMAP).await?.and_then(|cm| {
        let data = cm.data?;
        Some(KekState {
            source: data.get(SOURCE_KEY)?.clone(),
            active: data.get(ACTIVE_KEY).cloned().unwrap_or_default(),
        })
    }))
}
