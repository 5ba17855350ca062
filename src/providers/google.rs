//! Google Gemini (Generative Language API, /v1beta): `x-goog-api-key` header (never `?key=`,
//! which would put the key in URLs and logs), `GET models/{model}`, `POST models/{model}:generateContent`.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::config::{join, segment};
use super::error::{CallError, FailureKind};
use super::http::{self, ErrorBody, Optional, call, judge_call, judge_with_fallback, secret_header};
use super::models::{self, Reasoning};
use super::retry::within_limit;
use super::verdict::{count, finish_word, gemini_verdict_schema, parse_verdict_text};
use super::{CheckOutcome, Endpoints, JudgeError, JudgeRequest, KeyCheck, Usage, Verdict, unexpected_body};
use crate::crd::Provider;

const API_VERSION: &str = "v1beta";
/// Finish reasons meaning the output was withheld by a safety system.
const BLOCKED: [&str; 6] = ["SAFETY", "RECITATION", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY"];

fn authed(request: reqwest::RequestBuilder, key: &SecretString) -> Result<reqwest::RequestBuilder, CallError> {
    Ok(request.header("x-goog-api-key", secret_header(key.expose_secret())?))
}

/// `models/gemini-2.5-pro` and `gemini-2.5-pro` name the same model.
fn model_path(model: &str) -> String {
    format!("{API_VERSION}/models/{}", segment(model.strip_prefix("models/").unwrap_or(model)))
}

/// Parses a protobuf Duration as JSON renders it (`"37s"`, `"1.5s"`).
fn parse_retry_delay(text: &str) -> Option<Duration> {
    within_limit(text.trim().strip_suffix('s')?.parse().ok()?)
}

/// Classifies `{"error":{"code","message","status","details":[..]}}`.
pub(super) fn classify(status: u16, body: &str) -> ErrorBody {
    let value: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let error = value.get("error").unwrap_or(&Value::Null);
    let message = match error.get("message").and_then(Value::as_str) {
        Some(m) if !m.is_empty() => m.to_string(),
        _ => http::fallback_message(status, body),
    };
    let details = error.get("details").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let of_type = |suffix: &'static str| {
        details.iter().filter(move |d| d.get("@type").and_then(Value::as_str).is_some_and(|t| t.ends_with(suffix)))
    };
    let reason = of_type("google.rpc.ErrorInfo").find_map(|d| d.get("reason").and_then(Value::as_str));
    // A per-day quota will not come back within any retry window; per-minute ones will.
    let daily_quota = of_type("google.rpc.QuotaFailure")
        .filter_map(|d| d.get("violations").and_then(Value::as_array))
        .flatten()
        .any(|v| v.get("quotaId").and_then(Value::as_str).is_some_and(|id| id.contains("PerDay")));
    let retry_hint = of_type("google.rpc.RetryInfo")
        .find_map(|d| d.get("retryDelay").and_then(Value::as_str))
        .and_then(parse_retry_delay);
    let kind = match status {
        // Gemini reports a bad key as 400 INVALID_ARGUMENT, not 401.
        400 if reason == Some("API_KEY_INVALID") || message.contains("API key not valid") => FailureKind::Unauthorized,
        404 => FailureKind::ModelNotFound,
        429 if daily_quota => FailureKind::QuotaExhausted,
        s => super::error::Failure::kind_for_status(s),
    };
    ErrorBody { kind, message, retry_hint }
}

/// `GET /v1beta/models/{model}` authenticates the key and resolves the model in one call.
pub(super) async fn check(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    check: &KeyCheck<'_>,
    timeout: Duration,
) -> CheckOutcome {
    let result = match authed(http.get(join(&endpoints.google, &model_path(check.model))), check.key) {
        Ok(request) => call(request, timeout, check.key, classify).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(reply) => model_answer(reply.status, &reply.body, check.model),
        Err(e) => e.into_check_outcome(check.model),
    }
}

/// What a 2xx answer to `GET models/{model}` says: a model that can generate content, one that
/// cannot, or something else.
pub(super) fn model_answer(status: u16, body: &str, model: &str) -> CheckOutcome {
    let value: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    if value.get("name").and_then(Value::as_str).is_none() {
        return unexpected_body(status, "a Gemini model");
    }
    let methods = value.get("supportedGenerationMethods").and_then(Value::as_array);
    if methods.is_some_and(|m| !m.iter().any(|x| x.as_str() == Some("generateContent"))) {
        return CheckOutcome::ModelUnavailable {
            model: model.to_string(),
            http_status: status,
            message: format!("model {model} does not support generateContent"),
        };
    }
    CheckOutcome::Valid { http_status: status, request_id: None, note: None, lifecycle: None }
}

