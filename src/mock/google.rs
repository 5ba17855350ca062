//! Mock Gemini API under `/google/{v1beta|v1}`: `x-goog-api-key` header or `?key=`,
//! `models`, `models/{model}`, `models/{model}:generateContent`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use super::state::{Behaviour, Injected, MockState, Stage};
use super::verdicts::{mock_output_tokens, mock_refuses, mock_tokens, mock_verdict, verdict_json};
use super::{admit, respond};

const ERROR_INFO: &str = "type.googleapis.com/google.rpc.ErrorInfo";

pub(crate) fn routes() -> Router<Arc<MockState>> {
    Router::new()
        .route("/google/{version}/models", get(list_models))
        .route("/google/{version}/models/{name}", get(get_model).post(generate))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct GoogleQuery {
    key: Option<String>,
    page_size: Option<usize>,
    page_token: Option<String>,
}

/// `{"error":{"code","message","status","details"}}`.
fn error(status: u16, rpc_status: &str, message: &str, details: Value, extra: Vec<(&'static str, String)>) -> Response {
    let body = json!({"error": {"code": status, "message": message, "status": rpc_status, "details": details}});
    respond(status, extra, &body)
}

fn failure(injected: Injected) -> Response {
    let quota = |quota_id: &str| {
        json!({"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            "quotaId": quota_id,
            "quotaDimensions": {"location": "global", "model": "gemini-2.5-pro"},
            "quotaValue": "50"
        }]})
    };
    let exceeded = "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.";
    match injected {
        Injected::Unauthorized => error(
            400,
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
            json!([
                {"@type": ERROR_INFO, "reason": "API_KEY_INVALID", "domain": "googleapis.com",
                 "metadata": {"service": "generativelanguage.googleapis.com"}},
                {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US",
                 "message": "API key not valid. Please pass a valid API key."}
            ]),
            vec![],
        ),
        Injected::Restricted => error(
            403,
            "PERMISSION_DENIED",
            "Requests to this API generativelanguage.googleapis.com method google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent are blocked.",
            json!([{"@type": ERROR_INFO, "reason": "API_KEY_SERVICE_BLOCKED", "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"}}]),
            vec![],
        ),
        Injected::Quota => error(
            429,
            "RESOURCE_EXHAUSTED",
            exceeded,
            json!([quota("GenerateRequestsPerDayPerProjectPerModel-FreeTier")]),
            vec![],
        ),
        Injected::RateLimit => error(
            429,
            "RESOURCE_EXHAUSTED",
            exceeded,
            json!([
                quota("GenerateRequestsPerMinutePerProjectPerModel-FreeTier"),
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}
            ]),
            vec![("retry-after", "1".into())],
        ),
        Injected::ServerError => {
            error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.", json!([]), vec![])
        }
    }
}

/// Version check, authentication and injected failures.
async fn gate(
    state: &MockState,
    version: &str,
    request_headers: &HeaderMap,
    query: &GoogleQuery,
    stage: Stage,
) -> Result<Behaviour, Response> {
    let header = request_headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()).map(str::to_string);
    let key = header.or_else(|| query.key.clone()).filter(|k| !k.trim().is_empty());
    let behaviour = admit(state, key.as_deref()).await;
    if version != "v1beta" && version != "v1" {
        return Err(respond(
            404,
            vec![],
            &json!({"error": {"code": 404, "message": "Not Found", "status": "NOT_FOUND"}}),
        ));
    }
    if key.is_none() {
        return Err(error(
            403,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
            json!([]),
            vec![],
        ));
    }
    match state.injected(behaviour, stage) {
        Some(f) => Err(failure(f)),
        None => Ok(behaviour),
    }
}

fn model_object(id: &str) -> Value {
    json!({
        "name": format!("models/{id}"),
        "version": "2.5",
        "displayName": id,
        "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 65_536,
        "supportedGenerationMethods": ["generateContent", "countTokens", "createCachedContent", "batchGenerateContent"],
        "temperature": 1.0,
        "topP": 0.95,
        "topK": 64,
        "maxTemperature": 2.0,
        "thinking": true
    })
}

fn not_found(model: &str, version: &str) -> Response {
    let message = format!(
        "models/{model} is not found for API version {version}, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods."
    );
    error(404, "NOT_FOUND", &message, json!([]), vec![])
}

