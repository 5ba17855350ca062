//! The EvalJob reconcile and the key broker's handlers in milliseconds: against a fake API server
//! and hand-filled caches. No cluster, no root, no provider.

mod fast;

use std::time::Duration;

use byok_operator::broker::results;
use byok_operator::crd::conditions::evaljob::{CASES_READY, COMPLETE, KEY_RESOLVED, RESULTS_TRUSTED};
use byok_operator::crd::{EvalJob, EvalJobStatus, EvalPhase};
use byok_operator::judge::wire::{self, CaseResult, Outcome, ResultsReport, ScoreResult};
use byok_operator::judge_job::CA_BUNDLE_CONFIGMAP;
use byok_operator::labels::EVALJOB_UID;
use fast::evals::{Broker, Evals, judge_pod, ready_default_key};
use fast::{NS, OPERATOR_NS, changes};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use serde_json::json;

const EVALJOBS: &str = "/apis/launchgate.ai/v1alpha1/namespaces/team/evaljobs";
const CONFIGMAPS: &str = "/api/v1/namespaces/team/configmaps";
const JOBS: &str = "/apis/batch/v1/namespaces/team/jobs";

fn status(ej: &EvalJob) -> EvalJobStatus {
    ej.status.clone().unwrap_or_else(|| panic!("{} has a status", ej.name_any()))
}

/// (status, reason) of condition `type_`.
fn cond(st: &EvalJobStatus, type_: &str) -> (String, String) {
    let c = st.conditions.iter().find(|c| c.type_ == type_).unwrap_or_else(|| panic!("condition {type_}"));
    (c.status.clone(), c.reason.clone())
}

fn pair(status: &str, reason: &str) -> (String, String) {
    (status.to_string(), reason.to_string())
}

/// A case's result: every scorer in `scores` with its outcome.
fn result(line: u32, scores: &[(&str, Outcome, f64)]) -> CaseResult {
    CaseResult {
        id: line.to_string(),
        line,
        scores: scores
            .iter()
            .map(|(scorer, outcome, score)| ScoreResult {
                scorer: (*scorer).into(),
                outcome: *outcome,
                score: Some(*score),
                reason: String::new(),
                agreed: None,
            })
            .collect(),
        input_tokens: 100,
        output_tokens: 10,
    }
}

fn report(shard: u32, total: u32, done: bool, results: Vec<CaseResult>) -> ResultsReport {
    ResultsReport { pod_uid: format!("pod-{shard}"), shard, total, done, results }
}

/// Stores a shard's report as the broker does: signed ConfigMaps owned by the EvalJob.
async fn broker_stores(w: &Evals, name: &str, report: &ResultsReport) {
    results::store(&w.api.client(), &w.stored(name), report, &w.mac).await.expect("results stored");
}

fn judge_spec(cases: usize) -> serde_json::Value {
    let cases: Vec<_> = (0..cases).map(|i| json!({ "input": format!("q{i}"), "output": format!("a{i}") })).collect();
    json!({ "provider": "openai", "scorers": [{ "type": "llm_judge", "rubric": "is it right" }], "cases": cases })
}

