//! The provider clients against the mock provider, over real HTTP. Every test starts its own mock.

use std::time::{Duration, Instant};

use byok_operator::crd::{AzureSpec, Provider};
use byok_operator::mock::{self, Behaviour, MockConfig, MockHandle, mock_score, mock_usage, mock_verdict};
use byok_operator::providers::{
    self, CheckOutcome, Endpoints, InvalidReason, JudgeError, JudgeRequest, KeyCheck, ModelTable, RetryPolicy,
    TransientReason, Usage, Verdict,
};
use futures::future::join_all;
use secrecy::SecretString;
use serde_json::{Value, json};

/// Azure through both URL styles: v1 (no api-version) and dated.
#[derive(Clone, Copy, Debug)]
enum Target {
    OpenAi,
    Anthropic,
    Google,
    AzureV1,
    AzureDated,
}

const ALL: [Target; 5] = [Target::OpenAi, Target::Anthropic, Target::Google, Target::AzureV1, Target::AzureDated];

impl Target {
    fn provider(self) -> Provider {
        match self {
            Target::OpenAi => Provider::OpenAi,
            Target::Anthropic => Provider::Anthropic,
            Target::Google => Provider::Google,
            Target::AzureV1 | Target::AzureDated => Provider::AzureOpenAi,
        }
    }

    fn azure(self, mock: &MockHandle, deployment: &str) -> Option<AzureSpec> {
        let api_version = match self {
            Target::AzureV1 => None,
            Target::AzureDated => Some("2024-10-21".to_string()),
            _ => return None,
        };
        Some(AzureSpec { endpoint: mock.azure_endpoint(), deployment: deployment.into(), api_version })
    }

    /// Requests one successful key check makes.
    fn check_requests(self) -> u64 {
        match self {
            Target::OpenAi => 2,                       // model list + scope probe
            Target::AzureV1 | Target::AzureDated => 2, // model list + deployment lookup
            Target::Anthropic | Target::Google => 1,
        }
    }
}

struct Fixture {
    mock: MockHandle,
    http: reqwest::Client,
    endpoints: Endpoints,
}

async fn fixture(config: MockConfig) -> Fixture {
    let mock = mock::start(config).await.unwrap();
    let endpoints = mock.endpoints();
    Fixture { mock, http: reqwest::Client::new(), endpoints }
}

impl Fixture {
    /// Checks `key` for the default model (Azure: deployment `gpt-4o`), or `model` when given.
    async fn check(&self, target: Target, key: &str, model: Option<&str>) -> CheckOutcome {
        let key = SecretString::from(key);
        let deployment = model.unwrap_or("gpt-4o");
        let azure = target.azure(&self.mock, deployment);
        let model = model
            .map(str::to_string)
            .unwrap_or_else(|| ModelTable::default().model_for(target.provider(), azure.as_ref()));
        let check = KeyCheck { provider: target.provider(), key: &key, model: &model, azure: azure.as_ref() };
        providers::check_key(&self.http, &self.endpoints, check).await
    }

    async fn judge(
        &self,
        target: Target,
        key: &str,
        model: Option<&str>,
        system: &str,
        user: &str,
        max_tokens: u32,
    ) -> Result<(Verdict, Usage), JudgeError> {
        let key = SecretString::from(key);
        let azure = target.azure(&self.mock, "gpt-4o");
        let model = model
            .map(str::to_string)
            .unwrap_or_else(|| ModelTable::default().model_for(target.provider(), azure.as_ref()));
        let request = JudgeRequest {
            provider: target.provider(),
            key: &key,
            model: &model,
            azure: azure.as_ref(),
            system,
            user,
            max_tokens,
            timeout: Duration::from_secs(10),
        };
        providers::judge(&self.http, &self.endpoints, &request, &fast_policy()).await
    }
}

fn fast_policy() -> RetryPolicy {
    RetryPolicy { max_retries: 2, base_delay: Duration::from_millis(10), max_delay: Duration::from_millis(50) }
}

