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
            Target::OpenAi => 2, // model list + scope probe
            // One empty chat request checks key, endpoint and deployment.
            Target::AzureV1 | Target::AzureDated => 1,
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
        let deployment = match target {
            Target::AzureV1 | Target::AzureDated => model.unwrap_or("gpt-4o"),
            _ => "gpt-4o",
        };
        let key = SecretString::from(key);
        let azure = target.azure(&self.mock, deployment);
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
        // Azure's check is an empty chat request: its 400 (the empty message list) is the good answer.
        let status = if matches!(target, Target::AzureV1 | Target::AzureDated) { 400 } else { 200 };
        assert!(
            matches!(outcome, CheckOutcome::Valid { http_status, .. } if http_status == status),
            "{target:?}: {outcome:?}"
        );
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
        // Anthropic says "credit balance is too low" with a 400, the others with a 429.
        let status = if matches!(target, Target::Anthropic) { 400 } else { 429 };
        assert!(matches!(err, JudgeError::QuotaExhausted { status: s, .. } if s == status), "{target:?}: {err:?}");
        assert!(!err.retryable());
        assert_eq!(f.mock.requests_for_key(&key) - before, 1, "{target:?}: quota must not be retried");
    }
    // Where the provider refuses listings too, the check itself reports it (Azure's check lists nothing).
    let f = fixture(MockConfig { quota_blocks_listing: true, ..MockConfig::default() }).await;
    for target in [Target::OpenAi, Target::Anthropic, Target::Google] {
        let outcome = f.check(target, "sk-quota-0123456789", None).await;
        assert!(
            matches!(outcome, CheckOutcome::Invalid { reason: InvalidReason::QuotaExhausted, .. }),
            "{target:?}: {outcome:?}"
        );
        assert_eq!(outcome.reason_str(), "QuotaExhausted");
    }
}

#[tokio::test]
async fn anthropic_spend_limits_are_quota_not_rate_limits() {
    let f = fixture(MockConfig::default()).await;
    let key = "sk-ant-spendlimit-0123456789";
    assert!(f.check(Target::Anthropic, key, None).await.is_valid(), "a spend limit does not stop listings");
    let err = f.judge(Target::Anthropic, key, None, "s", "u", 512).await.unwrap_err();
    assert!(matches!(err, JudgeError::QuotaExhausted { status: 400, .. }), "{err:?}");
    assert!(err.to_string().contains("usage limits"), "{err}");
    assert_eq!(f.mock.requests_for_key(key), 2, "one check, one judge call, no retry");
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
        (Target::Google, "gemini-2.5-pro", 404), // shut down
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
        [(Target::OpenAi, "o4-mini"), (Target::Anthropic, "claude-opus-4-8"), (Target::Google, "gemini-2.5-flash-lite")]
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
        let (verdict, billed) = f.judge(target, "sk-good-0123456789", None, system, user, 512).await.unwrap();
        assert_eq!(verdict, expected, "{target:?}");
        assert_eq!(billed.input_tokens, usage.input_tokens, "{target:?}");
        // The OpenAI and Gemini defaults think before they answer, and thinking is billed as output.
        let thinks = matches!(target, Target::OpenAi | Target::Google);
        assert_eq!(billed.output_tokens > usage.output_tokens, thinks, "{target:?}: {billed:?}");
        assert!(billed.output_tokens >= usage.output_tokens, "{target:?}");
    }
    // gpt-5.x and o-series: the mock rejects temperature 0 and max_tokens, so this proves the client omits them.
    for model in ["gpt-4.1", "o4-mini"] {
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
    // 5 tokens cannot hold the verdict. A model that writes as it goes is cut mid-JSON; one that
    // thinks first, or Anthropic at max_tokens, gives no verdict text at all: its own error.
    for (target, model, empty) in [
        (Target::OpenAi, "gpt-4.1", false),
        (Target::AzureV1, "gpt-4o", false),
        (Target::Anthropic, "claude-sonnet-4-6", true),
        // The deployment's model thinks, unknown to the client: no budget is sent for it.
        (Target::AzureDated, "judge", true),
    ] {
        let err = f.judge(target, "sk-good-0123456789", Some(model), "s", "u", 5).await.unwrap_err();
        if empty {
            assert!(matches!(err, JudgeError::EmptyVerdict { .. }), "{target:?}: {err:?}");
            assert_eq!(err.reason(), "EmptyVerdict");
        } else {
            assert!(matches!(err, JudgeError::MalformedVerdict { .. }), "{target:?}: {err:?}");
        }
        assert!(!err.retryable());
    }
    for target in ALL {
        let err = f.judge(target, "sk-good-0123456789", None, "s", "mock-refuse", 512).await.unwrap_err();
        assert!(matches!(err, JudgeError::Refused { .. }), "{target:?}: {err:?}");
    }
}

