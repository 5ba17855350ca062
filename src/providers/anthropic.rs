//! Anthropic: `x-api-key` + `anthropic-version`, `GET /v1/models/{model}`, `POST /v1/messages`
//! with the verdict forced through the `record_verdict` tool (works on every model).

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::config::{join, segment};
use super::error::{CallError, FailureKind};
use super::http::{self, ErrorBody, call, judge_call, secret_header};
use super::verdict::{VERDICT_NAME, count, parse_verdict_text, verdict_from_value, verdict_schema};
use super::{CheckOutcome, Endpoints, JudgeError, JudgeRequest, KeyCheck, Usage, Verdict, request_id, unexpected_body};

/// The long-standing API version; every dated version since accepts the same bodies we send.
pub(super) const ANTHROPIC_VERSION: &str = "2023-06-01";
/// [unconfirmed] Anthropic's marker for a workspace/organisation spend limit (not retried).
const SPEND_LIMIT_CODE: &str = "enforced_spend_limit_reached";

fn authed(request: reqwest::RequestBuilder, key: &SecretString) -> Result<reqwest::RequestBuilder, CallError> {
    Ok(request.header("x-api-key", secret_header(key.expose_secret())?).header("anthropic-version", ANTHROPIC_VERSION))
}

/// Classifies `{"type":"error","error":{"type","message","details"?},"request_id"}`.
pub(super) fn classify(status: u16, body: &str) -> ErrorBody {
    let value: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let error = value.get("error").unwrap_or(&Value::Null);
    let error_type = error.get("type").and_then(Value::as_str).unwrap_or_default();
    let message = match error.get("message").and_then(Value::as_str) {
        Some(m) if !m.is_empty() => m.to_string(),
        _ => http::fallback_message(status, body),
    };
    let error_code = error.pointer("/details/error_code").and_then(Value::as_str).unwrap_or_default();
    let kind = match status {
        404 if error_type == "not_found_error" => FailureKind::ModelNotFound,
        429 if error_code == SPEND_LIMIT_CODE => FailureKind::QuotaExhausted,
        // Prepaid credit used up is a 400, not a 429.
        400 if message.contains("credit balance is too low") => FailureKind::QuotaExhausted,
        s => super::error::Failure::kind_for_status(s),
    };
    ErrorBody { kind, message, retry_hint: None }
}

/// `GET /v1/models/{model}`: one call authenticates the key and resolves the model (aliases
/// included), where paging `GET /v1/models` could take several.
pub(super) async fn check(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    check: &KeyCheck<'_>,
    timeout: Duration,
) -> CheckOutcome {
    let url = join(&endpoints.anthropic, &format!("v1/models/{}", segment(check.model)));
    let result = match authed(http.get(url), check.key) {
        Ok(request) => call(request, timeout, check.key, classify).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(reply) => {
            let value: Value = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
            if value.get("id").and_then(Value::as_str).is_none() {
                return unexpected_body(reply.status, "an Anthropic model");
            }
            CheckOutcome::Valid { http_status: reply.status, request_id: request_id(&reply.headers, "request-id") }
        }
        Err(e) => e.into_check_outcome(check.model),
    }
}

pub(super) fn messages_body(request: &JudgeRequest<'_>) -> Value {
    let mut body = json!({
        "model": request.model,
        "max_tokens": request.max_tokens,
        "temperature": 0,
        "messages": [{"role": "user", "content": request.user}],
        "tools": [{
            "name": VERDICT_NAME,
            "description": "Record the verdict for the evaluated output.",
            "input_schema": verdict_schema()
        }],
        "tool_choice": {"type": "tool", "name": VERDICT_NAME}
    });
    if !request.system.is_empty() {
        body["system"] = json!(request.system);
    }
    body
}

/// Reads the `record_verdict` tool call; a JSON text block is accepted too (output_config style).
pub(super) fn parse_messages_response(body: &str) -> Result<(Verdict, Usage), JudgeError> {
    let malformed = |message: String| JudgeError::MalformedVerdict { message };
    let value: Value = serde_json::from_str(body).map_err(|_| malformed("the response is not JSON".into()))?;
    let stop_reason = value.get("stop_reason").and_then(Value::as_str).unwrap_or_default();
    if stop_reason == "refusal" {
        return Err(JudgeError::Refused { message: "the model declined to answer (stop_reason refusal)".into() });
    }
    let blocks = value.get("content").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let tool_input = blocks
        .iter()
        .find(|b| {
            b.get("type").and_then(Value::as_str) == Some("tool_use")
                && b.get("name").and_then(Value::as_str) == Some(VERDICT_NAME)
        })
        .and_then(|b| b.get("input"));
    let text = blocks
        .iter()
        .find(|b| b.get("type").and_then(Value::as_str) == Some("text"))
        .and_then(|b| b.get("text"))
        .and_then(Value::as_str);
    let parsed = match (tool_input, text) {
        (Some(input), _) => verdict_from_value(input),
        (None, Some(text)) => parse_verdict_text(text),
        (None, None) => Err(format!("no {VERDICT_NAME} tool call in the response")),
    };
    let verdict = parsed.map_err(|e| {
        malformed(if stop_reason == "max_tokens" {
            "the output was cut at max_tokens (stop_reason max_tokens)".into()
        } else {
            e
        })
    })?;
    let usage = value.get("usage").unwrap_or(&Value::Null);
    // Cached prompt tokens are billed too, so they count as input.
    let input_tokens = count(usage, "input_tokens")
        + count(usage, "cache_creation_input_tokens")
        + count(usage, "cache_read_input_tokens");
    Ok((verdict, Usage { input_tokens, output_tokens: count(usage, "output_tokens") }))
}