async fn list_models(
    State(state): State<Arc<MockState>>,
    Path(version): Path<String>,
    Query(query): Query<GoogleQuery>,
    request_headers: HeaderMap,
) -> Response {
    if let Err(response) =
        gate(&state, &version, &request_headers, &query, Stage::Listing { restricted_ok: false }).await
    {
        return response;
    }
    let models = &state.config.google_models;
    let start: usize = query.page_token.as_deref().and_then(|t| t.parse().ok()).unwrap_or(0);
    let size = query.page_size.unwrap_or(50).clamp(1, 1000);
    let page: Vec<Value> = models.iter().skip(start).take(size).map(|m| model_object(m)).collect();
    let mut body = json!({"models": page});
    if start + size < models.len() {
        body["nextPageToken"] = json!((start + size).to_string());
    }
    respond(200, vec![], &body)
}

async fn get_model(
    State(state): State<Arc<MockState>>,
    Path((version, name)): Path<(String, String)>,
    Query(query): Query<GoogleQuery>,
    request_headers: HeaderMap,
) -> Response {
    if let Err(response) =
        gate(&state, &version, &request_headers, &query, Stage::Listing { restricted_ok: false }).await
    {
        return response;
    }
    if !state.config.google_models.contains(&name) {
        return not_found(&name, &version);
    }
    respond(200, vec![], &model_object(&name))
}

/// Text of every part of the given contents.
fn parts_text(value: Option<&Value>) -> String {
    let parts = value.and_then(|c| c.get("parts")).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n")
}

async fn generate(
    State(state): State<Arc<MockState>>,
    Path((version, name)): Path<(String, String)>,
    Query(query): Query<GoogleQuery>,
    request_headers: HeaderMap,
    body: Bytes,
) -> Response {
    let behaviour = match gate(&state, &version, &request_headers, &query, Stage::Request).await {
        Ok(behaviour) => behaviour,
        Err(response) => return response,
    };
    let Some((model, "generateContent")) = name.split_once(':') else {
        return error(404, "NOT_FOUND", "Method not found.", json!([]), vec![]);
    };
    let bad = |message: &str| error(400, "INVALID_ARGUMENT", message, json!([]), vec![]);
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(&body) else {
        return bad("Invalid JSON payload received.");
    };
    let contents = request.get("contents").and_then(Value::as_array).filter(|c| !c.is_empty());
    let Some(contents) = contents else { return bad("* GenerateContentRequest.contents: contents is not specified") };
    if !state.config.google_models.iter().any(|m| m == model) {
        return not_found(model, &version);
    }
    if let Some(f) = state.injected(behaviour, Stage::Generation) {
        return failure(f);
    }
    let system = parts_text(request.get("systemInstruction"));
    let user = contents
        .iter()
        .filter(|c| c.get("role").and_then(Value::as_str).is_none_or(|r| r == "user"))
        .map(|c| parts_text(Some(c)))
        .collect::<Vec<_>>()
        .join("\n");
    let max_tokens = request.get("generationConfig").and_then(|c| c.get("maxOutputTokens")).and_then(Value::as_u64);
    let verdict = mock_verdict(&system, &user);
    let needed = mock_output_tokens(&verdict);
    let input = mock_tokens(&system) + mock_tokens(&user);
    let (candidate, output) = if mock_refuses(&system, &user) {
        (
            json!({"finishReason": "SAFETY", "index": 0, "safetyRatings": [
            {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": true}]}),
            0,
        )
    } else if max_tokens.is_some_and(|max| max < needed) {
        // What thinking models really do: the budget goes to thoughts, no parts come back.
        (json!({"content": {"role": "model"}, "finishReason": "MAX_TOKENS", "index": 0}), 0)
    } else {
        (
            json!({"content": {"parts": [{"text": verdict_json(&verdict)}], "role": "model"}, "finishReason": "STOP", "index": 0}),
            needed,
        )
    };
    let body = json!({
        "candidates": [candidate],
        "usageMetadata": {
            "promptTokenCount": input,
            "candidatesTokenCount": output,
            "totalTokenCount": input + output,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": input}]
        },
        "modelVersion": model,
        "responseId": state.next_id()
    });
    respond(200, vec![], &body)
}
