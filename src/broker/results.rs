//! Storing a shard's results where people (and the EvalJob controller) can read them:
//! ConfigMaps owned by the EvalJob, each under 1 MiB.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};

use crate::crd::EvalJob;
use crate::judge::wire::ResultsReport;
use crate::labels::{self, EVALJOB_UID, FIELD_MANAGER};

/// Annotation on results ConfigMaps: shard, total, done.
pub const SHARD_ANNOTATION: &str = "launchgate.ai/shard";
/// Annotation on results ConfigMaps: HMAC-SHA256 over the name, the shard annotation and the
/// results, by the broker. Results without a valid one (written by anyone else) are ignored.
pub const MAC_ANNOTATION: &str = "launchgate.ai/results-mac";
pub const RESULTS_FILE: &str = "results.jsonl";
pub const RESULTS_COMPONENT: &str = "eval-results";

/// Authenticates results ConfigMaps.
pub struct ResultsMac(ring::hmac::Key);

impl std::fmt::Debug for ResultsMac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResultsMac(..)")
    }
}

impl ResultsMac {
    /// A MAC key derived from operator-only secret bytes.
    pub fn derive(secret: &[u8]) -> Self {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"byok-operator results-mac v1\0");
        ctx.update(secret);
        Self(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, ctx.finish().as_ref()))
    }

    /// What is signed: where the ConfigMap is, which EvalJob run it belongs to, and its content,
    /// so a signed ConfigMap cannot be replayed into another namespace or another run.
    fn message(at: &Placement, shard: &str, results: &str) -> Vec<u8> {
        let fields = [at.namespace, at.evaljob_uid, at.name, shard, results];
        fields.iter().flat_map(|f| [f.as_bytes(), b"\0"]).flatten().copied().collect()
    }

    pub fn sign(&self, at: &Placement, shard: &str, results: &str) -> String {
        let tag = ring::hmac::sign(&self.0, &Self::message(at, shard, results));
        tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether `cm` is a results ConfigMap exactly as the broker wrote it for the EvalJob run
    /// `evaljob_uid` (taken from the EvalJob, never from the ConfigMap's own labels).
    pub fn verify(&self, cm: &ConfigMap, evaljob_uid: &str) -> bool {
        let a = cm.annotations();
        let (Some(shard), Some(mac)) = (a.get(SHARD_ANNOTATION), a.get(MAC_ANNOTATION)) else { return false };
        let Some(tag) = decode_hex(mac) else { return false };
        let results = cm.data.as_ref().and_then(|d| d.get(RESULTS_FILE)).map_or("", String::as_str);
        let (namespace, name) = (cm.namespace().unwrap_or_default(), cm.name_any());
        let at = Placement { namespace: &namespace, evaljob_uid, name: &name };
        ring::hmac::verify(&self.0, &Self::message(&at, shard, results), &tag).is_ok()
    }
}

/// Where a results ConfigMap lives and whose it is.
pub struct Placement<'a> {
    pub namespace: &'a str,
    pub evaljob_uid: &'a str,
    pub name: &'a str,
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}
const PART_BYTES: usize = 900_000;
/// Parts a shard's report can take (a report is at most `MAX_REPORT_BYTES`): the controller
/// reads no other name, so a tenant's look-alike ConfigMaps cannot make it load more.
pub const MAX_PARTS: usize = crate::judge::wire::MAX_REPORT_BYTES / PART_BYTES + 2;

/// Name of part `part` of shard `shard`'s results of EvalJob `ej`.
pub fn part_name(ej: &str, shard: u32, part: usize) -> String {
    crate::names::bounded(ej, &format!("results-{shard}-{part}"))
}

/// The ConfigMaps holding a shard's results: `results.jsonl` split into parts under 1 MiB.
pub fn results_config_maps(ej: &EvalJob, report: &ResultsReport, mac: &ResultsMac) -> Vec<ConfigMap> {
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
    let mut l = labels::component(RESULTS_COMPONENT);
    l.insert(EVALJOB_UID.into(), ej.uid().unwrap_or_default());
    parts
        .into_iter()
        .enumerate()
        .map(|(i, data)| {
            let name = part_name(&ej.name_any(), report.shard, i);
            let (namespace, uid) = (ej.namespace().unwrap_or_default(), ej.uid().unwrap_or_default());
            let tag = mac.sign(&Placement { namespace: &namespace, evaljob_uid: &uid, name: &name }, &shard, &data);
            ConfigMap {
                metadata: ObjectMeta {
                    name: Some(name),
                    namespace: ej.namespace(),
                    labels: Some(l.clone()),
                    annotations: Some(
                        [(SHARD_ANNOTATION.to_string(), shard.clone()), (MAC_ANNOTATION.to_string(), tag)].into(),
                    ),
                    owner_references: ej.controller_owner_ref(&()).map(|o| vec![o]),
                    ..Default::default()
                },
                data: Some([(RESULTS_FILE.to_string(), data)].into()),
                ..Default::default()
            }
        })
        .collect()
}

pub async fn store(client: &Client, ej: &EvalJob, report: &ResultsReport, mac: &ResultsMac) -> Result<(), kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ej.namespace().unwrap_or_default());
    for cm in results_config_maps(ej, report, mac) {
        let name = cm.name_any();
        api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&cm)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::wire::CaseResult;

    fn ej() -> EvalJob {
        let spec = serde_json::from_value(serde_json::json!({
            "provider": "openai", "scorers": [{"type": "json_valid"}], "cases": [{"output": "{}"}]
        }))
        .expect("spec");
        let mut e = EvalJob::new("ej", spec);
        e.metadata.namespace = Some("a".into());
        e.metadata.uid = Some("uid".into());
        e
    }

    #[test]
    fn only_results_the_broker_wrote_verify() {
        let mac = ResultsMac::derive(b"operator secret");
        let result = CaseResult { id: "1".into(), line: 1, scores: vec![], input_tokens: 0, output_tokens: 0 };
        let report = ResultsReport { pod_uid: "p".into(), shard: 0, total: 1, done: true, results: vec![result] };
        let cms = results_config_maps(&ej(), &report, &mac);
        assert!(cms.iter().all(|cm| mac.verify(cm, "uid")));
        assert!(!mac.verify(&cms[0], "another-run"), "replayed into another run of the same name");
        let mut moved = cms[0].clone();
        moved.metadata.namespace = Some("b".into());
        assert!(!mac.verify(&moved, "uid"), "replayed into another namespace");
        let mut forged = cms[0].clone();
        forged.data =
            Some([(RESULTS_FILE.to_string(), "{\"id\":\"x\",\"line\":1,\"scores\":[]}\n".to_string())].into());
        assert!(!mac.verify(&forged, "uid"), "changed results");
        let mut renamed = cms[0].clone();
        renamed.metadata.name = Some("ej-results-9-0".into());
        assert!(!mac.verify(&renamed, "uid"), "copied under another name");
        assert!(!ResultsMac::derive(b"tenant guess").verify(&cms[0], "uid"), "another key");
        let mut bare = cms[0].clone();
        bare.metadata.annotations = Some([(SHARD_ANNOTATION.to_string(), "0/1/done".to_string())].into());
        assert!(!mac.verify(&bare, "uid"), "no MAC");
    }
}
