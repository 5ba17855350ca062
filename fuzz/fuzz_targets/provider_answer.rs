//! A provider's (or a gateway's) answer to a judge call or a key check: the first byte picks the
//! provider, the second the HTTP status, the first line of the rest is a Retry-After value and the
//! remainder the body. Parsed or classified, never a panic, and the key used for the call never
//! appears in an error, whatever the body echoes.
#![no_main]

use byok_operator::crd::Provider;
use byok_operator::providers::answers::{judge_answer, judge_error, model_answer};
use libfuzzer_sys::fuzz_target;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use secrecy::SecretString;

const KEY: &str = "sk-fuzz-0123456789abcdefghijklmnopqrstuv";
const PROVIDERS: [Provider; 4] = [Provider::OpenAi, Provider::Anthropic, Provider::Google, Provider::AzureOpenAi];

fuzz_target!(|data: &[u8]| {
    let [p, s, rest @ ..] = data else { return };
    let Ok(rest) = std::str::from_utf8(rest) else { return };
    let provider = PROVIDERS[usize::from(*p) % PROVIDERS.len()];
    let status = [200, 400, 401, 403, 404, 408, 429, 500, 502, 503, 529][usize::from(*s) % 11];
    let (retry_after, body) = rest.split_once('\n').unwrap_or(("", rest));
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(retry_after) {
        headers.insert(RETRY_AFTER, v);
    }
    let _ = judge_answer(provider, body);
    let _ = model_answer(provider, status, body, "gpt-5.1");
    let e = judge_error(provider, status, &headers, body, &SecretString::from(KEY), "gpt-5.1");
    let text = format!("{e} {e:?}");
    assert!(!text.contains(KEY) && !text.contains(&KEY[8..]), "key material in {text}");
});
