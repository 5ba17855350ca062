//! The key broker: an HTTPS server in the operator that hands a ByokKey's plaintext to the judge
//! pod it belongs to (after TokenReview and pod -> Job -> EvalJob checks) and takes the judge's
//! results. Every refusal has its own reason in the log and the metrics; keys never appear there.

pub mod authn;
pub mod authz;
mod cluster_state;
pub mod grants;
mod handlers;
pub mod pki;
pub mod results;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use k8s_openapi::api::batch::v1::Job;
use kube::Client;
use kube::runtime::reflector::Store;

use crate::crd::{ByokKey, EvalJob};
use crate::judge::wire;
use crate::kms::KekSource;

pub use pki::BrokerCa;

/// Why the broker said no. Each is counted and logged under its own name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
pub enum Refusal {
    #[error("no bearer token")]
    MissingToken,
    #[error("the token is not for this audience")]
    WrongAudience,
    #[error("the token has expired")]
    TokenExpired,
    #[error("the API server did not accept the token")]
    InvalidToken,
    #[error("the token is not bound to a pod")]
    NotAPodToken,
    #[error("the request names another pod than the token")]
    ReplayFromOtherPod,
    #[error("the token's pod does not exist")]
    PodNotFound,
    #[error("the token was issued to an earlier pod of that name")]
    PodUidMismatch,
    #[error("the pod is in another namespace than the Job it claims")]
    PodInOtherNamespace,
    #[error("the pod does not belong to an EvalJob's judge Job")]
    NotOwnedByEvalJob,
    #[error("the EvalJob's Job has finished")]
    JobFinished,
    #[error("the ByokKey was revoked or deleted")]
    KeyRevoked,
    #[error("the ByokKey is not Ready")]
    KeyNotReady,
    #[error("the ByokKey's stored ciphertext cannot be read (a damaged envelope)")]
    KeyUnreadable,
    #[error(
        "the ByokKey's ciphertext is in an envelope version this operator does not know (it reads {}): a newer \
         byok-operator wrote it; run that version",
        crate::crypto::ENVELOPE_VERSION
    )]
    UnsupportedEnvelopeVersion,
    #[error("the ByokKey is sealed under a KEK this broker does not hold (a keyring being reloaded); retry")]
    UnknownKek,
    #[error("the ByokKey's ciphertext does not open: altered, or not this ByokKey's")]
    DecryptFailed,
    #[error("the external KMS that wraps the ByokKey's data key does not answer; retry")]
    KmsUnavailable,
    #[error("the external KMS refused to unwrap the ByokKey's data key (a key version gone, or access withdrawn)")]
    KmsRefused,
    #[error("the pod has no completion index: it is not a pod of an Indexed judge Job")]
    NoCompletionIndex,
    #[error("the report is for another shard than the pod's completion index")]
    ShardMismatch,
    #[error("the pod is not the Job controller's copy of the judge Job's template")]
    PodNotFromJobTemplate,
    #[error("keys are handed out only while the pod starts (fetch-key), never to a running, finished or deleted pod")]
    PodNotStarting,
    #[error("the pod has finished or is being deleted")]
    PodFinished,
    #[error("the request does not come from the pod's own address")]
    NotFromPodAddress,
    #[error("the pod's address is not known yet; retry")]
    PodAddressUnknown,
    #[error("this pod was already handed its key once; a second request is refused and reported")]
    KeyAlreadyGranted,
    #[error("this endpoint needs an authorized bearer token")]
    Unauthorized,
    #[error("the token's user may not read this endpoint")]
    Forbidden,
    #[error("the request body is not valid")]
    BadRequest,
    #[error("the request body is larger than the broker accepts")]
    TooLarge,
    #[error("the broker cannot check this right now")]
    Unavailable,
}

impl Refusal {
    /// Every refusal (a new variant goes here too: its counter then starts at 0).
    pub const ALL: [Refusal; 32] = [
        Self::MissingToken,
        Self::WrongAudience,
        Self::TokenExpired,
        Self::InvalidToken,
        Self::NotAPodToken,
        Self::ReplayFromOtherPod,
        Self::PodNotFound,
        Self::PodUidMismatch,
        Self::PodInOtherNamespace,
        Self::NotOwnedByEvalJob,
        Self::JobFinished,
        Self::KeyRevoked,
        Self::KeyNotReady,
        Self::KeyUnreadable,
        Self::UnsupportedEnvelopeVersion,
        Self::UnknownKek,
        Self::DecryptFailed,
        Self::KmsUnavailable,
        Self::KmsRefused,
        Self::NoCompletionIndex,
        Self::ShardMismatch,
        Self::PodNotFromJobTemplate,
        Self::PodNotStarting,
        Self::PodFinished,
        Self::NotFromPodAddress,
        Self::PodAddressUnknown,
        Self::KeyAlreadyGranted,
        Self::Unauthorized,
        Self::Forbidden,
        Self::BadRequest,
        Self::TooLarge,
        Self::Unavailable,
    ];

