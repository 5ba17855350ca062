//! Transport shared by the provider clients: sending with a timeout, bounded body reads,
//! classification of error responses, and redaction of the key from everything we return.

use std::time::{Duration, SystemTime};

use std::future::Future;

use reqwest::RequestBuilder;
use reqwest::header::{HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::InvalidReason;
use super::error::{CallError, Failure, FailureKind};
use super::retry;

/// The largest successful (2xx) body read: a model list, a model object or a verdict is a few
/// kilobytes (OpenAI's full model list is under 100 KiB). A larger one is refused with
/// [`CallError::TooLarge`] without buffering it: a hostile or broken gateway must not make the
/// operator or a judge pod hold gigabytes.
pub const MAX_BODY_BYTES: usize = 4 << 20;
/// The most of an error body read: only its message is used (capped at [`MAX_MESSAGE_CHARS`]).
const MAX_ERROR_BODY_BYTES: usize = 64 << 10;
/// Longest provider message we pass on (conditions, events and logs stay readable).
pub const MAX_MESSAGE_CHARS: usize = 300;
const REDACTED: &str = "[REDACTED]";

/// A provider's successful (2xx) answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

/// What a provider's error body says, before headers are taken into account.
#[derive(Debug, PartialEq)]
pub(crate) struct ErrorBody {
    pub kind: FailureKind,
    /// Raw provider message: may echo the key, so it is sanitized before leaving this module.
    pub message: String,
    /// A wait the provider gave in the body (Gemini RetryInfo), used when no header gives one.
    pub retry_hint: Option<Duration>,
}

/// Replaces every occurrence of the key (as given and trimmed) with `[REDACTED]`, and every
/// occurrence of its secret part (all after the 8-character prefix, in any ASCII case): an echo
/// that altered the prefix or the case (a gateway's, found by fuzzing) must not show the rest.
pub fn redact(text: &str, key: &str) -> String {
    let mut out = text.to_string();
    for needle in [key, key.trim()] {
        if !needle.is_empty() && out.contains(needle) {
            out = out.replace(needle, REDACTED);
        }
    }
    let secret: String = key.trim().chars().skip(crate::keystore::PREFIX_LEN).collect();
    if secret.chars().count() >= MIN_SECRET_CHARS {
        out = replace_ignoring_ascii_case(&out, &secret, REDACTED);
    }
    // Providers echo keys masked (OpenAI: `sk-pr****...bT9c`), which still shows the last
    // characters. Only the 8-character prefix may ever be shown, so masked forms go entirely.
    if out.contains("**") {
        out =
            out.split(' ').map(|word| if word.contains("**") { REDACTED } else { word }).collect::<Vec<_>>().join(" ");
    }
    out
}

/// A secret part shorter than this is not searched for on its own (it could match ordinary text).
const MIN_SECRET_CHARS: usize = 8;

/// `text` with every ASCII-case-insensitive occurrence of `needle` replaced by `with`.
fn replace_ignoring_ascii_case(text: &str, needle: &str, with: &str) -> String {
    let (hay, pat) = (text.to_ascii_lowercase(), needle.to_ascii_lowercase());
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    // Lowercasing ASCII keeps every byte offset, so offsets in `hay` are offsets in `text`.
    for (at, _) in hay.match_indices(&pat) {
        if at < last {
            continue;
        }
        out.push_str(&text[last..at]);
        out.push_str(with);
        last = at + pat.len();
    }
    out.push_str(&text[last..]);
    out
}

/// Redacts the key, flattens control characters and caps the length (on a char boundary).
/// Redaction comes first so that a cut can never leave most of a key behind.
pub fn sanitize(text: &str, key: &str) -> String {
    let redacted = redact(text, key);
    let flat: String = redacted.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let flat = flat.trim();
    if flat.chars().count() <= MAX_MESSAGE_CHARS {
        return flat.to_string();
    }
    let mut cut: String = flat.chars().take(MAX_MESSAGE_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// A header carrying the key, marked sensitive so that it never shows in Debug output.
/// Surrounding whitespace (a trailing newline from `kubectl create secret --from-file`) is dropped.
pub(crate) fn secret_header(value: &str) -> Result<HeaderValue, CallError> {
    let mut header = HeaderValue::from_str(value.trim()).map_err(|_| CallError::Misconfigured {
        reason: InvalidReason::MalformedKey,
        message: "the key contains characters that cannot be sent in an HTTP header".into(),
    })?;
    header.set_sensitive(true);
    Ok(header)
}

/// A judge call: the authenticated request (or why it could not be built) sent with [`call`],
/// failures turned into the [`super::JudgeError`] for `model`.
pub(crate) async fn judge_call(
    authed: Result<RequestBuilder, CallError>,
    timeout: Duration,
    key: &SecretString,
    model: &str,
    classify: fn(u16, &str) -> ErrorBody,
) -> Result<Reply, super::JudgeError> {
    match authed {
        Ok(builder) => call(builder, timeout, key, classify).await,
        Err(e) => Err(e),
    }
    .map_err(|e| e.into_judge_error(model))
}

/// An optional request field that some models refuse: where it sits in the body, and the words
/// by which an error message names it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Optional {
    /// JSON pointer of the object holding the field ("" for the top level).
    pub parent: &'static str,
    pub field: &'static str,
    pub names: &'static [&'static str],
}

/// Removes from `body` the optional field a 400 names. Returns the field removed, if any.
pub(crate) fn drop_refused(body: &mut Value, error: &super::JudgeError, optional: &[Optional]) -> Option<&'static str> {
    let super::JudgeError::BadRequest { message, .. } = error else { return None };
    optional.iter().find_map(|o| {
        let named = o.names.iter().any(|name| message.contains(name));
        let parent = body.pointer_mut(o.parent).and_then(Value::as_object_mut)?;
        (named && parent.remove(o.field).is_some()).then_some(o.field)
    })
}

