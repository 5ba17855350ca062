//! Reporting results to the broker: the `Reporter` seam (HTTP in the pod, in-memory in tests),
//! when progress reports go out, and how hard delivery is tried.

use std::future::Future;
use std::time::Duration;

use super::wire::{ResultsAck, ResultsReport};
use crate::providers::RetryPolicy;

/// Why a results report was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("the broker refused the report (HTTP {status}): {reason}: {message}")]
    Refused { status: u16, reason: String, message: String },
    #[error("the report is {bytes} bytes, more than the broker accepts ({limit})")]
    TooLarge { bytes: usize, limit: usize },
    /// Connection errors, timeouts, 429 and 5xx: worth another try.
    #[error("the broker is unavailable: {0}")]
    Unavailable(String),
    #[error("unexpected answer from the broker: {0}")]
    Unexpected(String),
    /// The token file could not be read (kubelet swaps it atomically, so a retry may succeed).
    #[error("cannot read the results token: {0}")]
    Token(String),
}

impl ReportError {
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Token(_))
    }
}

/// Where results go. Reports are cumulative: each replaces the shard's previous one.
pub trait Reporter: Send + Sync {
    fn report(&self, report: &ResultsReport) -> impl Future<Output = Result<ResultsAck, ReportError>> + Send;
}

/// When progress reports go out, and how hard delivery is tried.
#[derive(Clone, Debug)]
pub struct ReportPacing {
    /// A progress report goes out when this long has passed since the last one...
    pub interval: Duration,
    /// ...or when this many more cases finished, no sooner than a quarter interval after the last
    /// report, whichever comes first (and only if some did).
    pub batch: usize,
    /// Attempts per progress report; a lost one is not fatal, the next report carries it all.
    pub progress_attempts: u32,
    /// Attempts for the final report; if all fail the pod exits non-zero and the Job retries it.
    pub final_attempts: u32,
    /// Backoff between attempts.
    pub backoff: RetryPolicy,
}

impl Default for ReportPacing {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            batch: 50,
            progress_attempts: 3,
            // 0.5 + 1 + 2 + 4 + 8 s, then 8 s each: about three minutes, enough for a leader
            // failover (lease expiry, caches syncing) without the Job re-running the shard.
            final_attempts: 24,
            backoff: RetryPolicy {
                max_retries: 0,
                base_delay: Duration::from_millis(500),
                max_delay: Duration::from_secs(8),
            },
        }
    }
}