#[tokio::test]
async fn valid_keys_are_valid() {
    let f = fixture(MockConfig::default()).await;
    for target in ALL {
        let key = format!("sk-good-{target:?}-0123456789");
        let outcome = f.check(target, &key, None).await;
        assert!(matches!(outcome, CheckOutcome::Valid { http_status: 200, .. }), "{target:?}: {outcome:?}");
        assert_eq!(outcome.reason_str(), "Valid");
        assert_eq!(f.mock.requests_for_key(&key), target.check_requests(), "{target:?}");
    }
    let outcome = f.check(Target::OpenAi, "sk-good-id", None).await;
    assert!(matches!(outcome, CheckOutcome::Valid { request_id: Some(ref id), .. } if id.starts_with("req_")));
}

#[tokio::test]
async fn invalid_keys_are_unauthorized_after_one_request() {
    let f = fixture(MockConfig::default()).await;
    for target in ALL {
        let key = format!("sk-invalid-{target:?}-0123456789");
        let outcome = f.check(target, &key, None).await;
        // Gemini reports a bad key as HTTP 400 API_KEY_INVALID.
        let status = if matches!(target, Target::Google) { 400 } else { 401 };
        assert!(
            matches!(outcome, CheckOutcome::Invalid { reason: InvalidReason::Unauthorized, http_status, .. } if http_status == status),
            "{target:?}: {outcome:?}"
        );
        assert_eq!(outcome.reason_str(), "Unauthorized");
        assert_eq!(f.mock.requests_for_key(&key), 1, "{target:?}");
    }
}

#[tokio::test]
async fn restricted_keys_lack_permission() {
    let f = fixture(MockConfig::default()).await;
    for target in ALL {
        let outcome = f.check(target, "sk-restricted-0123456789", None).await;
        // OpenAI restricted keys list models, then fail the scope probe with 401 "Missing scopes".
        let status = if matches!(target, Target::OpenAi) { 401 } else { 403 };
        assert!(
            matches!(outcome, CheckOutcome::Invalid { reason: InvalidReason::PermissionDenied, http_status, ref message } if http_status == status && !message.is_empty()),
            "{target:?}: {outcome:?}"
        );
        if let Target::OpenAi = target {
            assert!(outcome.message().unwrap().contains("Missing scopes: model.request"));
        }
    }
}

#[tokio::test]
async fn quota_exhaustion_shows_at_judge_time_and_when_listings_refuse() {
    // Real services let an out-of-credit key list models: the check passes, the judge call fails.
    let f = fixture(MockConfig::default()).await;
    for target in ALL {
        let key = format!("sk-quota-{target:?}-0123456789");
        assert!(f.check(target, &key, None).await.is_valid(), "{target:?}");
        let before = f.mock.requests_for_key(&key);
        let err = f.judge(target, &key, None, "s", "u", 512).await.unwrap_err();
        assert!(matches!(err, JudgeError::QuotaExhausted { status: 429, .. }), "{target:?}: {err:?}");
        assert!(!err.retryable());
        assert_eq!(f.mock.requests_for_key(&key) - before, 1, "{target:?}: quota must not be retried");
    }
    // Where the provider refuses listings too, the check itself reports it.
    let f = fixture(MockConfig { quota_blocks_listing: true, ..MockConfig::default() }).await;
    for target in ALL {
        let outcome = f.check(target, "sk-quota-0123456789", None).await;
        assert!(
            matches!(outcome, CheckOutcome::Invalid { reason: InvalidReason::QuotaExhausted, http_status: 429, .. }),
            "{target:?}: {outcome:?}"
        );
        assert_eq!(outcome.reason_str(), "QuotaExhausted");
    }
}

#[tokio::test]
async fn rate_limited_keys_are_unknown_with_retry_after() {
    let f = fixture(MockConfig::default()).await;
    for target in ALL {
        let outcome = f.check(target, "sk-ratelimit-0123456789", None).await;
        assert_eq!(
            outcome,
            CheckOutcome::Unknown {
                reason: TransientReason::RateLimited,
                http_status: Some(429),
                retry_after: Some(Duration::from_secs(1)),
                message: outcome.message().unwrap_or_default().to_string(),
            },
            "{target:?}"
        );
        assert!(!outcome.message().unwrap_or_default().is_empty());
    }
}