/// Fields a model may refuse: thinking controls change between generations (Gemini 3 takes a
/// level, 2.5 a budget), temperature may follow.
const OPTIONAL: [Optional; 2] = [
    Optional {
        parent: "/generationConfig",
        field: "thinkingConfig",
        names: &[
            "thinkingConfig",
            "thinking_config",
            "thinkingLevel",
            "thinking_level",
            "thinkingBudget",
            "thinking_budget",
        ],
    },
    Optional { parent: "/generationConfig", field: "temperature", names: &["temperature"] },
];

/// The generateContent body, for `/v1beta` (`/v1` refuses systemInstruction and the response schema).
pub(super) fn generate_body(request: &JudgeRequest<'_>) -> Value {
    let mut config = json!({
        "maxOutputTokens": request.max_tokens,
        "responseMimeType": "application/json",
        "responseSchema": gemini_verdict_schema()
    });
    if models::temperature(Provider::Google, request.model) != Some(false) {
        config["temperature"] = json!(0);
    }
    // Thinking tokens count against maxOutputTokens: keep them few and leave room for the verdict.
    let thinking = match models::reasoning(Provider::Google, request.model) {
        Reasoning::ThinkingLevel(level) => Some(json!({"thinkingLevel": level})),
        Reasoning::ThinkingBudget(budget) => Some(json!({"thinkingBudget": budget})),
        Reasoning::Effort(_) | Reasoning::None => None,
    };
    if let Some(thinking) = thinking {
        config["thinkingConfig"] = thinking;
        config["maxOutputTokens"] = json!(request.max_tokens.saturating_add(models::REASONING_ALLOWANCE));
    }
    let mut body = json!({
        "contents": [{"role": "user", "parts": [{"text": request.user}]}],
        "generationConfig": config
    });
    if !request.system.is_empty() {
        body["systemInstruction"] = json!({"parts": [{"text": request.system}]});
    }
    body
}

/// Reads the verdict from `candidates[0].content.parts[*].text` (thought parts skipped).
pub(super) fn parse_generate_response(body: &str) -> Result<(Verdict, Usage), JudgeError> {
    let malformed = |message: String| JudgeError::MalformedVerdict { message };
    let not_a_response = |message: &str| JudgeError::MalformedResponse { message: message.into() };
    let value: Value = serde_json::from_str(body).map_err(|_| not_a_response("the response is not JSON"))?;
    if let Some(block) = value.pointer("/promptFeedback/blockReason").and_then(Value::as_str) {
        return Err(JudgeError::Refused { message: format!("the prompt was blocked ({})", http::sanitize(block, "")) });
    }
    let candidate = value.pointer("/candidates/0").ok_or_else(|| not_a_response("the response has no candidates"))?;
    let finish = candidate.get("finishReason").and_then(Value::as_str).unwrap_or_default();
    if BLOCKED.contains(&finish) {
        return Err(JudgeError::Refused { message: format!("the output was blocked (finishReason {finish})") });
    }
    let parts = candidate.pointer("/content/parts").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let text: String = parts
        .iter()
        .filter(|p| p.get("thought").and_then(Value::as_bool) != Some(true))
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect();
    if text.trim().is_empty() {
        let thoughts = value.pointer("/usageMetadata/thoughtsTokenCount").and_then(Value::as_u64);
        return Err(JudgeError::EmptyVerdict {
            message: format!(
                "no verdict text (finishReason {}{}); raise max_tokens",
                finish_word(finish),
                thoughts.map(|t| format!(", {t} thinking tokens")).unwrap_or_default()
            ),
        });
    }
    let verdict = parse_verdict_text(&text).map_err(|e| {
        malformed(if finish == "MAX_TOKENS" {
            // Thinking models spend maxOutputTokens on thoughts first, often leaving no parts at all.
            "the output was cut at maxOutputTokens (finishReason MAX_TOKENS); raise max_tokens".into()
        } else {
            e
        })
    })?;
    let usage = value.get("usageMetadata").unwrap_or(&Value::Null);
    // Thinking tokens are billed as output.
    let output_tokens = count(usage, "candidatesTokenCount") + count(usage, "thoughtsTokenCount");
    Ok((verdict, Usage { input_tokens: count(usage, "promptTokenCount"), output_tokens }))
}

