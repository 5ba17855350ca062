//! The live smoke test: one provider key, validated exactly as the operator validates a ByokKey,
//! then a three-case `llm_judge` evaluation scored by the judge pod's own code ([`run_shard`]),
//! with the results kept in-process instead of going to the broker.
//!
//! `byok-judge smoke` runs it and prints the [`SmokeRow`] as one JSON line; `hack/live-smoke.sh`
//! runs that per provider key found in the environment and prints the rows with [`render_table`].
//! Nothing here returns, logs or prints more of the key than its 8-character prefix: provider
//! messages are already redacted by the provider clients, and are redacted again here.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

use super::cases::{ParsedCase, parse_cases};
use super::report::{ReportError, Reporter};
use super::runner::{ReportPacing, ShardRun, run_shard};
use super::wire::{CaseResult, JudgeConfig, Outcome, ResultsAck, ResultsReport};
use crate::crd::{AzureSpec, Provider, Scorer, ScorerType};
use crate::providers::{self, CheckOutcome, Endpoints, KeyCheck, ModelTable, models};

/// The environment variable `byok-judge smoke` reads the key from (never argv: `ps` shows argv).
pub const KEY_ENV: &str = "BYOK_SMOKE_KEY";
/// How much of the key may ever be shown, as everywhere else in the product.
pub const KEY_PREFIX_CHARS: usize = 8;
/// Ids of the three fixed cases, in order: a clearly right answer, a clearly wrong one, and a
/// correct but incomplete one (a human reading the scores expects high, low, in between).
pub const CASE_IDS: [&str; 3] = ["right", "wrong", "borderline"];
/// The llm_judge rubric of the smoke cases.
pub const RUBRIC: &str = "Judge whether the output correctly and completely answers the input, using the expected \
answer as the reference. Score 1 for a fully correct and complete answer, 0 for a wrong answer, and in between for \
an answer that is correct but incomplete.";
/// The EvalJob default of `retries` and the operator's per-call timeout (src/controller/evaljob).
const RETRIES: u32 = 2;
const CALL_TIMEOUT_SECONDS: u64 = 60;

/// Why a smoke run could not even start. Provider failures are not errors: they are in the row.
#[derive(Debug, thiserror::Error)]
pub enum SmokeError {
    #[error("the key is empty")]
    EmptyKey,
    #[error("cannot build the provider HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    #[error("the judge finished without a final report")]
    NoFinalReport,
}

/// One provider's smoke result: what `byok-judge smoke` prints as a JSON line.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SmokeRow {
    pub provider: Provider,
    pub model: String,
    /// The first [`KEY_PREFIX_CHARS`] characters of the key, no more.
    pub key_prefix: String,
    pub validation: ValidationRow,
    /// The three cases, in [`CASE_IDS`] order.
    pub cases: Vec<CaseRow>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub validation_ms: u64,
    pub eval_ms: u64,
    /// Validation said Valid and no case errored.
    pub ok: bool,
}

/// How key validation came out.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ValidationRow {
    /// [`CheckOutcome::reason_str`]: `Valid`, `Unauthorized`, `ModelNotFound`, ...
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// The provider's message (redacted), or the note of a valid key (a restricted key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The model is deprecated or retired (the provider's word, or the dated table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<String>,
}

/// How one case came out.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CaseRow {
    pub id: String,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Why it errored (`Reason: detail`); errored cases only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl SmokeRow {
    /// Cases passed, failed and errored.
    pub fn counts(&self) -> (usize, usize, usize) {
        let count = |outcome| self.cases.iter().filter(|c| c.outcome == outcome).count();
        (count(Outcome::Passed), count(Outcome::Failed), count(Outcome::Errored))
    }
}

/// The part of a key that may be shown: its first [`KEY_PREFIX_CHARS`] characters, and never
/// more than half of it (a key that short is not a real key, but must not be shown whole).
pub fn key_prefix(key: &SecretString) -> String {
    let key = key.expose_secret();
    let shown = KEY_PREFIX_CHARS.min(key.chars().count() / 2);
    key.chars().take(shown).collect()
}

/// The three fixed cases, as an EvalJob's cases ConfigMap holds them (one JSON object per line).
pub const CASES_JSONL: &str = concat!(
    r#"{"id":"right","input":"What is the capital of France?","output":"The capital of France is Paris.","#,
    r#""expected":"Paris"}"#,
    "\n",
    r#"{"id":"wrong","input":"What is 12 multiplied by 12?","output":"12 multiplied by 12 is 124.","expected":"144"}"#,
    "\n",
    r#"{"id":"borderline","input":"What is the boiling point of water at sea level, in degrees Celsius and in "#,
    r#"degrees Fahrenheit?","output":"Water boils at 100 degrees Celsius at sea level.","#,
    r#""expected":"100 degrees Celsius, which is 212 degrees Fahrenheit"}"#,
    "\n",
);

/// The scorer of the smoke cases.
pub fn scorer() -> Scorer {
    Scorer { rubric: Some(RUBRIC.into()), ..Scorer::of(ScorerType::LlmJudge) }
}