#[tokio::test]
async fn server_errors_are_unknown() {
    let f = fixture(MockConfig::default()).await;
    for (target, status) in [
        (Target::OpenAi, 500),
        (Target::Anthropic, 529),
        (Target::Google, 503),
        (Target::AzureV1, 500),
        (Target::AzureDated, 500),
    ] {
        let outcome = f.check(target, "sk-servererror-0123456789", None).await;
        assert!(
            matches!(outcome, CheckOutcome::Unknown { reason: TransientReason::ServerError, http_status: Some(s), .. } if s == status),
            "{target:?}: {outcome:?}"
        );
        assert_eq!(outcome.reason_str(), "ServerError");
    }
}

#[tokio::test]
async fn unlisted_models_and_missing_deployments_are_model_unavailable() {
    let f = fixture(MockConfig::default()).await;
    for (target, model, status) in [
        (Target::OpenAi, "gpt-x", 200),
        (Target::Anthropic, "claude-sonnet-4-20250514", 404), // retired
        (Target::Google, "gemini-pro", 404),                  // no longer resolves
        (Target::AzureV1, "no-such-deployment", 404),
        (Target::AzureDated, "no-such-deployment", 404),
    ] {
        let outcome = f.check(target, "sk-good-0123456789", Some(model)).await;
        assert!(
            matches!(outcome, CheckOutcome::ModelUnavailable { model: ref m, http_status, .. } if m == model && http_status == status),
            "{target:?}: {outcome:?}"
        );
        assert_eq!(outcome.reason_str(), "ModelNotFound");
    }
    // Other listed models work.
    for (target, model) in
        [(Target::OpenAi, "o4-mini"), (Target::Anthropic, "claude-opus-4-8"), (Target::Google, "gemini-2.5-flash")]
    {
        assert!(f.check(target, "sk-good-0123456789", Some(model)).await.is_valid(), "{target:?}");
    }
}

