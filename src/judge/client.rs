//! The key broker client used inside the judge pod: HTTPS trusting only the broker's CA bundle,
//! authenticated with a projected service account token that is re-read before every request
//! (the kubelet rotates it). Fetches the key (init container) and posts results (judge container).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;
use zeroize::Zeroizing;

pub use super::keyfile::{panel_key_path, read_key_file, write_key_file, write_panel_keys};

use super::pin::PinnedFile;
use super::runner::{ReportError, Reporter};
use super::wire::{
    FINAL_SERVER_REFUSALS, KEY_PATH, KeyRequest, KeyResponse, MAX_REPORT_BYTES, RESULTS_PATH, Refusal, ResultsAck,
    ResultsReport,
};
use crate::providers::RetryPolicy;
use crate::providers::retry::retry_after_from_headers;

/// How long fetch-key keeps trying a broker that is down or restarting.
pub const KEY_FETCH_DEADLINE: Duration = Duration::from_secs(60);
/// A key response is tiny; anything bigger is not our broker.
const MAX_KEY_RESPONSE_BYTES: usize = 64 << 10;
/// Longest broker message kept in an error.
const MAX_MESSAGE_CHARS: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the broker URL must be https://, got {0:?}")]
    InsecureUrl(String),
    #[error("cannot use the CA bundle {path}: {message}")]
    CaBundle { path: PathBuf, message: String },
    /// The CA bundle is not the one the operator pinned in the Job: a tenant swapped it.
    #[error(transparent)]
    Pinned(#[from] super::pin::PinError),
    #[error("cannot read the token file {path}: {message}")]
    Token { path: PathBuf, message: String },
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
    /// The broker said no (401/403), or cannot open the stored key (500, a reason in
    /// [`FINAL_SERVER_REFUSALS`]). Never retried: the answer will not change by asking again.
    #[error("the broker refused (HTTP {status}): {reason}: {message}")]
    Refused { status: u16, reason: String, message: String },
    /// The broker's certificate is not signed by the CA bundle: retrying will not fix that.
    #[error("TLS with the broker failed (is the CA bundle the broker's?): {0}")]
    Tls(String),
    #[error("the broker did not answer usefully within {after:?}: {last_error}")]
    GaveUp { after: Duration, last_error: String },
    #[error("unexpected answer from the broker (HTTP {status}): {message}")]
    Unexpected { status: u16, message: String },
    #[error("key file {path}: {message}")]
    KeyFile { path: PathBuf, message: String },
}

/// HTTPS to the broker with a bearer token from a file.
#[derive(Clone, Debug)]
pub struct BrokerClient {
    http: reqwest::Client,
    base: String,
    token_path: PathBuf,
}

impl BrokerClient {
    /// Trusts only the certificates in `ca_path`, never the system's roots, so nothing but the
    /// operator's broker can receive the token or serve a key.
    pub fn new(broker_url: &str, token_path: &Path, ca: &PinnedFile, timeout: Duration) -> Result<Self, ClientError> {
        if !broker_url.starts_with("https://") {
            return Err(ClientError::InsecureUrl(broker_url.to_string()));
        }
        let ca_error = |message: String| ClientError::CaBundle { path: ca.path.clone(), message };
        let pem = ca.read()?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_error(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca_error("no PEM certificate in it".into()));
        }
        let mut builder = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .https_only(true)
            // The bearer token must never follow a redirect to another host.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(timeout);
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|e| ClientError::Http(error_chain(&e)))?;
        Ok(Self { http, base: broker_url.trim_end_matches('/').to_string(), token_path: token_path.to_path_buf() })
    }

    /// Reads the token now: the kubelet replaces the file before the old token expires.
    fn token(&self) -> Result<SecretString, ClientError> {
        let token_error = |message: String| ClientError::Token { path: self.token_path.clone(), message };
        let text = Zeroizing::new(fs::read_to_string(&self.token_path).map_err(|e| token_error(e.to_string()))?);
        let token = text.trim();
        if token.is_empty() {
            return Err(token_error("the file is empty".into()));
        }
        Ok(SecretString::from(token))
    }

    async fn post(&self, path: &str, token: &SecretString, body: Vec<u8>) -> Result<reqwest::Response, reqwest::Error> {
        let bearer = Zeroizing::new(format!("Bearer {}", token.expose_secret()));
        let request = self.http.post(format!("{}{path}", self.base)).header("content-type", "application/json");
        let request = match HeaderValue::from_str(&bearer) {
            Ok(mut value) => {
                value.set_sensitive(true);
                request.header(AUTHORIZATION, value)
            }
            // A token with bytes a header cannot hold: send none and let the broker refuse.
            Err(_) => request,
        };
        request.body(body).send().await
    }
}

