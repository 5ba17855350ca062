//! Mock OpenAI under `/openai/v1`; the chat-completions logic is shared with the Azure mock.
//! Models and what they accept come from [`super::catalog::OPENAI`].

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::catalog::{self, Catalog, Model, Reasoning, Temperature};
use super::state::{Behaviour, Injected, MockState, Stage};
use super::verdicts::{Spend, mock_output_tokens, mock_refuses, mock_tokens, mock_verdict, spend, verdict_json};
use super::{admit, respond, unix_now};
use crate::providers::Verdict;

/// Routes below `/openai`, which stands for `https://api.openai.com`.
pub(crate) fn routes() -> Router<Arc<MockState>> {
    Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/models/{model}", get(get_model))
        .route("/v1/chat/completions", post(chat))
        .fallback(invalid_url)
        .method_not_allowed_fallback(invalid_url)
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

/// An injected failure as OpenAI answers it. Long: one arm per fault, each OpenAI's own body.
fn failure(state: &MockState, injected: Injected, key: &str) -> Response {
    let incorrect_key = |status: u16| {
        error(
            status,
            headers(state, 9999),
            &format!(
                "Incorrect API key provided: {}. You can find your API key at https://platform.openai.com/account/api-keys.",
                masked(key)
            ),
            "invalid_request_error",
            None,
            Some("invalid_api_key"),
        )
    };
    let rate_limit = |wait: bool| {
        let mut h = headers(state, 0);
        if wait {
            h.extend([("retry-after", "1".to_string()), ("retry-after-ms", "1000".to_string())]);
        }
        error(
            429,
            h,
            "Rate limit reached for requests per min (RPM): Limit 500, Used 500, Requested 1. Please try again in 1s. Visit https://platform.openai.com/account/rate-limits to learn more.",
            "requests",
            None,
            Some("rate_limit_exceeded"),
        )
    };
    let server_error =
        |status: u16, message: &str| error(status, headers(state, 9999), message, "server_error", None, None);
    match injected {
        Injected::Unauthorized | Injected::Unauthenticated401 => incorrect_key(401),
        Injected::InvalidKey400 => incorrect_key(400),
        Injected::Forbidden => error(
            403,
            headers(state, 9999),
            "Country, region, or territory not supported",
            "request_forbidden",
            None,
            Some("unsupported_country_region_territory"),
        ),
        Injected::Restricted => error(
            401,
            headers(state, 9999),
            "You have insufficient permissions for this operation. Missing scopes: model.request. Check that you have the correct role in your organization (Reader, Writer, Owner) and project (Member, Owner), and if you're using a restricted API key, that it has the necessary scopes.",
            "invalid_request_error",
            None,
            None,
        ),
        Injected::Quota | Injected::SpendLimit => error(
            429,
            headers(state, 9999),
            "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
            "insufficient_quota",
            None,
            Some("insufficient_quota"),
        ),
        Injected::RateLimit => rate_limit(true),
        Injected::RateLimitNoWait => rate_limit(false),
        Injected::ServerError | Injected::Internal => {
            server_error(500, "The server had an error while processing your request. Sorry about that!")
        }
        // Wording [unconfirmed]; OpenAI documents 503 "slow down" and overload, never 529.
        Injected::Unavailable => server_error(503, "The server is overloaded or not ready yet."),
        Injected::Overloaded => server_error(529, "The server is overloaded or not ready yet."),
    }
}

fn model_object(model: &Model) -> Value {
    let mut object = json!({"id": model.id, "object": "model", "created": 1_715_367_049, "owned_by": "system"});
    if let Some(date) = model.shutdown_date() {
        object["shutdown_date"] = json!(date);
    }
    object
}

/// A restricted key without "Models: Read" on the model endpoints.
fn no_model_read(state: &MockState) -> Response {
    error(
        401,
        headers(state, 9999),
        "You have insufficient permissions for this operation. Missing scopes: api.model.read. Check that you have the correct role in your organization (Reader, Writer, Owner) and project (Member, Owner), and if you're using a restricted API key, that it has the necessary scopes.",
        "invalid_request_error",
        None,
        None,
    )
}

/// Authentication, injected failures and the model-read scope of the model endpoints.
async fn gate_listing(state: &MockState, request_headers: &HeaderMap) -> Result<(), Response> {
    let key = bearer_key(request_headers);
    let behaviour = admit(state, key.as_deref()).await;
    let Some(key) = key else { return Err(missing_key(state)) };
    if let Some(f) = state.injected(behaviour, Stage::Listing { restricted_ok: true }) {
        return Err(failure(state, f, &key));
    }
    if behaviour == Behaviour::NoModelRead {
        return Err(no_model_read(state));
    }
    Ok(())
}

async fn list_models(State(state): State<Arc<MockState>>, request_headers: HeaderMap) -> Response {
    if let Err(response) = gate_listing(&state, &request_headers).await {
        return response;
    }
    let data: Vec<Value> = Catalog::listed(&state.config.catalog.openai).map(model_object).collect();
    respond(200, headers(&state, 9999), &json!({"object": "list", "data": data}))
}

async fn get_model(
    State(state): State<Arc<MockState>>,
    Path(model): Path<String>,
    request_headers: HeaderMap,
) -> Response {
    if let Err(response) = gate_listing(&state, &request_headers).await {
        return response;
    }
    match state.config.catalog.openai_model(&model) {
        Some(found) => respond(200, headers(&state, 9999), &model_object(found)),
        None => model_not_found(&state, &model),
    }
}

fn model_not_found(state: &MockState, model: &str) -> Response {
    let message = format!("The model `{model}` does not exist or you do not have access to it.");
    error(404, headers(state, 9999), &message, "invalid_request_error", None, Some("model_not_found"))
}

/// Any other path or method under `/openai`, as OpenAI answers it (after authentication
/// [unconfirmed]). `uri` is the path below the prefix, i.e. the real service's path.
async fn invalid_url(
    State(state): State<Arc<MockState>>,
    method: Method,
    uri: Uri,
    request_headers: HeaderMap,
) -> Response {
    let key = bearer_key(&request_headers);
    let behaviour = admit(&state, key.as_deref()).await;
    let Some(key) = key else { return missing_key(&state) };
    if let Some(f @ Injected::Unauthorized) = state.injected(behaviour, Stage::Request) {
        return failure(&state, f, &key);
    }
    let message = format!("Invalid URL ({method} {})", uri.path());
    error(404, headers(&state, 9999), &message, "invalid_request_error", None, None)
}

async fn chat(State(state): State<Arc<MockState>>, request_headers: HeaderMap, body: Bytes) -> Response {
    let key = bearer_key(&request_headers);
    let behaviour = admit(&state, key.as_deref()).await;
    let Some(key) = key else { return missing_key(&state) };
    if let Some(f) = state.injected(behaviour, Stage::Request) {
        return failure(&state, f, &key);
    }
    let Some(request) = parse_body(&body) else { return invalid_json(&state) };
    let Some(id) = request.get("model").and_then(Value::as_str) else {
        return bad_request(&state, "you must provide a model parameter", None, None);
    };
    let Some(model) = state.config.catalog.openai_model(id) else { return model_not_found(&state, id) };
    match completion(&request, model) {
        Err(rejected) => rejected.response(&state),
        Ok(ready) => match state.injected(behaviour, Stage::Generation) {
            Some(f) => failure(&state, f, &key),
            None => respond(200, headers(&state, 9998), &ready.render(&state, false)),
        },
    }
}

pub(crate) fn bad_request(state: &MockState, message: &str, param: Option<&str>, code: Option<&str>) -> Response {
    error(400, headers(state, 9999), message, "invalid_request_error", param, code)
}

/// The body of a chat request when it is a JSON object; else answer [`invalid_json`].
pub(crate) fn parse_body(body: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(request)) => Some(request),
        _ => None,
    }
}