#[tokio::test]
async fn timeouts_and_network_errors_are_unknown() {
    let f = fixture(MockConfig::default()).await;
    let key = SecretString::from("sk-slow-0123456789");
    let check = KeyCheck { provider: Provider::Anthropic, key: &key, model: "claude-sonnet-4-6", azure: None };
    let started = Instant::now();
    let outcome = providers::check_key_with_timeout(&f.http, &f.endpoints, check, Duration::from_millis(300)).await;
    assert!(
        matches!(outcome, CheckOutcome::Unknown { reason: TransientReason::Timeout, http_status: None, .. }),
        "{outcome:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(4), "the timeout must cut the 5 s slow answer");

    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let endpoints = Endpoints { anthropic: format!("http://{closed}"), ..f.endpoints.clone() };
    let outcome = providers::check_key(&f.http, &endpoints, check).await;
    assert!(matches!(outcome, CheckOutcome::Unknown { reason: TransientReason::NetworkError, .. }), "{outcome:?}");
    assert_eq!(outcome.reason_str(), "NetworkError");
}

#[tokio::test]
async fn rate_limited_twice_then_recovers() {
    let f = fixture(MockConfig::default()).await;
    for target in ALL {
        let key = format!("sk-flaky-{target:?}-0123456789");
        f.mock.set_behaviour(&key, Behaviour::RateLimited, Some(2));
        for attempt in 0..2 {
            let outcome = f.check(target, &key, None).await;
            assert_eq!(outcome.reason_str(), "RateLimited", "{target:?} attempt {attempt}");
        }
        assert!(f.check(target, &key, None).await.is_valid(), "{target:?}");
        assert_eq!(f.mock.requests_for_key(&key), 2 + target.check_requests(), "{target:?}");
    }
}

#[tokio::test]
async fn judge_returns_the_predicted_verdict_and_usage() {
    let f = fixture(MockConfig::default()).await;
    let system = "You are a strict judge. mock-score=0.83";
    let user = "Question: 2+2? Answer: 4";
    let expected = Verdict { score: 0.83, pass: true, reason: "mock verdict: score 0.83 set by the prompt".into() };
    // 6 + 4 words -> 8 + 5 tokens; the 8-word reason -> 11 tokens, + 6.
    let usage = Usage { input_tokens: 13, output_tokens: 17 };
    assert_eq!((mock_verdict(system, user), mock_usage(system, user)), (expected.clone(), usage));
    for target in ALL {
        let result = f.judge(target, "sk-good-0123456789", None, system, user, 512).await;
        assert_eq!(result.unwrap(), (expected.clone(), usage), "{target:?}");
    }
    // gpt-5.x and o-series: the mock rejects temperature 0 and max_tokens, so this proves the client omits them.
    for model in ["gpt-5.1", "o4-mini"] {
        let result = f.judge(Target::OpenAi, "sk-good-0123456789", Some(model), system, user, 512).await;
        assert_eq!(result.unwrap().0, expected, "{model}");
    }
    // Without a directive the score is the documented hash of the user message.
    let user = "Is the capital of France Paris? Yes.";
    let (verdict, _) = f.judge(Target::Google, "sk-good-0123456789", None, "Judge.", user, 512).await.unwrap();
    assert_eq!(verdict.score, mock_score(user));
    assert_eq!(verdict.pass, verdict.score >= 0.5);
    let (verdict, _) = f
        .judge(Target::Anthropic, "sk-good-0123456789", None, "", "mock-score=0.9 mock-pass=false", 512)
        .await
        .unwrap();
    assert_eq!((verdict.score, verdict.pass), (0.9, false));
}

#[tokio::test]
async fn judge_with_an_invalid_key_fails_once_without_retry() {
    let f = fixture(MockConfig::default()).await;
    for target in ALL {
        let key = format!("sk-invalid-{target:?}-0123456789");
        let err = f.judge(target, &key, None, "s", "u", 512).await.unwrap_err();
        assert!(matches!(err, JudgeError::Unauthorized { .. }), "{target:?}: {err:?}");
        assert_eq!(err.reason(), "Unauthorized");
        assert_eq!(f.mock.requests_for_key(&key), 1, "{target:?}");
    }
    assert_eq!(f.mock.requests_total(), ALL.len() as u64);
}

#[tokio::test]
async fn judge_honours_retry_after_then_succeeds() {
    let f = fixture(MockConfig::default()).await;
    let runs = ALL.map(|target| {
        let f = &f;
        async move {
            let key = format!("sk-once-{target:?}-0123456789");
            f.mock.set_behaviour(&key, Behaviour::RateLimited, Some(1));
            let started = Instant::now();
            // Backoff alone would wait 10 ms: a wait of about 1 s proves Retry-After was used.
            let result = f.judge(target, &key, None, "mock-score=0.4", "u", 512).await;
            (target, result, started.elapsed(), f.mock.requests_for_key(&key))
        }
    });
    for (target, result, elapsed, requests) in join_all(runs).await {
        let (verdict, _) = result.unwrap_or_else(|e| panic!("{target:?}: {e:?}"));
        assert_eq!((verdict.score, verdict.pass), (0.4, false), "{target:?}");
        assert_eq!(requests, 2, "{target:?}");
        assert!(elapsed >= Duration::from_millis(950) && elapsed < Duration::from_secs(5), "{target:?}: {elapsed:?}");
    }
}

#[tokio::test]
async fn judge_gives_up_after_max_retries() {
    let f = fixture(MockConfig::default()).await;
    for target in ALL {
        let key = format!("sk-servererror-{target:?}-0123456789");
        let err = f.judge(target, &key, None, "s", "u", 512).await.unwrap_err();
        assert!(matches!(err, JudgeError::Server { .. }), "{target:?}: {err:?}");
        assert_eq!(err.reason(), "ServerError");
        assert_eq!(f.mock.requests_for_key(&key), 3, "{target:?}: 1 attempt + 2 retries");
    }
}

#[tokio::test]
async fn judge_reports_truncated_and_refused_outputs() {
    let f = fixture(MockConfig::default()).await;
    for target in ALL {
        // 5 tokens cannot hold the verdict: finish_reason length, stop_reason max_tokens, MAX_TOKENS without parts.
        let err = f.judge(target, "sk-good-0123456789", None, "s", "u", 5).await.unwrap_err();
        assert!(matches!(err, JudgeError::MalformedVerdict { .. }), "{target:?}: {err:?}");
        assert!(!err.retryable());
        let err = f.judge(target, "sk-good-0123456789", None, "s", "mock-refuse", 512).await.unwrap_err();
        assert!(matches!(err, JudgeError::Refused { .. }), "{target:?}: {err:?}");
    }
}

/// A gateway that echoes the credentials it received in its error messages, which the real
/// providers never do: the clients must redact the key themselves.
async fn echoing_gateway() -> (String, tokio::task::JoinHandle<()>) {
    use axum::http::HeaderMap;
    let app = axum::Router::new().fallback(|headers: HeaderMap| async move {
        let echoed: Vec<String> = ["authorization", "x-api-key", "x-goog-api-key", "api-key"]
            .iter()
            .filter_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()).map(str::to_string))
            .collect();
        let message = format!("rejected credentials {}", echoed.join(" "));
        (axum::http::StatusCode::UNAUTHORIZED, axum::Json(json!({"error": {"message": message, "type": "x"}})))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), task)
}

