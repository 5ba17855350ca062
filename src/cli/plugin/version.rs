//! `version`: the plugin's version and the running operator's (ConfigMap byok-operator-version,
//! published by the leader), with a warning on stderr when they are apart.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

use super::args::{GlobalArgs, Output};
use super::ctx::Ctx;
use super::error::Error;
use super::output::structured;

/// The Lease the chart's replicas elect a leader with (byok-operator --lease-name's default).
const LEADER_LEASE: &str = "byok-operator-leader";
use crate::operator::version::{self as published, ENVELOPE_KEY, LEADER_KEY, Skew, VERSION_CONFIGMAP, VERSION_KEY};

/// The operator as its ConfigMap tells, or why it cannot be told.
#[derive(serde::Serialize, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OperatorVersion {
    pub version: Option<String>,
    pub envelope_version: Option<String>,
    pub leader: Option<String>,
    /// Why the version is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown: Option<String>,
}

pub async fn print(g: &GlobalArgs, output: Output) -> Result<(), Error> {
    let op = match Ctx::new(g).await {
        Ok(ctx) => operator(&ctx).await,
        Err(e) => unknown(format!("no cluster: {e}")),
    };
    let json = serde_json::json!({
        "plugin": { "version": published::VERSION, "envelopeVersion": crate::crypto::ENVELOPE_VERSION },
        "operator": op,
    });
    if !structured(output, &json)? {
        println!("kubectl-byok  {} (envelope {})", published::VERSION, crate::crypto::ENVELOPE_VERSION);
        match &op.version {
            Some(v) => println!(
                "operator      {v} (envelope {}; leader {}; namespace {})",
                op.envelope_version.as_deref().unwrap_or("?"),
                op.leader.as_deref().unwrap_or("?"),
                g.operator_namespace
            ),
            None => println!("operator      unknown ({})", op.unknown.as_deref().unwrap_or("?")),
        }
    }
    if let Some(w) = warning(published::VERSION, &op) {
        eprintln!("warning: {w}");
    }
    Ok(())
}

fn unknown(why: String) -> OperatorVersion {
    OperatorVersion { version: None, envelope_version: None, leader: None, unknown: Some(why) }
}

async fn operator(ctx: &Ctx) -> OperatorVersion {
    let ns = &ctx.operator_namespace;
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let data = match cms.get_opt(VERSION_CONFIGMAP).await {
        Ok(Some(cm)) => cm.data.unwrap_or_default(),
        Ok(None) => {
            return unknown(format!(
                "no ConfigMap {ns}/{VERSION_CONFIGMAP}: the operator is older than 0.2.0, not running, or not in \
                 namespace {ns} (--operator-namespace)"
            ));
        }
        Err(e) => return unknown(format!("cannot read ConfigMap {ns}/{VERSION_CONFIGMAP}: {e}")),
    };
    let get = |k: &str| data.get(k).cloned();
    let published = OperatorVersion {
        version: get(VERSION_KEY),
        envelope_version: get(ENVELOPE_KEY),
        leader: get(LEADER_KEY),
        unknown: None,
    };
    // The ConfigMap outlives a downgrade: it is current only while the pod that wrote it leads.
    match (lease_holder(ctx).await, &published.leader) {
        (Some(holder), Some(wrote)) if holder != *wrote => unknown(format!(
            "pod {holder} leads, not {wrote} which published version {}: the leader runs an operator older than \
             0.2.0, which publishes no version",
            published.version.as_deref().unwrap_or("?")
        )),
        _ => published,
    }
}

/// The holder of the operator's leader Lease (the chart's replicas), when there is one to read.
async fn lease_holder(ctx: &Ctx) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), &ctx.operator_namespace);
    leases.get_opt(LEADER_LEASE).await.ok()??.spec?.holder_identity
}

/// What to warn about: versions whose major or minor differ, or an operator reading another
/// envelope version than this plugin's `seal` writes for.
pub fn warning(plugin: &str, op: &OperatorVersion) -> Option<String> {
    let Some(v) = op.version.as_deref() else {
        return Some(format!("cannot tell the operator's version: {}", op.unknown.as_deref().unwrap_or("?")));
    };
    if let Some(env) = op.envelope_version.as_deref().filter(|e| *e != crate::crypto::ENVELOPE_VERSION) {
        return Some(format!(
            "the operator reads ciphertext envelope {env}, this plugin knows {}: use the plugin of the operator's version",
            crate::crypto::ENVELOPE_VERSION
        ));
    }
    match published::skew(plugin, v) {
        Skew::Same | Skew::Patch => None,
        Skew::Minor => Some(format!(
            "version skew: kubectl-byok {plugin}, operator {v}. Flags and fields may differ; install the plugin of the \
             operator's version (or upgrade the older of the two)"
        )),
        Skew::Unknown => Some(format!("cannot compare kubectl-byok {plugin} with operator version {v:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(version: &str, envelope: &str) -> OperatorVersion {
        OperatorVersion {
            version: Some(version.into()),
            envelope_version: Some(envelope.into()),
            leader: Some("p".into()),
            unknown: None,
        }
    }

    #[test]
    fn warns_on_minor_skew_and_on_another_envelope_only() {
        assert_eq!(warning("0.2.0", &op("0.2.1", "byok1")), None);
        assert!(
            warning("0.2.0", &op("0.1.0", "byok1")).is_some_and(|w| w.contains("kubectl-byok 0.2.0, operator 0.1.0"))
        );
        assert!(warning("0.2.0", &op("0.2.0", "byok2")).is_some_and(|w| w.contains("envelope byok2")));
        assert!(warning("0.2.0", &unknown("no ConfigMap".into())).is_some_and(|w| w.contains("no ConfigMap")));
    }
}
