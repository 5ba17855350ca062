//! OpenAI: Bearer auth, `GET /v1/models`, `POST /v1/chat/completions` with a strict JSON schema.
//! The chat body, response parsing and error classification are shared with Azure OpenAI.

use std::time::Duration;

use reqwest::header::AUTHORIZATION;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::config::join;
use super::error::{CallError, Failure, FailureKind};
use super::http::{self, ErrorBody, Optional, call, judge_call, judge_with_fallback, secret_header};
use super::models::{self, Reasoning, Reported};
use super::verdict::{count, finish_word, parse_verdict_text, verdict_schema};
use super::{CheckOutcome, Endpoints, JudgeError, JudgeRequest, KeyCheck, Usage, Verdict, request_id, unexpected_body};
use crate::crd::Provider;

/// What to put in a chat body besides the messages, decided per model (see `models.rs`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Shape {
    /// Send `temperature: 0`: Some(false) never, None "unknown" (sent, dropped if refused).
    pub temperature: Option<bool>,
    pub reasoning: Reasoning,
}

impl Shape {
    pub fn for_model(provider: Provider, model: &str) -> Self {
        Self { temperature: models::temperature(provider, model), reasoning: models::reasoning(provider, model) }
    }
}

/// Fields a model may refuse, dropped and asked again without on a 400 naming them.
pub(super) const OPTIONAL: [Optional; 2] = [
    Optional { parent: "", field: "temperature", names: &["temperature"] },
    Optional { parent: "", field: "reasoning_effort", names: &["reasoning_effort"] },
];

/// The chat-completions body. `model` is None for Azure's dated API, where the URL names the deployment.
pub(super) fn chat_body(model: Option<&str>, shape: Shape, request: &JudgeRequest<'_>) -> Value {
    let mut messages = Vec::new();
    if !request.system.is_empty() {
        messages.push(json!({"role": "system", "content": request.system}));
    }
    messages.push(json!({"role": "user", "content": request.user}));
    let mut limit = request.max_tokens;
    let mut body = json!({
        "messages": messages,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "verdict", "strict": true, "schema": verdict_schema()}
        }
    });
    if let Some(model) = model {
        body["model"] = json!(model);
    }
    if shape.temperature != Some(false) {
        body["temperature"] = json!(0);
    }
    if let Reasoning::Effort(effort) = shape.reasoning {
        // Reasoning tokens count against max_completion_tokens: leave room for the verdict.
        body["reasoning_effort"] = json!(effort);
        limit = limit.saturating_add(models::REASONING_ALLOWANCE);
    }
    body["max_completion_tokens"] = json!(limit);
    body
}

/// Reads the verdict from `choices[0].message.content`; refusals and filtered outputs are Refused.
pub(super) fn parse_chat_response(body: &str) -> Result<(Verdict, Usage), JudgeError> {
    let malformed = |message: String| JudgeError::MalformedVerdict { message };
    let not_a_completion = |message: &str| JudgeError::MalformedResponse { message: message.into() };
    let value: Value = serde_json::from_str(body).map_err(|_| not_a_completion("the response is not JSON"))?;
    let choice = value.pointer("/choices/0").ok_or_else(|| not_a_completion("the response has no choices"))?;
    let finish_reason = choice.get("finish_reason").and_then(Value::as_str).unwrap_or_default();
    let message = choice.get("message").unwrap_or(&Value::Null);
    if let Some(refusal) = message.get("refusal").and_then(Value::as_str).filter(|r| !r.is_empty()) {
        return Err(JudgeError::Refused { message: http::sanitize(refusal, "") });
    }
    if finish_reason == "content_filter" {
        return Err(JudgeError::Refused { message: "the output was blocked by the content filter".into() });
    }
    let content = message.get("content").and_then(Value::as_str).unwrap_or_default();
    if content.trim().is_empty() {
        let reasoning = value.pointer("/usage/completion_tokens_details/reasoning_tokens").and_then(Value::as_u64);
        return Err(JudgeError::EmptyVerdict {
            message: format!(
                "no verdict text (finish_reason {}{}); raise max_tokens or choose a model that thinks less",
                finish_word(finish_reason),
                reasoning.map(|r| format!(", {r} reasoning tokens")).unwrap_or_default()
            ),
        });
    }
    let verdict = parse_verdict_text(content).map_err(|e| {
        malformed(if finish_reason == "length" {
            "the output was cut at max tokens (finish_reason length)".into()
        } else {
            e
        })
    })?;
    let usage = value.get("usage").unwrap_or(&Value::Null);
    Ok((
        verdict,
        Usage { input_tokens: count(usage, "prompt_tokens"), output_tokens: count(usage, "completion_tokens") },
    ))
}