/// Sends a report, retrying what may succeed later with backoff.
pub(super) async fn deliver(
    reporter: &impl Reporter,
    report: &ResultsReport,
    attempts: u32,
    backoff: &RetryPolicy,
) -> Result<ResultsAck, ReportError> {
    let mut attempt = 0;
    loop {
        match reporter.report(report).await {
            Err(error) if error.retryable() && attempt + 1 < attempts => {
                let wait = backoff.delay(attempt, None);
                tracing::warn!(%error, attempt, ?wait, done = report.done, "report failed; retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// The report as it goes on the wire, at most `limit` bytes: when all of it would not fit, every
/// result is kept (ids, outcomes, scores, tokens) and the reasons are shortened, the longest
/// first, each cut one ending in [`CUT`]. A reason is the one part of a result without a bound
/// the judge sets alone (1,000 characters each, but several scorers per case and thousands of cases
/// per shard). None when even reasons of nothing would not fit.
pub fn fitted_body(report: &ResultsReport, limit: usize) -> Result<Option<Vec<u8>>, serde_json::Error> {
    let body = serde_json::to_vec(report)?;
    if body.len() <= limit {
        return Ok(Some(body));
    }
    let reasons = || report.results.iter().flat_map(|r| r.scores.iter().map(|s| s.reason.len()));
    let mut over = body.len() - limit;
    // A few rounds: JSON escaping makes a reason's bytes on the wire differ from its length.
    for _ in 0..4 {
        let Some(cap) = reason_cap(reasons(), over + over / 50 + 64) else { return Ok(None) };
        let mut shortened = report.clone();
        for score in shortened.results.iter_mut().flat_map(|r| r.scores.iter_mut()) {
            cut(&mut score.reason, cap);
        }
        let body = serde_json::to_vec(&shortened)?;
        if body.len() <= limit {
            return Ok(Some(body));
        }
        over += body.len() - limit;
    }
    Ok(None)
}

/// What a shortened reason ends with.
pub const CUT: &str = " [cut to fit the report]";

/// The longest a reason may stay so that cutting all longer ones saves at least `save` bytes
/// (each cut one also gets `CUT`); None if no cap does.
fn reason_cap(lengths: impl Iterator<Item = usize> + Clone, save: usize) -> Option<usize> {
    let saved =
        |cap: usize| -> usize { lengths.clone().filter(|&l| l > cap + CUT.len()).map(|l| l - cap - CUT.len()).sum() };
    if saved(0) < save {
        return None;
    }
    // The largest cap that still saves enough: saved() falls as cap grows.
    let (mut low, mut high) = (0usize, lengths.clone().max().unwrap_or(0));
    while low < high {
        let mid = (low + high).div_ceil(2);
        if saved(mid) >= save { low = mid } else { high = mid - 1 }
    }
    Some(low)
}

/// Cuts `reason` to at most `cap` bytes (at a character boundary) plus [`CUT`], if longer.
fn cut(reason: &mut String, cap: usize) {
    if reason.len() <= cap + CUT.len() {
        return;
    }
    let mut end = cap;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason.truncate(end);
    reason.push_str(CUT);
}

#[cfg(test)]
mod fit_tests {
    use super::*;
    use crate::judge::wire::{CaseResult, Outcome, ScoreResult};

    fn report(cases: usize, reason: &str) -> ResultsReport {
        let score = |name: &str| ScoreResult {
            scorer: name.into(),
            outcome: Outcome::Passed,
            score: Some(0.8),
            reason: reason.into(),
            agreed: None,
        };
        let results = (0..cases)
            .map(|i| CaseResult {
                id: format!("case-{i}"),
                line: i as u32 + 1,
                scores: vec![score("llm_judge"), score("contains")],
                input_tokens: 10,
                output_tokens: 5,
            })
            .collect();
        ResultsReport { pod_uid: "p".into(), shard: 0, total: cases as u32, done: true, results }
    }

    #[test]
    fn a_report_that_fits_goes_as_it_is() {
        let r = report(10, "fine");
        let body = fitted_body(&r, 1 << 20).expect("json").expect("fits");
        assert_eq!(body, serde_json::to_vec(&r).expect("json"));
    }

    #[test]
    fn a_report_over_the_limit_keeps_every_result_and_shortens_the_reasons() {
        // 3,000 cases of two 1,000-character reasons (with quotes and non-ASCII, escaped or
        // multi-byte on the wire): about 6.5 MB, over the broker's 4 MiB.
        let reason = "a \"verbose\" judge, naïve ünïcode \n ".repeat(30);
        let r = report(3000, &reason);
        let limit = crate::judge::wire::MAX_REPORT_BYTES;
        assert!(serde_json::to_vec(&r).expect("json").len() > limit);
        let body = fitted_body(&r, limit).expect("json").expect("fits once shortened");
        assert!(body.len() <= limit, "{} bytes", body.len());
        let sent: ResultsReport = serde_json::from_slice(&body).expect("a report");
        assert_eq!(sent.results.len(), r.results.len(), "every result kept");
        for (a, b) in sent.results.iter().zip(&r.results) {
            assert_eq!((&a.id, a.line, a.input_tokens), (&b.id, b.line, b.input_tokens));
            for (x, y) in a.scores.iter().zip(&b.scores) {
                assert_eq!((x.outcome, x.score), (y.outcome, y.score));
                let kept = x.reason.strip_suffix(CUT).expect("cut, and says so");
                assert!(y.reason.starts_with(kept) && !kept.is_empty());
            }
        }
    }

    #[test]
    fn a_report_that_cannot_fit_even_without_reasons_is_said_so() {
        let r = report(100, "x");
        assert_eq!(fitted_body(&r, 200).expect("json"), None);
    }
}
