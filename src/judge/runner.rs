//! Runs one shard: every scorer on every case, llm_judge calls with bounded concurrency, progress
//! reports to the broker while scoring, and a final report that must arrive.
//!
//! Everything runs in one task: cases are streamed through `buffer_unordered(concurrency)`, so at
//! most `concurrency` cases (and provider calls; a panel's judges share another `concurrency`
//! permits) exist at once however large the suite, and the
//! progress reporter is joined with the scoring stream so a slow broker never stalls scoring.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use secrecy::SecretString;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::cases::{CaseBody, ParsedCase};
use super::panel::{self, JudgeVerdict};
use super::report::deliver;
pub use super::report::{ReportError, ReportPacing, Reporter};
use super::scorers::{self, JUDGE_SYSTEM_PROMPT, PreparedScorer, ScorerKind};
use super::wire::{CaseResult, JudgeConfig, PanelConfig, PanelJudgeConfig, ResultsAck, ResultsReport, ScoreResult};
use crate::crd::EvalCase;
use crate::providers::{self, Endpoints, JudgeRequest, RetryPolicy, Usage};

/// Reason of llm_judge results when the judge was given no key.
pub const NO_KEY_REASON: &str = "NoKey: the judge has no provider key (llm_judge needs one)";
/// Reason of llm_judge results not yet judged when the key was revoked.
pub const KEY_REVOKED_REASON: &str = "KeyRevoked: the ByokKey was revoked during the run";
/// Reason of a panel judge's verdicts when the broker did not hand out its key.
pub const KEY_NOT_GRANTED_REASON: &str = "KeyNotGranted: the key broker did not hand out this judge's key";

/// The keys a shard judges with: the EvalJob's, and the panel judges' by ByokKey name.
#[derive(Default)]
pub struct JudgeKeys {
    pub main: Option<SecretString>,
    pub panel: BTreeMap<String, SecretString>,
}

impl From<Option<SecretString>> for JudgeKeys {
    fn from(main: Option<SecretString>) -> Self {
        Self { main, panel: BTreeMap::new() }
    }
}

/// Output budget of one verdict. Generous because thinking models (Gemini 2.5 Pro) spend part of
/// it before answering; only the tokens used are billed.
pub const MAX_VERDICT_TOKENS: u32 = 2048;

/// Who this shard is and how it talks to providers.
#[derive(Clone, Debug)]
pub struct ShardRun {
    pub shard: u32,
    pub pod_uid: String,
    /// Client for provider calls.
    pub http: reqwest::Client,
    pub pacing: ReportPacing,
}

/// What a shard run produced.
#[derive(Debug)]
pub struct ShardOutcome {
    /// Every case's results, in line order.
    pub results: Vec<CaseResult>,
    /// Whether the broker said the key was revoked during the run.
    pub key_revoked: bool,
    /// Progress reports accepted (the final one not included).
    pub progress_reports: u32,
    /// The broker's answer to the final report.
    pub final_report: Result<ResultsAck, ReportError>,
}

impl ShardOutcome {
    pub fn delivered(&self) -> bool {
        self.final_report.is_ok()
    }
}

/// Set once the broker says the key was revoked; wakes the calls in flight so they stop.
#[derive(Default)]
struct Revocation {
    revoked: AtomicBool,
    notify: Notify,
}

impl Revocation {
    fn revoke(&self) {
        self.revoked.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::SeqCst)
    }

    async fn revoked(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Register before checking the flag, so a revoke in between is not missed.
            notified.as_mut().enable();
            if self.is_revoked() {
                return;
            }
            notified.await;
        }
    }
}