/// Classifies `{"error":{"message","type","param","code"}}` (also Azure's `{"error":{"code","message"}}`).
pub(super) fn classify(status: u16, body: &str) -> ErrorBody {
    let value: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let error = value.get("error").unwrap_or(&Value::Null);
    let field = |name: &str| error.get(name).and_then(Value::as_str).unwrap_or_default();
    let message = match field("message") {
        "" => http::fallback_message(status, body),
        m => m.to_string(),
    };
    let (code, kind_field) = (field("code"), field("type"));
    let kind = match status {
        // A restricted key is authenticated but lacks a scope: a permission problem, not a bad key.
        401 if message.contains("insufficient permissions") || message.contains("Missing scopes") => {
            FailureKind::PermissionDenied
        }
        // The body names the key as the problem, whatever the status (a gateway may say 400).
        _ if code == "invalid_api_key" || (code == "401" && message.contains("invalid subscription key")) => {
            FailureKind::Unauthorized
        }
        404 if code == "model_not_found" || code == "DeploymentNotFound" => FailureKind::ModelNotFound,
        429 if code == "insufficient_quota" || kind_field == "insufficient_quota" => FailureKind::QuotaExhausted,
        // A 400 outside the error envelope is a proxy's, not the API's answer to our body.
        400 if !error.is_object() => FailureKind::Unexpected,
        s => super::error::Failure::kind_for_status(s),
    };
    ErrorBody { kind, message, retry_hint: None }
}

fn bearer(request: reqwest::RequestBuilder, key: &secrecy::SecretString) -> Result<reqwest::RequestBuilder, CallError> {
    Ok(request.header(AUTHORIZATION, secret_header(&format!("Bearer {}", key.expose_secret().trim()))?))
}

/// `GET /models` authenticates the key and lists its models (with their shutdown dates); then an
/// empty chat request, which costs nothing (rejected 400 before any generation), tells a key that
/// may call the model from a restricted one (401 missing scope `model.request`). A key that may
/// call models but not list them (401 missing scope `api.model.read`) is checked by the probe alone.
pub(super) async fn check(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    check: &KeyCheck<'_>,
    timeout: Duration,
) -> CheckOutcome {
    let list = match bearer(http.get(join(&endpoints.openai, "models")), check.key) {
        Ok(request) => call(request, timeout, check.key, classify).await,
        Err(e) => Err(e),
    };
    let (listed, note) = match list {
        Ok(reply) => (Some(reply), None),
        Err(CallError::Http(Failure { status: 401, ref message, .. })) if message.contains("api.model.read") => (
            None,
            Some("the key may not list models (missing scope api.model.read): the model was checked by a chat probe"),
        ),
        Err(e) => return e.into_check_outcome(check.model),
    };
    let lifecycle = match &listed {
        Some(reply) => match listed_model(reply.status, &reply.body, check.model) {
            Ok(lifecycle) => lifecycle,
            Err(outcome) => return outcome,
        },
        None => None,
    };
    let probe_body = json!({"model": check.model, "messages": []});
    let probe = match bearer(http.post(join(&endpoints.openai, "chat/completions")), check.key) {
        Ok(request) => call(request.json(&probe_body), timeout, check.key, classify).await,
        Err(e) => Err(e),
    };
    match probe {
        // A 2xx to an empty message list is not what OpenAI does; it counts only if it is a completion.
        Ok(reply) if !is_chat_completion(&reply.body) => unexpected_body(reply.status, "an OpenAI chat completion"),
        // The expected answer: 400 for the empty message list, after auth and scope checks passed.
        Ok(_) | Err(CallError::Http(Failure { kind: FailureKind::BadRequest, .. })) => {
            let status = listed.as_ref().map_or(200, |r| r.status);
            let request_id = listed.as_ref().and_then(|r| request_id(&r.headers, "x-request-id"));
            CheckOutcome::Valid { http_status: status, request_id, note: note.map(str::to_string), lifecycle }
        }
        Err(e) => e.into_check_outcome(check.model),
    }
}

