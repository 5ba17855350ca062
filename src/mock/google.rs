//! Mock Gemini API under `/google/{v1beta|v1}`: `x-goog-api-key` header or `?key=`,
//! `models`, `models/{model}`, `models/{model}:generateContent`. Models and their thinking
//! controls come from [`super::catalog::GOOGLE`]; `/v1` rejects the fields it does not know
//! (`systemInstruction`, `generationConfig.responseMimeType`, `generationConfig.responseSchema`).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::catalog::{self, Catalog, Model, Reasoning};
use super::state::{Behaviour, Injected, MockState, Stage};
use super::verdicts::{Spend, mock_output_tokens, mock_refuses, mock_tokens, mock_verdict, spend, verdict_json};
use super::{admit, respond};

const ERROR_INFO: &str = "type.googleapis.com/google.rpc.ErrorInfo";
const BAD_REQUEST: &str = "type.googleapis.com/google.rpc.BadRequest";

/// Routes below `/google`, which stands for `https://generativelanguage.googleapis.com`.
pub(crate) fn routes() -> Router<Arc<MockState>> {
    Router::new()
        .route("/{version}/models", get(list_models))
        .route("/{version}/models/{name}", get(get_model).post(generate))
        .fallback(unknown_route)
        .method_not_allowed_fallback(unknown_route)
}

/// An unknown path, like an unknown API version, is 404 before any key is looked at
/// [unconfirmed], as this mock has always answered an unknown version.
fn route_not_found() -> Response {
    respond(404, vec![], &json!({"error": {"code": 404, "message": "Not Found", "status": "NOT_FOUND"}}))
}

async fn unknown_route(
    State(state): State<Arc<MockState>>,
    Query(query): Query<GoogleQuery>,
    h: HeaderMap,
) -> Response {
    admit(&state, request_key(&h, &query).as_deref()).await;
    route_not_found()
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

/// An injected failure; `model` names the quota dimension when the request names a model. Long:
/// one arm per fault, each Gemini's own body.
fn failure(injected: Injected, model: Option<&str>) -> Response {
    let quota = |quota_id: &str| {
        let mut dimensions = json!({"location": "global"});
        if let Some(model) = model {
            dimensions["model"] = json!(model);
        }
        json!({"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            "quotaId": quota_id,
            "quotaDimensions": dimensions,
            "quotaValue": "50"
        }]})
    };
    let exceeded = "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.";
    let per_minute = |retry: bool| {
        let mut details = vec![quota("GenerateRequestsPerMinutePerProjectPerModel-FreeTier")];
        let mut headers = vec![];
        if retry {
            details.push(json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}));
            headers.push(("retry-after", "1".to_string()));
        }
        error(429, "RESOURCE_EXHAUSTED", exceeded, json!(details), headers)
    };
    match injected {
        Injected::Unauthenticated401 => error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
            json!([{"@type": ERROR_INFO, "reason": "ACCESS_TOKEN_TYPE_UNSUPPORTED", "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"}}]),
            vec![],
        ),
        Injected::Unauthorized | Injected::InvalidKey400 => error(
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
        Injected::Restricted | Injected::Forbidden => error(
            403,
            "PERMISSION_DENIED",
            "Requests to this API generativelanguage.googleapis.com method google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent are blocked.",
            json!([{"@type": ERROR_INFO, "reason": "API_KEY_SERVICE_BLOCKED", "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"}}]),
            vec![],
        ),
        // Gemini has no separate spend limit: both are the per-day quota.
        Injected::Quota | Injected::SpendLimit => error(
            429,
            "RESOURCE_EXHAUSTED",
            exceeded,
            json!([quota("GenerateRequestsPerDayPerProjectPerModel-FreeTier")]),
            vec![],
        ),
        Injected::RateLimit => per_minute(true),
        Injected::RateLimitNoWait => per_minute(false),
        Injected::ServerError | Injected::Unavailable => {
            error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.", json!([]), vec![])
        }
        Injected::Internal => error(
            500,
            "INTERNAL",
            "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
            json!([]),
            vec![],
        ),
        // Gemini never sends 529; a gateway in front of it might.
        Injected::Overloaded => {
            error(529, "UNAVAILABLE", "The model is overloaded. Please try again later.", json!([]), vec![])
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
    let key = request_key(request_headers, query);
    let behaviour = admit(state, key.as_deref()).await;
    if version != "v1beta" && version != "v1" {
        return Err(route_not_found());
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
        Some(f) => Err(failure(f, None)),
        None => Ok(behaviour),
    }
}

/// The key from `x-goog-api-key`, else `?key=`.
fn request_key(request_headers: &HeaderMap, query: &GoogleQuery) -> Option<String> {
    let header = request_headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()).map(str::to_string);
    header.or_else(|| query.key.clone()).filter(|k| !k.trim().is_empty())
}

