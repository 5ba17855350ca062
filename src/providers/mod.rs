//! Provider clients: key validation and judge calls, one module per provider, all following
//! docs/providers.md. Nothing here ever returns, logs or puts in a URL the plaintext key:
//! provider messages are redacted and capped before they leave this module.

pub mod answers;
mod anthropic;
mod azure;
mod config;
mod error;
mod google;
mod http;
pub mod models;
mod openai;
pub mod retry;
mod verdict;

use std::time::Duration;

use secrecy::SecretString;

use crate::crd::{AzureSpec, Provider};

pub use config::{DEFAULT_AZURE_HOSTS, EndpointError, Endpoints, ModelTable, ModelTableError};
pub use error::JudgeError;
pub use http::{MAX_BODY_BYTES, MAX_MESSAGE_CHARS, redact, sanitize};
pub use retry::RetryPolicy;
pub use verdict::{Usage, Verdict};

/// Timeout of each request made by [`check_key`].
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// A key to validate. `model` is the model (for Azure: the deployment) that must be available.
#[derive(Clone, Copy, Debug)]
pub struct KeyCheck<'a> {
    pub provider: Provider,
    pub key: &'a SecretString,
    pub model: &'a str,
    pub azure: Option<&'a AzureSpec>,
}

/// Why a key is unusable until someone changes it or its account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidReason {
    /// The provider rejected the key (401, Gemini 400 API_KEY_INVALID).
    Unauthorized,
    /// The key is genuine but lacks a permission (403, OpenAI restricted key without model.request).
    PermissionDenied,
    /// Out of credit or over a hard spend limit.
    QuotaExhausted,
    /// The key cannot even be sent (characters not allowed in an HTTP header). No request was made.
    MalformedKey,
    /// The ByokKey lacks what the provider needs (Azure endpoint/deployment). No request was made.
    Misconfigured,
    /// The Azure endpoint is not an https host on the install's allow-list. No request was made.
    EndpointNotAllowed,
}

/// Why a check gave no answer about the key; try again later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransientReason {
    RateLimited,
    /// 5xx, including Anthropic 529 overloaded and Gemini 503 UNAVAILABLE.
    ServerError,
    /// Our timeout, or HTTP 408.
    Timeout,
    NetworkError,
    /// HTTP 409.
    Conflict,
    /// A status or body that says nothing about the key (wrong base URL, gateway errors, 400s).
    UnexpectedResponse,
    /// A 2xx body over the clients' size limit (4 MiB): not read further.
    ResponseTooLarge,
}

/// The result of validating a key.
#[derive(Clone, Debug, PartialEq)]
pub enum CheckOutcome {
    Valid {
        http_status: u16,
        request_id: Option<String>,
        /// Something the key owner should know although the key works (a restricted key).
        note: Option<String>,
        /// What the provider said of the model's life (OpenAI shutdown_date, Anthropic lifecycle).
        lifecycle: Option<models::Reported>,
    },
    /// Authentication/permission failure (401/403, Gemini 400 API_KEY_INVALID) or quota exhausted: never retried.
    /// `http_status` is 0 when no request could be made (MalformedKey, Misconfigured).
    Invalid { reason: InvalidReason, http_status: u16, message: String },
    /// Key works but the configured model (or Azure deployment) is not available to it.
    ModelUnavailable { model: String, http_status: u16, message: String },
    /// Network error, timeout, 408/409/429/5xx: try later; retry_after from the response headers if any (0-60 s rule).
    Unknown { reason: TransientReason, http_status: Option<u16>, retry_after: Option<Duration>, message: String },
}

impl CheckOutcome {
    /// Short CamelCase reason for Kubernetes conditions.
    pub fn reason_str(&self) -> &'static str {
        match self {
            Self::Valid { .. } => "Valid",
            Self::Invalid { reason, .. } => match reason {
                InvalidReason::Unauthorized => "Unauthorized",
                InvalidReason::PermissionDenied => "PermissionDenied",
                InvalidReason::QuotaExhausted => "QuotaExhausted",
                InvalidReason::MalformedKey => "MalformedKey",
                InvalidReason::Misconfigured => "Misconfigured",
                InvalidReason::EndpointNotAllowed => "EndpointNotAllowed",
            },
            Self::ModelUnavailable { .. } => "ModelNotFound",
            Self::Unknown { reason, .. } => match reason {
                TransientReason::RateLimited => "RateLimited",
                TransientReason::ServerError => "ServerError",
                TransientReason::Timeout => "Timeout",
                TransientReason::NetworkError => "NetworkError",
                TransientReason::Conflict => "Conflict",
                TransientReason::UnexpectedResponse => "UnexpectedResponse",
                TransientReason::ResponseTooLarge => "ResponseTooLarge",
            },
        }
    }

    pub fn is_valid(&self) -> bool {
        matches!(self, Self::Valid { .. })
    }

    /// The message to show, if any (already redacted and capped).
    pub fn message(&self) -> Option<&str> {
        match self {
            Self::Valid { .. } => None,
            Self::Invalid { message, .. } | Self::ModelUnavailable { message, .. } | Self::Unknown { message, .. } => {
                Some(message)
            }
        }
    }
}

