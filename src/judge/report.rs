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
    /// ...or when this many more cases finished, whichever comes first (and only if some did).
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