fn model_object(model: &Model) -> Value {
    let id = model.id;
    // "gemini-3.5-flash" -> "3.5"; the real field's exact values are [unconfirmed].
    let version = id.strip_prefix("gemini-").and_then(|rest| rest.split('-').next()).unwrap_or(id);
    json!({
        "name": format!("models/{id}"),
        "version": version,
        "displayName": id,
        "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 65_536,
        "supportedGenerationMethods": ["generateContent", "countTokens", "createCachedContent", "batchGenerateContent"],
        "temperature": 1.0,
        "topP": 0.95,
        "topK": 64,
        "maxTemperature": 2.0,
        "thinking": model.is_reasoning()
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
    let models: Vec<&Model> = Catalog::listed(&state.config.catalog.google).collect();
    // A page token this mock did not hand out starts over [unconfirmed: Google answers 400].
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
    match state.config.catalog.google_model(&name) {
        Some(model) => respond(200, vec![], &model_object(model)),
        None => not_found(&name, &version),
    }
}

/// A field by its JSON name or its proto name: the API accepts both (`systemInstruction`,
/// `system_instruction`).
fn field<'a>(object: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    object.get(camel).or_else(|| object.get(snake))
}

/// A field `/v1` does not know: `name` as it was sent, `parent` the proto path it was under.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct UnknownField {
    pub name: &'static str,
    pub parent: Option<&'static str>,
}

impl UnknownField {
    pub(crate) fn message(&self) -> String {
        match self.parent {
            None => format!("Invalid JSON payload received. Unknown name \"{}\": Cannot find field.", self.name),
            Some(parent) => format!(
                "Invalid JSON payload received. Unknown name \"{}\" at '{parent}': Cannot find field.",
                self.name
            ),
        }
    }

    /// The 400 INVALID_ARGUMENT with a BadRequest field violation. Real answers put no `field` in
    /// the violation of a top-level name (seen in python-genai #425, vercel/ai #2256); the
    /// nested one's `field` is [unconfirmed].
    fn response(&self) -> Response {
        let message = self.message();
        let mut violation = json!({"description": message});
        if let Some(parent) = self.parent {
            violation["field"] = json!(parent);
        }
        error(
            400,
            "INVALID_ARGUMENT",
            &message,
            json!([{"@type": BAD_REQUEST, "fieldViolations": [violation]}]),
            vec![],
        )
    }
}

/// The first field of a generateContent body that `/v1` rejects (as of September 2025,
/// python-genai #1398): `systemInstruction`, then `generationConfig.responseMimeType`, then
/// `generationConfig.responseSchema`. The real parser names the first in document order and may
/// list every unknown name [unconfirmed]; this names one, in this fixed order.
pub(crate) fn v1_unknown_field(request: &Map<String, Value>) -> Option<UnknownField> {
    let top = ["systemInstruction", "system_instruction"].into_iter().find(|name| request.contains_key(*name));
    if let Some(name) = top {
        return Some(UnknownField { name, parent: None });
    }
    let config = request.get("generationConfig").or_else(|| request.get("generation_config"))?;
    ["responseMimeType", "response_mime_type", "responseSchema", "response_schema"]
        .into_iter()
        .find(|name| config.get(*name).is_some())
        .map(|name| UnknownField { name, parent: Some("generation_config") })
}

/// Thinking tokens for a budget value; only integers are budgets.
fn budget_tokens(budget: &Value) -> Result<u64, String> {
    budget.as_i64().and_then(catalog::thinking_budget_tokens).ok_or_else(|| {
        // Wording [unconfirmed].
        format!("Invalid value at 'generation_config.thinking_config.thinking_budget' (TYPE_INT32), {budget}")
    })
}