/// Keeps the reports the judge would send to the broker, and accepts them all.
#[derive(Default)]
pub struct LocalReporter {
    last: Mutex<Option<ResultsReport>>,
}

impl LocalReporter {
    /// The last report received.
    pub fn into_last(self) -> Option<ResultsReport> {
        self.last.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

impl Reporter for LocalReporter {
    async fn report(&self, report: &ResultsReport) -> Result<ResultsAck, ReportError> {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(report.clone());
        Ok(ResultsAck::default())
    }
}

/// Validates `key` as the operator does, then scores the three cases as a judge pod does.
/// `model` defaults as a ByokKey's does (the built-in table; the deployment for Azure OpenAI).
/// `endpoints` are the real services by default; an Azure endpoint must then pass the allow-list.
pub async fn run(
    provider: Provider,
    key: SecretString,
    model: Option<String>,
    azure: Option<AzureSpec>,
    endpoints: Endpoints,
) -> Result<SmokeRow, SmokeError> {
    if key.expose_secret().is_empty() {
        return Err(SmokeError::EmptyKey);
    }
    let model = model.unwrap_or_else(|| ModelTable::default().model_for(provider, azure.as_ref()));
    let started = Instant::now();
    let outcome = {
        let check = KeyCheck { provider, key: &key, model: &model, azure: azure.as_ref() };
        providers::check_key(&operator_http()?, &endpoints, check).await
    };
    let validation_ms = millis(started.elapsed());
    let validation = validation_row(provider, &model, &outcome, &key);

    let config = JudgeConfig {
        panels: Default::default(),
        namespace: "byok-smoke".into(),
        eval_job: "live-smoke".into(),
        provider,
        model: model.clone(),
        azure,
        scorers: vec![scorer()],
        concurrency: 3,
        retries: RETRIES,
        call_timeout_seconds: CALL_TIMEOUT_SECONDS,
        shards: 1,
        endpoints: endpoints.into(),
    };
    let cases: Vec<ParsedCase> = parse_cases(CASES_JSONL);
    let shard =
        ShardRun { shard: 0, pod_uid: "byok-smoke".into(), http: judge_http()?, pacing: ReportPacing::default() };
    let reporter = LocalReporter::default();
    let started = Instant::now();
    let finished = run_shard(&config, &shard, Some(key.clone()), cases, &reporter).await;
    let eval_ms = millis(started.elapsed());
    let delivered = finished.delivered();
    let report = reporter.into_last().filter(|r| r.done && delivered).ok_or(SmokeError::NoFinalReport)?;

    let (cases, input_tokens, output_tokens) = case_rows(&report.results, &key);
    let ok = outcome.is_valid() && cases.len() == CASE_IDS.len() && cases.iter().all(|c| c.outcome != Outcome::Errored);
    Ok(SmokeRow {
        provider,
        model,
        key_prefix: key_prefix(&key),
        validation,
        cases,
        input_tokens,
        output_tokens,
        validation_ms,
        eval_ms,
        ok,
    })
}

/// One row per case (one scorer: its result is the case's), and the tokens spent.
fn case_rows(results: &[CaseResult], key: &SecretString) -> (Vec<CaseRow>, u64, u64) {
    let (mut input_tokens, mut output_tokens) = (0u64, 0u64);
    let rows = results
        .iter()
        .map(|result| {
            input_tokens = input_tokens.saturating_add(result.input_tokens);
            output_tokens = output_tokens.saturating_add(result.output_tokens);
            let (outcome, score, error) = match result.scores.first() {
                Some(s) if s.outcome == Outcome::Errored => (s.outcome, s.score, Some(clean(&s.reason, key))),
                Some(s) => (s.outcome, s.score, None),
                None => (Outcome::Errored, None, Some("Internal: the case has no llm_judge result".into())),
            };
            CaseRow { id: result.id.clone(), outcome, score, error }
        })
        .collect();
    (rows, input_tokens, output_tokens)
}

/// The operator's provider client (src/operator/start.rs).
fn operator_http() -> Result<reqwest::Client, SmokeError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("byok-operator/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(SmokeError::HttpClient)
}

/// The judge pod's provider client (src/bin/byok-judge.rs).
fn judge_http() -> Result<reqwest::Client, SmokeError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(SmokeError::HttpClient)
}

fn validation_row(provider: Provider, model: &str, outcome: &CheckOutcome, key: &SecretString) -> ValidationRow {
    let (http_status, message, reported) = match outcome {
        CheckOutcome::Valid { http_status, note, lifecycle, .. } => {
            (Some(*http_status), note.as_deref(), lifecycle.as_ref())
        }
        CheckOutcome::Invalid { http_status, message, .. }
        | CheckOutcome::ModelUnavailable { http_status, message, .. } => {
            // 0: no request was made (malformed key, misconfigured Azure spec).
            (Some(*http_status).filter(|s| *s != 0), Some(message.as_str()), None)
        }
        CheckOutcome::Unknown { http_status, message, .. } => (*http_status, Some(message.as_str()), None),
    };
    let lifecycle = models::notice(provider, model, models::today(), reported).map(|n| n.to_string());
    ValidationRow {
        reason: outcome.reason_str().to_string(),
        http_status,
        message: message.map(|m| clean(m, key)).filter(|m| !m.is_empty()),
        lifecycle,
    }
}

/// Redacted again (the provider clients already did), on one line.
fn clean(text: &str, key: &SecretString) -> String {
    providers::sanitize(text, key.expose_secret())
}

fn millis(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

/// A line of the script's results: a smoke row, or a provider that has none.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum TableLine {
    Row(Box<SmokeRow>),
    Note(NoteRow),
}

/// A provider without a smoke row: skipped (no key), or failed before one could be made.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NoteRow {
    /// The provider name as the script knows it.
    pub provider: String,
    #[serde(default)]
    pub skipped: bool,
    pub message: String,
}