/// Sends a judge request built from `body`; when a 400 names an optional field the body carries,
/// sends it once more without that field (models come and go faster than any table of what each
/// accepts, and an Azure deployment's name says nothing about its model).
pub(crate) async fn judge_with_fallback<F, Fut>(
    mut body: Value,
    optional: &[Optional],
    mut send: F,
) -> Result<Reply, super::JudgeError>
where
    F: FnMut(&Value) -> Fut,
    Fut: Future<Output = Result<Reply, super::JudgeError>>,
{
    loop {
        match send(&body).await {
            Err(error) => match drop_refused(&mut body, &error, optional) {
                Some(field) => tracing::info!(field, "the model refused a parameter; asking again without it"),
                None => return Err(error),
            },
            ok => return ok,
        }
    }
}

/// Sends the request and reads the body. 2xx comes back as a [`Reply`] (or [`CallError::TooLarge`]
/// past [`MAX_BODY_BYTES`]); any other status is classified by the provider's `classify` function
/// into a redacted [`Failure`], from at most the first 64 KiB of its body. The request's timeout
/// covers the whole exchange, body included: a body that trickles in past it is a timeout.
pub(crate) async fn call(
    request: RequestBuilder,
    timeout: Duration,
    key: &SecretString,
    classify: fn(u16, &str) -> ErrorBody,
) -> Result<Reply, CallError> {
    let key = key.expose_secret();
    let response = request.timeout(timeout).send().await.map_err(|e| transport_error(e, key))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    if (200..300).contains(&status) {
        if response.content_length().is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            return Err(CallError::TooLarge { status, limit: MAX_BODY_BYTES });
        }
        return match read_capped(response, MAX_BODY_BYTES, key).await? {
            Capped::Whole(body) => Ok(Reply { status, headers, body: String::from_utf8_lossy(&body).into_owned() }),
            Capped::Cut(_) => Err(CallError::TooLarge { status, limit: MAX_BODY_BYTES }),
        };
    }
    let (Capped::Whole(body) | Capped::Cut(body)) = read_capped(response, MAX_ERROR_BODY_BYTES, key).await?;
    let body = String::from_utf8_lossy(&body);
    Err(CallError::Http(failure(status, &headers, &body, key, classify, SystemTime::now())))
}

