//! Retry rules shared by every provider, matching what the official SDKs do (docs/providers.md,
//! judge calls): `retry-after-ms` first, then `retry-after` (seconds or HTTP date); a server wait
//! of up to 120 s is honoured and a longer one means "do not retry"; `x-should-retry` overrides the
//! status rules; 408, 409, 429 and 5xx are retried.

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;

/// The longest server-requested wait a call retries after, as openai-python 3.x does: a server
/// that asks for more is not retried (a 10-minute Retry-After would stall an evaluation far
/// beyond its timeout, and retrying sooner than asked only burns the rate limit).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);
/// Waits longer than this are not parsed at all (nonsense, or an overflow).
const MAX_PARSED_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);

/// How `judge` retries transient failures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (the OpenAI and Anthropic SDKs default to 2).
    pub max_retries: u32,
    /// First backoff step when the server gives no Retry-After.
    pub base_delay: Duration,
    /// Backoff ceiling.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// The OpenAI/Anthropic SDK defaults: 2 retries, 0.5 s doubling up to 8 s.
    fn default() -> Self {
        Self { max_retries: 2, base_delay: Duration::from_millis(500), max_delay: Duration::from_secs(8) }
    }
}

impl RetryPolicy {
    /// Exponential backoff for retry number `retry` (0-based), reduced by up to 25 % jitter
    /// (`jitter` in 0..=1) so that many clients do not retry in lockstep.
    pub fn backoff(&self, retry: u32, jitter: f64) -> Duration {
        let factor = 2u32.saturating_pow(retry.min(30));
        let step = self.base_delay.saturating_mul(factor).min(self.max_delay);
        step.mul_f64(1.0 - 0.25 * jitter.clamp(0.0, 1.0))
    }

    /// The wait before retry number `retry`: the server's Retry-After when it gave one (never
    /// more than [`MAX_RETRY_AFTER`]), otherwise jittered backoff.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(wait) => wait.min(MAX_RETRY_AFTER),
            None => self.backoff(retry, rand::random::<f64>()),
        }
    }
}

/// Parses `retry-after-ms` (milliseconds, decimals allowed).
pub fn parse_retry_after_ms(value: &str) -> Option<Duration> {
    let ms: f64 = value.trim().parse().ok()?;
    within_limit(ms / 1000.0)
}

/// Parses `retry-after`: delta seconds (decimals allowed) or an HTTP date, relative to `now`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return within_limit(secs);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    // A date in the past means "retry now".
    let wait = at.duration_since(now).unwrap_or(Duration::ZERO);
    (wait <= MAX_PARSED_WAIT).then_some(wait)
}

/// A wait in seconds as the server wrote it; negative, infinite or absurd values mean nothing.
pub fn within_limit(secs: f64) -> Option<Duration> {
    if !secs.is_finite() || !(0.0..=MAX_PARSED_WAIT.as_secs_f64()).contains(&secs) {
        return None;
    }
    Some(Duration::from_secs_f64(secs))
}

/// Whether a server-requested wait is short enough to retry after.
pub fn wait_is_retryable(retry_after: Option<Duration>) -> bool {
    retry_after.is_none_or(|wait| wait <= MAX_RETRY_AFTER)
}

/// The server-requested wait from response headers, if any (possibly longer than
/// [`MAX_RETRY_AFTER`]: callers decide; see [`wait_is_retryable`]).
pub fn retry_after_from_headers(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    header("retry-after-ms")
        .and_then(parse_retry_after_ms)
        .or_else(|| header("retry-after").and_then(|v| parse_retry_after(v, now)))
}

/// The `x-should-retry` header: `Some(true|false)` when the server states its preference.
pub fn should_retry_header(headers: &HeaderMap) -> Option<bool> {
    match headers.get("x-should-retry")?.to_str().ok()?.trim() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// Statuses the SDKs retry by default: request timeout, lock conflict, rate limit, server errors.
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 409 | 429) || status >= 500
}