pub(crate) fn invalid_json(state: &MockState) -> Response {
    bad_request(
        state,
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
        None,
        None,
    )
}

/// A body the API refuses: 400 invalid_request_error naming the parameter.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Rejected {
    pub message: String,
    pub param: &'static str,
    pub code: &'static str,
}

impl Rejected {
    pub(crate) fn response(&self, state: &MockState) -> Response {
        bad_request(state, &self.message, Some(self.param), Some(self.code))
    }

    fn unsupported_parameter(param: &'static str, message: String) -> Self {
        Self { message, param, code: "unsupported_parameter" }
    }

    fn unsupported_value(param: &'static str, message: String) -> Self {
        Self { message, param, code: "unsupported_value" }
    }
}

/// `'a', 'b', and 'c'`.
fn quoted_list(values: &[&str]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("'{v}'")).collect();
    match quoted.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{}, and {last}", rest.join(", ")),
    }
}

/// Checks the parameters that depend on the model, as the real API does, and returns the tokens
/// the model will think before it answers (0 for non-reasoning models).
///
/// Reasoning models reject `max_tokens`, any `temperature` other than 1, and a `reasoning_effort`
/// outside their list (`null` means the default [unconfirmed]); other models reject
/// `reasoning_effort` whatever its value.
pub(crate) fn check_params(model: &Model, request: &Map<String, Value>) -> Result<u64, Rejected> {
    if model.is_reasoning() && request.contains_key("max_tokens") {
        return Err(Rejected::unsupported_parameter(
            "max_tokens",
            "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead."
                .into(),
        ));
    }
    match (model.temperature, request.get("temperature")) {
        (_, None) | (Temperature::Any, _) => {}
        (Temperature::OnlyDefault, Some(t)) if t.as_f64() == Some(1.0) => {}
        (Temperature::OnlyDefault, Some(t)) => {
            return Err(Rejected::unsupported_value(
                "temperature",
                format!(
                    "Unsupported value: 'temperature' does not support {t} with this model. Only the default (1) value is supported."
                ),
            ));
        }
        // No OpenAI row rejects temperature outright; the wording is [unconfirmed].
        (Temperature::Rejected, Some(_)) => {
            return Err(Rejected::unsupported_parameter(
                "temperature",
                "Unsupported parameter: 'temperature' is not supported with this model.".into(),
            ));
        }
    }
    let effort = request.get("reasoning_effort");
    let Reasoning::Effort { accepted, default } = model.reasoning else {
        return match effort {
            None => Ok(0),
            Some(_) => Err(Rejected::unsupported_parameter(
                "reasoning_effort",
                "Unsupported parameter: 'reasoning_effort' is not supported with this model.".into(),
            )),
        };
    };
    let chosen = match effort {
        None | Some(Value::Null) => Some(default),
        Some(Value::String(e)) => accepted.iter().copied().find(|a| a == e),
        Some(_) => None,
    };
    // The wording of this message is [unconfirmed]; its param and code are as asked.
    chosen.and_then(catalog::effort_tokens).ok_or_else(|| {
        let shown = match effort {
            Some(Value::String(e)) => format!("'{e}'"),
            other => other.map_or_else(String::new, Value::to_string),
        };
        Rejected::unsupported_value(
            "reasoning_effort",
            format!(
                "Unsupported value: 'reasoning_effort' does not support {shown} with this model. Supported values are: {}.",
                quoted_list(accepted)
            ),
        )
    })
}