/// What a non-2xx answer means: its body classified by the provider's `classify`, the message
/// redacted and capped, the wait and retry hint taken from the headers.
pub(crate) fn failure(
    status: u16,
    headers: &HeaderMap,
    body: &str,
    key: &str,
    classify: fn(u16, &str) -> ErrorBody,
    now: SystemTime,
) -> Failure {
    let parsed = classify(status, body);
    Failure {
        kind: parsed.kind,
        status,
        message: sanitize(&parsed.message, key),
        retry_after: retry::retry_after_from_headers(headers, now).or(parsed.retry_hint),
        x_should_retry: retry::should_retry_header(headers),
    }
}

/// A body read up to a limit.
enum Capped {
    Whole(Vec<u8>),
    /// The first `limit` bytes; there was more, left unread.
    Cut(Vec<u8>),
}

/// Reads at most `limit` bytes of the body, chunk by chunk, and stops there: the rest is never
/// received into memory (the connection is dropped with it).
async fn read_capped(mut response: reqwest::Response, limit: usize, key: &str) -> Result<Capped, CallError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transport_error(e, key))? {
        let room = limit.saturating_sub(body.len());
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok(Capped::Cut(body));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Capped::Whole(body))
}

/// A message for a body we could not parse: the status plus the start of the body.
pub(crate) fn fallback_message(status: u16, body: &str) -> String {
    let snippet: String = body.chars().take(MAX_MESSAGE_CHARS).collect();
    if snippet.trim().is_empty() {
        format!("HTTP {status} with an empty body")
    } else {
        format!("HTTP {status}: {snippet}")
    }
}

fn transport_error(error: reqwest::Error, key: &str) -> CallError {
    if error.is_timeout() {
        return CallError::Timeout;
    }
    // reqwest's Display is terse ("error sending request"); the cause chain says what happened.
    // URLs never carry the key, but are dropped anyway to keep messages short.
    let error = error.without_url();
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    CallError::Network(sanitize(&message, key))
}

#[cfg(test)]
mod fallback_tests {
    use super::*;
    use crate::providers::JudgeError;
    use serde_json::json;

    const OPTIONAL: [Optional; 2] = [
        Optional { parent: "", field: "temperature", names: &["temperature"] },
        Optional { parent: "/config", field: "thinking", names: &["thinking", "thinking_level"] },
    ];

    #[test]
    fn only_a_named_optional_field_that_is_present_is_dropped() {
        let mut body = json!({"temperature": 0, "config": {"thinking": {"level": "low"}}, "model": "m"});
        let refused = |m: &str| JudgeError::BadRequest { status: 400, message: m.into() };
        let err = refused("Unsupported value: 'temperature' does not support 0 with this model.");
        assert_eq!(drop_refused(&mut body, &err, &OPTIONAL), Some("temperature"));
        assert_eq!(drop_refused(&mut body, &err, &OPTIONAL), None, "dropped once only");
        assert_eq!(drop_refused(&mut body, &refused("Unknown name thinking_level"), &OPTIONAL), Some("thinking"));
        assert_eq!(body, json!({"config": {}, "model": "m"}));
        let other = JudgeError::Unauthorized { status: 401, message: "temperature".into() };
        let mut body = json!({"temperature": 0});
        assert_eq!(drop_refused(&mut body, &other, &OPTIONAL), None, "only 400s");
        assert_eq!(drop_refused(&mut body, &refused("model: Field required"), &OPTIONAL), None);
    }