#[tokio::test]
async fn the_plaintext_key_never_appears_in_results() {
    let (gateway, task) = echoing_gateway().await;
    let endpoints = Endpoints {
        openai: format!("{gateway}/v1"),
        anthropic: gateway.clone(),
        google: gateway.clone(),
        azure: Some(gateway.clone()),
        ..Endpoints::default()
    };
    let http = reqwest::Client::new();
    let secret = "sk-live-SuperSecretValue-0123456789abcdef";
    let key = SecretString::from(secret);
    let azure = AzureSpec { endpoint: gateway.clone(), deployment: "gpt-4o".into(), api_version: None };
    for provider in Provider::ALL {
        let azure = (provider == Provider::AzureOpenAi).then_some(&azure);
        let check = KeyCheck { provider, key: &key, model: "m", azure };
        assert!(!format!("{check:?}").contains(secret));
        let outcome = providers::check_key(&http, &endpoints, check).await;
        let shown = format!("{outcome:?} {}", outcome.message().unwrap_or_default());
        assert!(!shown.contains(secret), "{provider}: {shown}");
        assert!(shown.contains("[REDACTED]"), "{provider}: the gateway did echo the key: {shown}");
        let request = JudgeRequest {
            provider,
            key: &key,
            model: "m",
            azure,
            system: "s",
            user: "u",
            max_tokens: 64,
            timeout: Duration::from_secs(5),
        };
        assert!(!format!("{request:?}").contains(secret));
        let err = providers::judge(&http, &endpoints, &request, &fast_policy()).await.unwrap_err();
        let shown = format!("{err:?} {err}");
        assert!(!shown.contains(secret), "{provider}: {shown}");
        assert!(shown.contains("[REDACTED]"), "{provider}: {shown}");
    }
    task.abort();

    // The mock itself masks like OpenAI: even the raw message never carries the key.
    let f = fixture(MockConfig::default()).await;
    for target in ALL {
        let secret = "sk-invalid-SuperSecretValue-0123456789abcdef";
        let outcome = f.check(target, secret, None).await;
        assert!(!format!("{outcome:?}").contains(secret), "{target:?}");
        let err = f.judge(target, secret, None, "s", "u", 64).await.unwrap_err();
        assert!(!format!("{err:?} {err}").contains(secret), "{target:?}");
    }
}

