//! Provider-agnostic classification of failed calls, and the judge's error type.

use std::time::Duration;

use super::retry;
use super::{CheckOutcome, InvalidReason, TransientReason};

/// What a provider's error response means, whatever its envelope looked like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// Bad or revoked key (401, Gemini 400 API_KEY_INVALID).
    Unauthorized,
    /// The key is valid but not allowed to do this (403, OpenAI restricted-key 401).
    PermissionDenied,
    /// Out of credit or over a hard spend limit: waiting a minute will not help.
    QuotaExhausted,
    RateLimited,
    /// The model or Azure deployment does not exist for this key.
    ModelNotFound,
    /// 408 or 409.
    Transient,
    /// 5xx, including Anthropic's 529 overloaded.
    Server,
    BadRequest,
    /// Anything else (3xx, unexpected 404 on a wrong base URL, ...).
    Unexpected,
}

/// A failed HTTP call, classified. `message` is already redacted and capped.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Failure {
    pub kind: FailureKind,
    pub status: u16,
    pub message: String,
    pub retry_after: Option<Duration>,
    pub x_should_retry: Option<bool>,
}

impl Failure {
    /// Status-based classification, used when the body says nothing more specific.
    pub fn kind_for_status(status: u16) -> FailureKind {
        match status {
            401 => FailureKind::Unauthorized,
            403 => FailureKind::PermissionDenied,
            404 => FailureKind::Unexpected,
            408 | 409 => FailureKind::Transient,
            429 => FailureKind::RateLimited,
            400..=499 => FailureKind::BadRequest,
            s if s >= 500 => FailureKind::Server,
            _ => FailureKind::Unexpected,
        }
    }

    fn permanent(&self) -> bool {
        matches!(self.kind, FailureKind::Unauthorized | FailureKind::PermissionDenied | FailureKind::QuotaExhausted)
    }

    pub fn retryable(&self) -> bool {
        retry::should_retry(self.status, self.x_should_retry, self.permanent(), self.retry_after)
    }

    /// The key-check view of this failure. Only authentication, permission and quota failures make
    /// a key Invalid; everything else is Unknown so that an outage never flips a good key to Invalid.
    pub fn into_check_outcome(self, model: &str) -> CheckOutcome {
        let Failure { kind, status, message, retry_after, .. } = self;
        let invalid = |reason| CheckOutcome::Invalid { reason, http_status: status, message: message.clone() };
        let unknown =
            |reason| CheckOutcome::Unknown { reason, http_status: Some(status), retry_after, message: message.clone() };
        match kind {
            FailureKind::Unauthorized => invalid(InvalidReason::Unauthorized),
            FailureKind::PermissionDenied => invalid(InvalidReason::PermissionDenied),
            FailureKind::QuotaExhausted => invalid(InvalidReason::QuotaExhausted),
            FailureKind::ModelNotFound => {
                CheckOutcome::ModelUnavailable { model: model.to_string(), http_status: status, message }
            }
            FailureKind::RateLimited => unknown(TransientReason::RateLimited),
            FailureKind::Server => unknown(TransientReason::ServerError),
            FailureKind::Transient if status == 408 => unknown(TransientReason::Timeout),
            FailureKind::Transient => unknown(TransientReason::Conflict),
            FailureKind::BadRequest | FailureKind::Unexpected => unknown(TransientReason::UnexpectedResponse),
        }
    }

    /// The judge view of this failure, with the retry decision baked in.
    pub fn into_judge_error(self, model: &str) -> JudgeError {
        let retryable = self.retryable();
        let Failure { kind, status, message, retry_after, .. } = self;
        match kind {
            FailureKind::Unauthorized => JudgeError::Unauthorized { status, message },
            FailureKind::PermissionDenied => JudgeError::PermissionDenied { status, message },
            FailureKind::QuotaExhausted => JudgeError::QuotaExhausted { status, message },
            FailureKind::RateLimited => JudgeError::RateLimited { retry_after, retryable, message },
            FailureKind::Server => JudgeError::Server { status, retry_after, retryable, message },
            // x-should-retry: true turns an otherwise final answer into a transient one.
            _ if retryable => JudgeError::Transient { status, retry_after, message },
            FailureKind::ModelNotFound => JudgeError::ModelNotFound { model: model.to_string(), status, message },
            FailureKind::Transient => JudgeError::Transient { status, retry_after, message },
            FailureKind::BadRequest => JudgeError::BadRequest { status, message },
            FailureKind::Unexpected => JudgeError::UnexpectedStatus { status, message },
        }
    }
}

