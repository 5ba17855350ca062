//! Storing a shard's results where people (and the EvalJob controller) can read them:
//! ConfigMaps owned by the EvalJob, each under 1 MiB.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};

use crate::crd::EvalJob;
use crate::judge::wire::{CaseResult, ResultsReport};
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

/// Reason prefix of the errored case that stands for an unreadable results line.
pub const UNREADABLE_RESULT: &str = "UnreadableResult";
/// Longest parse error kept for an unreadable line (it ends up in status and Events).
const MAX_ERROR_CHARS: usize = 200;

/// A line of a signed `results.jsonl` that is not a case result (a broker of another version wrote
/// it, or a bug did): reported, never dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnreadableLine {
    pub config_map: String,
    /// 1-based line in the ConfigMap's `results.jsonl`.
    pub line: usize,
    /// The parse error, cut short.
    pub error: String,
}

impl std::fmt::Display for UnreadableLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConfigMap {} line {}: {}", self.config_map, self.line, self.error)
    }
}

impl UnreadableLine {
    /// The case the line held, as far as it can be told: errored for every scorer, saying why, so
    /// progress, summary and JUnit count it instead of losing it.
    pub fn errored_case(&self, scorer_names: &[String]) -> CaseResult {
        let reason = format!("{UNREADABLE_RESULT}: {self}");
        let scores = scorer_names
            .iter()
            .map(|scorer| crate::judge::wire::ScoreResult {
                agreed: None,
                scorer: scorer.clone(),
                outcome: crate::judge::wire::Outcome::Errored,
                score: None,
                reason: reason.clone(),
            })
            .collect();
        let id = format!("unreadable-{}-{}", self.config_map, self.line);
        CaseResult { id, line: 0, scores, input_tokens: 0, output_tokens: 0 }
    }
}

/// What a verified results ConfigMap holds.
#[derive(Debug, Default)]
pub struct ShardResults {
    /// The shard's index when its last report is in.
    pub done_shard: Option<String>,
    pub results: Vec<CaseResult>,
    pub unreadable: Vec<UnreadableLine>,
}

/// Reads a results ConfigMap of the EvalJob run `evaljob_uid`; `None` when the broker did not write
/// it (its MAC does not verify), so nothing in it counts, readable or not.
pub fn read_config_map(cm: &ConfigMap, evaljob_uid: &str, mac: &ResultsMac) -> Option<ShardResults> {
    if !mac.verify(cm, evaljob_uid) {
        return None;
    }
    // Present: verify signed it. Written as `<index>/<total>/<done|running>`.
    let shard = cm.annotations().get(SHARD_ANNOTATION).map_or("", String::as_str);
    let mut fields = shard.split('/');
    let done_shard = match (fields.next(), fields.next(), fields.next()) {
        (Some(index), Some(_), Some("done")) => Some(index.to_string()),
        _ => None,
    };
    // A part with no results yet (the first progress report) has an empty file.
    let text = cm.data.as_ref().and_then(|d| d.get(RESULTS_FILE)).map_or("", String::as_str);
    let (results, unreadable) = read_results(&cm.name_any(), text);
    Some(ShardResults { done_shard, results, unreadable })
}

/// Every case result of a `results.jsonl`, and every non-blank line that is not one.
pub fn read_results(config_map: &str, text: &str) -> (Vec<CaseResult>, Vec<UnreadableLine>) {
    let (mut results, mut unreadable) = (Vec::new(), Vec::new());
    for (index, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        match serde_json::from_str::<CaseResult>(line) {
            Ok(result) => results.push(result),
            Err(e) => unreadable.push(UnreadableLine {
                config_map: config_map.to_string(),
                line: index + 1,
                error: e.to_string().chars().take(MAX_ERROR_CHARS).collect(),
            }),
        }
    }
    (results, unreadable)
}

const PART_BYTES: usize = 900_000;
/// Parts a shard's report can take (a report is at most `MAX_REPORT_BYTES`): the controller
/// reads no other name, so a tenant's look-alike ConfigMaps cannot make it load more.
pub const MAX_PARTS: usize = crate::judge::wire::MAX_REPORT_BYTES / PART_BYTES + 2;

/// Name of part `part` of shard `shard`'s results of EvalJob `ej`.
pub fn part_name(ej: &str, shard: u32, part: usize) -> String {
    crate::names::bounded(ej, &format!("results-{shard}-{part}"))
}