pub(super) async fn judge(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    request: &JudgeRequest<'_>,
) -> Result<(Verdict, Usage), JudgeError> {
    let url = join(&endpoints.google, &format!("{}:generateContent", model_path(request.model)));
    let reply = judge_with_fallback(generate_body(request), &OPTIONAL, |body| {
        let builder = authed(http.post(&url).json(body), request.key);
        judge_call(builder, request.timeout, request.key, request.model, classify)
    })
    .await?;
    parse_generate_response(&reply.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_mapping() {
        let invalid = r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}"#;
        assert_eq!(classify(400, invalid).kind, FailureKind::Unauthorized);
        let bad_request = r#"{"error":{"code":400,"message":"* GenerateContentRequest.contents: contents is not specified","status":"INVALID_ARGUMENT"}}"#;
        assert_eq!(classify(400, bad_request).kind, FailureKind::BadRequest);
        let denied = r#"{"error":{"code":403,"message":"Method doesn't allow unregistered callers","status":"PERMISSION_DENIED"}}"#;
        assert_eq!(classify(403, denied).kind, FailureKind::PermissionDenied);
        let missing = r#"{"error":{"code":404,"message":"models/gemini-pro is not found for API version v1beta","status":"NOT_FOUND"}}"#;
        assert_eq!(classify(404, missing).kind, FailureKind::ModelNotFound);
        let minute = r#"{"error":{"code":429,"message":"You exceeded your current quota","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"37s"}]}}"#;
        let parsed = classify(429, minute);
        assert_eq!(parsed.kind, FailureKind::RateLimited);
        assert_eq!(parsed.retry_hint, Some(Duration::from_secs(37)));
        let day = minute.replace("PerMinute", "PerDay").replace("37s", "86000s");
        let parsed = classify(429, &day);
        assert_eq!(parsed.kind, FailureKind::QuotaExhausted);
        assert_eq!(parsed.retry_hint, Some(Duration::from_secs(86_000)), "kept; quota is never retried anyway");
        assert_eq!(
            classify(503, r#"{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}"#).kind,
            FailureKind::Server
        );
    }

    #[test]
    fn body_per_generation() {
        let key = SecretString::from("k");
        let request = JudgeRequest {
            provider: Provider::Google,
            key: &key,
            model: "gemini-3.5-flash",
            azure: None,
            system: "sys",
            user: "usr",
            max_tokens: 512,
            timeout: Duration::from_secs(1),
        };
        let body = generate_body(&request);
        assert_eq!(body["generationConfig"]["thinkingConfig"], json!({"thinkingLevel": "low"}));
        assert_eq!(body["generationConfig"]["maxOutputTokens"], 512 + models::REASONING_ALLOWANCE);
        assert_eq!(body["systemInstruction"]["parts"][0]["text"], "sys");
        let older = generate_body(&JudgeRequest { model: "gemini-2.5-flash-lite", ..request });
        assert_eq!(older["generationConfig"]["thinkingConfig"], json!({"thinkingBudget": 512}));
        let plain = generate_body(&JudgeRequest { model: "gemma-3-27b-it", ..request });
        assert!(plain["generationConfig"].get("thinkingConfig").is_none());
        assert_eq!(plain["generationConfig"]["maxOutputTokens"], 512);
    }

    #[test]
    fn retry_delay_parsing() {
        assert_eq!(parse_retry_delay("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_retry_delay("610s"), Some(Duration::from_secs(610)));
        assert_eq!(parse_retry_delay("-1s"), None);
        assert_eq!(parse_retry_delay("5"), None);
    }

    #[test]
    fn model_paths_never_escape_the_segment() {
        assert_eq!(model_path("models/gemini-2.5-pro"), "v1beta/models/gemini-2.5-pro");
        assert_eq!(model_path("../x?key=y"), "v1beta/models/..%2Fx%3Fkey%3Dy");
    }

    #[test]
    fn verdict_parsing() {
        let ok = r#"{"candidates":[{"content":{"parts":[{"text":"thinking","thought":true},{"text":"{\"score\":0.7,\"pass\":true,\"reason\":\"ok\"}"}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":30,"candidatesTokenCount":10,"thoughtsTokenCount":5,"totalTokenCount":45}}"#;
        let (v, u) = parse_generate_response(ok).unwrap();
        assert_eq!(v, Verdict { score: 0.7, pass: true, reason: "ok".into() });
        assert_eq!(u, Usage { input_tokens: 30, output_tokens: 15 });
        let no_parts = r#"{"candidates":[{"content":{"role":"model"},"finishReason":"MAX_TOKENS","index":0}],"usageMetadata":{"promptTokenCount":30,"thoughtsTokenCount":1024,"totalTokenCount":30}}"#;
        let err = parse_generate_response(no_parts).unwrap_err();
        assert!(
            matches!(err, JudgeError::EmptyVerdict { ref message } if message.contains("MAX_TOKENS, 1024 thinking")),
            "{err}"
        );
        let safety = r#"{"candidates":[{"finishReason":"SAFETY","index":0}]}"#;
        assert!(matches!(parse_generate_response(safety), Err(JudgeError::Refused { .. })));
        let blocked = r#"{"promptFeedback":{"blockReason":"SAFETY"}}"#;
        assert!(matches!(parse_generate_response(blocked), Err(JudgeError::Refused { .. })));
        for bad in ["", "{}", r#"{"candidates":[]}"#, r#"{"candidates":[{"cont"#] {
            assert!(matches!(parse_generate_response(bad), Err(JudgeError::MalformedResponse { .. })), "{bad}");
        }
        let no = r#"{"candidates":[{"content":{"parts":[{"text":"no"}]}}]}"#;
        assert!(matches!(parse_generate_response(no), Err(JudgeError::MalformedVerdict { .. })), "{no}");
    }
}