#[tokio::test]
async fn mock_speaks_each_providers_wire_format() {
    let f = fixture(MockConfig::default()).await;
    let base = format!("http://{}", f.mock.addr());
    let http = &f.http;
    let json_of = |r: reqwest::Response| async move { (r.status().as_u16(), r.json::<Value>().await.unwrap()) };

    // OpenAI: gpt-5.x rejects max_tokens; missing auth is the real 401.
    let body = json!({"model": "gpt-5.1", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]});
    let (status, v) = json_of(
        http.post(format!("{base}/openai/v1/chat/completions")).bearer_auth("k").json(&body).send().await.unwrap(),
    )
    .await;
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("unsupported_parameter")));
    let (status, v) = json_of(http.get(format!("{base}/openai/v1/models")).send().await.unwrap()).await;
    assert_eq!(status, 401);
    assert_eq!(v["error"]["type"], "invalid_request_error");

    // Anthropic: Bearer accepted, anthropic-version required, max_tokens required, retired ids 404.
    let messages = format!("{base}/anthropic/v1/messages");
    let body = json!({"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "x"}]});
    let (status, v) = json_of(
        http.post(&messages)
            .bearer_auth("k")
            .header("anthropic-version", "2026-10-21")
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, v["error"]["type"].as_str()), (400, Some("invalid_request_error")));
    assert_eq!(v["type"], "error");
    let (status, _) = json_of(http.post(&messages).header("x-api-key", "k").json(&body).send().await.unwrap()).await;
    assert_eq!(status, 400);
    let body =
        json!({"model": "claude-sonnet-4-20250514", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]});
    let (status, v) = json_of(
        http.post(&messages)
            .header("x-api-key", "k")
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, v["error"]["type"].as_str()), (404, Some("not_found_error")));
    let r = http
        .get(format!("{base}/anthropic/v1/models?limit=1"))
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert!(
        r.headers().contains_key("request-id") && r.headers().contains_key("anthropic-ratelimit-requests-remaining")
    );
    let (_, v) = json_of(r).await;
    assert_eq!((v["data"][0]["id"].as_str(), v["has_more"].as_bool()), (Some("claude-sonnet-4-6"), Some(true)));

    // Google: ?key= works too; invalid keys are HTTP 400 API_KEY_INVALID.
    let (status, v) =
        json_of(http.get(format!("{base}/google/v1beta/models?pageSize=1&key=k")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(v["models"][0]["name"], "models/gemini-2.5-pro");
    assert_eq!(v["nextPageToken"], "1");
    let (status, v) = json_of(
        http.get(format!("{base}/google/v1/models")).header("x-goog-api-key", "bad-invalid").send().await.unwrap(),
    )
    .await;
    assert_eq!((status, v["error"]["status"].as_str()), (400, Some("INVALID_ARGUMENT")));
    assert_eq!(v["error"]["details"][0]["reason"], "API_KEY_INVALID");

    // Azure: dated routes need api-version; unknown deployments are DeploymentNotFound.
    let (status, _) =
        json_of(http.get(format!("{base}/azure/openai/models")).header("api-key", "k").send().await.unwrap()).await;
    assert_eq!(status, 404);
    let (status, v) = json_of(
        http.get(format!("{base}/azure/openai/deployments/nope?api-version=2024-10-21"))
            .header("api-key", "k")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, v["error"]["code"].as_str()), (404, Some("DeploymentNotFound")));

    // Control endpoints: behaviour override and per-fingerprint stats.
    let r = http
        .post(format!("{base}/_mock/behaviour"))
        .json(&json!({"key": "ctl", "behaviour": "invalid", "times": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let (status, _) =
        json_of(http.get(format!("{base}/openai/v1/models")).bearer_auth("ctl").send().await.unwrap()).await;
    assert_eq!(status, 401);
    let (status, _) =
        json_of(http.get(format!("{base}/openai/v1/models")).bearer_auth("ctl").send().await.unwrap()).await;
    assert_eq!(status, 200);
    let (_, stats) = json_of(http.get(format!("{base}/_mock/stats")).send().await.unwrap()).await;
    assert_eq!(stats["keys"][mock::key_fingerprint("ctl")], 2);
    assert!(!stats.to_string().contains("\"ctl\""), "stats hold fingerprints, not keys");
    assert_eq!(stats["total"].as_u64(), Some(f.mock.requests_total()));
}

#[tokio::test]
async fn latency_is_applied_and_shutdown_stops_the_server() {
    let f = fixture(MockConfig { latency: Duration::from_millis(300), ..MockConfig::default() }).await;
    let started = Instant::now();
    assert!(f.check(Target::Google, "sk-good-0123456789", None).await.is_valid());
    assert!(started.elapsed() >= Duration::from_millis(300));
    f.mock.set_latency(Duration::ZERO);
    let Fixture { mock, http, endpoints } = f;
    mock.shutdown().await;
    let key = SecretString::from("k");
    let check = KeyCheck { provider: Provider::Google, key: &key, model: "gemini-2.5-pro", azure: None };
    let outcome = providers::check_key(&http, &endpoints, check).await;
    assert_eq!(outcome.reason_str(), "NetworkError", "{outcome:?}");
}