/// Whether a failed response should be retried. `permanent` marks failures that must never be
/// retried whatever the headers say (bad key, missing permission, exhausted quota): retrying them
/// only burns the user's rate limit and can lock the key. A server wait over [`MAX_RETRY_AFTER`]
/// is not retried either. Otherwise `x-should-retry` wins over the status rules, as in the
/// OpenAI/Anthropic SDKs.
pub fn should_retry(status: u16, x_should_retry: Option<bool>, permanent: bool, retry_after: Option<Duration>) -> bool {
    if permanent || !wait_is_retryable(retry_after) {
        return false;
    }
    x_should_retry.unwrap_or_else(|| is_retryable_status(status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn retry_after_seconds_and_decimals() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after(" 2.5 ", now), Some(Duration::from_millis(2500)));
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("60", now), Some(Duration::from_secs(60)));
        // Long waits are parsed (the caller decides not to retry), absurd ones are not.
        assert_eq!(parse_retry_after("600", now), Some(Duration::from_secs(600)));
        assert_eq!(parse_retry_after("1e12", now), None);
    }

    #[test]
    fn retry_after_out_of_range_or_garbage_is_ignored() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("NaN", now), None);
        assert_eq!(parse_retry_after("inf", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(parse_retry_after_ms("1e15"), None);
        assert_eq!(parse_retry_after_ms("-5"), None);
    }

    #[test]
    fn retry_after_http_date() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now), Some(Duration::from_secs(30)));
        // In the past: retry immediately.
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now), Some(Duration::ZERO));
        // Two minutes away: parsed, and the longest wait still retried.
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now), Some(MAX_RETRY_AFTER));
        assert!(wait_is_retryable(Some(MAX_RETRY_AFTER)));
        assert!(!wait_is_retryable(Some(MAX_RETRY_AFTER + Duration::from_secs(1))));
    }

    #[test]
    fn retry_after_ms_takes_precedence() {
        let now = SystemTime::now();
        let h = headers(&[("retry-after-ms", "250"), ("retry-after", "7")]);
        assert_eq!(retry_after_from_headers(&h, now), Some(Duration::from_millis(250)));
        let h = headers(&[("retry-after-ms", "1500.5")]);
        assert_eq!(retry_after_from_headers(&h, now), Some(Duration::from_micros(1_500_500)));
        // An unusable retry-after-ms falls back to retry-after.
        let h = headers(&[("retry-after-ms", "x"), ("retry-after", "7")]);
        assert_eq!(retry_after_from_headers(&h, now), Some(Duration::from_secs(7)));
        assert_eq!(retry_after_from_headers(&HeaderMap::new(), now), None);
    }

    #[test]
    fn x_should_retry_overrides_status_but_not_permanent_failures() {
        assert_eq!(should_retry_header(&headers(&[("x-should-retry", "true")])), Some(true));
        assert_eq!(should_retry_header(&headers(&[("x-should-retry", "false")])), Some(false));
        assert_eq!(should_retry_header(&headers(&[("x-should-retry", "maybe")])), None);
        assert!(!should_retry(429, Some(false), false, None));
        assert!(should_retry(400, Some(true), false, None));
        assert!(!should_retry(401, Some(true), true, None));
        assert!(!should_retry(429, None, true, None));
        // Asked to wait longer than the SDKs would: not retried, whatever else says so.
        assert!(should_retry(429, None, false, Some(Duration::from_secs(120))));
        assert!(!should_retry(429, Some(true), false, Some(Duration::from_secs(121))));
    }

    #[test]
    fn retryable_statuses() {
        for s in [408, 409, 429, 500, 502, 503, 504, 529] {
            assert!(should_retry(s, None, false, None), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 413, 422] {
            assert!(!should_retry(s, None, false, None), "{s}");
        }
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(0, 0.0), Duration::from_millis(500));
        assert_eq!(p.backoff(1, 0.0), Duration::from_secs(1));
        assert_eq!(p.backoff(2, 0.0), Duration::from_secs(2));
        assert_eq!(p.backoff(10, 0.0), Duration::from_secs(8));
        assert_eq!(p.backoff(u32::MAX, 0.0), Duration::from_secs(8));
        assert_eq!(p.backoff(0, 1.0), Duration::from_millis(375));
        let d = p.delay(0, None);
        assert!(d >= Duration::from_millis(375) && d <= Duration::from_millis(500), "{d:?}");
        assert_eq!(p.delay(5, Some(Duration::from_secs(3))), Duration::from_secs(3));
        assert_eq!(p.delay(5, Some(Duration::from_secs(900))), MAX_RETRY_AFTER);
    }
}