pub(super) async fn judge(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    request: &JudgeRequest<'_>,
) -> Result<(Verdict, Usage), JudgeError> {
    let builder = http.post(join(&endpoints.anthropic, "v1/messages")).json(&messages_body(request));
    let reply = judge_call(authed(builder, request.key), request.timeout, request.key, request.model, classify).await?;
    parse_messages_response(&reply.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_mapping() {
        let env = |status: u16, t: &str, extra: &str| {
            classify(
                status,
                &format!(r#"{{"type":"error","error":{{"type":"{t}","message":"m"{extra}}},"request_id":"req_1"}}"#),
            )
        };
        assert_eq!(env(401, "authentication_error", "").kind, FailureKind::Unauthorized);
        assert_eq!(env(403, "permission_error", "").kind, FailureKind::PermissionDenied);
        assert_eq!(env(404, "not_found_error", "").kind, FailureKind::ModelNotFound);
        assert_eq!(env(429, "rate_limit_error", "").kind, FailureKind::RateLimited);
        let spend = r#","details":{"error_code":"enforced_spend_limit_reached"}"#;
        assert_eq!(env(429, "rate_limit_error", spend).kind, FailureKind::QuotaExhausted);
        assert_eq!(env(529, "overloaded_error", "").kind, FailureKind::Server);
        assert_eq!(env(500, "api_error", "").kind, FailureKind::Server);
        assert_eq!(env(413, "request_too_large", "").kind, FailureKind::BadRequest);
        let credit = r#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API."}}"#;
        assert_eq!(classify(400, credit).kind, FailureKind::QuotaExhausted);
        assert_eq!(classify(502, "Bad Gateway").message, "HTTP 502: Bad Gateway");
    }

    #[test]
    fn body_forces_the_verdict_tool() {
        let key = SecretString::from("k");
        let request = JudgeRequest {
            provider: crate::crd::Provider::Anthropic,
            key: &key,
            model: "claude-sonnet-4-6",
            azure: None,
            system: "sys",
            user: "usr",
            max_tokens: 256,
            timeout: Duration::from_secs(1),
        };
        let body = messages_body(&request);
        assert_eq!(body["max_tokens"], 256);
        assert_eq!(body["system"], "sys");
        assert_eq!(body["tools"][0]["name"], "record_verdict");
        assert_eq!(body["tool_choice"], json!({"type": "tool", "name": "record_verdict"}));
    }

    #[test]
    fn verdict_parsing() {
        let ok = r#"{"type":"message","content":[{"type":"tool_use","id":"toolu_1","name":"record_verdict","input":{"score":0.9,"pass":true,"reason":"fine"}}],"stop_reason":"tool_use","usage":{"input_tokens":20,"output_tokens":9,"cache_read_input_tokens":5}}"#;
        let (v, u) = parse_messages_response(ok).unwrap();
        assert_eq!(v, Verdict { score: 0.9, pass: true, reason: "fine".into() });
        assert_eq!(u, Usage { input_tokens: 25, output_tokens: 9 });
        let text = r#"{"content":[{"type":"text","text":"{\"score\":0.1,\"pass\":false,\"reason\":\"x\"}"}],"stop_reason":"end_turn"}"#;
        assert!(!parse_messages_response(text).unwrap().0.pass);
        let refusal = r#"{"content":[],"stop_reason":"refusal"}"#;
        assert!(matches!(parse_messages_response(refusal), Err(JudgeError::Refused { .. })));
        let cut = r#"{"content":[{"type":"tool_use","name":"record_verdict","input":{}}],"stop_reason":"max_tokens"}"#;
        let err = parse_messages_response(cut).unwrap_err();
        assert!(matches!(err, JudgeError::MalformedVerdict { ref message } if message.contains("max_tokens")));
        for bad in ["", "null", r#"{"content":"x"}"#, r#"{"content":[{"type":"tool_use","name":"other","input":{}}]}"#]
        {
            assert!(matches!(parse_messages_response(bad), Err(JudgeError::MalformedVerdict { .. })), "{bad}");
        }
    }
}
