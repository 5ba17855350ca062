//! Anthropic: `x-api-key` + `anthropic-version`, `GET /v1/models/{model}`, `POST /v1/messages`
//! with the verdict forced through the `record_verdict` tool (works on every model).

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::config::{join, segment};
use super::error::{CallError, FailureKind};
use super::http::{self, ErrorBody, Optional, call, judge_call, judge_with_fallback, secret_header};
use super::models::{self, Reported};
use super::verdict::{VERDICT_NAME, count, finish_word, parse_verdict_text, verdict_from_value, verdict_schema};
use super::{CheckOutcome, Endpoints, JudgeError, JudgeRequest, KeyCheck, Usage, Verdict, request_id, unexpected_body};
use crate::crd::Provider;

/// The long-standing API version; every dated version since accepts the same bodies we send.
pub(super) const ANTHROPIC_VERSION: &str = "2023-06-01";
/// Out of credit and over a spend limit are 400s, told apart from other 400s by their message.
const QUOTA_MESSAGES: [&str; 2] = ["credit balance is too low", "reached your specified API usage limits"];
/// Fields a model may refuse ("`temperature` is deprecated for this model").
const OPTIONAL: [Optional; 1] = [Optional { parent: "", field: "temperature", names: &["temperature"] }];

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
    let kind = match status {
        // The body names the key as the problem, whatever the status (a gateway may say 400).
        _ if error_type == "authentication_error" => FailureKind::Unauthorized,
        404 if error_type == "not_found_error" => FailureKind::ModelNotFound,
        // Credit used up and spend limits are 400s, not 429s: waiting a minute will not help.
        400 if QUOTA_MESSAGES.iter().any(|m| message.contains(m)) => FailureKind::QuotaExhausted,
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
        Ok(reply) => model_answer(reply.status, &reply.body, request_id(&reply.headers, "request-id")),
        Err(e) => e.into_check_outcome(check.model),
    }
}

/// What a 2xx answer to `GET /v1/models/{model}` says: a model object (with its lifecycle), or
/// something else.
pub(super) fn model_answer(status: u16, body: &str, request_id: Option<String>) -> CheckOutcome {
    let value: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    if value.get("id").and_then(Value::as_str).is_none() {
        return unexpected_body(status, "an Anthropic model");
    }
    CheckOutcome::Valid { http_status: status, request_id, note: None, lifecycle: reported(&value) }
}

/// [unconfirmed shape] A model object's `lifecycle`: a word (`active`, `deprecated`, `retired`),
/// or an object with a `status` and a date.
fn reported(model: &Value) -> Option<Reported> {
    let lifecycle = model.get("lifecycle")?;
    let status = lifecycle.as_str().or_else(|| lifecycle.get("status").and_then(Value::as_str));
    let shutdown = ["retirement_date", "retires_at", "shutdown_date"]
        .iter()
        .find_map(|field| lifecycle.get(field).or_else(|| model.get(field)).and_then(Value::as_str))
        .and_then(models::parse_date);
    Some(Reported { shutdown, status: status.map(str::to_string) })
}