/// Checks `generationConfig.thinkingConfig` against the model and returns the tokens it will
/// think before answering. Gemini 3 models take `thinkingLevel` (and reject it together with
/// `thinkingBudget`); Gemini 2.5 models take only `thinkingBudget`. With no control a thinking
/// model thinks [`catalog::GEMINI_DEFAULT_THINKING`] tokens.
pub(crate) fn thinking_tokens(model: &Model, generation_config: Option<&Value>) -> Result<u64, String> {
    let config = generation_config.and_then(|g| field(g, "thinkingConfig", "thinking_config"));
    let level = config.and_then(|c| field(c, "thinkingLevel", "thinking_level"));
    let budget = config.and_then(|c| field(c, "thinkingBudget", "thinking_budget"));
    match (model.reasoning, level, budget) {
        // A model that does not think has nothing to spend [unconfirmed: no row is one].
        (Reasoning::None | Reasoning::Effort { .. }, _, _) => Ok(0),
        // Seen in third-party reports; [unconfirmed].
        (Reasoning::ThinkingLevel { .. }, Some(_), Some(_)) => {
            Err("You can only set only one of thinking budget and thinking level.".into())
        }
        (Reasoning::ThinkingLevel { accepted }, Some(level), None) => level
            .as_str()
            .filter(|l| accepted.iter().any(|a| a.eq_ignore_ascii_case(l)))
            .and_then(catalog::thinking_level_tokens)
            // Wording [unconfirmed].
            .ok_or_else(|| format!("Thinking level {level} is not supported for this model.")),
        // Wording [unconfirmed]; that the error exists is documented.
        (Reasoning::ThinkingBudget, Some(_), _) => Err("Thinking level is not supported for this model.".into()),
        // That Gemini 3 still takes a budget alone is [unconfirmed].
        (Reasoning::ThinkingLevel { .. } | Reasoning::ThinkingBudget, None, Some(budget)) => budget_tokens(budget),
        (Reasoning::ThinkingLevel { .. } | Reasoning::ThinkingBudget, None, None) => {
            Ok(catalog::GEMINI_DEFAULT_THINKING)
        }
    }
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
    let Some((id, "generateContent")) = name.split_once(':') else {
        return error(404, "NOT_FOUND", "Method not found.", json!([]), vec![]);
    };
    let Some(model) = state.config.catalog.google_model(id) else { return not_found(id, &version) };
    let (request, thinking) = match validate(model, &version, &body) {
        Ok(valid) => valid,
        Err(response) => return *response,
    };
    if let Some(f) = state.injected(behaviour, Stage::Generation) {
        return failure(f, Some(model.id));
    }
    respond(200, vec![], &generation(&state, model, &request, thinking))
}

/// Checks a generateContent body as the API does for `version`; the request and the tokens the
/// model will think, or the 400 to answer.
fn validate(model: &Model, version: &str, body: &[u8]) -> Result<(Map<String, Value>, u64), Box<Response>> {
    let bad = |message: &str| Box::new(error(400, "INVALID_ARGUMENT", message, json!([]), vec![]));
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(body) else {
        return Err(bad("Invalid JSON payload received."));
    };
    if version == "v1"
        && let Some(unknown) = v1_unknown_field(&request)
    {
        return Err(Box::new(unknown.response()));
    }
    if request.get("contents").and_then(Value::as_array).is_none_or(|c| c.is_empty()) {
        return Err(bad("* GenerateContentRequest.contents: contents is not specified"));
    }
    let generation_config = request.get("generationConfig").or_else(|| request.get("generation_config"));
    let thinking = thinking_tokens(model, generation_config).map_err(|message| bad(&message))?;
    Ok((request, thinking))
}

