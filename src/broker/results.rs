//! Storing a shard's results where people (and the EvalJob controller) can read them:
//! ConfigMaps owned by the EvalJob, each under 1 MiB.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};

use crate::controller::evaljob::desired::EVALJOB_UID_LABEL;
use crate::controller::{FIELD_MANAGER, labels};
use crate::crd::EvalJob;
use crate::judge::wire::ResultsReport;

/// Annotation on results ConfigMaps: shard, total, done.
pub const SHARD_ANNOTATION: &str = "launchgate.ai/shard";
const PART_BYTES: usize = 900_000;

/// The ConfigMaps holding a shard's results: `results.jsonl` split into parts under 1 MiB.
pub fn results_config_maps(ej: &EvalJob, report: &ResultsReport) -> Vec<ConfigMap> {
    let mut parts: Vec<String> = vec![String::new()];
    for r in &report.results {
        let line = serde_json::to_string(r).unwrap_or_default();
        if parts.last().is_some_and(|p| !p.is_empty() && p.len() + line.len() + 1 > PART_BYTES) {
            parts.push(String::new());
        }
        if let Some(p) = parts.last_mut() {
            p.push_str(&line);
            p.push('\n');
        }
    }
    let shard = format!("{}/{}/{}", report.shard, report.total, if report.done { "done" } else { "running" });
    let mut l = labels::managed();
    l.insert(labels::COMPONENT.into(), "eval-results".into());
    l.insert(EVALJOB_UID_LABEL.into(), ej.uid().unwrap_or_default());
    parts
        .into_iter()
        .enumerate()
        .map(|(i, data)| ConfigMap {
            metadata: ObjectMeta {
                name: Some(crate::controller::names::bounded(&ej.name_any(), &format!("results-{}-{i}", report.shard))),
                namespace: ej.namespace(),
                labels: Some(l.clone()),
                annotations: Some([(SHARD_ANNOTATION.to_string(), shard.clone())].into()),
                owner_references: ej.controller_owner_ref(&()).map(|o| vec![o]),
                ..Default::default()
            },
            data: Some([("results.jsonl".to_string(), data)].into()),
            ..Default::default()
        })
        .collect()
}

pub async fn store(client: &Client, ej: &EvalJob, report: &ResultsReport) -> Result<(), kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ej.namespace().unwrap_or_default());
    for cm in results_config_maps(ej, report) {
        let name = cm.name_any();
        api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&cm)).await?;
    }
    Ok(())
}