impl TableLine {
    /// Whether this line fails the smoke test.
    pub fn failed(&self) -> bool {
        match self {
            Self::Row(row) => !row.ok,
            Self::Note(note) => !note.skipped,
        }
    }
}

/// The table `hack/live-smoke.sh` prints, then the details worth reading (messages, errors,
/// lifecycle notices), then a verdict line. Returns the text and whether any provider failed.
pub fn render_table(lines: &[TableLine]) -> (String, bool) {
    const HEADER: [&str; 8] = [
        "provider",
        "model",
        "key prefix",
        "validation",
        "cases (pass/fail/error)",
        "scores (right/wrong/borderline)",
        "tokens (in/out)",
        "time",
    ];
    let cells: Vec<[String; 8]> = lines.iter().map(cells).collect();
    let mut widths = HEADER.map(str::len);
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, row: &[String]| {
        let padded: Vec<String> = row.iter().zip(widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        let _ = writeln!(out, "| {} |", padded.join(" | "));
    };
    line(&mut out, &HEADER.map(String::from));
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    let _ = writeln!(out, "|-{}-|", rule.join("-|-"));
    for row in &cells {
        line(&mut out, row);
    }
    let mut details = String::new();
    for entry in lines {
        details_of(entry, &mut details);
    }
    if !details.is_empty() {
        out.push('\n');
        out.push_str(&details);
    }
    let failed: Vec<String> = lines.iter().filter(|l| l.failed()).map(provider_name).collect();
    let checked = lines.iter().filter(|l| !matches!(l, TableLine::Note(n) if n.skipped)).count();
    out.push('\n');
    if failed.is_empty() {
        let _ = writeln!(out, "OK: {checked} provider(s) checked, none failed");
    } else {
        let _ = writeln!(out, "FAILED: {} of {checked} provider(s): {}", failed.len(), failed.join(", "));
    }
    (out, !failed.is_empty())
}

fn provider_name(line: &TableLine) -> String {
    match line {
        TableLine::Row(row) => row.provider.to_string(),
        TableLine::Note(note) => note.provider.clone(),
    }
}

fn cells(line: &TableLine) -> [String; 8] {
    match line {
        TableLine::Row(row) => {
            let (passed, failed, errored) = row.counts();
            let scores: Vec<String> = row
                .cases
                .iter()
                .map(|c| match (c.outcome, c.score) {
                    (Outcome::Errored, _) => "error".to_string(),
                    (_, Some(score)) => format!("{score:.2}"),
                    (_, None) => "-".to_string(),
                })
                .collect();
            let seconds = row.validation_ms.saturating_add(row.eval_ms) as f64 / 1000.0;
            [
                row.provider.to_string(),
                row.model.clone(),
                format!("{}...", row.key_prefix),
                row.validation.reason.clone(),
                format!("{passed}/{failed}/{errored}"),
                scores.join("/"),
                format!("{}/{}", row.input_tokens, row.output_tokens),
                format!("{seconds:.1} s"),
            ]
        }
        TableLine::Note(note) => {
            let what = if note.skipped { "SKIPPED" } else { "FAILED" };
            let dash = || "-".to_string();
            [note.provider.clone(), dash(), dash(), what.to_string(), dash(), dash(), dash(), dash()]
        }
    }
}

fn details_of(line: &TableLine, out: &mut String) {
    match line {
        TableLine::Row(row) => {
            let provider = row.provider;
            let v = &row.validation;
            if let Some(message) = &v.message {
                let status = v.http_status.map_or(String::new(), |s| format!(" (HTTP {s})"));
                let _ = writeln!(out, "{provider}: validation {}{status}: {message}", v.reason);
            } else if v.reason != "Valid" {
                let _ = writeln!(out, "{provider}: validation {}", v.reason);
            }
            if let Some(lifecycle) = &v.lifecycle {
                let _ = writeln!(out, "{provider}: {lifecycle}");
            }
            for case in &row.cases {
                if let Some(error) = &case.error {
                    let _ = writeln!(out, "{provider}: case {} errored: {error}", case.id);
                }
            }
            if row.cases.len() != CASE_IDS.len() {
                let _ = writeln!(out, "{provider}: {} case result(s), expected {}", row.cases.len(), CASE_IDS.len());
            }
        }
        TableLine::Note(note) => {
            let what = if note.skipped { "skipped" } else { "failed" };
            let _ = writeln!(out, "{}: {what}: {}", note.provider, note.message);
        }
    }
}
