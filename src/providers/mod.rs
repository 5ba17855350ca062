//! Provider clients: key validation and judge calls, one module per provider, all following
//! shared/providers.md. Nothing here ever returns, logs or puts in a URL the plaintext key:
//! provider messages are redacted and capped before they leave this module.

mod anthropic;
mod azure;
mod config;
mod error;
mod google;
mod http;
mod openai;
pub mod retry;
mod verdict;

use std::time::Duration;

use secrecy::SecretString;

use crate::crd::{AzureSpec, Provider};

pub use config::{DEFAULT_AZURE_HOSTS, EndpointError, Endpoints, ModelTable, ModelTableError};
pub use error::JudgeError;
pub use http::{MAX_MESSAGE_CHARS, redact, sanitize};
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
}

/// The result of validating a key.
#[derive(Clone, Debug, PartialEq)]
pub enum CheckOutcome {
    Valid {
        http_status: u16,
        request_id: Option<String>,
    },
    /// Authentication/permission failure (401/403, Gemini 400 API_KEY_INVALID) or quota exhausted: never retried.
    /// `http_status` is 0 when no request could be made (MalformedKey, Misconfigured).
    Invalid {
        reason: InvalidReason,
        http_status: u16,
        message: String,
    },
    /// Key works but the configured model (or Azure deployment) is not available to it.
    ModelUnavailable {
        model: String,
        http_status: u16,
        message: String,
    },
    /// Network error, timeout, 408/409/429/5xx: try later; retry_after from the response headers if any (0-60 s rule).
    Unknown {
        reason: TransientReason,
        http_status: Option<u16>,
        retry_after: Option<Duration>,
        message: String,
    },
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

/// Asks for a verdict, retrying transient failures per `policy`: the server's Retry-After when it
/// gives one within 0-60 s, jittered exponential backoff otherwise. Auth and quota failures are
/// returned at once.
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
            result => return result,
        }
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
