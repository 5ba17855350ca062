//! Mock Anthropic under `/anthropic`: `x-api-key` or `Authorization: Bearer`, a dated
//! `anthropic-version`, `/v1/models`, `/v1/models/{id}`, `/v1/messages` with forced tool use.
//! Models, their lifecycle and whether they take `temperature` come from
//! [`super::catalog::ANTHROPIC`].

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::catalog::{Catalog, Lifecycle, Model, Temperature};
use super::openai::bearer_key;
use super::state::{Injected, MockState, Stage};
use super::verdicts::{mock_output_tokens, mock_refuses, mock_tokens, mock_verdict, verdict_json};
use super::{admit, respond};

const TOOL: &str = "record_verdict";

/// Routes below `/anthropic`, which stands for `https://api.anthropic.com`.
pub(crate) fn routes() -> Router<Arc<MockState>> {
    Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/models/{model}", get(get_model))
        .route("/v1/messages", post(messages))
        .fallback(unknown_route)
        .method_not_allowed_fallback(unknown_route)
}

fn api_key(headers: &HeaderMap) -> Option<String> {
    let header = headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim).filter(|k| !k.is_empty());
    header.map(str::to_string).or_else(|| bearer_key(headers))
}

/// `anthropic-version` must be a date such as `2023-06-01`.
fn dated(version: &str) -> bool {
    let b = version.as_bytes();
    b.len() == 10 && b.iter().enumerate().all(|(i, c)| if i == 4 || i == 7 { *c == b'-' } else { c.is_ascii_digit() })
}

fn headers(state: &MockState, remaining: u32) -> Vec<(&'static str, String)> {
    // Without a reset time (a clock past year 9999) the reset headers are left out.
    let reset = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(60))
        .ok()
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    let mut h = vec![("request-id", format!("req_{}", state.next_id()))];
    for (limit, remaining_name, reset_name, max, left) in [
        (
            "anthropic-ratelimit-requests-limit",
            "anthropic-ratelimit-requests-remaining",
            "anthropic-ratelimit-requests-reset",
            50,
            remaining,
        ),
        (
            "anthropic-ratelimit-tokens-limit",
            "anthropic-ratelimit-tokens-remaining",
            "anthropic-ratelimit-tokens-reset",
            100_000,
            99_000,
        ),
        (
            "anthropic-ratelimit-input-tokens-limit",
            "anthropic-ratelimit-input-tokens-remaining",
            "anthropic-ratelimit-input-tokens-reset",
            80_000,
            79_000,
        ),
        (
            "anthropic-ratelimit-output-tokens-limit",
            "anthropic-ratelimit-output-tokens-remaining",
            "anthropic-ratelimit-output-tokens-reset",
            20_000,
            19_900,
        ),
    ] {
        h.extend([(limit, max.to_string()), (remaining_name, left.to_string())]);
        h.extend(reset.clone().map(|reset| (reset_name, reset)));
    }
    h
}

/// `{"type":"error","error":{"type","message"},"request_id"}`.
fn error(state: &MockState, status: u16, kind: &str, message: &str, extra: Vec<(&'static str, String)>) -> Response {
    let mut h = headers(state, if status == 429 { 0 } else { 49 });
    let request_id = h[0].1.clone();
    h.extend(extra);
    respond(status, h, &json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}))
}

fn failure(state: &MockState, injected: Injected) -> Response {
    let rate_limit = |extra| {
        error(
            state,
            429,
            "rate_limit_error",
            "This request would exceed the rate limit for your organization of 50 requests per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits.",
            extra,
        )
    };
    match injected {
        Injected::Unauthorized | Injected::Unauthenticated401 => {
            error(state, 401, "authentication_error", "invalid x-api-key", vec![])
        }
        Injected::InvalidKey400 => error(state, 400, "authentication_error", "invalid x-api-key", vec![]),
        Injected::Restricted | Injected::Forbidden => error(
            state,
            403,
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
            vec![],
        ),
        // Out of credit and over the spend limit are both 400s (docs/providers.md, key validation answers).
        Injected::Quota => error(
            state,
            400,
            "invalid_request_error",
            "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
            vec![],
        ),
        Injected::SpendLimit => error(
            state,
            400,
            "invalid_request_error",
            "You have reached your specified API usage limits. You will regain access on 2027-01-01 at 00:00 UTC.",
            vec![],
        ),
        Injected::RateLimit => rate_limit(vec![("retry-after", "1".into())]),
        Injected::RateLimitNoWait => rate_limit(vec![]),
        Injected::ServerError | Injected::Overloaded => error(state, 529, "overloaded_error", "Overloaded", vec![]),
        Injected::Internal => error(state, 500, "api_error", "Internal server error", vec![]),
        // Anthropic documents no 503; the api_error envelope is [unconfirmed].
        Injected::Unavailable => error(state, 503, "api_error", "Service Unavailable", vec![]),
    }
}