    pub fn reason(self) -> &'static str {
        match self {
            Self::MissingToken => "MissingToken",
            Self::WrongAudience => "WrongAudience",
            Self::TokenExpired => "TokenExpired",
            Self::InvalidToken => "InvalidToken",
            Self::NotAPodToken => "NotAPodToken",
            Self::ReplayFromOtherPod => "ReplayFromOtherPod",
            Self::PodNotFound => "PodNotFound",
            Self::PodUidMismatch => "PodUidMismatch",
            Self::PodInOtherNamespace => "PodInOtherNamespace",
            Self::NotOwnedByEvalJob => "NotOwnedByEvalJob",
            Self::JobFinished => "JobFinished",
            Self::KeyRevoked => "KeyRevoked",
            Self::KeyNotReady => "KeyNotReady",
            Self::KeyUnreadable => "KeyUnreadable",
            Self::UnsupportedEnvelopeVersion => "UnsupportedEnvelopeVersion",
            Self::UnknownKek => "UnknownKek",
            Self::DecryptFailed => "DecryptFailed",
            Self::KmsUnavailable => "KmsUnavailable",
            Self::KmsRefused => "KmsRefused",
            Self::NoCompletionIndex => "NoCompletionIndex",
            Self::ShardMismatch => "ShardMismatch",
            Self::PodNotFromJobTemplate => "PodNotFromJobTemplate",
            Self::PodNotStarting => "PodNotStarting",
            Self::NotFromPodAddress => "NotFromPodAddress",
            Self::PodFinished => "PodFinished",
            Self::PodAddressUnknown => "PodAddressUnknown",
            Self::KeyAlreadyGranted => "KeyAlreadyGranted",
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden => "Forbidden",
            Self::BadRequest => "BadRequest",
            Self::TooLarge => "TooLarge",
            Self::Unavailable => "Unavailable",
        }
    }

    fn status(self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            Self::MissingToken
            | Self::WrongAudience
            | Self::TokenExpired
            | Self::InvalidToken
            | Self::NotAPodToken
            | Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable | Self::PodAddressUnknown | Self::UnknownKek | Self::KmsUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            // The broker's own stored data is at fault, not the caller: asking again will not help.
            Self::KeyUnreadable | Self::UnsupportedEnvelopeVersion | Self::DecryptFailed | Self::KmsRefused => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            _ => StatusCode::FORBIDDEN,
        }
    }
}

/// The controllers' caches the broker answers from. Set once this replica leads and its
/// controllers run; until then every request is refused as Unavailable and /readyz says no.
pub struct BrokerStores {
    pub byokkeys: Store<ByokKey>,
    pub encrypted: Store<crate::keystore::Ciphertext>,
    pub evaljobs: Store<EvalJob>,
    pub jobs: Store<Job>,
}

/// What the broker answers from.
pub struct BrokerState {
    pub client: Client,
    /// Verifies bearer tokens: TokenReview by the API server (`client`) in the operator.
    pub tokens: Arc<dyn authn::TokenReviewer>,
    /// Opens the stored keys: the keyring Secret, or an external KMS.
    pub kek: KekSource,
    pub stores: std::sync::OnceLock<BrokerStores>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The operator's namespace: where grant records are kept, out of tenants' reach.
    pub namespace: String,
    /// Warning Events on EvalJobs (a second key request).
    pub recorder: crate::events::Recorder,
    /// Signs the results ConfigMaps.
    pub results_mac: results::ResultsMac,
    /// /metrics needs a bearer token allowed to `get` /metrics.
    pub metrics_auth: bool,
    /// Results reports read at once (each up to `MAX_REPORT_BYTES`).
    pub results_slots: tokio::sync::Semaphore,
}

/// Results reports the broker reads at once: 8 x 4 MiB at most in memory.
pub const RESULTS_IN_FLIGHT: usize = 8;

impl BrokerState {
    fn stores(&self) -> Result<&BrokerStores, Refusal> {
        self.stores.get().ok_or(Refusal::Unavailable)
    }

    fn count(&self, endpoint: &'static str, outcome: &'static str) {
        self.metrics.broker_requests.get_or_create(&crate::metrics::BrokerLabels { endpoint, outcome }).inc();
    }

    /// All metrics; on the leader (the replica whose caches the broker answers from) with the
    /// cluster gauges counted from those caches now.
    pub fn metrics_text(&self) -> String {
        let state = self
            .stores
            .get()
            .map(|s| cluster_state::cluster_state(&s.byokkeys.state(), &s.encrypted.state(), &self.kek.known_ids()));
        self.metrics.encode(state)
    }
}

/// Every outcome of the broker's endpoints at 0 in the metrics, so that alerts on their
/// `increase` see the first one.
pub fn count_from_zero(metrics: &crate::metrics::Metrics) {
    let refusals = Refusal::ALL.map(Refusal::reason);
    metrics.count_from_zero("key", std::iter::once("granted").chain(refusals));
    metrics.count_from_zero("results", std::iter::once("accepted").chain(refusals));
    metrics.count_from_zero("metrics", [Refusal::Unauthorized.reason(), Refusal::Forbidden.reason()]);
}

pub fn router(state: Arc<BrokerState>) -> Router {
    Router::new()
        .route(wire::KEY_PATH, post(handlers::key).layer(DefaultBodyLimit::max(4096)))
        .route(wire::RESULTS_PATH, post(handlers::results))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(handlers::ready))
        .route("/metrics", get(handlers::metrics))
        .with_state(state)
}

/// Serves the broker over TLS with a certificate for `names`, issued by `ca`, until shutdown.
pub async fn serve(state: Arc<BrokerState>, ca: &BrokerCa, addr: SocketAddr, names: &[String]) -> std::io::Result<()> {
    let (chain, key) = ca.issue_serving(names).map_err(std::io::Error::other)?;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(std::io::Error::other)?;
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(std::io::Error::other)?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(std::io::Error::other)?;
    let tls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config));
    tracing::info!(%addr, "key broker listening");
    // The peer address is part of the key endpoint's check (only the pod's own address).
    axum_server::bind_rustls(addr, tls).serve(router(state).into_make_service_with_connect_info::<SocketAddr>()).await
}
