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