/// Authenticates and applies injected failures; the key and behaviour on success.
async fn gate(state: &MockState, request_headers: &HeaderMap, stage: Stage) -> Result<super::Behaviour, Response> {
    let key = api_key(request_headers);
    let behaviour = admit(state, key.as_deref()).await;
    if key.is_none() {
        return Err(error(state, 401, "authentication_error", "x-api-key header is required", vec![]));
    }
    if let Some(f) = state.injected(behaviour, stage) {
        return Err(failure(state, f));
    }
    match request_headers.get("anthropic-version").and_then(|v| v.to_str().ok()) {
        None => Err(error(state, 400, "invalid_request_error", "anthropic-version: header is required", vec![])),
        Some(v) if !dated(v) => Err(error(
            state,
            400,
            "invalid_request_error",
            &format!("anthropic-version: invalid version {v:?}"),
            vec![],
        )),
        Some(_) => Ok(behaviour),
    }
}

/// A model object. The `lifecycle` field (`active`/`deprecated`) is [unconfirmed]: seen only in
/// third-party material (docs/providers.md, what users see).
fn model_object(model: &Model) -> Value {
    let lifecycle = match model.lifecycle {
        Lifecycle::Active => "active",
        Lifecycle::Deprecated { .. } => "deprecated",
        Lifecycle::Retired => "retired",
    };
    json!({"type": "model", "id": model.id, "display_name": model.id, "created_at": "2026-01-15T00:00:00Z",
           "lifecycle": lifecycle})
}

fn model_not_found(state: &MockState, model: &str) -> Response {
    error(state, 404, "not_found_error", &format!("model: {model}"), vec![])
}

/// Any other path or method under `/anthropic`, after authentication [unconfirmed].
async fn unknown_route(State(state): State<Arc<MockState>>, request_headers: HeaderMap) -> Response {
    let key = api_key(&request_headers);
    let behaviour = admit(&state, key.as_deref()).await;
    if key.is_none() {
        return error(&state, 401, "authentication_error", "x-api-key header is required", vec![]);
    }
    if let Some(f @ Injected::Unauthorized) = state.injected(behaviour, Stage::Request) {
        return failure(&state, f);
    }
    error(&state, 404, "not_found_error", "Not Found", vec![])
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<usize>,
    after_id: Option<String>,
}

async fn list_models(
    State(state): State<Arc<MockState>>,
    Query(query): Query<ListQuery>,
    request_headers: HeaderMap,
) -> Response {
    if let Err(response) = gate(&state, &request_headers, Stage::Listing { restricted_ok: false }).await {
        return response;
    }
    let models: Vec<&Model> = Catalog::listed(&state.config.catalog.anthropic).collect();
    let start = query.after_id.and_then(|after| models.iter().position(|m| m.id == after)).map_or(0, |i| i + 1);
    let limit = query.limit.unwrap_or(20).clamp(1, 1000);
    let page: Vec<&Model> = models.iter().skip(start).take(limit).copied().collect();
    let body = json!({
        "data": page.iter().map(|m| model_object(m)).collect::<Vec<_>>(),
        "has_more": start + page.len() < models.len(),
        "first_id": page.first().map(|m| m.id),
        "last_id": page.last().map(|m| m.id),
    });
    respond(200, headers(&state, 49), &body)
}

async fn get_model(
    State(state): State<Arc<MockState>>,
    Path(model): Path<String>,
    request_headers: HeaderMap,
) -> Response {
    if let Err(response) = gate(&state, &request_headers, Stage::Listing { restricted_ok: false }).await {
        return response;
    }
    match state.config.catalog.anthropic_model(&model) {
        Some(found) => respond(200, headers(&state, 49), &model_object(found)),
        None => model_not_found(&state, &model),
    }
}

/// Checks the parameters that depend on the model: claude-opus-4-7 and later and the 5-series
/// answer 400 whenever `temperature` is sent.
pub(crate) fn check_params(model: &Model, request: &Map<String, Value>) -> Result<(), &'static str> {
    const DEPRECATED: &str = "`temperature` is deprecated for this model.";
    match (model.temperature, request.get("temperature")) {
        (Temperature::Rejected, Some(_)) => Err(DEPRECATED),
        // No Anthropic row takes only the default; rejecting other values alike is [unconfirmed].
        (Temperature::OnlyDefault, Some(t)) if t.as_f64() != Some(1.0) => Err(DEPRECATED),
        _ => Ok(()),
    }
}