/// Validates a key with the cheapest authenticated calls, and checks that the model is available.
pub async fn check_key(http: &reqwest::Client, endpoints: &Endpoints, check: KeyCheck<'_>) -> CheckOutcome {
    check_key_with_timeout(http, endpoints, check, CHECK_TIMEOUT).await
}

/// [`check_key`] with a chosen per-request timeout.
pub async fn check_key_with_timeout(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    check: KeyCheck<'_>,
    timeout: Duration,
) -> CheckOutcome {
    let outcome = match check.provider {
        Provider::OpenAi => openai::check(http, endpoints, &check, timeout).await,
        Provider::Anthropic => anthropic::check(http, endpoints, &check, timeout).await,
        Provider::Google => google::check(http, endpoints, &check, timeout).await,
        Provider::AzureOpenAi => azure::check(http, endpoints, &check, timeout).await,
    };
    tracing::debug!(provider = %check.provider, model = check.model, reason = outcome.reason_str(), "checked key");
    outcome
}

/// One judge call.
#[derive(Clone, Copy, Debug)]
pub struct JudgeRequest<'a> {
    pub provider: Provider,
    pub key: &'a SecretString,
    /// Ignored for Azure OpenAI, which calls `azure.deployment`.
    pub model: &'a str,
    pub azure: Option<&'a AzureSpec>,
    pub system: &'a str,
    pub user: &'a str,
    pub max_tokens: u32,
    /// Per attempt.
    pub timeout: Duration,
}

/// Asks the provider for a verdict, once.
pub async fn judge_once(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    request: &JudgeRequest<'_>,
) -> Result<(Verdict, Usage), JudgeError> {
    match request.provider {
        Provider::OpenAi => openai::judge(http, endpoints, request).await,
        Provider::Anthropic => anthropic::judge(http, endpoints, request).await,
        Provider::Google => google::judge(http, endpoints, request).await,
        Provider::AzureOpenAi => azure::judge(http, endpoints, request).await,
    }
}

/// Asks for a verdict, retrying transient failures per `policy`: after the server's Retry-After
/// when it gives one (none past [`retry::MAX_RETRY_AFTER`]), jittered exponential backoff
/// otherwise. Auth and quota failures are returned at once; a model the lifecycle table knows is
/// shut down is reported as [`JudgeError::ModelRetired`], not as a bare 404.
pub async fn judge(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    request: &JudgeRequest<'_>,
    policy: &RetryPolicy,
) -> Result<(Verdict, Usage), JudgeError> {
    let mut retry = 0;
    loop {
        match judge_once(http, endpoints, request).await {
            Err(error) if error.retryable() && retry < policy.max_retries => {
                let wait = policy.delay(retry, error.retry_after());
                tracing::debug!(provider = %request.provider, reason = error.reason(), retry, ?wait, "retrying judge call");
                tokio::time::sleep(wait).await;
                retry += 1;
            }
            Err(error) => return Err(explain_retired(request.provider, error, models::today())),
            ok => return ok,
        }
    }
}

/// A not-found answer for a model the table says is shut down becomes [`JudgeError::ModelRetired`].
fn explain_retired(provider: Provider, error: JudgeError, today: jiff::civil::Date) -> JudgeError {
    let JudgeError::ModelNotFound { model, status, message } = error else { return error };
    match models::notice(provider, &model, today, None).filter(|n| n.retired) {
        Some(notice) => JudgeError::ModelRetired { notice: notice.to_string(), model, status, message },
        None => JudgeError::ModelNotFound { model, status, message },
    }
}

/// Header value of a request id, if present and printable.
fn request_id(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(|s| s.chars().take(200).collect())
}

/// A 2xx body that is not what the provider documents: say so without echoing it at length.
fn unexpected_body(status: u16, what: &str) -> CheckOutcome {
    CheckOutcome::Unknown {
        reason: TransientReason::UnexpectedResponse,
        http_status: Some(status),
        retry_after: None,
        message: format!("HTTP {status} but the body is not {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retired_model_is_named_as_such() {
        let today: jiff::civil::Date = "2026-12-02".parse().unwrap();
        let gone = JudgeError::ModelNotFound { model: "claude-sonnet-4-5".into(), status: 404, message: "m".into() };
        let explained = explain_retired(Provider::Anthropic, gone, today);
        assert_eq!(explained.reason(), "ModelRetired");
        assert!(explained.to_string().contains("shut down on 2026-11-30"), "{explained}");
        let unknown = JudgeError::ModelNotFound { model: "claude-nope".into(), status: 404, message: "m".into() };
        assert_eq!(explain_retired(Provider::Anthropic, unknown, today).reason(), "ModelNotFound");
        let dying = JudgeError::ModelNotFound { model: "gpt-4o".into(), status: 404, message: "m".into() };
        assert_eq!(explain_retired(Provider::OpenAi, dying, today).reason(), "ModelNotFound", "not shut down yet");
    }
}