/// The ConfigMaps holding a shard's results: `results.jsonl` split into parts under 1 MiB. A result
/// that cannot be written as JSON fails the whole report: an empty line would lose the case.
pub fn results_config_maps(
    ej: &EvalJob,
    report: &ResultsReport,
    mac: &ResultsMac,
) -> Result<Vec<ConfigMap>, serde_json::Error> {
    let mut parts: Vec<String> = vec![String::new()];
    for r in &report.results {
        let line = serde_json::to_string(r)?;
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
    let cms = parts
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
        .collect();
    Ok(cms)
}

/// Why a shard's results were not stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a result cannot be written as JSON: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("Kubernetes API: {0}")]
    Api(#[from] kube::Error),
}

impl StoreError {
    /// Whether the API server was at fault (worth another try), not the report.
    pub fn is_api(&self) -> bool {
        matches!(self, Self::Api(_))
    }
}

pub async fn store(client: &Client, ej: &EvalJob, report: &ResultsReport, mac: &ResultsMac) -> Result<(), StoreError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ej.namespace().unwrap_or_default());
    for cm in results_config_maps(ej, report, mac)? {
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
        let cms = results_config_maps(&ej(), &report, &mac).expect("serializes");
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

    fn result(id: &str, line: u32) -> CaseResult {
        CaseResult { id: id.into(), line, scores: vec![], input_tokens: 3, output_tokens: 4 }
    }

    /// A results ConfigMap as a broker signs it, holding `text` as given.
    fn signed(mac: &ResultsMac, shard: &str, text: &str) -> ConfigMap {
        let name = part_name("ej", 0, 0);
        let tag = mac.sign(&Placement { namespace: "a", evaljob_uid: "uid", name: &name }, shard, text);
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(name);
        cm.metadata.namespace = Some("a".into());
        cm.metadata.annotations =
            Some([(SHARD_ANNOTATION.to_string(), shard.to_string()), (MAC_ANNOTATION.to_string(), tag)].into());
        cm.data = Some([(RESULTS_FILE.to_string(), text.to_string())].into());
        cm
    }

    #[test]
    fn what_the_broker_writes_reads_back_whole() {
        let mac = ResultsMac::derive(b"operator secret");
        let results = vec![result("a", 1), result("b", 3)];
        let report = ResultsReport { pod_uid: "p".into(), shard: 0, total: 2, done: true, results: results.clone() };
        let cm = &results_config_maps(&ej(), &report, &mac).expect("serializes")[0];
        let read = read_config_map(cm, "uid", &mac).expect("verifies");
        assert_eq!((read.results, read.unreadable, read.done_shard), (results, vec![], Some("0".into())));
        let running = ResultsReport { done: false, results: vec![], ..report };
        let cm = &results_config_maps(&ej(), &running, &mac).expect("serializes")[0];
        let read = read_config_map(cm, "uid", &mac).expect("verifies");
        assert_eq!((read.results.len(), read.done_shard), (0, None), "a running shard with nothing yet");
    }

    #[test]
    fn unreadable_lines_are_counted_with_where_and_why_never_dropped() {
        let mac = ResultsMac::derive(b"operator secret");
        let good = serde_json::to_string(&result("a", 1)).expect("json");
        // serde quotes a string of the wrong type whole: the message is cut.
        let long = format!("{{\"id\":\"c\",\"line\":\"{}\"}}", "x".repeat(5000));
        let text = format!("{good}\nnot json\n\n{{\"id\":\"b\",\"line\":\"two\"}}\n{long}\n");
        let read = read_config_map(&signed(&mac, "0/3/done", &text), "uid", &mac).expect("verifies");
        assert_eq!(read.results, vec![result("a", 1)]);
        assert_eq!(
            read.unreadable.iter().map(|u| u.line).collect::<Vec<_>>(),
            vec![2, 4, 5],
            "blank lines hold nothing"
        );
        assert!(read.unreadable.iter().all(|u| u.config_map == "ej-results-0-0" && u.error.chars().count() <= 200));
        assert_eq!(read.unreadable[2].error.chars().count(), 200);
        let names = vec!["json_valid".to_string(), "judge".to_string()];
        let case = read.unreadable[0].errored_case(&names);
        assert_eq!(case.scores.len(), 2, "errored for every scorer");
        assert!(case.scores.iter().all(|s| s.outcome == crate::judge::wire::Outcome::Errored));
        assert!(case.scores[0].reason.starts_with("UnreadableResult: ConfigMap ej-results-0-0 line 2: "));
        let summary = crate::judge::summary::summarize(&[case], &names);
        assert_eq!((summary.passed, summary.errored), (0, 1));
    }

    #[test]
    fn a_tenants_results_count_for_nothing_garbled_or_not() {
        let mac = ResultsMac::derive(b"operator secret");
        let passing = serde_json::to_string(&result("a", 1)).expect("json");
        for text in [passing.as_str(), "garbage\n{\"id\":", ""] {
            // Written by hand (no MAC), or signed with a key guessed by the tenant.
            let mut unsigned = signed(&mac, "0/1/done", text);
            unsigned.metadata.annotations.as_mut().expect("annotations").remove(MAC_ANNOTATION);
            assert!(read_config_map(&unsigned, "uid", &mac).is_none(), "{text:?}");
            let guessed = signed(&ResultsMac::derive(b"guess"), "0/1/done", text);
            assert!(read_config_map(&guessed, "uid", &mac).is_none(), "{text:?}");
            // A MAC that is not even hex.
            let mut garbled = signed(&mac, "0/1/done", text);
            garbled.metadata.annotations.as_mut().expect("annotations").insert(MAC_ANNOTATION.into(), "zz".into());
            assert!(read_config_map(&garbled, "uid", &mac).is_none(), "{text:?}");
        }
    }

    /// Found by fuzzing the wire types: a score read back from the stored results differed from
    /// the reported one in its last bit (serde_json parses floats exactly only with its
    /// `float_roundtrip` feature).
    #[test]
    fn scores_are_stored_exactly() {
        let mac = ResultsMac::derive(b"operator secret");
        let mut result = result("a", 1);
        let scores = [4e-24, 0.1 + 0.2, 1.0 / 3.0, 5e-324, 0.9999999999999999];
        result.scores = scores
            .iter()
            .map(|s| crate::judge::wire::ScoreResult {
                agreed: None,
                scorer: "judge".into(),
                outcome: crate::judge::wire::Outcome::Passed,
                score: Some(*s),
                reason: String::new(),
            })
            .collect();
        let report = ResultsReport { pod_uid: "p".into(), shard: 0, total: 1, done: true, results: vec![result] };
        let cms = results_config_maps(&ej(), &report, &mac).expect("serializes");
        let read = read_config_map(&cms[0], "uid", &mac).expect("verifies");
        let back: Vec<f64> = read.results[0].scores.iter().filter_map(|s| s.score).collect();
        assert_eq!(back.iter().map(|s| s.to_bits()).collect::<Vec<_>>(), scores.map(f64::to_bits));
    }
}
