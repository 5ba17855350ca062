//! Mock OpenAI under `/openai/v1`; the chat-completions logic is shared with the Azure mock.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::state::{Injected, MockState, Stage};
use super::verdicts::{mock_output_tokens, mock_refuses, mock_tokens, mock_verdict, verdict_json};
use super::{admit, respond, unix_now};
use crate::providers::Verdict;

pub(crate) fn routes() -> Router<Arc<MockState>> {
    Router::new()
        .route("/openai/v1/models", get(list_models))
        .route("/openai/v1/models/{model}", get(get_model))
        .route("/openai/v1/chat/completions", post(chat))
}

/// The key from `Authorization: Bearer <key>`.
pub(crate) fn bearer_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let key = value.strip_prefix("Bearer ")?.trim();
    (!key.is_empty()).then(|| key.to_string())
}

/// OpenAI shows a bad key masked, never in full.
fn masked(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() < 12 {
        return "***".into();
    }
    let head: String = chars[..5].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 9))
}

/// `{"error":{"message","type","param","code"}}`.
pub(crate) fn error(
    status: u16,
    headers: Vec<(&'static str, String)>,
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response {
    respond(status, headers, &json!({"error": {"message": message, "type": kind, "param": param, "code": code}}))
}

fn headers(state: &MockState, remaining_requests: u32) -> Vec<(&'static str, String)> {
    vec![
        ("x-request-id", format!("req_{}", state.next_id())),
        ("openai-processing-ms", "12".into()),
        ("x-ratelimit-limit-requests", "10000".into()),
        ("x-ratelimit-remaining-requests", remaining_requests.to_string()),
        ("x-ratelimit-reset-requests", "6ms".into()),
        ("x-ratelimit-limit-tokens", "30000000".into()),
        ("x-ratelimit-remaining-tokens", "29999000".into()),
        ("x-ratelimit-reset-tokens", "2ms".into()),
    ]
}

fn missing_key(state: &MockState) -> Response {
    error(
        401,
        headers(state, 9999),
        "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). You can obtain an API key from https://platform.openai.com/account/api-keys.",
        "invalid_request_error",
        None,
        None,
    )
}

fn failure(state: &MockState, injected: Injected, key: &str) -> Response {
    match injected {
        Injected::Unauthorized => error(
            401,
            headers(state, 9999),
            &format!(
                "Incorrect API key provided: {}. You can find your API key at https://platform.openai.com/account/api-keys.",
                masked(key)
            ),
            "invalid_request_error",
            None,
            Some("invalid_api_key"),
        ),
        Injected::Restricted => error(
            401,
            headers(state, 9999),
            "You have insufficient permissions for this operation. Missing scopes: model.request. Check that you have the correct role in your organization (Reader, Writer, Owner) and project (Member, Owner), and if you're using a restricted API key, that it has the necessary scopes.",
            "invalid_request_error",
            None,
            None,
        ),
        Injected::Quota => error(
            429,
            headers(state, 9999),
            "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
            "insufficient_quota",
            None,
            Some("insufficient_quota"),
        ),
        Injected::RateLimit => {
            let mut h = headers(state, 0);
            h.extend([("retry-after", "1".to_string()), ("retry-after-ms", "1000".to_string())]);
            error(
                429,
                h,
                "Rate limit reached for requests per min (RPM): Limit 500, Used 500, Requested 1. Please try again in 1s. Visit https://platform.openai.com/account/rate-limits to learn more.",
                "requests",
                None,
                Some("rate_limit_exceeded"),
            )
        }
        Injected::ServerError => error(
            500,
            headers(state, 9999),
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
            None,
        ),
    }
}

fn model_object(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 1_715_367_049, "owned_by": "system"})
}

async fn list_models(State(state): State<Arc<MockState>>, request_headers: HeaderMap) -> Response {
    let key = bearer_key(&request_headers);
    let behaviour = admit(&state, key.as_deref()).await;
    let Some(key) = key else { return missing_key(&state) };
    if let Some(f) = state.injected(behaviour, Stage::Listing { restricted_ok: true }) {
        return failure(&state, f, &key);
    }
    let data: Vec<Value> = state.config.openai_models.iter().map(|m| model_object(m)).collect();
    respond(200, headers(&state, 9999), &json!({"object": "list", "data": data}))
}

async fn get_model(
    State(state): State<Arc<MockState>>,
    Path(model): Path<String>,
    request_headers: HeaderMap,
) -> Response {
    let key = bearer_key(&request_headers);
    let behaviour = admit(&state, key.as_deref()).await;
    let Some(key) = key else { return missing_key(&state) };
    if let Some(f) = state.injected(behaviour, Stage::Listing { restricted_ok: true }) {
        return failure(&state, f, &key);
    }
    if !state.config.openai_models.contains(&model) {
        return model_not_found(&state, &model);
    }
    respond(200, headers(&state, 9999), &model_object(&model))
}

fn model_not_found(state: &MockState, model: &str) -> Response {
    let message = format!("The model `{model}` does not exist or you do not have access to it.");
    error(404, headers(state, 9999), &message, "invalid_request_error", None, Some("model_not_found"))
}

async fn chat(State(state): State<Arc<MockState>>, request_headers: HeaderMap, body: Bytes) -> Response {
    let key = bearer_key(&request_headers);
    let behaviour = admit(&state, key.as_deref()).await;
    let Some(key) = key else { return missing_key(&state) };
    if let Some(f) = state.injected(behaviour, Stage::Request) {
        return failure(&state, f, &key);
    }
    let outcome = completion(&state, &body, None, |model| state.config.openai_models.iter().any(|m| m == model));
    match outcome {
        Completion::BadRequest(response) => response,
        Completion::UnknownModel(model) => model_not_found(&state, &model),
        Completion::Ready(ready) => match state.injected(behaviour, Stage::Generation) {
            Some(f) => failure(&state, f, &key),
            None => respond(200, headers(&state, 9998), &ready.render(&state, false)),
        },
    }
}