/// Why a call produced no usable HTTP answer, or which answer it produced.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum CallError {
    Http(Failure),
    Timeout,
    /// Connection refused, DNS, TLS, reset...: message redacted.
    Network(String),
    /// A 2xx body larger than `limit` bytes: not read further (a key check or a verdict never
    /// needs that much; a broken gateway must not make us buffer it).
    TooLarge {
        status: u16,
        limit: usize,
    },
    /// Nothing was sent: the configuration cannot work (no Azure spec, key not sendable as a header).
    Misconfigured {
        reason: InvalidReason,
        message: String,
    },
}

impl CallError {
    pub fn into_check_outcome(self, model: &str) -> CheckOutcome {
        match self {
            Self::Http(failure) => failure.into_check_outcome(model),
            Self::Timeout => CheckOutcome::Unknown {
                reason: TransientReason::Timeout,
                http_status: None,
                retry_after: None,
                message: "the provider did not answer in time".into(),
            },
            Self::Network(message) => CheckOutcome::Unknown {
                reason: TransientReason::NetworkError,
                http_status: None,
                retry_after: None,
                message,
            },
            Self::TooLarge { status, limit } => CheckOutcome::Unknown {
                reason: TransientReason::ResponseTooLarge,
                http_status: Some(status),
                retry_after: None,
                message: too_large_message(status, limit),
            },
            Self::Misconfigured { reason, message } => CheckOutcome::Invalid { reason, http_status: 0, message },
        }
    }

    pub fn into_judge_error(self, model: &str) -> JudgeError {
        match self {
            Self::Http(failure) => failure.into_judge_error(model),
            Self::Timeout => JudgeError::Timeout,
            Self::Network(message) => JudgeError::Network(message),
            Self::TooLarge { status, limit } => JudgeError::ResponseTooLarge { status, limit },
            Self::Misconfigured { message, .. } => JudgeError::Misconfigured(message),
        }
    }
}

fn too_large_message(status: u16, limit: usize) -> String {
    format!(
        "the answer (HTTP {status}) is larger than {} MiB, far more than the provider sends: a proxy or gateway in the way? It was not read further",
        limit >> 20
    )
}

/// Why a judge call failed. Messages are redacted (never contain the key) and capped.
#[derive(Debug, thiserror::Error)]
pub enum JudgeError {
    #[error("the provider rejected the key (HTTP {status}): {message}")]
    Unauthorized { status: u16, message: String },
    #[error("the key lacks permission (HTTP {status}): {message}")]
    PermissionDenied { status: u16, message: String },
    #[error("quota exhausted (HTTP {status}): {message}")]
    QuotaExhausted { status: u16, message: String },
    #[error("rate limited: {message}")]
    RateLimited { retry_after: Option<Duration>, retryable: bool, message: String },
    #[error("model {model} not available (HTTP {status}): {message}")]
    ModelNotFound { model: String, status: u16, message: String },
    /// A not-found answer for a model the lifecycle table knows has been shut down.
    #[error("model {model} is retired: {notice} (HTTP {status}: {message})")]
    ModelRetired { model: String, notice: String, status: u16, message: String },
    #[error("provider error (HTTP {status}): {message}")]
    Server { status: u16, retry_after: Option<Duration>, retryable: bool, message: String },
    /// 408, 409, or any status the provider flagged with `x-should-retry: true`.
    #[error("transient failure (HTTP {status}): {message}")]
    Transient { status: u16, retry_after: Option<Duration>, message: String },
    #[error("the request timed out")]
    Timeout,
    #[error("network error: {0}")]
    Network(String),
    #[error("bad request (HTTP {status}): {message}")]
    BadRequest { status: u16, message: String },
    #[error("unexpected HTTP {status}: {message}")]
    UnexpectedStatus { status: u16, message: String },
    /// A 2xx body over the size limit: not read further, not retried.
    #[error("{}", too_large_message(*status, *limit))]
    ResponseTooLarge { status: u16, limit: usize },
    /// A 2xx body that is not the provider's documented response (not JSON, or JSON of another
    /// shape): a provider or gateway fault, not the model's. Not retried.
    #[error("malformed response: {message}")]
    MalformedResponse { message: String },
    #[error("the model refused to give a verdict: {message}")]
    Refused { message: String },
    #[error("malformed verdict: {message}")]
    MalformedVerdict { message: String },
    /// The model answered without any verdict text, typically because reasoning or thinking
    /// tokens used up the whole output limit.
    #[error("empty verdict: {message}")]
    EmptyVerdict { message: String },
    /// The request cannot be made as configured (e.g. Azure without an endpoint/deployment).
    #[error("misconfigured: {0}")]
    Misconfigured(String),
}