/// Text of `system` or a message `content`: a string or an array of text blocks.
fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => {
            blocks.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n")
        }
        _ => String::new(),
    }
}

async fn messages(State(state): State<Arc<MockState>>, request_headers: HeaderMap, body: Bytes) -> Response {
    let behaviour = match gate(&state, &request_headers, Stage::Request).await {
        Ok(behaviour) => behaviour,
        Err(response) => return response,
    };
    let (model, request) = match validate(&state, &body) {
        Ok(valid) => valid,
        Err(response) => return *response,
    };
    if let Some(f) = state.injected(behaviour, Stage::Generation) {
        return failure(&state, f);
    }
    respond(200, headers(&state, 49), &message(&state, model, &request))
}

/// Checks a Messages body as the API does: the model first (a retired id answers like an
/// unknown one, before the rest of the body is looked at), then the required fields and the
/// parameters the model refuses.
fn validate<'a>(state: &'a MockState, body: &[u8]) -> Result<(&'a Model, Map<String, Value>), Box<Response>> {
    let bad = |message: &str| Box::new(error(state, 400, "invalid_request_error", message, vec![]));
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(body) else {
        return Err(bad("There was an issue with the request body: invalid JSON"));
    };
    let Some(id) = request.get("model").and_then(Value::as_str) else { return Err(bad("model: Field required")) };
    let Some(model) = state.config.catalog.anthropic_model(id) else {
        return Err(Box::new(model_not_found(state, id)));
    };
    if request.get("max_tokens").and_then(Value::as_u64).is_none() {
        return Err(bad("max_tokens: Field required"));
    }
    if request.get("messages").and_then(Value::as_array).is_none() {
        return Err(bad("messages: Field required"));
    }
    check_params(model, &request).map_err(bad)?;
    Ok((model, request))
}

/// The Message answering a valid request: the forced `record_verdict` call (or the verdict as
/// text), a refusal, or no content when `max_tokens` cannot hold the verdict.
fn message(state: &MockState, model: &Model, request: &Map<String, Value>) -> Value {
    let system = text(request.get("system"));
    let messages = request.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let user = messages
        .iter()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| text(m.get("content")))
        .collect::<Vec<_>>()
        .join("\n");
    let max_tokens = request.get("max_tokens").and_then(Value::as_u64).unwrap_or_default();
    let forced_tool = request.get("tool_choice").and_then(|c| c.get("name")).and_then(Value::as_str) == Some(TOOL);
    let verdict = mock_verdict(&system, &user);
    let needed = mock_output_tokens(&verdict);
    let (content, stop_reason, output) = if mock_refuses(&system, &user) {
        (json!([]), "refusal", 3)
    } else if max_tokens < needed {
        (json!([]), "max_tokens", max_tokens)
    } else if forced_tool {
        let input = json!({"score": verdict.score, "pass": verdict.pass, "reason": verdict.reason});
        (
            json!([{"type": "tool_use", "id": format!("toolu_{}", state.next_id()), "name": TOOL, "input": input}]),
            "tool_use",
            needed,
        )
    } else {
        (json!([{"type": "text", "text": verdict_json(&verdict)}]), "end_turn", needed)
    };
    let input = mock_tokens(&system) + mock_tokens(&user);
    json!({
        "id": format!("msg_{}", state.next_id()),
        "type": "message",
        "role": "assistant",
        "model": model.id,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": {"input_tokens": input, "output_tokens": output, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temperature_follows_the_catalog() {
        let catalog = Catalog::default();
        let check = |id: &str, request: Value| {
            let Some(model) = catalog.anthropic_model(id) else { panic!("{id} is not served") };
            let Value::Object(request) = request else { panic!("not an object") };
            check_params(model, &request)
        };
        for id in ["claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-1"] {
            assert_eq!(check(id, json!({"temperature": 0})), Ok(()), "{id}");
        }
        for id in ["claude-opus-4-8", "claude-sonnet-5"] {
            assert_eq!(check(id, json!({"temperature": 0})), Err("`temperature` is deprecated for this model."));
            assert_eq!(check(id, json!({"temperature": 1})), Err("`temperature` is deprecated for this model."));
            assert_eq!(check(id, json!({"max_tokens": 10})), Ok(()), "{id}");
        }
    }

    #[test]
    fn dated_versions() {
        assert!(super::dated("2023-06-01"));
        assert!(super::dated("2026-10-21"));
        assert!(!super::dated("latest"));
        assert!(!super::dated("2023-6-1"));
    }
}