/// gpt-5.x and o-series reject `max_tokens` and any temperature other than 1.
fn has_fixed_temperature(model: &str) -> bool {
    let mut chars = model.chars();
    model.starts_with("gpt-5") || (chars.next() == Some('o') && chars.next().is_some_and(|c| c.is_ascii_digit()))
}

pub(crate) enum Completion {
    BadRequest(Response),
    UnknownModel(String),
    Ready(ReadyCompletion),
}

/// A validated request, ready to be answered once credit is checked.
pub(crate) struct ReadyCompletion {
    model: String,
    system: String,
    user: String,
    max_tokens: Option<u64>,
}

/// Text of a message's `content`: a string or an array of `{"type":"text","text":..}` parts.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n")
        }
        _ => String::new(),
    }
}

/// Validates a chat-completions body like the real API. `url_model` is Azure's deployment from a
/// dated URL, which makes `model` optional.
pub(crate) fn completion(
    state: &MockState,
    body: &[u8],
    url_model: Option<&str>,
    model_exists: impl Fn(&str) -> bool,
) -> Completion {
    let bad = |message: &str, param: Option<&str>, code: Option<&str>| {
        Completion::BadRequest(error(400, headers(state, 9999), message, "invalid_request_error", param, code))
    };
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(body) else {
        return bad(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
            None,
            None,
        );
    };
    let model = match (url_model, request.get("model").and_then(Value::as_str)) {
        (Some(m), _) | (None, Some(m)) => m.to_string(),
        (None, None) => return bad("you must provide a model parameter", None, None),
    };
    let messages = match request.get("messages").and_then(Value::as_array) {
        None => {
            return bad(
                "Missing required parameter: 'messages'.",
                Some("messages"),
                Some("missing_required_parameter"),
            );
        }
        Some(m) if m.is_empty() => {
            return bad(
                "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
                Some("messages"),
                Some("empty_array"),
            );
        }
        Some(m) => m,
    };
    if has_fixed_temperature(&model) {
        if request.contains_key("max_tokens") {
            return bad(
                "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
                Some("max_tokens"),
                Some("unsupported_parameter"),
            );
        }
        if let Some(t) = request.get("temperature").filter(|t| t.as_f64() != Some(1.0)) {
            return bad(
                &format!(
                    "Unsupported value: 'temperature' does not support {t} with this model. Only the default (1) value is supported."
                ),
                Some("temperature"),
                Some("unsupported_value"),
            );
        }
    }
    if !model_exists(&model) {
        return Completion::UnknownModel(model);
    }
    let text_of = |roles: &[&str]| {
        messages
            .iter()
            .filter(|m| m.get("role").and_then(Value::as_str).is_some_and(|r| roles.contains(&r)))
            .map(|m| content_text(m.get("content").unwrap_or(&Value::Null)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let max_tokens = request.get("max_completion_tokens").or_else(|| request.get("max_tokens")).and_then(Value::as_u64);
    Completion::Ready(ReadyCompletion {
        model,
        system: text_of(&["system", "developer"]),
        user: text_of(&["user"]),
        max_tokens,
    })
}

impl ReadyCompletion {
    /// The chat.completion object; Azure adds its content-filter annotations.
    pub(crate) fn render(&self, state: &MockState, azure: bool) -> Value {
        let input = mock_tokens(&self.system) + mock_tokens(&self.user);
        let verdict: Verdict = mock_verdict(&self.system, &self.user);
        let needed = mock_output_tokens(&verdict);
        let (message, finish, output) = if mock_refuses(&self.system, &self.user) {
            (json!({"role": "assistant", "content": null, "refusal": "I'm sorry, I can't help with that."}), "stop", 9)
        } else if self.max_tokens.is_some_and(|max| max < needed) {
            // Cut mid-JSON, as a real model stops when it runs out of tokens.
            let text = verdict_json(&verdict);
            let cut: String = text.chars().take(text.len() / 2).collect();
            (json!({"role": "assistant", "content": cut, "refusal": null}), "length", self.max_tokens.unwrap_or(0))
        } else {
            (
                json!({"role": "assistant", "content": verdict_json(&verdict), "refusal": null, "annotations": []}),
                "stop",
                needed,
            )
        };
        let mut choice = json!({"index": 0, "message": message, "logprobs": null, "finish_reason": finish});
        let mut value = json!({
            "id": format!("chatcmpl-{}", state.next_id()),
            "object": "chat.completion",
            "created": unix_now(),
            "model": self.model,
            "system_fingerprint": "fp_mock",
            "usage": {
                "prompt_tokens": input,
                "completion_tokens": output,
                "total_tokens": input + output,
                "prompt_tokens_details": {"cached_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0}
            }
        });
        if azure {
            let filters = json!({
                "hate": {"filtered": false, "severity": "safe"},
                "self_harm": {"filtered": false, "severity": "safe"},
                "sexual": {"filtered": false, "severity": "safe"},
                "violence": {"filtered": false, "severity": "safe"}
            });
            choice["content_filter_results"] = filters.clone();
            value["prompt_filter_results"] = json!([{"prompt_index": 0, "content_filter_results": filters}]);
        }
        value["choices"] = json!([choice]);
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_like_openai() {
        assert_eq!(masked("sk-abcdefghijklmnop"), "sk-ab**********mnop");
        assert_eq!(masked("short"), "***");
    }
}