#[tokio::test]
async fn waits_for_a_key_then_runs_the_judge_job_then_succeeds_with_a_summary() {
    let mut w = Evals::new();
    w.create("eval", judge_spec(3));

    // No key yet: waiting, and looking again soon.
    let action = w.reconcile("eval").await;
    assert_eq!(changes(&w.api.take_calls()), [format!("PATCH {EVALJOBS}/eval/status")]);
    let st = status(&w.stored("eval"));
    assert_eq!(st.phase, Some(EvalPhase::WaitingForKey));
    assert_eq!(cond(&st, KEY_RESOLVED), pair("False", "NoUsableKey"));
    assert_eq!(action, Action::requeue(Duration::from_secs(3)));
    w.api.event("eval", "WaitingForKey", "no Ready default openai ByokKey").await;
    // Still no key: nothing new to say or write.
    w.reconcile("eval").await;
    assert_eq!(changes(&w.api.take_calls()), Vec::<String>::new());

    // A Ready default key appears in the cache: the run starts.
    w.keys.apply(ready_default_key("openai", "sk-proj-"));
    let action = w.reconcile("eval").await;
    assert_eq!(
        changes(&w.api.take_calls()),
        [
            format!("PATCH {CONFIGMAPS}/{CA_BUNDLE_CONFIGMAP}"),
            format!("PATCH {CONFIGMAPS}/eval-cases"),
            format!("POST {JOBS}"),
            format!("PATCH {EVALJOBS}/eval/status"),
        ]
    );
    let ej = w.stored("eval");
    let st = status(&ej);
    assert_eq!(st.phase, Some(EvalPhase::Running));
    let job: Job = w.api.get(NS, st.job_name.as_deref().expect("job name")).expect("the judge Job");
    assert_eq!(st.job_uid, job.uid(), "the Job is known by uid");
    let owner = &job.owner_references()[0];
    assert_eq!((owner.kind.as_str(), owner.controller, Some(owner.uid.clone())), ("EvalJob", Some(true), ej.uid()));
    assert_eq!((st.key_ref.as_deref(), st.key_prefix.as_deref()), (Some("openai"), Some("sk-proj-")));
    assert_eq!(st.progress.as_ref().map(|p| p.display.as_str()), Some("0/3"));
    assert_eq!(cond(&st, KEY_RESOLVED), pair("True", "KeyResolved"));
    assert_eq!(cond(&st, CASES_READY), pair("True", "CasesReady"));
    assert!(st.start_time.is_some() && st.model.is_some());
    let cases: ConfigMap = w.api.get(NS, "eval-cases").expect("cases ConfigMap");
    let jsonl = cases.data.as_ref().and_then(|d| d.get("cases.jsonl")).expect("cases.jsonl");
    assert_eq!(jsonl.lines().count(), 3);
    assert_eq!(action, Action::await_change());
    w.api.event("eval", "Started", "for 3 cases").await;

    // Running, no results yet: nothing is created twice.
    w.sync_jobs();
    w.reconcile("eval").await;
    assert_eq!(changes(&w.api.take_calls()), Vec::<String>::new());

    // The judge reports through the broker, which signs what it stores.
    let all = vec![
        result(1, &[("llm_judge", Outcome::Passed, 0.9)]),
        result(2, &[("llm_judge", Outcome::Failed, 0.2)]),
        result(3, &[("llm_judge", Outcome::Passed, 0.7)]),
    ];
    broker_stores(&w, "eval", &report(0, 3, true, all)).await;
    w.api.take_calls();
    w.reconcile("eval").await;
    assert_eq!(
        changes(&w.api.take_calls()),
        [format!("PATCH {CONFIGMAPS}/eval-junit"), format!("PATCH {EVALJOBS}/eval/status")]
    );
    let st = status(&w.stored("eval"));
    assert_eq!(st.phase, Some(EvalPhase::Succeeded));
    let summary = st.summary.clone().expect("summary");
    assert_eq!((summary.passed, summary.failed, summary.errored), (2, 1, 0));
    assert_eq!(st.progress.as_ref().map(|p| p.display.as_str()), Some("3/3"));
    assert_eq!(st.usage.map(|u| (u.input_tokens, u.output_tokens)), Some((300, 30)));
    assert_eq!(
        st.results_ref.as_ref().map(|r| r.config_maps.clone()),
        Some(vec!["eval-junit".into(), "eval-results-0-0".into()])
    );
    assert_eq!(cond(&st, COMPLETE), pair("True", "Succeeded"));
    assert!(st.completion_time.is_some());
    let junit: ConfigMap = w.api.get(NS, "eval-junit").expect("junit");
    let xml = junit.data.as_ref().and_then(|d| d.get("junit.xml")).expect("junit.xml");
    assert_eq!(xml.matches("<testcase").count(), 3);
    w.api.event("eval", "Succeeded", "2 passed, 1 failed, 0 errored of 3").await;

    // Finished: a reconcile reads nothing and writes nothing.
    w.reconcile("eval").await;
    let calls: Vec<String> = w.api.take_calls().iter().filter(|c| !c.is_event()).map(|c| c.line()).collect();
    assert_eq!(calls, Vec::<String>::new());
}

