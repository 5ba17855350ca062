//! The mock LLM provider: a real HTTP server faithful to docs/providers.md, serving the four
//! providers on one port under path prefixes (`/openai/v1`, `/anthropic`, `/google`, `/azure`),
//! with per-key error injection, latency, request counting and deterministic verdicts.
//!
//! Keys choose their behaviour by substring ([`Behaviour::for_key`]) or at runtime
//! ([`MockHandle::set_behaviour`], `POST /_mock/behaviour`). Verdicts: see [`mock_verdict`].
//!
//! What each model accepts comes from the mock's own [`catalog`] (December 2026), never from the
//! provider clients' tables nor from a model's name. A request is answered in the real services'
//! order: authentication, then the route and the model (or Azure deployment), then the body, then
//! credit. From the catalog:
//! - Retired and unknown models are 404 in each provider's envelope and absent from listings;
//!   OpenAI lists deprecated models with a `shutdown_date`, Anthropic's model objects carry a
//!   `lifecycle`.
//! - OpenAI reasoning models reject `max_tokens`, a `temperature` other than 1 and an unknown
//!   `reasoning_effort`; other models reject `reasoning_effort`. Anthropic's newest models reject
//!   `temperature`. Gemini 3 takes `thinkingLevel`, Gemini 2.5 only `thinkingBudget`.
//! - Reasoning and thinking tokens (`reasoning_effort`, `thinkingLevel`, `thinkingBudget`) count
//!   against the output limit: too small a limit gives an empty answer (OpenAI `finish_reason`
//!   `length` with `content: ""`, Gemini `MAX_TOKENS` without parts). Usage reports them
//!   (`reasoning_tokens`, `thoughtsTokenCount`).
//! - Gemini `/v1` rejects `systemInstruction`, `responseMimeType` and `responseSchema`; `/v1beta`
//!   takes them.
//! - Azure has no deployment lookup route; chat to a missing deployment is `DeploymentNotFound`
//!   before the body is looked at, and a deployment answers as its underlying model.
//! - Unknown routes under each prefix answer that provider's 404.
//!
//! Provider faults (401, 403, 400 invalid-key, 429 with and without a wait, 500, 503, 529, a
//! reset mid-body, no answer, a dripping body, malformed or foreign JSON, a 50 MiB body) are one
//! table, [`FAULTS`], each selected by a `fault-...` key marker; wire faults are done on the
//! socket. A refused connection: [`MockHandle::refused_endpoints`].
//!
//! Anthropic answers out-of-credit keys ([`Behaviour::Quota`]) and keys over their spend limit
//! ([`Behaviour::SpendLimit`]) with 400 `invalid_request_error`; OpenAI keys without the model-read
//! scope ([`Behaviour::NoModelRead`]) fail the model endpoints with 401 but can chat.

pub mod catalog;

mod anthropic;
mod azure;
pub mod fault_table;
pub mod faults;
mod google;
mod openai;
#[cfg(test)]
mod server_tests;
mod state;
mod verdicts;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::providers::Endpoints;

pub use catalog::Catalog;
pub use fault_table::{FAULTS, Fault, FaultSpec};
pub use state::{Behaviour, fnv1a64, key_fingerprint};
pub use verdicts::{mock_output_tokens, mock_refuses, mock_score, mock_tokens, mock_usage, mock_verdict};

use state::{Injected, MockState, Stage};

/// What the mock serves and how.
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// Listen address; `127.0.0.1:0` (a free loopback port) when None.
    pub addr: Option<SocketAddr>,
    /// Added to every request.
    pub latency: Duration,
    /// Extra delay for keys behaving [`Behaviour::Slow`].
    pub slow_delay: Duration,
    /// The models and Azure deployments served, and what each accepts; the full December 2026
    /// catalog by default.
    pub catalog: Catalog,
    /// Whether an out-of-quota key also fails model listings. Real services let such keys list
    /// models and only refuse to generate, so this is off by default.
    pub quota_blocks_listing: bool,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            addr: None,
            latency: Duration::ZERO,
            slow_delay: Duration::from_secs(5),
            catalog: Catalog::default(),
            quota_blocks_listing: false,
        }
    }
}

/// A running mock. Dropping it stops the server.
pub struct MockHandle {
    addr: SocketAddr,
    /// A port bound but not listening: connections to it are refused.
    refused: tokio::net::TcpSocket,
    state: Arc<MockState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// Starts the mock on `config.addr` (a free loopback port by default).
pub async fn start(config: MockConfig) -> std::io::Result<MockHandle> {
    let bind = config.addr.unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    let listener = tokio::net::TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    let refused = tokio::net::TcpSocket::new_v4()?;
    refused.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    let state = Arc::new(MockState::new(config));
    let app = router(state.clone()).into_make_service_with_connect_info::<faults::Conn>();
    let (shutdown, signal) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(faults::FaultListener(listener), app)
            .with_graceful_shutdown(async {
                let _ = signal.await;
            })
            .await
    });
    Ok(MockHandle { addr, refused, state, shutdown: Some(shutdown), task: Some(task) })
}