/// A validated request, ready to be answered once credit is checked.
pub(crate) struct ReadyCompletion {
    /// The model id the response reports (Azure: the deployment's underlying model).
    model: &'static str,
    reasoning: bool,
    /// Tokens thought before the verdict.
    thinking: u64,
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

/// Validates a chat-completions body for a model that exists, like the real API: messages first,
/// then the parameters the model rejects.
pub(crate) fn completion(request: &Map<String, Value>, model: &Model) -> Result<ReadyCompletion, Rejected> {
    let messages = match request.get("messages").and_then(Value::as_array) {
        None => {
            return Err(Rejected {
                message: "Missing required parameter: 'messages'.".into(),
                param: "messages",
                code: "missing_required_parameter",
            });
        }
        Some(m) if m.is_empty() => {
            return Err(Rejected {
                message: "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.".into(),
                param: "messages",
                code: "empty_array",
            });
        }
        Some(m) => m,
    };
    let thinking = check_params(model, request)?;
    let text_of = |roles: &[&str]| {
        messages
            .iter()
            .filter(|m| m.get("role").and_then(Value::as_str).is_some_and(|r| roles.contains(&r)))
            .map(|m| content_text(m.get("content").unwrap_or(&Value::Null)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    // Reasoning models never get here with max_tokens: check_params rejects it.
    let max_tokens = request.get("max_completion_tokens").or_else(|| request.get("max_tokens")).and_then(Value::as_u64);
    Ok(ReadyCompletion {
        model: model.id,
        reasoning: model.is_reasoning(),
        thinking,
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
        let (message, finish, output, reasoning) = if mock_refuses(&self.system, &self.user) {
            let message =
                json!({"role": "assistant", "content": null, "refusal": "I'm sorry, I can't help with that."});
            (message, "stop", self.thinking + 9, self.thinking)
        } else {
            match spend(self.thinking, mock_output_tokens(&verdict), self.max_tokens) {
                Spend::Complete { thinking, verdict: tokens } => (
                    json!({"role": "assistant", "content": verdict_json(&verdict), "refusal": null, "annotations": []}),
                    "stop",
                    thinking + tokens,
                    thinking,
                ),
                // A reasoning model spent the limit thinking: an empty answer, not cut JSON.
                Spend::Truncated { thinking, total } if self.reasoning => {
                    (json!({"role": "assistant", "content": "", "refusal": null}), "length", total, thinking)
                }
                Spend::Truncated { total, .. } => {
                    // Cut mid-JSON, as a real model stops when it runs out of tokens.
                    let text = verdict_json(&verdict);
                    let cut: String = text.chars().take(text.len() / 2).collect();
                    (json!({"role": "assistant", "content": cut, "refusal": null}), "length", total, 0)
                }
            }
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
                "completion_tokens_details": {"reasoning_tokens": reasoning}
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

    fn model(id: &str) -> Model {
        match Catalog::default().openai_model(id) {
            Some(model) => *model,
            None => panic!("{id} is not served"),
        }
    }

    fn body(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn rejected(id: &str, request: Value) -> (&'static str, &'static str, String) {
        match check_params(&model(id), &body(request)) {
            Err(r) => (r.param, r.code, r.message),
            Ok(tokens) => panic!("{id} accepted it, thinking {tokens}"),
        }
    }

    #[test]
    fn temperature_follows_the_catalog() {
        for id in ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini"] {
            assert_eq!(check_params(&model(id), &body(json!({"temperature": 0, "max_tokens": 10}))), Ok(0), "{id}");
        }
        for id in ["gpt-5.1", "gpt-5-mini", "o4-mini"] {
            let (param, code, message) = rejected(id, json!({"temperature": 0}));
            assert_eq!((param, code), ("temperature", "unsupported_value"), "{id}");
            assert_eq!(
                message,
                "Unsupported value: 'temperature' does not support 0 with this model. Only the default (1) value is supported."
            );
            assert!(check_params(&model(id), &body(json!({"temperature": 1}))).is_ok(), "{id}");
            assert!(check_params(&model(id), &body(json!({"temperature": 1.0}))).is_ok(), "{id}");
            let (param, code, _) = rejected(id, json!({"max_tokens": 100}));
            assert_eq!((param, code), ("max_tokens", "unsupported_parameter"), "{id}");
        }
    }

    #[test]
    fn reasoning_effort_follows_the_catalog() {
        let (param, code, message) = rejected("gpt-4o", json!({"reasoning_effort": "low"}));
        assert_eq!((param, code), ("reasoning_effort", "unsupported_parameter"));
        assert_eq!(message, "Unsupported parameter: 'reasoning_effort' is not supported with this model.");
        assert_eq!(rejected("gpt-4.1", json!({"reasoning_effort": null})).0, "reasoning_effort");

        let (param, code, message) = rejected("o4-mini", json!({"reasoning_effort": "none"}));
        assert_eq!((param, code), ("reasoning_effort", "unsupported_value"));
        assert!(message.contains("'none'") && message.contains("'low', 'medium', and 'high'"), "{message}");
        assert_eq!(rejected("gpt-5.1", json!({"reasoning_effort": "minimal"})).1, "unsupported_value");
        assert_eq!(rejected("gpt-5.1", json!({"reasoning_effort": 3})).1, "unsupported_value");
    }

    #[test]
    fn reasoning_tokens_by_effort() {
        let thinking = |id: &str, request: Value| check_params(&model(id), &body(request));
        assert_eq!(thinking("gpt-5.1", json!({})), Ok(512));
        assert_eq!(thinking("gpt-5.1", json!({"reasoning_effort": null})), Ok(512));
        assert_eq!(thinking("gpt-5.1", json!({"reasoning_effort": "none"})), Ok(0));
        assert_eq!(thinking("gpt-5.1", json!({"reasoning_effort": "low"})), Ok(64));
        assert_eq!(thinking("gpt-5.1", json!({"reasoning_effort": "high"})), Ok(2048));
        assert_eq!(thinking("gpt-5-mini", json!({"reasoning_effort": "minimal"})), Ok(16));
        assert_eq!(thinking("o4-mini", json!({"reasoning_effort": "medium"})), Ok(512));
        assert_eq!(thinking("gpt-4o", json!({})), Ok(0));
    }

    #[test]
    fn messages_are_checked_before_parameters() {
        let missing = completion(&body(json!({"temperature": 0})), &model("gpt-5.1")).err().map(|r| r.code);
        assert_eq!(missing, Some("missing_required_parameter"));
        let empty =
            completion(&body(json!({"messages": [], "temperature": 0})), &model("gpt-5.1")).err().map(|r| r.code);
        assert_eq!(empty, Some("empty_array"));
        let ready = completion(&body(json!({"messages": [{"role": "user", "content": "x"}]})), &model("o4-mini"));
        assert!(ready.is_ok_and(|r| r.model == "o4-mini" && r.reasoning && r.thinking == 512));
    }

    /// Renders a completion of `request` to `id` without a server.
    fn render(id: &str, request: Value) -> Value {
        let state = MockState::new(super::super::MockConfig::default());
        match completion(&body(request), &model(id)) {
            Ok(ready) => ready.render(&state, false),
            Err(r) => panic!("{}", r.message),
        }
    }

    #[test]
    fn reasoning_spends_the_completion_limit() {
        let user = json!([{"role": "user", "content": "mock-score=0.9 the answer"}]);
        let verdict = mock_output_tokens(&mock_verdict("", "mock-score=0.9 the answer"));

        let full = render("gpt-5.1", json!({"messages": user, "reasoning_effort": "low"}));
        assert_eq!(full["choices"][0]["finish_reason"], "stop");
        assert_eq!(full["usage"]["completion_tokens"], 64 + verdict);
        assert_eq!(full["usage"]["completion_tokens_details"]["reasoning_tokens"], 64);

        // The default effort (medium, 512) does not fit in 100 tokens: an empty answer.
        let cut = render("gpt-5.1", json!({"messages": user, "max_completion_tokens": 100}));
        assert_eq!(cut["choices"][0]["finish_reason"], "length");
        assert_eq!(cut["choices"][0]["message"]["content"], "");
        assert_eq!(cut["usage"]["completion_tokens"], 100);
        assert_eq!(cut["usage"]["completion_tokens_details"]["reasoning_tokens"], 100);

        let fits = render("gpt-5.1", json!({"messages": user, "max_completion_tokens": 512 + verdict}));
        assert_eq!(fits["choices"][0]["finish_reason"], "stop");

        // Non-reasoning models still stop mid-JSON.
        let cut = render("gpt-4o", json!({"messages": user, "max_tokens": 5}));
        assert_eq!(cut["choices"][0]["finish_reason"], "length");
        let Some(text) = cut["choices"][0]["message"]["content"].as_str() else { panic!("no content: {cut}") };
        assert!(text.starts_with("{\"") && serde_json::from_str::<Value>(text).is_err(), "{text}");
        assert_eq!(cut["usage"]["completion_tokens_details"]["reasoning_tokens"], 0);
    }
}