#[tokio::test]
async fn the_shards_results_fold_into_one_summary_and_forged_ones_do_not_count() {
    let w = Evals::new();
    // Scorers without a key: no ByokKey needed.
    let cases: Vec<_> = (1..=4).map(|i| json!({ "output": format!("answer {i}"), "expected": "answer" })).collect();
    let spec = json!({
        "provider": "openai", "parallelism": 2, "cases": cases,
        "scorers": [{ "type": "contains" }, { "type": "json_valid", "name": "json" }],
    });
    w.create("eval", spec);
    w.reconcile("eval").await;
    let st = status(&w.stored("eval"));
    assert_eq!(st.phase, Some(EvalPhase::Running));
    assert_eq!(st.key_ref, None, "no llm_judge scorer, no key");
    let job: Job = w.api.get(NS, "eval-judge").expect("judge Job");
    let spec = job.spec.expect("job spec");
    assert_eq!(
        (spec.parallelism, spec.completions, spec.completion_mode.as_deref()),
        (Some(2), Some(2), Some("Indexed"))
    );

    let passed = |line| result(line, &[("contains", Outcome::Passed, 1.0), ("json", Outcome::Passed, 1.0)]);
    let failed = |line| result(line, &[("contains", Outcome::Passed, 1.0), ("json", Outcome::Failed, 0.0)]);
    // Shard 0 (cases 1 and 3) is done; shard 1 has reported one case of two.
    broker_stores(&w, "eval", &report(0, 2, true, vec![passed(1), passed(3)])).await;
    broker_stores(&w, "eval", &report(1, 2, false, vec![failed(2)])).await;
    w.reconcile("eval").await;
    let st = status(&w.stored("eval"));
    assert_eq!(st.phase, Some(EvalPhase::Running), "one shard is not done");
    assert_eq!(st.progress.as_ref().map(|p| p.display.as_str()), Some("3/4"));
    assert_eq!(st.summary.as_ref().map(|s| (s.passed, s.failed)), Some((2, 1)));

    // A tenant writes shard 1's "done" report itself: without the broker's MAC it is ignored.
    let forged: ConfigMap = serde_json::from_value(json!({
        "metadata": {
            "name": "eval-results-1-0", "namespace": NS,
            "labels": { EVALJOB_UID: w.stored("eval").uid(), "app.kubernetes.io/component": results::RESULTS_COMPONENT },
            "annotations": { results::SHARD_ANNOTATION: "1/2/done", results::MAC_ANNOTATION: "00" },
        },
        "data": { results::RESULTS_FILE: format!("{}\n{}\n", serde_json::to_string(&passed(2)).unwrap_or_default(),
            serde_json::to_string(&passed(4)).unwrap_or_default()) },
    }))
    .expect("forged ConfigMap");
    w.api.put(&forged);
    w.reconcile("eval").await;
    let st = status(&w.stored("eval"));
    assert_eq!(st.phase, Some(EvalPhase::Running), "a forged 'done' finishes nothing");
    assert_eq!(st.progress.as_ref().map(|p| p.display.as_str()), Some("2/4"), "the forged shard is not counted");
    assert_eq!(cond(&st, RESULTS_TRUSTED), pair("False", "ForgedResultsIgnored"));
    w.api.event("eval", "ForgedResultsIgnored", "eval-results-1-0").await;

    // The broker stores shard 1's last report over it: both shards fold into one summary.
    broker_stores(&w, "eval", &report(1, 2, true, vec![failed(2), passed(4)])).await;
    w.api.take_calls();
    w.reconcile("eval").await;
    let calls = w.api.take_calls();
    // Results are listed as metadata, then read one by one, only under the names the broker uses.
    let list = calls.iter().find(|c| c.method == "GET" && c.path == CONFIGMAPS).expect("list");
    assert!(list.query.contains(&format!("{EVALJOB_UID}=")), "{}", list.query);
    let reads: Vec<&str> =
        calls.iter().filter(|c| c.method == "GET" && c.path != CONFIGMAPS).map(|c| c.path.as_str()).collect();
    assert_eq!(reads, [format!("{CONFIGMAPS}/eval-results-0-0"), format!("{CONFIGMAPS}/eval-results-1-0")]);
    let st = status(&w.stored("eval"));
    assert_eq!(st.phase, Some(EvalPhase::Succeeded));
    assert_eq!(st.progress.as_ref().map(|p| p.display.as_str()), Some("4/4"));
    let summary = st.summary.clone().expect("summary");
    assert_eq!((summary.passed, summary.failed, summary.errored), (3, 1, 0));
    let per_scorer: Vec<(String, i64, i64)> =
        summary.scorers.iter().map(|s| (s.name.clone(), s.passed, s.failed)).collect();
    assert_eq!(per_scorer, [("contains".to_string(), 4, 0), ("json".to_string(), 3, 1)]);
    assert_eq!(st.usage.map(|u| u.input_tokens), Some(400));
    assert_eq!(
        st.results_ref.map(|r| r.config_maps),
        Some(vec!["eval-junit".into(), "eval-results-0-0".into(), "eval-results-1-0".into()])
    );
    let junit: ConfigMap = w.api.get(NS, "eval-junit").expect("junit");
    let xml = junit.data.as_ref().and_then(|d| d.get("junit.xml")).expect("junit.xml");
    assert_eq!(xml.matches("<testcase").count(), 8, "every shard's cases, once per scorer");
}

