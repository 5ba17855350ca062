//! Mock Azure OpenAI under `/azure`: `api-key` header; dated
//! (`/openai/deployments/{d}/chat/completions?api-version=`) and v1 (`/openai/v1/...`) styles and
//! model listing. Bodies are OpenAI's plus content-filter annotations.
//!
//! Deployments come from [`super::catalog::AZURE`]: each names an underlying OpenAI model, whose
//! catalog row decides which parameters are rejected and which id the response reports. There is
//! no data-plane deployment lookup (`GET /openai/deployments/{d}` is 404 "Resource not found",
//! like every other unknown route); a missing deployment is 404 `DeploymentNotFound` on chat,
//! before the body is validated.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::catalog::{Catalog, Model};
use super::openai::{bad_request, completion, invalid_json, parse_body};
use super::state::{Behaviour, Injected, MockState, Stage};
use super::{admit, respond};

type Params = Query<HashMap<String, String>>;

/// Routes below `/azure`, which stands for `https://{resource}.openai.azure.com`.
pub(crate) fn routes() -> Router<Arc<MockState>> {
    Router::new()
        .route("/openai/models", get(list_models_dated))
        .route("/openai/v1/models", get(list_models_v1))
        .route("/openai/deployments/{deployment}/chat/completions", post(chat_dated))
        .route("/openai/v1/chat/completions", post(chat_v1))
        .fallback(resource_not_found)
        .method_not_allowed_fallback(resource_not_found)
}

fn headers(state: &MockState, remaining: u32) -> Vec<(&'static str, String)> {
    let id = state.next_id();
    vec![
        ("apim-request-id", id.clone()),
        ("x-request-id", id),
        ("x-ms-region", "Sweden Central".into()),
        ("x-ratelimit-remaining-requests", remaining.to_string()),
        ("x-ratelimit-remaining-tokens", "149000".into()),
    ]
}

/// `{"error":{"code","message"}}`.
fn error(state: &MockState, status: u16, code: &str, message: &str) -> Response {
    respond(status, headers(state, 99), &json!({"error": {"code": code, "message": message}}))
}

fn failure(state: &MockState, injected: Injected) -> Response {
    let denied = |status: u16| {
        error(
            state,
            status,
            "401",
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.",
        )
    };
    let rate_limit = |wait: bool| {
        let mut h = headers(state, 0);
        if wait {
            h.extend([("retry-after", "1".to_string()), ("retry-after-ms", "1000".to_string())]);
        }
        let message = "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded call rate limit of your current OpenAI S0 pricing tier. Please retry after 1 second. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit.";
        respond(429, h, &json!({"error": {"code": "429", "message": message}}))
    };
    let unavailable = |status: u16| {
        error(
            state,
            status,
            "ServiceUnavailable",
            "The service is temporarily unable to process your request. Please try again later.",
        )
    };
    match injected {
        Injected::Unauthorized | Injected::Unauthenticated401 => denied(401),
        Injected::InvalidKey400 => denied(400),
        Injected::Restricted | Injected::Forbidden => {
            error(state, 403, "AuthenticationTypeDisabled", "Key based authentication is disabled for this resource.")
        }
        // [unconfirmed] Azure's data plane mostly reports quota as rate limiting; this models a hard stop.
        Injected::Quota | Injected::SpendLimit => error(
            state,
            429,
            "insufficient_quota",
            "The quota for this subscription has been exhausted. Please check your plan and billing details.",
        ),
        Injected::RateLimit => rate_limit(true),
        Injected::RateLimitNoWait => rate_limit(false),
        // Azure documents no 529; a gateway in front of it might.
        Injected::Unavailable => unavailable(503),
        Injected::Overloaded => unavailable(529),
        Injected::ServerError | Injected::Internal => error(
            state,
            500,
            "InternalServerError",
            "The service is temporarily unable to process your request. Please try again later.",
        ),
    }
}

/// Counts the request, then checks api-version (dated routes), the key and injected failures.
async fn gate(
    state: &MockState,
    request_headers: &HeaderMap,
    api_version: Option<Option<&String>>,
    stage: Stage,
) -> Result<Behaviour, Response> {
    let key = request_key(request_headers);
    let behaviour = admit(state, key).await;
    if let Some(None) = api_version {
        return Err(not_found(state));
    }
    if key.is_none() {
        return Err(failure(state, Injected::Unauthorized));
    }
    match state.injected(behaviour, stage) {
        Some(f) => Err(failure(state, f)),
        None => Ok(behaviour),
    }
}