/// What one key request attempt gave.
#[derive(Debug)]
enum Attempt {
    Done(KeyResponse),
    Fatal(ClientError),
    Retry { message: String, retry_after: Option<Duration> },
}

/// Fetches the pod's key from the broker. Refusals are returned at once; connection errors,
/// 408/429 and 5xx are retried with backoff for up to [`KEY_FETCH_DEADLINE`].
pub async fn fetch_key(
    broker_url: &str,
    token_path: &Path,
    ca: &PinnedFile,
    pod_uid: &str,
) -> Result<KeyResponse, ClientError> {
    fetch_key_within(broker_url, token_path, ca, pod_uid, KEY_FETCH_DEADLINE).await
}

/// [`fetch_key`] with a chosen deadline.
pub async fn fetch_key_within(
    broker_url: &str,
    token_path: &Path,
    ca: &PinnedFile,
    pod_uid: &str,
    deadline: Duration,
) -> Result<KeyResponse, ClientError> {
    let client = BrokerClient::new(broker_url, token_path, ca, Duration::from_secs(15))?;
    let body = serde_json::to_vec(&KeyRequest { pod_uid: pod_uid.to_string() })
        .map_err(|e| ClientError::Http(e.to_string()))?;
    let backoff =
        RetryPolicy { max_retries: 0, base_delay: Duration::from_millis(500), max_delay: Duration::from_secs(8) };
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        match key_attempt(&client, body.clone()).await {
            Attempt::Done(response) => return Ok(response),
            Attempt::Fatal(error) => return Err(error),
            Attempt::Retry { message, retry_after } => {
                let wait = backoff.delay(attempt, retry_after);
                if started.elapsed() + wait > deadline {
                    return Err(ClientError::GaveUp { after: started.elapsed(), last_error: message });
                }
                tracing::warn!(error = %message, attempt, ?wait, "key broker unavailable; retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
        }
    }
}

async fn key_attempt(client: &BrokerClient, body: Vec<u8>) -> Attempt {
    let token = match client.token() {
        Ok(token) => token,
        Err(error) => return Attempt::Fatal(error),
    };
    let mut response = match client.post(KEY_PATH, &token, body).await {
        Ok(response) => response,
        Err(error) if is_certificate_error(&error) => return Attempt::Fatal(ClientError::Tls(error_chain(&error))),
        Err(error) => return Attempt::Retry { message: error_chain(&error), retry_after: None },
    };
    let status = response.status().as_u16();
    let retry_after = retry_after_from_headers(response.headers(), std::time::SystemTime::now());
    // The body holds the key: collect it where it is wiped on drop, and cap its size.
    let mut body = Zeroizing::new(Vec::new());
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_KEY_RESPONSE_BYTES => body.extend_from_slice(&chunk),
            Ok(Some(_)) if status >= 500 => break,
            Ok(Some(_)) => return Attempt::Fatal(unexpected(status, "the response is too large")),
            Ok(None) => break,
            Err(error) => return Attempt::Retry { message: error_chain(&error), retry_after: None },
        }
    }
    key_answer(status, &body, retry_after)
}

/// What a key response says: the key, a refusal, or a fault worth another try.
fn key_answer(status: u16, body: &[u8], retry_after: Option<Duration>) -> Attempt {
    match status {
        200 => match serde_json::from_slice::<KeyResponse>(body) {
            Ok(key) if !key.key.trim().is_empty() => Attempt::Done(key),
            Ok(_) => Attempt::Fatal(unexpected(status, "the broker sent an empty key")),
            // serde's message could quote the body, which holds the key: say nothing of it.
            Err(_) => Attempt::Fatal(unexpected(status, "the response is not a key response")),
        },
        401 | 403 => Attempt::Fatal(refusal(status, body)),
        408 | 429 => Attempt::Retry { message: format!("HTTP {status}"), retry_after },
        500.. => server_fault(status, body, retry_after),
        _ => Attempt::Fatal(unexpected(status, &String::from_utf8_lossy(body))),
    }
}

