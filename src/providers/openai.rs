//! OpenAI: Bearer auth, `GET /v1/models`, `POST /v1/chat/completions` with a strict JSON schema.
//! The chat body, response parsing and error classification are shared with Azure OpenAI.

use std::time::Duration;

use reqwest::header::AUTHORIZATION;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::config::join;
use super::error::{CallError, FailureKind};
use super::http::{self, ErrorBody, call, judge_call, secret_header};
use super::verdict::{count, parse_verdict_text, verdict_schema};
use super::{CheckOutcome, Endpoints, JudgeError, JudgeRequest, KeyCheck, Usage, Verdict, request_id, unexpected_body};

/// gpt-5.x and o-series models reject `max_tokens` and any temperature other than 1.
pub(super) fn has_fixed_temperature(model: &str) -> bool {
    let model = model.to_ascii_lowercase();
    let model = model.rsplit('/').next().unwrap_or(&model);
    let mut chars = model.chars();
    model.starts_with("gpt-5") || (chars.next() == Some('o') && chars.next().is_some_and(|c| c.is_ascii_digit()))
}

/// The chat-completions body. `model` is None for Azure's dated API, where the URL names the deployment.
pub(super) fn chat_body(model: Option<&str>, temperature_model: &str, request: &JudgeRequest<'_>) -> Value {
    let mut messages = Vec::new();
    if !request.system.is_empty() {
        messages.push(json!({"role": "system", "content": request.system}));
    }
    messages.push(json!({"role": "user", "content": request.user}));
    let mut body = json!({
        "max_completion_tokens": request.max_tokens,
        "messages": messages,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "verdict", "strict": true, "schema": verdict_schema()}
        }
    });
    if let Some(model) = model {
        body["model"] = json!(model);
    }
    if !has_fixed_temperature(temperature_model) {
        body["temperature"] = json!(0);
    }
    body
}

/// Reads the verdict from `choices[0].message.content`; refusals and filtered outputs are Refused.
pub(super) fn parse_chat_response(body: &str) -> Result<(Verdict, Usage), JudgeError> {
    let malformed = |message: String| JudgeError::MalformedVerdict { message };
    let value: Value = serde_json::from_str(body).map_err(|_| malformed("the response is not JSON".into()))?;
    let choice = value.pointer("/choices/0").ok_or_else(|| malformed("the response has no choices".into()))?;
    let finish_reason = choice.get("finish_reason").and_then(Value::as_str).unwrap_or_default();
    let message = choice.get("message").unwrap_or(&Value::Null);
    if let Some(refusal) = message.get("refusal").and_then(Value::as_str).filter(|r| !r.is_empty()) {
        return Err(JudgeError::Refused { message: http::sanitize(refusal, "") });
    }
    if finish_reason == "content_filter" {
        return Err(JudgeError::Refused { message: "the output was blocked by the content filter".into() });
    }
    let content = message.get("content").and_then(Value::as_str).unwrap_or_default();
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
        404 if code == "model_not_found" || code == "DeploymentNotFound" => FailureKind::ModelNotFound,
        429 if code == "insufficient_quota" || kind_field == "insufficient_quota" => FailureKind::QuotaExhausted,
        s => super::error::Failure::kind_for_status(s),
    };
    ErrorBody { kind, message, retry_hint: None }
}

fn bearer(request: reqwest::RequestBuilder, key: &secrecy::SecretString) -> Result<reqwest::RequestBuilder, CallError> {
    Ok(request.header(AUTHORIZATION, secret_header(&format!("Bearer {}", key.expose_secret().trim()))?))
}

/// `GET /models` authenticates the key and lists its models; then an empty chat request, which
/// costs nothing (rejected 400 before any generation), tells a restricted key (401 missing scope
/// `model.request`) from one that can call the model.
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
    let reply = match list {
        Ok(reply) => reply,
        Err(e) => return e.into_check_outcome(check.model),
    };
    let Some(ids) = model_ids(&reply.body) else {
        return unexpected_body(reply.status, "an OpenAI model list");
    };
    if !ids.iter().any(|id| id == check.model) {
        return CheckOutcome::ModelUnavailable {
            model: check.model.to_string(),
            http_status: reply.status,
            message: format!("model {} is not in the key's model list ({} models)", check.model, ids.len()),
        };
    }
    let probe_body = json!({"model": check.model, "messages": []});
    let probe = match bearer(http.post(join(&endpoints.openai, "chat/completions")), check.key) {
        Ok(request) => call(request.json(&probe_body), timeout, check.key, classify).await,
        Err(e) => Err(e),
    };
    match probe {
        // The expected answer: 400 for the empty message list, after auth and scope checks passed.
        Ok(_) | Err(CallError::Http(super::error::Failure { kind: FailureKind::BadRequest, .. })) => {
            CheckOutcome::Valid { http_status: reply.status, request_id: request_id(&reply.headers, "x-request-id") }
        }
        Err(e) => e.into_check_outcome(check.model),
    }
}

/// `data[].id` of a model list; None when the body is not a list.
pub(super) fn model_ids(body: &str) -> Option<Vec<String>> {
    let value: Value = serde_json::from_str(body).ok()?;
    let data = value.get("data")?.as_array()?;
    Some(data.iter().filter_map(|m| m.get("id").and_then(Value::as_str)).map(str::to_string).collect())
}

pub(super) async fn judge(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    request: &JudgeRequest<'_>,
) -> Result<(Verdict, Usage), JudgeError> {
    let body = chat_body(Some(request.model), request.model, request);
    let builder = http.post(join(&endpoints.openai, "chat/completions")).json(&body);
    let reply = judge_call(bearer(builder, request.key), request.timeout, request.key, request.model, classify).await?;
    parse_chat_response(&reply.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_temperature_models() {
        for m in ["gpt-5", "gpt-5.1", "gpt-5-mini", "o1", "o3-mini", "o4-mini", "O3"] {
            assert!(has_fixed_temperature(m), "{m}");
        }
        for m in ["gpt-4o", "gpt-4.1", "omni-moderation", "gpt-4o-mini"] {
            assert!(!has_fixed_temperature(m), "{m}");
        }
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
        assert_eq!(classify(400, r#"{"error":null}"#).kind, FailureKind::BadRequest);
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
        let body = chat_body(Some("gpt-4o"), "gpt-4o", &request);
        assert_eq!(body["temperature"], 0);
        assert_eq!(body["max_completion_tokens"], 512);
        assert!(body.get("max_tokens").is_none());
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(body["response_format"]["json_schema"]["name"], "verdict");
        assert_eq!(body["response_format"]["json_schema"]["strict"], true);
        let body = chat_body(Some("gpt-5.1"), "gpt-5.1", &request);
        assert!(body.get("temperature").is_none());
        assert!(chat_body(None, "x", &request).get("model").is_none());
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
        for bad in ["", "{}", r#"{"choices":[]}"#, r#"{"choices":[{"message":{"content":"nope"}}]}"#, "[null]"] {
            assert!(matches!(parse_chat_response(bad), Err(JudgeError::MalformedVerdict { .. })), "{bad}");
        }
    }
}