pub(super) fn messages_body(request: &JudgeRequest<'_>) -> Value {
    let mut body = json!({
        "model": request.model,
        "max_tokens": request.max_tokens,
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
    if models::temperature(Provider::Anthropic, request.model) != Some(false) {
        body["temperature"] = json!(0);
    }
    body
}

/// Reads the `record_verdict` tool call; a JSON text block is accepted too (output_config style).
pub(super) fn parse_messages_response(body: &str) -> Result<(Verdict, Usage), JudgeError> {
    let malformed = |message: String| JudgeError::MalformedVerdict { message };
    let not_a_message = |message: &str| JudgeError::MalformedResponse { message: message.into() };
    let value: Value = serde_json::from_str(body).map_err(|_| not_a_message("the response is not JSON"))?;
    let stop_reason = value.get("stop_reason").and_then(Value::as_str).unwrap_or_default();
    if stop_reason == "refusal" {
        return Err(JudgeError::Refused { message: "the model declined to answer (stop_reason refusal)".into() });
    }
    let Some(blocks) = value.get("content").and_then(Value::as_array) else {
        return Err(not_a_message("the response has no content blocks"));
    };
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
        (None, Some(text)) if !text.trim().is_empty() => parse_verdict_text(text),
        (None, _) if blocks.iter().all(|b| b.get("type").and_then(Value::as_str) == Some("thinking")) => {
            return Err(JudgeError::EmptyVerdict {
                message: format!(
                    "no verdict in the answer (stop_reason {}); raise max_tokens",
                    finish_word(stop_reason)
                ),
            });
        }
        (None, _) => Err(format!("no {VERDICT_NAME} tool call in the response")),
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
    let url = join(&endpoints.anthropic, "v1/messages");
    let reply = judge_with_fallback(messages_body(request), &OPTIONAL, |body| {
        let builder = authed(http.post(&url).json(body), request.key);
        judge_call(builder, request.timeout, request.key, request.model, classify)
    })
    .await?;
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
        let spend = r#"{"type":"error","error":{"type":"invalid_request_error","message":"You have reached your specified API usage limits. You will regain access on 2027-01-01 at 00:00 UTC."}}"#;
        assert_eq!(classify(400, spend).kind, FailureKind::QuotaExhausted);
        assert_eq!(env(400, "invalid_request_error", "").kind, FailureKind::BadRequest);
        assert_eq!(env(529, "overloaded_error", "").kind, FailureKind::Server);
        assert_eq!(env(500, "api_error", "").kind, FailureKind::Server);
        assert_eq!(env(413, "request_too_large", "").kind, FailureKind::BadRequest);
        let credit = r#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API."}}"#;
        assert_eq!(classify(400, credit).kind, FailureKind::QuotaExhausted);
        assert_eq!(classify(502, "Bad Gateway").message, "HTTP 502: Bad Gateway");
        assert_eq!(env(400, "authentication_error", "").kind, FailureKind::Unauthorized);
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
        assert_eq!(body["temperature"], 0);
        let opus = JudgeRequest { model: "claude-opus-4-8", ..request };
        assert!(messages_body(&opus).get("temperature").is_none(), "opus 4.7+ refuse temperature");
    }

    #[test]
    fn lifecycle_from_the_model_object() {
        let said = |v: Value| reported(&v);
        assert_eq!(said(json!({"id": "m"})), None);
        let r = said(json!({"id": "m", "lifecycle": "deprecated"})).unwrap();
        assert_eq!(r.status.as_deref(), Some("deprecated"));
        let r =
            said(json!({"id": "m", "lifecycle": {"status": "deprecated", "retirement_date": "2027-02-01"}})).unwrap();
        assert_eq!(r.shutdown, Some("2027-02-01".parse().unwrap()));
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
        let empty = r#"{"content":[],"stop_reason":"max_tokens"}"#;
        assert!(matches!(parse_messages_response(empty), Err(JudgeError::EmptyVerdict { .. })));
        let cut = r#"{"content":[{"type":"tool_use","name":"record_verdict","input":{}}],"stop_reason":"max_tokens"}"#;
        let err = parse_messages_response(cut).unwrap_err();
        assert!(matches!(err, JudgeError::MalformedVerdict { ref message } if message.contains("max_tokens")));
        for bad in ["", "null", r#"{"content":"x"}"#, r#"{"type":"message","con"#] {
            assert!(matches!(parse_messages_response(bad), Err(JudgeError::MalformedResponse { .. })), "{bad}");
        }
        let other = r#"{"content":[{"type":"tool_use","name":"other","input":{}}]}"#;
        assert!(matches!(parse_messages_response(other), Err(JudgeError::MalformedVerdict { .. })), "{other}");
    }
}