#[tokio::test]
async fn the_judge_pod_gets_its_key_once_and_its_report_finishes_the_run() {
    let mut w = Evals::new();
    let key = ready_default_key("openai", "sk-proj-");
    let key = w.api.put(&key);
    w.keys.apply(key.clone());
    w.create("eval", judge_spec(2));
    w.reconcile("eval").await;
    w.sync_jobs();
    let mut b = Broker::new(&w);
    let plaintext = "sk-proj-fast-broker-0123456789abcdef";
    b.seal(&w, &key, plaintext);
    let job: Job = w.api.get(NS, "eval-judge").expect("judge Job");
    let pod = w.api.put(&judge_pod(&job, 0, "pod-uid-0", "10.0.0.7"));
    let pod_name = pod.name_any();
    let from_pod = [10, 0, 0, 7];
    let token = b.token(wire::KEY_AUDIENCE, &pod_name, "pod-uid-0");
    let ask = json!({ "podUid": "pod-uid-0" });
    let reason = |answer: &serde_json::Value| answer["reason"].as_str().unwrap_or_default().to_string();

    // Refusals, each with its own reason, before anything is granted.
    let (code, answer) = b.post(wire::KEY_PATH, None, from_pod, ask.clone()).await;
    assert_eq!((code, reason(&answer)), (401, "MissingToken".into()));
    let unknown = format!("{}x", b.token(wire::KEY_AUDIENCE, &pod_name, "pod-uid-0"));
    let (code, answer) = b.post(wire::KEY_PATH, Some(&unknown), from_pod, ask.clone()).await;
    assert_eq!((code, reason(&answer)), (401, "InvalidToken".into()), "the API server did not accept it");
    let results_token = b.token(wire::RESULTS_AUDIENCE, &pod_name, "pod-uid-0");
    let (code, answer) = b.post(wire::KEY_PATH, Some(&results_token), from_pod, ask.clone()).await;
    assert_eq!((code, reason(&answer)), (401, "WrongAudience".into()));
    let (code, answer) = b.post(wire::KEY_PATH, Some(&token), from_pod, json!({ "podUid": "other" })).await;
    assert_eq!((code, reason(&answer)), (403, "ReplayFromOtherPod".into()));
    let (code, answer) = b.post(wire::KEY_PATH, Some(&token), [10, 0, 0, 99], ask.clone()).await;
    assert_eq!((code, reason(&answer)), (403, "NotFromPodAddress".into()));
    b.reviews.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let (code, answer) = b.post(wire::KEY_PATH, Some(&token), from_pod, ask.clone()).await;
    assert_eq!((code, reason(&answer)), (503, "Unavailable".into()), "no TokenReview, no answer but 'retry'");
    b.reviews.down.store(false, std::sync::atomic::Ordering::SeqCst);
    let grants = |w: &Evals| w.api.list::<ConfigMap>(OPERATOR_NS).len();
    assert_eq!(grants(&w), 0);

    // The pod's own request: its key, once, recorded.
    w.api.take_calls();
    let (code, answer) = b.post(wire::KEY_PATH, Some(&token), from_pod, ask.clone()).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["key"], plaintext);
    assert_eq!(answer["keyPrefix"], &plaintext[..8]);
    let calls = w.api.take_calls();
    let asked = b.reviews.asked.lock().expect("reviews").last().cloned();
    assert_eq!(asked.as_deref(), Some(wire::KEY_AUDIENCE), "TokenReview for the key audience");
    assert!(!calls.iter().any(|c| c.path.ends_with("tokenreviews")), "through the broker's TokenReviewer");
    assert_eq!(changes(&calls), [format!("POST /api/v1/namespaces/{OPERATOR_NS}/configmaps")], "the grant record");
    assert!(!calls.iter().any(|c| c.body.to_string().contains(plaintext)), "the key never goes to the API server");
    let record: ConfigMap = w.api.get(OPERATOR_NS, "byok-grant-pod-uid-0").expect("grant record");
    let data = record.data.expect("record data");
    assert_eq!(
        (data["pod"].as_str(), data["byokKey"].as_str(), data["peer"].as_str()),
        (pod_name.as_str(), "openai", "10.0.0.7")
    );

    // Asked again (the same token, the same pod): refused and reported on the EvalJob.
    let (code, answer) = b.post(wire::KEY_PATH, Some(&token), from_pod, ask).await;
    assert_eq!((code, reason(&answer)), (403, "KeyAlreadyGranted".into()));
    w.api.event("eval", "KeyRequestedTwice", &pod_name).await;

    // The judge's report: stored, signed, and the next reconcile finishes the run.
    let report = report(
        0,
        2,
        true,
        vec![result(1, &[("llm_judge", Outcome::Passed, 0.8)]), result(2, &[("llm_judge", Outcome::Passed, 0.6)])],
    );
    let report = wire::ResultsReport { pod_uid: "pod-uid-0".into(), ..report };
    let (code, answer) = b.post(wire::RESULTS_PATH, Some(&token), from_pod, json!(report)).await;
    assert_eq!((code, reason(&answer)), (401, "WrongAudience".into()), "a key token does not report results");
    let (code, answer) = b.post(wire::RESULTS_PATH, Some(&results_token), from_pod, json!(report)).await;
    assert_eq!((code, answer), (200, json!({ "keyRevoked": false })));
    let stored: ConfigMap = w.api.get(NS, "eval-results-0-0").expect("results ConfigMap");
    let ej = w.stored("eval");
    assert!(w.mac.verify(&stored, &ej.uid().expect("uid")), "signed by the broker");
    w.reconcile("eval").await;
    let st = status(&w.stored("eval"));
    assert_eq!(st.phase, Some(EvalPhase::Succeeded));
    assert_eq!(st.summary.map(|s| (s.passed, s.failed)), Some((2, 0)));
}