impl MockHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URLs for the provider clients; Azure's endpoint override points at the mock.
    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            openai: format!("http://{}/openai/v1", self.addr),
            anthropic: format!("http://{}/anthropic", self.addr),
            google: format!("http://{}/google", self.addr),
            azure: Some(self.azure_endpoint()),
            ..Endpoints::default()
        }
    }

    /// Base URLs of a port bound by nobody listening: every connection is refused.
    pub fn refused_endpoints(&self) -> Endpoints {
        let addr = self.refused.local_addr().map_or_else(|_| "127.0.0.1:1".to_string(), |a| a.to_string());
        Endpoints {
            openai: format!("http://{addr}/openai/v1"),
            anthropic: format!("http://{addr}/anthropic"),
            google: format!("http://{addr}/google"),
            azure: Some(format!("http://{addr}/azure")),
            ..Endpoints::default()
        }
    }

    /// The value for `AzureSpec.endpoint`.
    pub fn azure_endpoint(&self) -> String {
        format!("http://{}/azure", self.addr)
    }

    /// Makes `key` behave as `behaviour` for the next `times` requests (forever when None), after
    /// which it reverts to its default behaviour. `times: Some(0)` clears an override.
    pub fn set_behaviour(&self, key: &str, behaviour: Behaviour, times: Option<u32>) {
        self.state.set_behaviour(key, behaviour, times);
    }

    pub fn set_latency(&self, latency: Duration) {
        self.state.set_latency(latency);
    }

    /// Requests that carried `key`, whatever the answer.
    pub fn requests_for_key(&self, key: &str) -> u64 {
        self.state.requests_for_key(key)
    }

    /// Body bytes a streamed fault answer (`Fault::Huge`) handed to the socket for `key`.
    pub fn streamed_for_key(&self, key: &str) -> u64 {
        self.state.streamed_for_key(key)
    }

    /// All requests to provider endpoints, with or without a key.
    pub fn requests_total(&self) -> u64 {
        self.state.requests_total()
    }

    /// Stops accepting connections and waits (up to 2 s) for in-flight requests.
    pub async fn shutdown(mut self) {
        if let Some(signal) = self.shutdown.take() {
            let _ = signal.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(2), &mut task).await.is_err()
        {
            task.abort();
        }
    }
}

impl Drop for MockHandle {
    fn drop(&mut self) {
        if let Some(signal) = self.shutdown.take() {
            let _ = signal.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn router(state: Arc<MockState>) -> Router {
    // Each prefix stands for a provider's host; its router answers unknown routes itself.
    Router::new()
        .nest("/openai", openai::routes())
        .nest("/anthropic", anthropic::routes())
        .nest("/google", google::routes())
        .nest("/azure", azure::routes())
        .route("/_mock/behaviour", post(set_behaviour))
        .route("/_mock/latency", post(set_latency))
        .route("/_mock/stats", get(stats))
        .fallback(|| async { respond(404, vec![], &json!({"error": {"message": "mock: no such endpoint"}})) })
        .layer(axum::middleware::from_fn_with_state(state.clone(), faults::inject))
        .with_state(state)
}

#[derive(Deserialize)]
struct BehaviourRequest {
    key: String,
    behaviour: Behaviour,
    #[serde(default)]
    times: Option<u32>,
}

async fn set_behaviour(State(state): State<Arc<MockState>>, Json(request): Json<BehaviourRequest>) -> StatusCode {
    state.set_behaviour(&request.key, request.behaviour, request.times);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct LatencyRequest {
    ms: u64,
}

async fn set_latency(State(state): State<Arc<MockState>>, Json(request): Json<LatencyRequest>) -> StatusCode {
    state.set_latency(Duration::from_millis(request.ms));
    StatusCode::NO_CONTENT
}

async fn stats(State(state): State<Arc<MockState>>) -> Json<Value> {
    Json(json!({"total": state.requests_total(), "keys": state.stats()}))
}

/// Counts the request against its key and waits the configured latency.
async fn admit(state: &MockState, key: Option<&str>) -> Behaviour {
    let behaviour = state.admit(key);
    state.delay(behaviour).await;
    behaviour
}

impl MockState {
    fn injected(&self, behaviour: Behaviour, stage: Stage) -> Option<Injected> {
        state::injected(behaviour, stage, self.config.quota_blocks_listing)
    }
}

/// A JSON response with extra headers.
fn respond(status: u16, headers: Vec<(&'static str, String)>, body: &Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            map.insert(HeaderName::from_static(name), value);
        }
    }
    (status, map, Json(body)).into_response()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