/// A 5xx: the broker's refusal reason is kept either way. One it marks final (the stored key does
/// not open) fails at once; the rest (503 UnknownKek or Unavailable, a proxy's 502) are retried.
fn server_fault(status: u16, body: &[u8], retry_after: Option<Duration>) -> Attempt {
    match serde_json::from_slice::<Refusal>(body) {
        Ok(r) if FINAL_SERVER_REFUSALS.contains(&r.reason.as_str()) => {
            Attempt::Fatal(ClientError::Refused { status, reason: capped(&r.reason), message: capped(&r.message) })
        }
        Ok(r) => {
            let message = format!("HTTP {status}: {}: {}", capped(&r.reason), capped(&r.message));
            Attempt::Retry { message, retry_after }
        }
        Err(_) => Attempt::Retry { message: format!("HTTP {status}"), retry_after },
    }
}

fn refusal(status: u16, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<Refusal>(body) {
        Ok(refusal) => {
            ClientError::Refused { status, reason: capped(&refusal.reason), message: capped(&refusal.message) }
        }
        Err(_) => ClientError::Refused {
            status,
            reason: if status == 401 { "Unauthorized" } else { "Forbidden" }.into(),
            message: capped(&String::from_utf8_lossy(body)),
        },
    }
}

fn unexpected(status: u16, message: &str) -> ClientError {
    ClientError::Unexpected { status, message: capped(message) }
}

fn capped(text: &str) -> String {
    text.chars().take(MAX_MESSAGE_CHARS).collect()
}

/// Whether the TLS handshake failed on the broker's certificate (rustls says "invalid peer
/// certificate"); the rustls error sits behind an io::Error, so its text is what we can see.
fn is_certificate_error(error: &reqwest::Error) -> bool {
    error.is_connect() && error_chain(error).contains("invalid peer certificate")
}

/// An error with its causes (reqwest's Display alone hides the TLS or connect cause).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    capped(&text)
}

/// Posts results reports with the results-audience token (which cannot fetch keys).
#[derive(Clone, Debug)]
pub struct HttpReporter {
    client: BrokerClient,
}

impl HttpReporter {
    pub fn new(broker_url: &str, results_token_path: &Path, ca: &PinnedFile) -> Result<Self, ClientError> {
        // Large final reports take a while on a busy broker.
        Ok(Self { client: BrokerClient::new(broker_url, results_token_path, ca, Duration::from_secs(30))? })
    }
}