/// Scores one shard's cases and reports the results. Never panics on case data; provider and
/// broker failures end up in results or in `final_report`.
pub async fn run_shard(
    config: &JudgeConfig,
    run: &ShardRun,
    keys: impl Into<JudgeKeys>,
    cases: Vec<ParsedCase>,
    reporter: &impl Reporter,
) -> ShardOutcome {
    let keys = keys.into();
    let total = u32::try_from(cases.len()).unwrap_or(u32::MAX);
    let judge = CaseJudge {
        config,
        endpoints: endpoints(config),
        http: &run.http,
        key: keys.main.as_ref(),
        panel_keys: &keys.panel,
        scorers: scorers::prepare_all(&config.scorers),
        policy: RetryPolicy { max_retries: config.retries, ..RetryPolicy::default() },
        timeout: Duration::from_secs(config.call_timeout_seconds.max(1)),
        revocation: Revocation::default(),
        panel_revocations: keys.panel.keys().map(|name| (name.clone(), Revocation::default())).collect(),
        panel_calls: tokio::sync::Semaphore::new(usize::try_from(config.concurrency.max(1)).unwrap_or(1)),
    };
    let finished = Finished::default();
    let snapshot = |done: bool| ResultsReport {
        pod_uid: run.pod_uid.clone(),
        shard: run.shard,
        total,
        done,
        results: finished.sorted(),
    };

    let concurrency = usize::try_from(config.concurrency.max(1)).unwrap_or(1);
    let scoring = async {
        let mut stream = futures::stream::iter(cases).map(|case| judge.score_case(case)).buffer_unordered(concurrency);
        while let Some(result) = stream.next().await {
            finished.push(result);
        }
    };
    let mut progress_reports = 0;
    let progress = report_progress(reporter, &run.pacing, &snapshot, &finished, &judge, &mut progress_reports);
    // The progress loop never ends by itself: it is dropped (even mid-report) once scoring is done,
    // and the final report, which carries everything, follows.
    tokio::select! {
        biased;
        () = scoring => {}
        () = progress => {}
    }

    let report = snapshot(true);
    let final_report = deliver(reporter, &report, run.pacing.final_attempts, &run.pacing.backoff).await;
    match &final_report {
        Ok(_) => tracing::info!(cases = report.results.len(), "final report accepted"),
        Err(error) => tracing::error!(%error, "final report not delivered"),
    }
    ShardOutcome { results: report.results, key_revoked: judge.revocation.is_revoked(), progress_reports, final_report }
}