#[tokio::test]
async fn reasoning_models_get_a_low_budget_and_room_for_the_verdict() {
    let f = fixture(MockConfig::default()).await;
    // A tiny max_tokens still yields a verdict: a low effort / thinking level is asked for, and the
    // output limit leaves room for the thinking that remains.
    for (target, model) in [
        (Target::OpenAi, "gpt-5.1"),
        (Target::OpenAi, "o4-mini"),
        (Target::Google, "gemini-3.5-flash"),
        (Target::Google, "gemini-2.5-flash-lite"),
    ] {
        let key = format!("sk-think-{model}-0123456789");
        let (verdict, usage) = f
            .judge(target, &key, Some(model), "mock-score=0.7", "u", 40)
            .await
            .unwrap_or_else(|e| panic!("{model}: {e:?}"));
        assert_eq!(verdict.score, 0.7, "{model}");
        assert!(usage.output_tokens > mock_usage("mock-score=0.7", "u").output_tokens, "{model}: thinking is billed");
        assert_eq!(f.mock.requests_for_key(&key), 1, "{model}: accepted at once");
    }
}

#[tokio::test]
async fn temperature_goes_only_where_the_model_takes_it() {
    let f = fixture(MockConfig::default()).await;
    // The mock refuses temperature on these models: one request each proves the client left it out.
    for (target, model) in [
        (Target::Anthropic, "claude-opus-4-8"),
        (Target::Anthropic, "claude-sonnet-5"),
        (Target::OpenAi, "gpt-5.1"),
        (Target::OpenAi, "gpt-4.1"),
        (Target::AzureV1, "gpt-4o"),
    ] {
        let key = format!("sk-temp-{target:?}-{model}-0123456789");
        f.judge(target, &key, Some(model), "mock-score=0.6", "u", 512)
            .await
            .unwrap_or_else(|e| panic!("{model}: {e:?}"));
        assert_eq!(f.mock.requests_for_key(&key), 1, "{model}");
    }
    // An Azure deployment's name says nothing of its model: "judge" runs a reasoning model that
    // refuses temperature 0, so the call is made once more without it.
    for target in [Target::AzureV1, Target::AzureDated] {
        let key = format!("sk-temp-{target:?}-judge-0123456789");
        let (verdict, _) = f.judge(target, &key, Some("judge"), "mock-score=0.6", "u", 4096).await.unwrap();
        assert_eq!(verdict.score, 0.6);
        assert_eq!(f.mock.requests_for_key(&key), 2, "{target:?}: refused once, then accepted");
    }
}