impl Reporter for HttpReporter {
    async fn report(&self, report: &ResultsReport) -> Result<ResultsAck, ReportError> {
        let unexpected = |e: serde_json::Error| ReportError::Unexpected(e.to_string());
        let Some(body) = super::report::fitted_body(report, MAX_REPORT_BYTES).map_err(unexpected)? else {
            let bytes = serde_json::to_vec(report).map_err(unexpected)?.len();
            return Err(ReportError::TooLarge { bytes, limit: MAX_REPORT_BYTES });
        };
        let bytes = body.len();
        let token = self.client.token().map_err(|e| ReportError::Token(e.to_string()))?;
        let response = self.client.post(RESULTS_PATH, &token, body).await.map_err(|e| {
            if is_certificate_error(&e) {
                ReportError::Unexpected(error_chain(&e))
            } else {
                ReportError::Unavailable(error_chain(&e))
            }
        })?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|e| ReportError::Unavailable(error_chain(&e)))?;
        match status {
            200..=299 if text.trim().is_empty() => Ok(ResultsAck::default()),
            200..=299 => serde_json::from_str(&text)
                .map_err(|e| ReportError::Unexpected(format!("HTTP {status} with a body that is not an ack: {e}"))),
            401 | 403 => match refusal(status, text.as_bytes()) {
                ClientError::Refused { status, reason, message } => {
                    Err(ReportError::Refused { status, reason, message })
                }
                other => Err(ReportError::Unexpected(other.to_string())),
            },
            413 => Err(ReportError::TooLarge { bytes, limit: MAX_REPORT_BYTES }),
            408 | 429 | 500.. => Err(ReportError::Unavailable(format!("HTTP {status}: {}", capped(&text)))),
            _ => Err(ReportError::Unexpected(format!("HTTP {status}: {}", capped(&text)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn plain_http_and_bad_ca_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let ca = PinnedFile::new(dir.path().join("ca.crt"), super::super::pin::sha256_hex(b"not a certificate"));
        fs::write(&ca.path, "not a certificate").unwrap();
        let token = dir.path().join("token");
        assert!(matches!(
            BrokerClient::new("http://b", &token, &ca, Duration::from_secs(1)),
            Err(ClientError::InsecureUrl(_))
        ));
        assert!(matches!(
            BrokerClient::new("https://b", &token, &ca, Duration::from_secs(1)),
            Err(ClientError::CaBundle { .. })
        ));
        let swapped = PinnedFile::new(ca.path.clone(), "00");
        assert!(matches!(
            BrokerClient::new("https://b", &token, &swapped, Duration::from_secs(1)),
            Err(ClientError::Pinned(_))
        ));
        let missing = PinnedFile::new(dir.path().join("missing.crt"), "00");
        assert!(matches!(
            BrokerClient::new("https://b", &token, &missing, Duration::from_secs(1)),
            Err(ClientError::Pinned(super::super::pin::PinError::Read { .. }))
        ));
    }

    fn refused(reason: &str) -> Vec<u8> {
        serde_json::to_vec(&Refusal { reason: reason.into(), message: "why".into() }).expect("json")
    }

    fn final_reason(attempt: Attempt) -> Option<(u16, String)> {
        match attempt {
            Attempt::Fatal(ClientError::Refused { status, reason, .. }) => Some((status, reason)),
            _ => None,
        }
    }

    #[test]
    fn a_key_that_does_not_open_fails_at_once_with_its_reason() {
        let wait = Some(Duration::from_secs(2));
        // The stored key is damaged or not this key's: asking again will not help.
        for reason in FINAL_SERVER_REFUSALS {
            assert_eq!(final_reason(key_answer(500, &refused(reason), None)), Some((500, reason.to_string())));
        }
        assert_eq!(final_reason(key_answer(403, &refused("KeyNotReady"), None)), Some((403, "KeyNotReady".into())));
        assert_eq!(
            final_reason(key_answer(403, &refused("NoCompletionIndex"), None)),
            Some((403, "NoCompletionIndex".into()))
        );
        // A KEK still loading: retried, and the reason is kept for the error given up with.
        let Attempt::Retry { message, retry_after } = key_answer(503, &refused("UnknownKek"), wait) else {
            panic!("UnknownKek is retried")
        };
        assert_eq!((message.as_str(), retry_after), ("HTTP 503: UnknownKek: why", wait));
        // A 500 the broker did not mark final (or a proxy's page) is retried as before.
        assert!(matches!(key_answer(500, &refused("SomethingNew"), None), Attempt::Retry { .. }));
        assert!(matches!(key_answer(502, b"<html>bad gateway</html>", None), Attempt::Retry { .. }));
        assert!(matches!(key_answer(429, b"", wait), Attempt::Retry { retry_after, .. } if retry_after == wait));
        assert!(matches!(key_answer(404, b"no", None), Attempt::Fatal(ClientError::Unexpected { status: 404, .. })));
    }

    #[test]
    fn a_broker_message_is_cut_short() {
        let long =
            serde_json::to_vec(&Refusal { reason: "KeyUnreadable".into(), message: "m".repeat(10_000) }).expect("json");
        let Attempt::Fatal(ClientError::Refused { message, .. }) = key_answer(500, &long, None) else {
            panic!("final")
        };
        assert_eq!(message.chars().count(), MAX_MESSAGE_CHARS);
        let key = serde_json::to_vec(&KeyResponse { key: "sk-1".into(), key_prefix: "sk-1".into(), panel: vec![] })
            .expect("json");
        assert!(matches!(key_answer(200, &key, None), Attempt::Done(_)));
        let empty = serde_json::to_vec(&KeyResponse { key: " ".into(), key_prefix: String::new(), panel: vec![] })
            .expect("json");
        assert!(matches!(key_answer(200, &empty, None), Attempt::Fatal(ClientError::Unexpected { .. })));
    }
}