/// What the key's model list (`GET /models`, answered `status`) says of `model`: listed, with
/// what it says of the model's life, or the outcome when it is not listed or not a list.
pub(super) fn listed_model(status: u16, body: &str, model: &str) -> Result<Option<Reported>, CheckOutcome> {
    let Some(models) = model_entries(body) else {
        return Err(unexpected_body(status, "an OpenAI model list"));
    };
    let Some(entry) = models.iter().find(|m| m.get("id").and_then(Value::as_str) == Some(model)) else {
        return Err(CheckOutcome::ModelUnavailable {
            model: model.to_string(),
            http_status: status,
            message: format!("model {model} is not in the key's model list ({} models)", models.len()),
        });
    };
    Ok(reported(entry))
}

/// Whether a 2xx body is a chat completion (JSON with a `choices` array).
pub(super) fn is_chat_completion(body: &str) -> bool {
    serde_json::from_str::<Value>(body).is_ok_and(|v| v.get("choices").is_some_and(Value::is_array))
}

/// `data[]` of a model list; None when the body is not a list.
pub(super) fn model_entries(body: &str) -> Option<Vec<Value>> {
    let mut value: Value = serde_json::from_str(body).ok()?;
    value.get_mut("data")?.as_array_mut().map(std::mem::take)
}

/// A model entry's `shutdown_date` (a date, a timestamp, or Unix seconds).
fn reported(entry: &Value) -> Option<Reported> {
    let date = match entry.get("shutdown_date")? {
        Value::Number(n) => jiff::Timestamp::from_second(n.as_i64()?).ok()?.to_zoned(jiff::tz::TimeZone::UTC).date(),
        Value::String(s) => models::parse_date(s)?,
        _ => return None,
    };
    Some(Reported { shutdown: Some(date), status: None })
}