/// The GenerateContentResponse to a valid request: the verdict, a refusal, or no parts when the
/// output limit went to thoughts.
fn generation(state: &MockState, model: &Model, request: &Map<String, Value>, thinking: u64) -> Value {
    let system = parts_text(request.get("systemInstruction").or_else(|| request.get("system_instruction")));
    let contents = request.get("contents").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let user = contents
        .iter()
        .filter(|c| c.get("role").and_then(Value::as_str).is_none_or(|r| r == "user"))
        .map(|c| parts_text(Some(c)))
        .collect::<Vec<_>>()
        .join("\n");
    let generation_config = request.get("generationConfig").or_else(|| request.get("generation_config"));
    let max_tokens =
        generation_config.and_then(|c| field(c, "maxOutputTokens", "max_output_tokens")).and_then(Value::as_u64);
    let verdict = mock_verdict(&system, &user);
    let input = mock_tokens(&system) + mock_tokens(&user);
    let (candidate, output, thoughts) = if mock_refuses(&system, &user) {
        (
            json!({"finishReason": "SAFETY", "index": 0, "safetyRatings": [
            {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": true}]}),
            0,
            thinking,
        )
    } else {
        match spend(thinking, mock_output_tokens(&verdict), max_tokens) {
            // The limit went to thoughts: no parts come back.
            Spend::Truncated { thinking, .. } => {
                (json!({"content": {"role": "model"}, "finishReason": "MAX_TOKENS", "index": 0}), 0, thinking)
            }
            Spend::Complete { thinking, verdict: tokens } => (
                json!({"content": {"parts": [{"text": verdict_json(&verdict)}], "role": "model"}, "finishReason": "STOP", "index": 0}),
                tokens,
                thinking,
            ),
        }
    };
    json!({
        "candidates": [candidate],
        "usageMetadata": usage_metadata(model, input, output, thoughts),
        "modelVersion": model.id,
        "responseId": state.next_id()
    })
}

fn usage_metadata(model: &Model, input: u64, output: u64, thoughts: u64) -> Value {
    let mut usage = json!({
        "promptTokenCount": input,
        "candidatesTokenCount": output,
        "totalTokenCount": input + output + thoughts,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": input}]
    });
    if model.is_reasoning() {
        usage["thoughtsTokenCount"] = json!(thoughts);
    }
    usage
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(id: &str) -> Model {
        match Catalog::default().google_model(id) {
            Some(model) => *model,
            None => panic!("{id} is not served"),
        }
    }

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn v1_rejects_the_fields_it_does_not_know() {
        let judge = object(json!({
            "systemInstruction": {"parts": [{"text": "judge"}]},
            "contents": [{"role": "user", "parts": [{"text": "x"}]}],
            "generationConfig": {"temperature": 0, "responseMimeType": "application/json", "responseSchema": {}}
        }));
        let unknown = v1_unknown_field(&judge);
        assert_eq!(unknown, Some(UnknownField { name: "systemInstruction", parent: None }));
        assert_eq!(
            unknown.map(|u| u.message()).as_deref(),
            Some("Invalid JSON payload received. Unknown name \"systemInstruction\": Cannot find field.")
        );
        let nested =
            object(json!({"contents": [], "generationConfig": {"responseSchema": {}, "responseMimeType": "x"}}));
        let unknown = v1_unknown_field(&nested);
        assert_eq!(unknown, Some(UnknownField { name: "responseMimeType", parent: Some("generation_config") }));
        assert_eq!(
            unknown.map(|u| u.message()).as_deref(),
            Some(
                "Invalid JSON payload received. Unknown name \"responseMimeType\" at 'generation_config': Cannot find field."
            )
        );
        let schema = object(json!({"generation_config": {"response_schema": {}}}));
        assert_eq!(
            v1_unknown_field(&schema),
            Some(UnknownField { name: "response_schema", parent: Some("generation_config") })
        );
        let snake = object(json!({"system_instruction": {}}));
        assert_eq!(v1_unknown_field(&snake).map(|u| u.name), Some("system_instruction"));
        let plain = object(json!({"contents": [], "generationConfig": {"temperature": 0, "maxOutputTokens": 10}}));
        assert_eq!(v1_unknown_field(&plain), None);
    }

    #[test]
    fn thinking_controls_follow_the_catalog() {
        let config = |c: Value| Some(c);
        for id in ["gemini-3.5-flash", "gemini-3.1-pro-preview"] {
            let m = model(id);
            assert_eq!(thinking_tokens(&m, None), Ok(1024), "{id}");
            assert_eq!(thinking_tokens(&m, config(json!({"maxOutputTokens": 10})).as_ref()), Ok(1024));
            let level = |l: &str| json!({"thinkingConfig": {"thinkingLevel": l}});
            assert_eq!(thinking_tokens(&m, config(level("low")).as_ref()), Ok(64));
            assert_eq!(thinking_tokens(&m, config(level("high")).as_ref()), Ok(2048));
            assert_eq!(thinking_tokens(&m, config(level("HIGH")).as_ref()), Ok(2048));
            assert!(thinking_tokens(&m, config(level("medium")).as_ref()).is_err());
            let both = json!({"thinkingConfig": {"thinkingLevel": "low", "thinkingBudget": 128}});
            assert_eq!(
                thinking_tokens(&m, Some(&both)),
                Err("You can only set only one of thinking budget and thinking level.".into())
            );
            let snake = json!({"thinking_config": {"thinking_level": "low"}});
            assert_eq!(thinking_tokens(&m, Some(&snake)), Ok(64));
        }
        let lite = model("gemini-2.5-flash-lite");
        assert_eq!(thinking_tokens(&lite, None), Ok(1024));
        let budget = |b: Value| json!({"thinkingConfig": {"thinkingBudget": b}});
        assert_eq!(thinking_tokens(&lite, Some(&budget(json!(0)))), Ok(0));
        assert_eq!(thinking_tokens(&lite, Some(&budget(json!(600)))), Ok(600));
        assert_eq!(thinking_tokens(&lite, Some(&budget(json!(24_576)))), Ok(1024));
        assert_eq!(thinking_tokens(&lite, Some(&budget(json!(-1)))), Ok(1024));
        assert!(thinking_tokens(&lite, Some(&budget(json!("many")))).is_err());
        assert!(thinking_tokens(&lite, Some(&budget(json!(-5)))).is_err());
        let level = json!({"thinkingConfig": {"thinkingLevel": "low"}});
        assert_eq!(thinking_tokens(&lite, Some(&level)), Err("Thinking level is not supported for this model.".into()));
    }

    #[test]
    fn listed_models_describe_themselves() {
        let m = model_object(&model("gemini-3.5-flash"));
        assert_eq!((m["name"].as_str(), m["version"].as_str()), (Some("models/gemini-3.5-flash"), Some("3.5")));
        assert_eq!(m["thinking"], true);
    }
}