impl JudgeError {
    /// Whether trying again later may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            Self::RateLimited { retryable, .. } | Self::Server { retryable, .. } => *retryable,
            Self::Transient { retry_after, .. } => retry::wait_is_retryable(*retry_after),
            Self::Timeout | Self::Network(_) => true,
            _ => false,
        }
    }

    /// The server-requested wait (already limited to 0-60 s), if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. }
            | Self::Server { retry_after, .. }
            | Self::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Short CamelCase reason for conditions, case results and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unauthorized { .. } => "Unauthorized",
            Self::PermissionDenied { .. } => "PermissionDenied",
            Self::QuotaExhausted { .. } => "QuotaExhausted",
            Self::RateLimited { .. } => "RateLimited",
            Self::ModelNotFound { .. } => "ModelNotFound",
            Self::ModelRetired { .. } => "ModelRetired",
            Self::Server { .. } => "ServerError",
            Self::Transient { status: 408, .. } => "Timeout",
            Self::Transient { status: 409, .. } => "Conflict",
            Self::Transient { .. } => "TransientError",
            Self::Timeout => "Timeout",
            Self::Network(_) => "NetworkError",
            Self::BadRequest { .. } => "BadRequest",
            Self::UnexpectedStatus { .. } => "UnexpectedResponse",
            Self::ResponseTooLarge { .. } => "ResponseTooLarge",
            Self::MalformedResponse { .. } => "MalformedResponse",
            Self::Refused { .. } => "Refused",
            Self::MalformedVerdict { .. } => "MalformedVerdict",
            Self::EmptyVerdict { .. } => "EmptyVerdict",
            Self::Misconfigured(_) => "Misconfigured",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(kind: FailureKind, status: u16, x_should_retry: Option<bool>) -> Failure {
        Failure { kind, status, message: "m".into(), retry_after: Some(Duration::from_secs(1)), x_should_retry }
    }

    #[test]
    fn auth_and_quota_are_invalid_and_never_retried() {
        for (kind, status, reason) in [
            (FailureKind::Unauthorized, 401, "Unauthorized"),
            (FailureKind::PermissionDenied, 403, "PermissionDenied"),
            (FailureKind::QuotaExhausted, 429, "QuotaExhausted"),
        ] {
            let f = failure(kind, status, Some(true));
            assert!(!f.retryable());
            let outcome = f.clone().into_check_outcome("m");
            assert!(matches!(outcome, CheckOutcome::Invalid { .. }), "{outcome:?}");
            assert_eq!(outcome.reason_str(), reason);
            let err = f.into_judge_error("m");
            assert!(!err.retryable());
            assert_eq!(err.reason(), reason);
        }
    }

    #[test]
    fn transient_failures_are_unknown_and_retried() {
        for (kind, status, reason) in [
            (FailureKind::RateLimited, 429, "RateLimited"),
            (FailureKind::Server, 503, "ServerError"),
            (FailureKind::Transient, 408, "Timeout"),
            (FailureKind::Transient, 409, "Conflict"),
        ] {
            let f = failure(kind, status, None);
            let outcome = f.clone().into_check_outcome("m");
            assert!(matches!(outcome, CheckOutcome::Unknown { http_status: Some(s), .. } if s == status));
            assert_eq!(outcome.reason_str(), reason);
            let err = f.into_judge_error("m");
            assert!(err.retryable(), "{err:?}");
            assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
            assert_eq!(err.reason(), reason);
        }
    }

    #[test]
    fn x_should_retry_header_is_honoured() {
        assert!(!failure(FailureKind::RateLimited, 429, Some(false)).into_judge_error("m").retryable());
        let err = failure(FailureKind::BadRequest, 400, Some(true)).into_judge_error("m");
        assert!(err.retryable());
        assert_eq!(err.reason(), "TransientError");
    }

    #[test]
    fn model_not_found_is_model_unavailable() {
        let f = failure(FailureKind::ModelNotFound, 404, None);
        assert!(matches!(
            f.clone().into_check_outcome("gpt-x"),
            CheckOutcome::ModelUnavailable { ref model, http_status: 404, .. } if model == "gpt-x"
        ));
        let err = f.into_judge_error("gpt-x");
        assert_eq!(err.reason(), "ModelNotFound");
        assert!(!err.retryable());
    }
}