#[tokio::test]
async fn retired_models_are_named_retired_and_dying_ones_carry_their_date() {
    let f = fixture(MockConfig::default()).await;
    for (target, model) in [
        (Target::Anthropic, "claude-sonnet-4-5"),
        (Target::Anthropic, "claude-sonnet-4-20250514"),
        (Target::Google, "gemini-2.5-pro"),
        (Target::OpenAi, "gpt-4.5-preview"),
    ] {
        let err = f.judge(target, "sk-good-0123456789", Some(model), "s", "u", 512).await.unwrap_err();
        assert_eq!(err.reason(), "ModelRetired", "{model}: {err}");
        assert!(err.to_string().contains("shut down on 20"), "{model}: {err}");
    }
    // The OpenAI model list carries gpt-4o's shutdown date: the check passes and reports it.
    let outcome = f.check(Target::OpenAi, "sk-good-0123456789", Some("gpt-4o")).await;
    let CheckOutcome::Valid { lifecycle: Some(lifecycle), .. } = outcome else { panic!("{outcome:?}") };
    assert_eq!(lifecycle.shutdown, Some("2027-01-14".parse().unwrap()));
    // Anthropic model objects say a model is deprecated.
    let outcome = f.check(Target::Anthropic, "sk-good-0123456789", Some("claude-opus-4-1")).await;
    let CheckOutcome::Valid { lifecycle: Some(lifecycle), .. } = outcome else { panic!("{outcome:?}") };
    assert_eq!(lifecycle.status.as_deref(), Some("deprecated"));
}

#[tokio::test]
async fn azure_deployments_are_checked_by_a_free_chat_request() {
    let f = fixture(MockConfig::default()).await;
    for target in [Target::AzureV1, Target::AzureDated] {
        let key = format!("sk-az-{target:?}-0123456789");
        assert!(f.check(target, &key, Some("judge")).await.is_valid(), "{target:?}");
        assert_eq!(f.mock.requests_for_key(&key), 1);
    }
    // The deployment lookup the client used to make does not exist on the real data plane.
    let base = format!("http://{}", f.mock.addr());
    let r = f
        .http
        .get(format!("{base}/azure/openai/deployments/gpt-4o?api-version=2024-10-21"))
        .header("api-key", "k")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["message"], "Resource not found");
}

#[tokio::test]
async fn a_key_that_may_not_list_models_is_valid_with_a_note() {
    let f = fixture(MockConfig::default()).await;
    let key = "sk-nomodelread-0123456789";
    let outcome = f.check(Target::OpenAi, key, None).await;
    let CheckOutcome::Valid { note: Some(note), .. } = &outcome else { panic!("{outcome:?}") };
    assert!(note.contains("api.model.read"), "{note}");
    assert_eq!(f.mock.requests_for_key(key), 2, "the refused list, then the chat probe");
    // ... and it judges.
    assert!(f.judge(Target::OpenAi, key, None, "s", "u", 512).await.is_ok());
    // A model it cannot reach is still caught by the probe.
    let outcome = f.check(Target::OpenAi, key, Some("gpt-x")).await;
    assert_eq!(outcome.reason_str(), "ModelNotFound", "{outcome:?}");
}

