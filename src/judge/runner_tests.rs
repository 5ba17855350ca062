//! Runner tests against the in-process mock provider, with an in-memory reporter.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use secrecy::SecretString;

use super::*;
use crate::crd::{Provider, Scorer, ScorerType};
use crate::judge::cases::parse_cases;
use crate::judge::wire::Outcome;
use crate::mock::{self, MockConfig, MockHandle};

/// Records reports; fails the first `fail_first` calls, optionally refuses, says "revoked" from
/// report number `revoke_from` (1-based) on.
#[derive(Default)]
struct MemoryReporter {
    reports: Mutex<Vec<ResultsReport>>,
    calls: AtomicU32,
    fail_first: u32,
    refuse: bool,
    revoke_from: Option<u32>,
}

impl Reporter for MemoryReporter {
    async fn report(&self, report: &ResultsReport) -> Result<ResultsAck, ReportError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.refuse {
            return Err(ReportError::Refused { status: 403, reason: "JobFinished".into(), message: "no".into() });
        }
        if call <= self.fail_first {
            return Err(ReportError::Unavailable("HTTP 503".into()));
        }
        self.reports.lock().unwrap().push(report.clone());
        Ok(ResultsAck { key_revoked: self.revoke_from.is_some_and(|from| call >= from), revoked_panel_keys: vec![] })
    }
}

fn scorer(type_: ScorerType) -> Scorer {
    Scorer::of(type_)
}

fn llm_judge() -> Scorer {
    Scorer { rubric: Some("Is the answer right?".into()), ..scorer(ScorerType::LlmJudge) }
}

fn config(mock: &MockHandle, scorers: Vec<Scorer>, concurrency: u32) -> JudgeConfig {
    let endpoints = mock.endpoints();
    JudgeConfig {
        panels: Default::default(),
        namespace: "ns".into(),
        eval_job: "ej".into(),
        provider: Provider::OpenAi,
        model: "gpt-4o".into(),
        azure: None,
        scorers,
        concurrency,
        retries: 2,
        call_timeout_seconds: 10,
        shards: 1,
        endpoints: endpoints.into(),
    }
}

fn fast_pacing() -> ReportPacing {
    ReportPacing {
        interval: Duration::from_millis(50),
        batch: 5,
        progress_attempts: 2,
        final_attempts: 4,
        backoff: RetryPolicy {
            max_retries: 0,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
        },
    }
}

fn shard() -> ShardRun {
    ShardRun { shard: 0, pod_uid: "uid-1".into(), http: reqwest::Client::new(), pacing: fast_pacing() }
}

fn jsonl(outputs: &[&str]) -> String {
    outputs.iter().map(|o| serde_json::json!({"input": "q", "output": o, "expected": "x"}).to_string() + "\n").collect()
}

fn key(value: &str) -> Option<SecretString> {
    Some(SecretString::from(value))
}

#[tokio::test]
async fn scores_every_case_with_every_scorer() {
    let mock = mock::start(MockConfig::default()).await.unwrap();
    let scorers = vec![llm_judge(), scorer(ScorerType::JsonValid)];
    let cases = parse_cases(&(jsonl(&["mock-score=0.9", "mock-score=0.2"]) + "{broken\n"));
    let reporter = MemoryReporter::default();
    let outcome = run_shard(&config(&mock, scorers, 4), &shard(), key("sk-good"), cases, &reporter).await;

    assert!(outcome.delivered());
    assert!(!outcome.key_revoked);
    let lines: Vec<u32> = outcome.results.iter().map(|r| r.line).collect();
    assert_eq!(lines, [1, 2, 3]);
    let [pass, fail, broken] = &outcome.results[..] else { panic!() };
    assert_eq!((pass.scores[0].outcome, pass.scores[0].score), (Outcome::Passed, Some(0.9)));
    assert_eq!((fail.scores[0].outcome, fail.scores[0].score), (Outcome::Failed, Some(0.2)));
    assert_eq!(pass.scores[1].outcome, Outcome::Failed); // "mock-score=0.9" is not JSON
    assert!(pass.input_tokens > 0 && pass.output_tokens > 0);
    for score in &broken.scores {
        assert_eq!(score.outcome, Outcome::Errored);
        assert!(score.reason.starts_with("MalformedCase: line 3: "), "{}", score.reason);
    }
    assert_eq!(broken.input_tokens, 0);
    assert_eq!(mock.requests_for_key("sk-good"), 2);
    let reports = reporter.reports.lock().unwrap();
    let last = reports.last().unwrap();
    assert!(last.done && last.total == 3 && last.results == outcome.results && last.pod_uid == "uid-1");
}