    #[tokio::test]
    async fn judge_with_fallback_asks_again_once_per_field() {
        let calls = std::cell::Cell::new(0);
        let result = judge_with_fallback(json!({"temperature": 0}), &OPTIONAL, |_| {
            calls.set(calls.get() + 1);
            async { Err(JudgeError::BadRequest { status: 400, message: "'temperature' is deprecated".into() }) }
        })
        .await;
        assert!(matches!(result, Err(JudgeError::BadRequest { .. })));
        assert_eq!(calls.get(), 2, "the first call and one without temperature");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn masked_key_echoes_are_removed_whole() {
        let msg = "Incorrect API key provided: sk-pr*************bT9c. You can find your API key at x.";
        let out = redact(msg, "sk-proj-abcdefghbT9c");
        assert!(!out.contains("bT9c") && !out.contains("sk-pr"), "{out}");
        assert!(out.starts_with("Incorrect API key provided: "));
    }

    use super::*;

    #[test]
    fn an_echo_with_another_prefix_or_case_still_hides_the_secret_part() {
        let key = "sk-fuzz-0123456789abcdefghijklmnopqrstuv";
        let bodies = [
            "Incorrect API key provided: sk-fuzZ-0123456789abcdefghijklmnopqrstuv.",
            "key=XX-0123456789ABCDEFGHIJKLMNOPQRSTUV and again 0123456789abcdefghijklmnopqrstuv",
        ];
        for body in bodies {
            let out = redact(body, key);
            assert!(!out.to_ascii_lowercase().contains(&key[8..]), "{out}");
            assert!(out.contains(REDACTED), "{out}");
        }
        // Short keys: only the whole key is searched for, not a few characters of it.
        assert_eq!(redact("abc 1234", "key-1234"), "abc 1234");
        assert_eq!(redact("Straße ok", "sk-fuzz-0123456789"), "Straße ok");
    }

    const KEY: &str = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789";

    #[test]
    fn redacts_every_occurrence() {
        let text = format!("bad key {KEY} (again: {KEY})");
        let out = redact(&text, KEY);
        assert!(!out.contains(KEY));
        assert_eq!(out, "bad key [REDACTED] (again: [REDACTED])");
        // A key stored with a trailing newline is still found in the message.
        assert_eq!(redact(&format!("x {KEY} y"), &format!("{KEY}\n")), "x [REDACTED] y");
        // An empty key must not turn every gap into [REDACTED].
        assert_eq!(redact("hello", ""), "hello");
    }

    #[test]
    fn sanitize_caps_after_redacting() {
        let long = format!("{}{KEY}{}", "a".repeat(290), "b".repeat(500));
        let out = sanitize(&long, KEY);
        assert!(!out.contains(KEY));
        assert!(!out.contains("sk-proj-abcdefghij"), "no partial key after the cut: {out}");
        assert_eq!(out.chars().count(), MAX_MESSAGE_CHARS);
        assert!(out.ends_with('…'));
        // Multi-byte characters are cut on a boundary, control characters flattened.
        let out = sanitize(&"é\n".repeat(400), KEY);
        assert_eq!(out.chars().count(), MAX_MESSAGE_CHARS);
        assert!(!out.contains('\n'));
    }

    #[test]
    fn secret_header_is_sensitive_and_rejects_newlines() {
        let h = secret_header(&format!("Bearer {KEY}\n")).unwrap();
        assert!(h.is_sensitive());
        assert!(!format!("{h:?}").contains(KEY));
        let err = secret_header("sk-a\nb-c").unwrap_err();
        assert!(matches!(err, CallError::Misconfigured { reason: InvalidReason::MalformedKey, .. }));
    }

    #[test]
    fn fallback_message_is_bounded() {
        assert_eq!(fallback_message(502, "  "), "HTTP 502 with an empty body");
        assert!(fallback_message(502, &"x".repeat(10_000)).len() < 400);
    }
}