/// Sends a progress report every `pacing.batch` results (at most four per interval) or every
/// `pacing.interval`, whichever comes first, and stops provider calls when the broker says the key was revoked. Never returns: it is
/// dropped once scoring is done.
async fn report_progress(
    reporter: &impl Reporter,
    pacing: &ReportPacing,
    snapshot: &impl Fn(bool) -> ResultsReport,
    finished: &Finished,
    judge: &CaseJudge<'_>,
    reports: &mut u32,
) {
    let (mut reported, mut last) = (0usize, Instant::now());
    loop {
        let completed = finished.len();
        let since = last.elapsed();
        // A batch goes out early, but no sooner than a quarter interval after the last report:
        // each report carries every result so far, and at hundreds of cases a second a report
        // per batch would spend the pod's CPU serialising them.
        let batch_due = completed >= reported + pacing.batch && since >= pacing.interval / 4;
        if completed > reported && (batch_due || since >= pacing.interval) {
            let report = snapshot(false);
            (reported, last) = (completed, Instant::now());
            match deliver(reporter, &report, pacing.progress_attempts, &pacing.backoff).await {
                Ok(ack) => {
                    *reports += 1;
                    tracing::info!(completed, total = report.total, "progress reported");
                    judge.revoke(&ack);
                }
                Err(error) => tracing::warn!(%error, "progress report lost; the next one carries it"),
            }
            continue;
        }
        let wait = match (completed >= reported + pacing.batch, completed > reported) {
            (true, _) => (pacing.interval / 4).saturating_sub(since),
            (false, true) => pacing.interval.saturating_sub(since),
            (false, false) => pacing.interval,
        };
        tokio::select! {
            () = finished.changed.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Provider base URLs from the config; an empty one means the provider's public endpoint.
fn endpoints(config: &JudgeConfig) -> Endpoints {
    let defaults = Endpoints::default();
    let or = |url: &str, default: String| if url.trim().is_empty() { default } else { url.to_string() };
    Endpoints {
        openai: or(&config.endpoints.openai, defaults.openai),
        anthropic: or(&config.endpoints.anthropic, defaults.anthropic),
        google: or(&config.endpoints.google, defaults.google),
        azure: config.endpoints.azure.clone().filter(|url| !url.trim().is_empty()),
        // The judge checks the endpoint again: an empty list allows nothing but the defaults.
        azure_allowed_hosts: if config.endpoints.azure_allowed_hosts.is_empty() {
            defaults.azure_allowed_hosts
        } else {
            config.endpoints.azure_allowed_hosts.clone()
        },
    }
}

/// Results finished so far, and a signal for the progress loop.
#[derive(Default)]
struct Finished {
    results: Mutex<Vec<CaseResult>>,
    changed: Notify,
}

impl Finished {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<CaseResult>> {
        // Only this task touches the lock, so poisoning cannot carry a broken invariant.
        self.results.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, result: CaseResult) {
        self.lock().push(result);
        self.changed.notify_one();
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn sorted(&self) -> Vec<CaseResult> {
        let mut results = self.lock().clone();
        results.sort_by_key(|r| r.line);
        results
    }
}

/// Scores cases: what every case future shares.
struct CaseJudge<'a> {
    config: &'a JudgeConfig,
    endpoints: Endpoints,
    http: &'a reqwest::Client,
    key: Option<&'a SecretString>,
    panel_keys: &'a BTreeMap<String, SecretString>,
    scorers: Vec<PreparedScorer>,
    policy: RetryPolicy,
    timeout: Duration,
    revocation: Revocation,
    /// One per panel key: revoking one stops only its judges.
    panel_revocations: BTreeMap<String, Revocation>,
    /// Panel judges' calls in flight, at most `concurrency` however many judges a panel has (the
    /// cases in flight are bounded by it too).
    panel_calls: tokio::sync::Semaphore,
}

impl CaseJudge<'_> {
    /// Stops the calls with the keys the broker says were revoked.
    fn revoke(&self, ack: &ResultsAck) {
        if ack.key_revoked && !self.revocation.is_revoked() {
            tracing::warn!("the broker says the key was revoked: no more provider calls");
            self.revocation.revoke();
        }
        for name in &ack.revoked_panel_keys {
            if let Some(revocation) = self.panel_revocations.get(name).filter(|r| !r.is_revoked()) {
                tracing::warn!(byokkey = %name, "the broker says a panel key was revoked: its judges stop");
                revocation.revoke();
            }
        }
    }

    /// Runs every scorer on the case, in scorer order. A malformed case errors in every scorer.
    async fn score_case(&self, entry: ParsedCase) -> CaseResult {
        let mut result = CaseResult {
            id: entry.id,
            line: entry.line,
            scores: Vec::with_capacity(self.scorers.len()),
            input_tokens: 0,
            output_tokens: 0,
        };
        let case = match entry.body {
            CaseBody::Case(case) => case,
            CaseBody::Malformed(message) => {
                let reason = format!("MalformedCase: line {}: {message}", entry.line);
                result.scores = self.scorers.iter().map(|s| scorers::errored(&s.name, &reason)).collect();
                return result;
            }
        };
        for scorer in &self.scorers {
            let score = match &scorer.kind {
                ScorerKind::LlmJudge { rubric, pass_threshold } => {
                    let (score, usage) = match self.config.panels.get(&scorer.name) {
                        Some(panel) => self.panel(&scorer.name, panel, rubric, *pass_threshold, &case).await,
                        None => self.llm_judge(&scorer.name, rubric, *pass_threshold, &case).await,
                    };
                    result.input_tokens += usage.input_tokens;
                    result.output_tokens += usage.output_tokens;
                    score
                }
                _ => scorer
                    .score_deterministic(&case)
                    .unwrap_or_else(|| scorers::errored(&scorer.name, "Internal: scorer kind not handled")),
            };
            result.scores.push(score);
        }
        result
    }

    /// One llm_judge verdict. A revocation cancels the call at once, retries included: a revoked
    /// key must stop being used, even if an answer was on its way.
    async fn llm_judge(&self, scorer: &str, rubric: &str, threshold: f64, case: &EvalCase) -> (ScoreResult, Usage) {
        let Some(key) = self.key else {
            return (scorers::errored(scorer, NO_KEY_REASON), Usage::default());
        };
        if self.revocation.is_revoked() {
            return (scorers::errored(scorer, KEY_REVOKED_REASON), Usage::default());
        }
        let user = scorers::judge_user_prompt(rubric, case);
        let request = JudgeRequest {
            provider: self.config.provider,
            key,
            model: &self.config.model,
            azure: self.config.azure.as_ref(),
            system: JUDGE_SYSTEM_PROMPT,
            user: &user,
            max_tokens: MAX_VERDICT_TOKENS,
            timeout: self.timeout,
        };
        tokio::select! {
            biased;
            () = self.revocation.revoked() => (scorers::errored(scorer, KEY_REVOKED_REASON), Usage::default()),
            answer = providers::judge(self.http, &self.endpoints, &request, &self.policy) => match answer {
                Ok((verdict, usage)) => (scorers::verdict_result(scorer, &verdict, threshold), usage),
                Err(error) => (scorers::errored(scorer, &format!("{}: {error}", error.reason())), Usage::default()),
            },
        }
    }
}

impl CaseJudge<'_> {
    /// A panel's verdict: every judge at once, each with its own key; a judge that cannot answer
    /// (no key, revoked, provider error) leaves the verdict to the others.
    async fn panel(
        &self,
        scorer: &str,
        panel: &PanelConfig,
        rubric: &str,
        threshold: f64,
        case: &EvalCase,
    ) -> (ScoreResult, Usage) {
        let user = scorers::judge_user_prompt(rubric, case);
        let answers = futures::future::join_all(panel.judges.iter().map(|j| self.panel_judge(j, &user))).await;
        let usage = answers.iter().fold(Usage::default(), |total, (_, u)| Usage {
            input_tokens: total.input_tokens + u.input_tokens,
            output_tokens: total.output_tokens + u.output_tokens,
        });
        let verdicts: Vec<JudgeVerdict> = answers.into_iter().map(|(v, _)| v).collect();
        let verdict = panel::aggregate(&verdicts, panel.aggregate, threshold);
        let result = ScoreResult {
            scorer: scorer.to_string(),
            outcome: verdict.outcome,
            score: verdict.score,
            reason: scorers::cap(&format!("{} | {}", verdict.reason, each_judge(&verdicts))),
            agreed: verdict.agreed,
        };
        (result, usage)
    }

    /// One panel judge's verdict on one case.
    async fn panel_judge(&self, judge: &PanelJudgeConfig, user: &str) -> (JudgeVerdict, Usage) {
        let label = judge.label();
        let none = |reason: &str| {
            (JudgeVerdict { judge: label.clone(), score: None, reason: reason.into() }, Usage::default())
        };
        let (Some(key), Some(revocation)) =
            (self.panel_keys.get(&judge.byok_key), self.panel_revocations.get(&judge.byok_key))
        else {
            return none(KEY_NOT_GRANTED_REASON);
        };
        let Ok(_call) = self.panel_calls.acquire().await else { return none("Internal: the call limit closed") };
        if revocation.is_revoked() {
            return none(KEY_REVOKED_REASON);
        }
        let request = JudgeRequest {
            provider: judge.provider,
            key,
            model: &judge.model,
            azure: judge.azure.as_ref(),
            system: JUDGE_SYSTEM_PROMPT,
            user,
            max_tokens: MAX_VERDICT_TOKENS,
            timeout: self.timeout,
        };
        tokio::select! {
            biased;
            () = revocation.revoked() => none(KEY_REVOKED_REASON),
            answer = providers::judge(self.http, &self.endpoints, &request, &self.policy) => match answer {
                Ok((verdict, usage)) if (0.0..=1.0).contains(&verdict.score) => {
                    (JudgeVerdict { judge: label, score: Some(verdict.score), reason: verdict.reason }, usage)
                }
                Ok((verdict, usage)) => {
                    (none(&format!("MalformedVerdict: score {} is outside 0..1", verdict.score)).0, usage)
                }
                Err(error) => none(&format!("{}: {error}", error.reason())),
            },
        }
    }
}

/// Each judge's own word, for the panel's reason: `provider/model 0.90: reason` or the error.
fn each_judge(verdicts: &[JudgeVerdict]) -> String {
    let one = |v: &JudgeVerdict| match v.score {
        Some(score) => format!("{} {score:.2}: {}", v.judge, v.reason),
        None => format!("{}: {}", v.judge, v.reason),
    };
    verdicts.iter().map(one).collect::<Vec<_>>().join(" | ")
}

#[cfg(test)]
#[path = "runner_tests.rs"]
mod tests;