pub(super) async fn judge(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    request: &JudgeRequest<'_>,
) -> Result<(Verdict, Usage), JudgeError> {
    let body = chat_body(Some(request.model), Shape::for_model(Provider::OpenAi, request.model), request);
    let url = join(&endpoints.openai, "chat/completions");
    let reply = judge_with_fallback(body, &OPTIONAL, |body| {
        let builder = bearer(http.post(&url).json(body), request.key);
        judge_call(builder, request.timeout, request.key, request.model, classify)
    })
    .await?;
    parse_chat_response(&reply.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_dates_in_any_form() {
        let date = |v: Value| reported(&json!({"id": "m", "shutdown_date": v})).and_then(|r| r.shutdown);
        let want = Some("2027-01-14".parse().unwrap());
        assert_eq!(date(json!("2027-01-14")), want);
        assert_eq!(date(json!("2027-01-14T00:00:00Z")), want);
        assert_eq!(date(json!(1_799_884_800)), want);
        assert_eq!(date(json!(null)), None);
        assert_eq!(reported(&json!({"id": "m"})), None);
    }

    #[test]
    fn error_mapping() {
        let body = r#"{"error":{"message":"Incorrect API key provided: sk-ab***yz.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
        assert_eq!(classify(401, body).kind, FailureKind::Unauthorized);
        assert!(classify(401, body).message.starts_with("Incorrect API key"));
        let body = r#"{"error":{"message":"You have insufficient permissions for this operation. Missing scopes: model.request.","type":"invalid_request_error","param":null,"code":null}}"#;
        assert_eq!(classify(401, body).kind, FailureKind::PermissionDenied);
        let body = r#"{"error":{"message":"The model `gpt-x` does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#;
        assert_eq!(classify(404, body).kind, FailureKind::ModelNotFound);
        let body = r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
        assert_eq!(classify(429, body).kind, FailureKind::QuotaExhausted);
        let body =
            r#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        assert_eq!(classify(429, body).kind, FailureKind::RateLimited);
        assert_eq!(classify(500, "<html>oops</html>").kind, FailureKind::Server);
        assert_eq!(classify(500, "<html>oops</html>").message, "HTTP 500: <html>oops</html>");
        assert_eq!(classify(404, r#"{"error":{"message":"Invalid URL"}}"#).kind, FailureKind::Unexpected);
        assert_eq!(classify(400, r#"{"error":{"message":"bad"}}"#).kind, FailureKind::BadRequest);
        // A 400 that is not the API's envelope says nothing about our request.
        assert_eq!(classify(400, r#"{"error":null}"#).kind, FailureKind::Unexpected);
        assert_eq!(classify(400, "<html>400 Bad Request</html>").kind, FailureKind::Unexpected);
        // The key named as the problem under another status is still the key.
        let key = r#"{"error":{"message":"Incorrect API key provided: sk-ab***yz.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
        assert_eq!(classify(400, key).kind, FailureKind::Unauthorized);
        let azure = r#"{"error":{"code":"401","message":"Access denied due to invalid subscription key or wrong API endpoint."}}"#;
        assert_eq!(classify(400, azure).kind, FailureKind::Unauthorized);
    }

    #[test]
    fn body_shape() {
        let key = secrecy::SecretString::from("k");
        let request = JudgeRequest {
            provider: crate::crd::Provider::OpenAi,
            key: &key,
            model: "gpt-4o",
            azure: None,
            system: "sys",
            user: "usr",
            max_tokens: 512,
            timeout: Duration::from_secs(1),
        };
        let body = chat_body(Some("gpt-4o"), Shape::for_model(Provider::OpenAi, "gpt-4o"), &request);
        assert_eq!(body["temperature"], 0);
        assert_eq!(body["max_completion_tokens"], 512);
        assert!(body.get("max_tokens").is_none());
        assert!(body.get("reasoning_effort").is_none());
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(body["response_format"]["json_schema"]["name"], "verdict");
        assert_eq!(body["response_format"]["json_schema"]["strict"], true);
        let body = chat_body(Some("gpt-5.1"), Shape::for_model(Provider::OpenAi, "gpt-5.1"), &request);
        assert!(body.get("temperature").is_none());
        assert_eq!(body["reasoning_effort"], "low");
        assert_eq!(body["max_completion_tokens"], 512 + models::REASONING_ALLOWANCE);
        // Azure: nothing known of the deployment, temperature sent (and dropped if refused).
        let azure = chat_body(None, Shape::for_model(Provider::AzureOpenAi, "judge"), &request);
        assert!(azure.get("model").is_none());
        assert_eq!(azure["temperature"], 0);
        assert!(azure.get("reasoning_effort").is_none());
    }

    #[test]
    fn verdict_parsing() {
        let ok = r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"{\"score\":0.8,\"pass\":true,\"reason\":\"ok\"}","refusal":null},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}}"#;
        let (v, u) = parse_chat_response(ok).unwrap();
        assert_eq!(v, Verdict { score: 0.8, pass: true, reason: "ok".into() });
        assert_eq!(u, Usage { input_tokens: 12, output_tokens: 7 });
        let refusal =
            r#"{"choices":[{"message":{"content":null,"refusal":"I can't help with that."},"finish_reason":"stop"}]}"#;
        assert!(matches!(parse_chat_response(refusal), Err(JudgeError::Refused { .. })));
        let filtered = r#"{"choices":[{"message":{"content":null},"finish_reason":"content_filter"}]}"#;
        assert!(matches!(parse_chat_response(filtered), Err(JudgeError::Refused { .. })));
        let cut = r#"{"choices":[{"message":{"content":"{\"score\":0.8,\"pa"},"finish_reason":"length"}]}"#;
        let err = parse_chat_response(cut).unwrap_err();
        assert!(matches!(err, JudgeError::MalformedVerdict { ref message } if message.contains("length")), "{err}");
        let empty = r#"{"choices":[{"message":{"content":""},"finish_reason":"length"}],"usage":{"completion_tokens_details":{"reasoning_tokens":2048}}}"#;
        let err = parse_chat_response(empty).unwrap_err();
        assert!(matches!(err, JudgeError::EmptyVerdict { ref message } if message.contains("2048 reasoning")), "{err}");
        let null = r#"{"choices":[{"message":{"content":null},"finish_reason":"stop"}]}"#;
        assert!(matches!(parse_chat_response(null), Err(JudgeError::EmptyVerdict { .. })));
        for bad in ["", "{}", r#"{"choices":[]}"#, "[null]", r#"{"choices":[{"mess"#] {
            assert!(matches!(parse_chat_response(bad), Err(JudgeError::MalformedResponse { .. })), "{bad}");
        }
        let nope = r#"{"choices":[{"message":{"content":"nope"}}]}"#;
        assert!(matches!(parse_chat_response(nope), Err(JudgeError::MalformedVerdict { .. })), "{nope}");
    }
}