/// A provider that always answers 429 with the given Retry-After, counting requests.
async fn rate_limiting_server(retry_after: &'static str) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let count = std::sync::Arc::new(AtomicU64::new(0));
    let seen = count.clone();
    let app = axum::Router::new().fallback(move || {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            let body = json!({"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}});
            (axum::http::StatusCode::TOO_MANY_REQUESTS, [("retry-after", retry_after)], axum::Json(body))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/v1"), count)
}

#[tokio::test]
async fn a_server_wait_over_120_s_is_not_retried() {
    let http = reqwest::Client::new();
    let key = SecretString::from("sk-0123456789");
    let request = |timeout| JudgeRequest {
        provider: Provider::OpenAi,
        key: &key,
        model: "gpt-4.1",
        azure: None,
        system: "s",
        user: "u",
        max_tokens: 64,
        timeout,
    };
    let (base, count) = rate_limiting_server("600").await;
    let endpoints = Endpoints { openai: base, ..Endpoints::default() };
    let started = Instant::now();
    let err = providers::judge(&http, &endpoints, &request(Duration::from_secs(5)), &fast_policy()).await.unwrap_err();
    assert!(matches!(err, JudgeError::RateLimited { retryable: false, .. }), "{err:?}");
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1, "told to wait 10 minutes: no retry");
    assert!(started.elapsed() < Duration::from_secs(5));
    // A wait within the cap is honoured.
    let (base, count) = rate_limiting_server("0.2").await;
    let endpoints = Endpoints { openai: base, ..Endpoints::default() };
    let err = providers::judge(&http, &endpoints, &request(Duration::from_secs(5)), &fast_policy()).await.unwrap_err();
    assert!(matches!(err, JudgeError::RateLimited { retryable: true, .. }), "{err:?}");
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 3, "1 attempt + 2 retries");
}

/// The mock and the clients must not share beliefs: neither imports the other's tables.
#[test]
fn the_mock_and_the_clients_share_no_tables() {
    let dir = |d: &str| {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "rs"))
            .map(|p| (p.display().to_string(), std::fs::read_to_string(&p).unwrap()))
            .collect::<Vec<_>>()
    };
    let allowed = ["Verdict", "Usage", "Endpoints"];
    for (path, text) in dir("src/mock") {
        for (n, line) in text.lines().enumerate() {
            if let Some(rest) = line.split("providers::").nth(1) {
                let names: Vec<&str> =
                    rest.split(|c: char| !c.is_alphanumeric() && c != '_').filter(|w| !w.is_empty()).collect();
                assert!(
                    names.iter().all(|w| allowed.contains(w)),
                    "{path}:{}: the mock may use only the plain types {allowed:?} of the clients: {line}",
                    n + 1
                );
            }
        }
    }
    for (path, text) in dir("src/providers") {
        assert!(!text.contains("mock::"), "{path}: the clients must not read the mock");
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
    assert_eq!(v["models"][0]["name"], "models/gemini-3.5-flash");
    assert_eq!(v["nextPageToken"], "1");
    let (status, v) = json_of(
        http.get(format!("{base}/google/v1/models")).header("x-goog-api-key", "bad-invalid").send().await.unwrap(),
    )
    .await;
    assert_eq!((status, v["error"]["status"].as_str()), (400, Some("INVALID_ARGUMENT")));
    assert_eq!(v["error"]["details"][0]["reason"], "API_KEY_INVALID");

    // Azure: dated routes need api-version; a chat to an unknown deployment is DeploymentNotFound
    // before its body is even read, and an existing one refuses the empty message list.
    let (status, _) =
        json_of(http.get(format!("{base}/azure/openai/models")).header("api-key", "k").send().await.unwrap()).await;
    assert_eq!(status, 404);
    let chat = |d: &str| format!("{base}/azure/openai/deployments/{d}/chat/completions?api-version=2024-10-21");
    let empty = json!({"messages": []});
    let (status, v) = json_of(http.post(chat("nope")).header("api-key", "k").json(&empty).send().await.unwrap()).await;
    assert_eq!((status, v["error"]["code"].as_str()), (404, Some("DeploymentNotFound")));
    let (status, _) =
        json_of(http.post(chat("gpt-4o")).header("api-key", "k").json(&empty).send().await.unwrap()).await;
    assert_eq!(status, 400);

    // Gemini /v1 refuses the fields only /v1beta takes; /v1beta takes them.
    let body = json!({"systemInstruction": {"parts": [{"text": "s"}]}, "contents": [{"parts": [{"text": "u"}]}]});
    let generate = |v: &str| format!("{base}/google/{v}/models/gemini-3.5-flash:generateContent");
    let (status, v) =
        json_of(http.post(generate("v1")).header("x-goog-api-key", "k").json(&body).send().await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(v["error"]["message"].as_str().unwrap_or_default().contains("systemInstruction"), "{v}");
    let (status, _) =
        json_of(http.post(generate("v1beta")).header("x-goog-api-key", "k").json(&body).send().await.unwrap()).await;
    assert_eq!(status, 200);

    // Unknown routes answer each provider's own 404.
    let (status, v) = json_of(http.get(format!("{base}/openai/v1/nope")).bearer_auth("k").send().await.unwrap()).await;
    assert_eq!((status, v["error"]["type"].as_str()), (404, Some("invalid_request_error")));

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