/// `{"error":{"code":"404","message":"Resource not found"}}`: an unknown route.
fn not_found(state: &MockState) -> Response {
    error(state, 404, "404", "Resource not found")
}

/// Any other path or method under `/azure` (the deployment lookup among them), after the key
/// [unconfirmed order].
async fn resource_not_found(State(state): State<Arc<MockState>>, h: HeaderMap) -> Response {
    let key = request_key(&h);
    let behaviour = admit(&state, key).await;
    if key.is_none() || state.injected(behaviour, Stage::Request) == Some(Injected::Unauthorized) {
        return failure(&state, Injected::Unauthorized);
    }
    not_found(&state)
}

fn request_key(request_headers: &HeaderMap) -> Option<&str> {
    request_headers.get("api-key").and_then(|v| v.to_str().ok()).map(str::trim).filter(|k| !k.is_empty())
}

/// Unix time of a `YYYY-MM-DD` date, midnight UTC.
fn unix_day(date: &str) -> Option<i64> {
    let date: jiff::civil::Date = date.parse().ok()?;
    Some(date.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp().as_second())
}

/// The resource's models: base models (the catalog's OpenAI ids), not deployment names. The
/// `deprecation.inference` time of deprecated models is [unconfirmed].
fn model_list(state: &MockState) -> Value {
    let object = |model: &Model| {
        let mut object = json!({"id": model.id, "object": "model", "status": "succeeded", "created_at": 1_715_367_049,
               "lifecycle_status": "generally-available",
               "capabilities": {"chat_completion": true, "completion": false, "embeddings": false}});
        if let Some(shutdown) = model.shutdown_date().and_then(unix_day) {
            object["deprecation"] = json!({"inference": shutdown});
        }
        object
    };
    let data: Vec<Value> = Catalog::listed(&state.config.catalog.openai).map(object).collect();
    json!({"object": "list", "data": data})
}

async fn list_models_dated(State(state): State<Arc<MockState>>, Query(params): Params, h: HeaderMap) -> Response {
    let listing = Stage::Listing { restricted_ok: false };
    match gate(&state, &h, Some(params.get("api-version")), listing).await {
        Ok(_) => respond(200, headers(&state, 99), &model_list(&state)),
        Err(response) => response,
    }
}

async fn list_models_v1(State(state): State<Arc<MockState>>, h: HeaderMap) -> Response {
    match gate(&state, &h, None, Stage::Listing { restricted_ok: false }).await {
        Ok(_) => respond(200, headers(&state, 99), &model_list(&state)),
        Err(response) => response,
    }
}

fn deployment_not_found(state: &MockState) -> Response {
    error(
        state,
        404,
        "DeploymentNotFound",
        "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.",
    )
}

/// A chat request to `deployment` (from the dated URL, else the body's `model`): the deployment
/// must exist before the body is validated, against the deployment's underlying model.
async fn chat(
    state: &MockState,
    request_headers: &HeaderMap,
    api_version: Option<Option<&String>>,
    url_deployment: Option<&str>,
    body: &[u8],
) -> Response {
    let behaviour = match gate(state, request_headers, api_version, Stage::Request).await {
        Ok(behaviour) => behaviour,
        Err(response) => return response,
    };
    let lookup = |deployment: &str| state.config.catalog.azure_model(deployment);
    let (model, request) = match url_deployment {
        Some(deployment) => {
            let Some(model) = lookup(deployment) else { return deployment_not_found(state) };
            let Some(request) = parse_body(body) else { return invalid_json(state) };
            (model, request)
        }
        None => {
            let Some(request) = parse_body(body) else { return invalid_json(state) };
            let Some(deployment) = request.get("model").and_then(Value::as_str) else {
                return bad_request(state, "you must provide a model parameter", None, None);
            };
            let Some(model) = lookup(deployment) else { return deployment_not_found(state) };
            (model, request)
        }
    };
    match completion(&request, model) {
        Err(rejected) => rejected.response(state),
        Ok(ready) => match state.injected(behaviour, Stage::Generation) {
            Some(f) => failure(state, f),
            None => respond(200, headers(state, 98), &ready.render(state, true)),
        },
    }
}

async fn chat_dated(
    State(state): State<Arc<MockState>>,
    Path(deployment): Path<String>,
    Query(params): Params,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    chat(&state, &h, Some(params.get("api-version")), Some(&deployment), &body).await
}

async fn chat_v1(State(state): State<Arc<MockState>>, h: HeaderMap, body: Bytes) -> Response {
    chat(&state, &h, None, None, &body).await
}
