//! What a provider's answer means, from its bytes alone: the same parsers the clients run on what
//! they receive, reachable without a network so the fuzz targets (`fuzz/`) can drive them.

use std::time::SystemTime;

use reqwest::header::HeaderMap;
use secrecy::{ExposeSecret, SecretString};

use super::{CheckOutcome, JudgeError, Usage, Verdict, anthropic, google, http, openai};
use crate::crd::Provider;

/// The verdict in a 2xx answer to a judge call (Azure OpenAI answers as OpenAI does).
pub fn judge_answer(provider: Provider, body: &str) -> Result<(Verdict, Usage), JudgeError> {
    match provider {
        Provider::OpenAi | Provider::AzureOpenAi => openai::parse_chat_response(body),
        Provider::Anthropic => anthropic::parse_messages_response(body),
        Provider::Google => google::parse_generate_response(body),
    }
}

/// The judge error for a non-2xx answer to a judge call for `model` made with `key`: classified,
/// redacted and capped, with the headers' retry decision.
pub fn judge_error(
    provider: Provider,
    status: u16,
    headers: &HeaderMap,
    body: &str,
    key: &SecretString,
    model: &str,
) -> JudgeError {
    let classify = match provider {
        Provider::OpenAi | Provider::AzureOpenAi => openai::classify,
        Provider::Anthropic => anthropic::classify,
        Provider::Google => google::classify,
    };
    http::failure(status, headers, body, key.expose_secret(), classify, SystemTime::now()).into_judge_error(model)
}

/// What a 2xx answer to a key check's model lookup says of `model` (OpenAI: the key's model list;
/// Anthropic and Gemini: the model object). Azure has no lookup: its probe's answer is Valid.
pub fn model_answer(provider: Provider, status: u16, body: &str, model: &str) -> CheckOutcome {
    match provider {
        Provider::OpenAi => match openai::listed_model(status, body, model) {
            Ok(lifecycle) => CheckOutcome::Valid { http_status: status, request_id: None, note: None, lifecycle },
            Err(outcome) => outcome,
        },
        Provider::Anthropic => anthropic::model_answer(status, body, None),
        Provider::Google => google::model_answer(status, body, model),
        Provider::AzureOpenAi => {
            CheckOutcome::Valid { http_status: status, request_id: None, note: None, lifecycle: None }
        }
    }
}

/// The verdict in a model's text: a JSON object, maybe inside a Markdown code fence.
pub fn verdict_text(text: &str) -> Result<Verdict, String> {
    super::verdict::parse_verdict_text(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Found by fuzzing the judge answer parsers:
    /// the finish reason went into the message whole, whatever its length and characters.
    #[test]
    fn a_long_or_odd_finish_reason_is_cut_to_a_word() {
        let reason = format!("S\u{1}{}", "8".repeat(1000));
        let bodies = [
            (Provider::Google, json!({"candidates": [{"finishReason": reason, "content": {"parts": []}}]})),
            (Provider::OpenAi, json!({"choices": [{"finish_reason": reason, "message": {"content": ""}}]})),
            (Provider::Anthropic, json!({"content": [], "stop_reason": reason})),
        ];
        for (provider, body) in bodies {
            let error = judge_answer(provider, &body.to_string()).expect_err("no verdict");
            assert_eq!(error.reason(), "EmptyVerdict", "{provider}");
            let message = error.to_string();
            assert!(message.chars().count() < 200 && !message.chars().any(char::is_control), "{provider}: {message}");
            assert!(message.contains("S8888"), "{message}");
        }
        let missing = judge_answer(Provider::OpenAi, r#"{"choices":[{"message":{"content":""}}]}"#).expect_err("empty");
        assert!(missing.to_string().contains("finish_reason missing"), "{missing}");
    }
}
