//! The running operator's version, published for `kubectl byok version`: ConfigMap
//! `byok-operator-version` in the operator's namespace, applied by each replica when it starts
//! leading (so it names the binary that runs the controllers, not what a chart claims).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, Patch, PatchParams};
use kube::{Api, Client};

use crate::labels::FIELD_MANAGER;

pub const VERSION_CONFIGMAP: &str = "byok-operator-version";
/// Data keys: the operator's version (Cargo's), the ciphertext envelope version it writes and
/// reads, and the pod leading when it was written.
pub const VERSION_KEY: &str = "version";
pub const ENVELOPE_KEY: &str = "envelopeVersion";
pub const LEADER_KEY: &str = "leader";

/// This build's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub fn configmap(namespace: &str, leader: &str) -> ConfigMap {
    let data: BTreeMap<String, String> =
        [(VERSION_KEY, VERSION), (ENVELOPE_KEY, crate::crypto::ENVELOPE_VERSION), (LEADER_KEY, leader)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(VERSION_CONFIGMAP.into()),
            namespace: Some(namespace.into()),
            labels: Some(crate::labels::component("version")),
            ..ObjectMeta::default()
        },
        data: Some(data),
        ..ConfigMap::default()
    }
}

/// Applies the ConfigMap. A failure only loses `kubectl byok version`'s answer: the caller logs it.
pub async fn publish(client: &Client, namespace: &str) -> Result<(), kube::Error> {
    let leader = std::env::var("POD_NAME").unwrap_or_else(|_| "unknown".into());
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let cm = configmap(namespace, &leader);
    cms.patch(VERSION_CONFIGMAP, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&cm)).await?;
    Ok(())
}

/// How far two versions (`major.minor.patch[-pre]`) are apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skew {
    Same,
    /// Only the patch level (or a pre-release tag) differs: compatible.
    Patch,
    /// The major or the minor version differs: formats and fields may differ; upgrade the older one.
    Minor,
    /// Either is not a version this parses.
    Unknown,
}

pub fn skew(a: &str, b: &str) -> Skew {
    fn major_minor(v: &str) -> Option<(u64, u64)> {
        let mut parts = v.trim().trim_start_matches('v').split(['.', '-', '+']);
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    }
    match (major_minor(a), major_minor(b)) {
        _ if a.trim() == b.trim() => Skew::Same,
        (Some(x), Some(y)) if x == y => Skew::Patch,
        (Some(_), Some(_)) => Skew::Minor,
        _ => Skew::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_is_told_by_major_and_minor() {
        assert_eq!(skew("0.2.0", "0.2.0"), Skew::Same);
        assert_eq!(skew("0.2.0", "0.2.3"), Skew::Patch);
        assert_eq!(skew("0.2.0", "0.2.0-rc.1"), Skew::Patch);
        assert_eq!(skew("0.2.0", "0.1.0"), Skew::Minor);
        assert_eq!(skew("1.2.0", "0.2.0"), Skew::Minor);
        assert_eq!(skew("0.2.0", "garbage"), Skew::Unknown);
    }

    #[test]
    fn the_configmap_names_this_build() {
        let cm = configmap("byok-system", "op-0");
        let data = cm.data.expect("data");
        assert_eq!(data[VERSION_KEY], VERSION);
        assert_eq!(data[ENVELOPE_KEY], "byok1");
        assert_eq!(data[LEADER_KEY], "op-0");
        assert_eq!(cm.metadata.name.as_deref(), Some(VERSION_CONFIGMAP));
    }
}