#[tokio::test]
async fn no_key_errors_llm_judge_only() {
    let mock = mock::start(MockConfig::default()).await.unwrap();
    let scorers = vec![llm_judge(), scorer(ScorerType::Contains)];
    let cases = parse_cases(&jsonl(&["has x"]));
    let outcome = run_shard(&config(&mock, scorers, 1), &shard(), None, cases, &MemoryReporter::default()).await;
    let scores = &outcome.results[0].scores;
    assert_eq!((scores[0].outcome, scores[0].reason.as_str()), (Outcome::Errored, NO_KEY_REASON));
    assert_eq!(scores[1].outcome, Outcome::Passed);
    assert_eq!(mock.requests_total(), 0);
}

#[tokio::test]
async fn provider_failures_error_the_case_with_their_reason() {
    let mock = mock::start(MockConfig::default()).await.unwrap();
    let cases = parse_cases(&jsonl(&["a", "b", "c"]));
    let config = config(&mock, vec![llm_judge(), scorer(ScorerType::JsonValid)], 2);
    let outcome = run_shard(&config, &shard(), key("sk-quota"), cases, &MemoryReporter::default()).await;
    for result in &outcome.results {
        assert!(result.scores[0].reason.starts_with("QuotaExhausted: "), "{}", result.scores[0].reason);
        assert_eq!(result.scores[1].outcome, Outcome::Failed);
    }
    // Quota exhaustion is never retried.
    assert_eq!(mock.requests_for_key("sk-quota"), 3);
}

#[tokio::test]
async fn revocation_stops_provider_calls() {
    let mock = mock::start(MockConfig { latency: Duration::from_millis(40), ..MockConfig::default() }).await.unwrap();
    let outputs: Vec<String> = (0..60).map(|i| format!("case {i} mock-score=0.9")).collect();
    let cases = parse_cases(&jsonl(&outputs.iter().map(String::as_str).collect::<Vec<_>>()));
    let reporter = MemoryReporter { revoke_from: Some(1), ..MemoryReporter::default() };
    let outcome = run_shard(&config(&mock, vec![llm_judge()], 2), &shard(), key("sk-good"), cases, &reporter).await;

    assert!(outcome.key_revoked && outcome.delivered());
    let revoked = outcome.results.iter().filter(|r| r.scores[0].reason == KEY_REVOKED_REASON).count() as u64;
    let judged = outcome.results.iter().filter(|r| r.scores[0].outcome == Outcome::Passed).count() as u64;
    assert!(revoked > 0 && judged > 0, "revoked {revoked}, judged {judged}");
    assert_eq!(revoked + judged, 60);
    // Calls cancelled by the revocation were sent but not counted as judged: at most `concurrency`.
    let requests = mock.requests_for_key("sk-good");
    assert!(requests >= judged && requests <= judged + 2, "requests {requests}, judged {judged}");
}

#[tokio::test]
async fn report_failures_are_retried_and_refusals_are_not() {
    let mock = mock::start(MockConfig::default()).await.unwrap();
    let config = config(&mock, vec![scorer(ScorerType::JsonValid)], 4);
    let flaky = MemoryReporter { fail_first: 2, ..MemoryReporter::default() };
    let outcome = run_shard(&config, &shard(), None, parse_cases(&jsonl(&["{}"])), &flaky).await;
    assert!(outcome.delivered());
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 3);

    let down = MemoryReporter { fail_first: u32::MAX, ..MemoryReporter::default() };
    let outcome = run_shard(&config, &shard(), None, parse_cases(&jsonl(&["{}"])), &down).await;
    assert!(matches!(outcome.final_report, Err(ReportError::Unavailable(_))));
    assert_eq!(down.calls.load(Ordering::SeqCst), fast_pacing().final_attempts);
    assert_eq!(outcome.results.len(), 1);

    let refusing = MemoryReporter { refuse: true, ..MemoryReporter::default() };
    let outcome = run_shard(&config, &shard(), None, parse_cases(&jsonl(&["{}"])), &refusing).await;
    assert!(matches!(outcome.final_report, Err(ReportError::Refused { .. })));
    assert_eq!(refusing.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn progress_is_reported_while_scoring() {
    let mock = mock::start(MockConfig { latency: Duration::from_millis(20), ..MockConfig::default() }).await.unwrap();
    let outputs = vec!["mock-score=0.7"; 30];
    let reporter = MemoryReporter::default();
    let outcome = run_shard(
        &config(&mock, vec![llm_judge()], 2),
        &shard(),
        key("sk-good"),
        parse_cases(&jsonl(&outputs)),
        &reporter,
    )
    .await;
    assert!(outcome.progress_reports >= 2, "{}", outcome.progress_reports);
    let reports = reporter.reports.lock().unwrap();
    // Cumulative and growing; only the last one is done.
    assert!(reports.windows(2).all(|w| w[0].results.len() <= w[1].results.len()));
    assert!(reports.iter().rev().skip(1).all(|r| !r.done && r.total == 30));
    assert_eq!(reports.last().unwrap().results.len(), 30);
}
