//! The real `byok-judge` binary, run as a pod would run it (fetch-key, then run), against the mock
//! provider and a fake key broker over HTTPS with a test CA. No Kubernetes: local processes only.
//! Every test starts its own mock, broker and temp dir, so tests run in parallel.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use byok_operator::crd::{Aggregate, AzureSpec, Provider, Scorer, ScorerType};
use byok_operator::judge::wire::{
    CaseResult, JudgeConfig, KEY_PATH, KeyRequest, KeyResponse, Outcome, PanelConfig, PanelJudgeConfig, PanelKey,
    RESULTS_PATH, Refusal, ResultsAck, ResultsReport,
};
use byok_operator::mock::{self, MockConfig, MockHandle};
use serde_json::json;

const KEY_TOKEN: &str = "key-audience-token";
const RESULTS_TOKEN: &str = "results-audience-token";
const POD_UID: &str = "0f6c7a52-1111-4222-8333-944445555666";

/// The fake broker: hands out one key to the right token and pod uid, collects reports.
struct BrokerState {
    key: String,
    refusal: Option<Refusal>,
    revoke_on_first_report: bool,
    mock: Arc<MockHandle>,
    key_requests: AtomicU32,
    reports: Mutex<Vec<ResultsReport>>,
    /// Provider requests made with the key when the broker first answered "revoked".
    requests_at_revocation: Mutex<Option<u64>>,
    /// Panel keys handed out with the key: (ByokKey name, its key or None for refused).
    panel: Mutex<Vec<(String, Option<String>)>>,
    /// A panel key the broker calls revoked from the first report on, and the provider requests
    /// made with it by then.
    revoked_panel_key: Mutex<Option<(String, String, Option<u64>)>>,
}

fn bearer(headers: &HeaderMap) -> &str {
    headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("")
}

fn refuse(reason: &str) -> (StatusCode, Json<serde_json::Value>) {
    (
        StatusCode::FORBIDDEN,
        Json(json!(Refusal { reason: reason.into(), message: "refused by the test broker".into() })),
    )
}

async fn key_handler(
    State(state): State<Arc<BrokerState>>,
    headers: HeaderMap,
    Json(request): Json<KeyRequest>,
) -> (StatusCode, Json<serde_json::Value>) {
    state.key_requests.fetch_add(1, Ordering::SeqCst);
    if bearer(&headers) != KEY_TOKEN {
        return refuse("WrongAudience");
    }
    if request.pod_uid != POD_UID {
        return refuse("PodMismatch");
    }
    if let Some(refusal) = &state.refusal {
        return (StatusCode::FORBIDDEN, Json(json!(refusal)));
    }
    let prefix: String = state.key.chars().take(8).collect();
    let panel = state
        .panel
        .lock()
        .unwrap()
        .iter()
        .map(|(name, key)| PanelKey {
            byok_key: name.clone(),
            key: key.clone(),
            key_prefix: key.as_deref().map(|k| k.chars().take(8).collect()).unwrap_or_default(),
            refused: key.is_none().then(|| "KeyRevoked".into()),
        })
        .collect();
    (StatusCode::OK, Json(json!(KeyResponse { key: state.key.clone(), key_prefix: prefix, panel })))
}

async fn results_handler(
    State(state): State<Arc<BrokerState>>,
    headers: HeaderMap,
    Json(report): Json<ResultsReport>,
) -> (StatusCode, Json<serde_json::Value>) {
    if bearer(&headers) != RESULTS_TOKEN {
        return refuse("WrongAudience");
    }
    state.reports.lock().unwrap().push(report);
    let revoked = state.revoke_on_first_report;
    if revoked {
        let mut at = state.requests_at_revocation.lock().unwrap();
        at.get_or_insert_with(|| state.mock.requests_for_key(&state.key));
    }
    let mut revoked_panel_keys = vec![];
    if let Some((name, key, at)) = state.revoked_panel_key.lock().unwrap().as_mut() {
        at.get_or_insert_with(|| state.mock.requests_for_key(key));
        revoked_panel_keys.push(name.clone());
    }
    (StatusCode::OK, Json(json!(ResultsAck { key_revoked: revoked, revoked_panel_keys })))
}

/// Self-signed CA and a serving certificate for 127.0.0.1 signed by it, as PEM.
fn test_pki() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "judge test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server =
        CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&server_key, &issuer).unwrap();
    (ca_cert.pem(), server.pem(), server_key.serialize_pem())
}

/// One test's world: mock provider, HTTPS broker, files as the pod would see them.
struct Pod {
    dir: tempfile::TempDir,
    mock: Arc<MockHandle>,
    broker: Arc<BrokerState>,
    broker_url: String,
    key: String,
}

impl Pod {
    async fn start(key: &str, mock_config: MockConfig, refusal: Option<Refusal>, revoke: bool) -> Self {
        let mock = Arc::new(mock::start(mock_config).await.unwrap());
        let broker = Arc::new(BrokerState {
            key: key.to_string(),
            refusal,
            revoke_on_first_report: revoke,
            mock: mock.clone(),
            key_requests: AtomicU32::new(0),
            reports: Mutex::default(),
            requests_at_revocation: Mutex::default(),
            panel: Mutex::default(),
            revoked_panel_key: Mutex::default(),
        });
        let (ca, cert, server_key) = test_pki();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca).unwrap();
        std::fs::write(dir.path().join("key-token"), format!("{KEY_TOKEN}\n")).unwrap();
        std::fs::write(dir.path().join("results-token"), RESULTS_TOKEN).unwrap();

        let app = Router::new()
            .route(KEY_PATH, post(key_handler))
            .route(RESULTS_PATH, post(results_handler))
            .with_state(broker.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let tls =
            axum_server::tls_rustls::RustlsConfig::from_pem(cert.into_bytes(), server_key.into_bytes()).await.unwrap();
        let server = axum_server::tls_rustls::from_tcp_rustls(listener, tls).unwrap();
        tokio::spawn(server.serve(app.into_make_service()));
        Pod { dir, mock, broker, broker_url: format!("https://{addr}"), key: key.to_string() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The pin the operator would put in the Job's command for this file, as it is now.
    fn sha(&self, name: &str) -> String {
        byok_operator::judge::pin::sha256_hex(&std::fs::read(self.path(name)).unwrap_or_default())
    }

    /// Runs the judge binary to completion (off the runtime, which keeps serving meanwhile).
    async fn judge(&self, args: Vec<String>) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_byok-judge"));
        command.args(args).env("RUST_LOG", "info").env_remove("BYOK_BROKER_URL").env_remove("POD_UID");
        let output = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
        for stream in [&output.stdout, &output.stderr] {
            assert!(!String::from_utf8_lossy(stream).contains(&self.key), "the key leaked into the judge's output");
        }
        output
    }

    async fn fetch_key(&self) -> Output {
        let p = |name: &str| self.path(name).display().to_string();
        let args =
            ["fetch-key", "--broker", &self.broker_url, "--token-file", &p("key-token"), "--ca-file", &p("ca.crt")];
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        args.extend(["--pod-uid".into(), POD_UID.into(), "--out".into(), p("key")]);
        args.extend(["--ca-sha256".into(), self.sha("ca.crt")]);
        self.judge(args).await
    }

    async fn run(&self, config: &JudgeConfig, cases: &str) -> Output {
        std::fs::write(self.path("config.json"), serde_json::to_vec(config).unwrap()).unwrap();
        std::fs::write(self.path("cases.jsonl"), cases).unwrap();
        let p = |name: &str| self.path(name).display().to_string();
        let args = [
            "run",
            "--config",
            &p("config.json"),
            "--cases",
            &p("cases.jsonl"),
            "--key-file",
            &p("key"),
            "--shard",
            "0",
            "--broker",
            &self.broker_url,
            "--results-token-file",
            &p("results-token"),
            "--ca-file",
            &p("ca.crt"),
            "--pod-uid",
            POD_UID,
            "--results-out",
            &p("results.jsonl"),
        ];
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        for (flag, file) in
            [("--config-sha256", "config.json"), ("--cases-sha256", "cases.jsonl"), ("--ca-sha256", "ca.crt")]
        {
            args.extend([flag.to_string(), self.sha(file)]);
        }
        self.judge(args).await
    }

    /// The final report the broker accepted, checked against the local results file.
    fn final_results(&self) -> Vec<CaseResult> {
        let reports = self.broker.reports.lock().unwrap();
        let last = reports.last().expect("no report reached the broker");
        assert!(last.done && last.pod_uid == POD_UID && last.shard == 0);
        assert_eq!(reports.iter().filter(|r| r.done).count(), 1);
        let local: Vec<CaseResult> = std::fs::read_to_string(self.path("results.jsonl"))
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(local, last.results);
        last.results.clone()
    }
}

fn scorer(type_: ScorerType) -> Scorer {
    Scorer::of(type_)
}

fn llm_judge() -> Scorer {
    Scorer { rubric: Some("Does the output answer the question correctly?".into()), ..scorer(ScorerType::LlmJudge) }
}

fn config(pod: &Pod, provider: Provider, scorers: Vec<Scorer>, concurrency: u32) -> JudgeConfig {
    let endpoints = pod.mock.endpoints();
    let (model, azure) = match provider {
        Provider::OpenAi => ("gpt-4o", None),
        Provider::Anthropic => ("claude-sonnet-4-6", None),
        Provider::Google => ("gemini-3.5-flash", None),
        Provider::AzureOpenAi => (
            "gpt-4o",
            Some(AzureSpec { endpoint: pod.mock.azure_endpoint(), deployment: "gpt-4o".into(), api_version: None }),
        ),
    };
    JudgeConfig {
        panels: Default::default(),
        namespace: "team-a".into(),
        eval_job: "nightly".into(),
        provider,
        model: model.into(),
        azure,
        scorers,
        concurrency,
        retries: 2,
        call_timeout_seconds: 10,
        shards: 1,
        endpoints: endpoints.into(),
    }
}

fn outcomes(result: &CaseResult) -> Vec<Outcome> {
    result.scores.iter().map(|s| s.outcome).collect()
}

fn assert_success(output: &Output) {
    assert!(output.status.success(), "judge failed: {}", String::from_utf8_lossy(&output.stderr));
}

const SUITE: &str = concat!(
    r#"{"id":"good","input":"Capital of France?","output":"Paris mock-score=0.9","expected":"Paris"}"#,
    "\n",
    r#"{"id":"bad","input":"Capital of France?","output":"Lyon mock-score=0.2","expected":"Paris"}"#,
    "\n",
    r#"{"input":"Capital of France as JSON?","output":"{\"answer\":\"Paris\",\"note\":\"mock-score=0.9\"}","expected":"Paris"}"#,
    "\n",
    r#"{"id":"broken","output": "#, // truncated: not JSON, so its id is its line
    "\n",
);

async fn judge_with(provider: Provider) {
    let key = format!("sk-{}-0123456789abcdef", provider.as_str().replace('_', ""));
    let pod = Pod::start(&key, MockConfig::default(), None, false).await;
    let fetched = pod.fetch_key().await;
    assert_success(&fetched);
    let stdout = String::from_utf8_lossy(&fetched.stdout);
    assert!(stdout.contains(&key[..8]) && stdout.lines().count() == 1, "{stdout}");
    let mode = std::fs::metadata(pod.path("key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o400);

    let scorers = vec![
        llm_judge(),
        scorer(ScorerType::Contains),
        Scorer { pattern: Some(r"mock-score=0\.\d".into()), ..scorer(ScorerType::Regex) },
        scorer(ScorerType::JsonValid),
    ];
    assert_success(&pod.run(&config(&pod, provider, scorers, 4), SUITE).await);
    let results = pod.final_results();
    let ids: Vec<&str> = results.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["good", "bad", "line-3", "line-4"]);
    use Outcome::{Errored as E, Failed as F, Passed as P};
    assert_eq!(outcomes(&results[0]), [P, P, P, F]);
    assert_eq!(outcomes(&results[1]), [F, F, P, F]);
    assert_eq!(outcomes(&results[2]), [P, P, P, P]);
    assert_eq!(outcomes(&results[3]), [E, E, E, E]);
    assert_eq!((results[0].scores[0].score, results[1].scores[0].score), (Some(0.9), Some(0.2)));
    assert!(results[3].scores.iter().all(|s| s.reason.starts_with("MalformedCase: line 4: ")));
    for judged in &results[..3] {
        assert!(judged.input_tokens > 0 && judged.output_tokens > 0, "{provider}: {judged:?}");
    }
    assert_eq!(pod.mock.requests_for_key(&key), 3, "{provider}: one call per well-formed case");
    assert_eq!(pod.broker.key_requests.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_judges_as_predicted() {
    judge_with(Provider::OpenAi).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_judges_as_predicted() {
    judge_with(Provider::Anthropic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_judges_as_predicted() {
    judge_with(Provider::Google).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_openai_judges_as_predicted() {
    judge_with(Provider::AzureOpenAi).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deterministic_scorers_need_no_key() {
    let pod = Pod::start("sk-unused-key-000000", MockConfig::default(), None, false).await;
    let scorers = vec![
        Scorer { ignore_case: true, ..scorer(ScorerType::ExactMatch) },
        Scorer { value: Some("PARIS".into()), ignore_case: true, ..scorer(ScorerType::Contains) },
        Scorer { pattern: Some("(unclosed".into()), ..scorer(ScorerType::Regex) },
        scorer(ScorerType::JsonValid),
    ];
    let cases = "{\"output\":\" paris \",\"expected\":\"Paris\"}\n\nnot json at all\n{\"output\":\"[1,2]\"}\n";
    // No key file exists: fine, since no scorer needs one.
    assert_success(&pod.run(&config(&pod, Provider::OpenAi, scorers, 2), cases).await);
    let results = pod.final_results();
    use Outcome::{Errored as E, Failed as F, Passed as P};
    assert_eq!(results.iter().map(|r| r.line).collect::<Vec<_>>(), [1, 3, 4]);
    assert_eq!(outcomes(&results[0]), [P, P, E, F]);
    assert!(results[0].scores[2].reason.starts_with("InvalidPattern: "));
    assert_eq!(outcomes(&results[1]), [E, E, E, E]);
    assert!(results[1].scores[0].reason.starts_with("MalformedCase: line 3: "), "{:?}", results[1].scores[0]);
    assert_eq!(outcomes(&results[2]), [E, F, E, P]);
    assert!(results[2].scores[0].reason.starts_with("MissingExpected: "));
    assert_eq!(pod.mock.requests_total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_key_file_is_fatal_with_llm_judge() {
    let pod = Pod::start("sk-never-fetched-0000", MockConfig::default(), None, false).await;
    let output = pod.run(&config(&pod, Provider::OpenAi, vec![llm_judge()], 2), SUITE).await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no key file"));
    assert!(pod.broker.reports.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_key_errors_llm_judge_once_per_case() {
    let key = "sk-invalid-0123456789abcdef";
    let pod = Pod::start(key, MockConfig::default(), None, false).await;
    assert_success(&pod.fetch_key().await);
    let scorers = vec![llm_judge(), scorer(ScorerType::Contains)];
    assert_success(&pod.run(&config(&pod, Provider::OpenAi, scorers, 4), SUITE).await);
    let results = pod.final_results();
    for result in &results[..3] {
        assert_eq!(result.scores[0].outcome, Outcome::Errored);
        assert!(result.scores[0].reason.starts_with("Unauthorized: "), "{}", result.scores[0].reason);
        assert_ne!(result.scores[1].outcome, Outcome::Errored, "the other scorers still run");
    }
    // Authentication failures are never retried: exactly one request per case.
    assert_eq!(pod.mock.requests_for_key(key), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_key_stops_provider_calls() {
    let key = "sk-revoked-later-0123456789";
    let mock_config = MockConfig { latency: Duration::from_millis(100), ..MockConfig::default() };
    let pod = Pod::start(key, mock_config, None, true).await;
    assert_success(&pod.fetch_key().await);
    let cases: String = (0..200).map(|i| format!("{{\"output\":\"answer {i} mock-score=0.9\"}}\n")).collect();
    let concurrency = 4;
    assert_success(&pod.run(&config(&pod, Provider::Anthropic, vec![llm_judge()], concurrency), &cases).await);
    let results = pod.final_results();
    let revoked = results.iter().filter(|r| r.scores[0].reason.starts_with("KeyRevoked: ")).count() as u64;
    let judged = results.iter().filter(|r| r.scores[0].outcome == Outcome::Passed).count() as u64;
    assert!(revoked > 0 && judged > 0, "revoked {revoked}, judged {judged}");
    assert_eq!(revoked + judged, 200);
    // Once the broker said "revoked", no new call went out (at most the ones already starting).
    let at_revocation = pod.broker.requests_at_revocation.lock().unwrap().expect("the broker never revoked");
    let requests = pod.mock.requests_for_key(key);
    assert!(requests <= at_revocation + u64::from(concurrency), "{requests} requests, {at_revocation} at revocation");
    assert!(requests >= judged && requests <= judged + u64::from(concurrency));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_key_refusal_is_reported_and_not_retried() {
    let refusal = Refusal { reason: "KeyRevoked".into(), message: "the ByokKey is revoked".into() };
    let pod = Pod::start("sk-refused-key-00000", MockConfig::default(), Some(refusal), false).await;
    let output = pod.fetch_key().await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("KeyRevoked"));
    assert_eq!(pod.broker.key_requests.load(Ordering::SeqCst), 1);
    assert!(!Path::new(&pod.path("key")).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_signed_by_another_ca_is_refused_at_once() {
    let pod = Pod::start("sk-never-sent-000000", MockConfig::default(), None, false).await;
    let (other_ca, _, _) = test_pki();
    std::fs::write(pod.path("ca.crt"), other_ca).unwrap();
    let started = std::time::Instant::now();
    let output = pod.fetch_key().await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("TLS"), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(pod.broker.key_requests.load(Ordering::SeqCst), 0);
}

/// A panel of three: OpenAI and Anthropic judges with their own keys, and a Google judge whose key
/// the broker refused. Returns the pod, the panel keys, and the config.
async fn panel_pod(mock_config: MockConfig) -> (Pod, [String; 2], JudgeConfig) {
    let pod = Pod::start("sk-proj-main-0123456789abcdef", mock_config, None, false).await;
    let keys = ["sk-proj-panel-0123456789abcdef".to_string(), "sk-ant-api03-panel-0123456789abcdef".to_string()];
    pod.broker.panel.lock().unwrap().extend([
        ("oa".to_string(), Some(keys[0].clone())),
        ("an".to_string(), Some(keys[1].clone())),
        ("go".to_string(), None),
    ]);
    let judge = |provider, model: &str, byok_key: &str| PanelJudgeConfig {
        provider,
        model: model.into(),
        byok_key: byok_key.into(),
        azure: None,
    };
    let panel = PanelConfig {
        aggregate: Aggregate::Mean,
        judges: vec![
            judge(Provider::OpenAi, "gpt-4o", "oa"),
            judge(Provider::Anthropic, "claude-sonnet-4-6", "an"),
            judge(Provider::Google, "gemini-3.5-flash", "go"),
        ],
    };
    let scorer = Scorer { name: Some("panel".into()), ..llm_judge() };
    let mut config = config(&pod, Provider::OpenAi, vec![scorer, scorer_contains()], 4);
    config.panels.insert("panel".into(), panel);
    (pod, keys, config)
}

fn scorer_contains() -> Scorer {
    Scorer { value: Some("mock-score".into()), ..scorer(ScorerType::Contains) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panel_judges_each_case_with_each_judges_own_key() {
    let (pod, keys, config) = panel_pod(MockConfig::default()).await;
    let fetched = pod.fetch_key().await;
    assert_success(&fetched);
    let stdout = String::from_utf8_lossy(&fetched.stdout);
    assert!(stdout.contains("panel key go refused by the broker: KeyRevoked"), "{stdout}");
    for key in &keys {
        assert!(!stdout.contains(key.as_str()), "a panel key in fetch-key's output");
    }
    for (name, key) in [("oa", &keys[0]), ("an", &keys[1])] {
        let path = pod.path(&format!("key.{name}"));
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o400);
        assert_eq!(&std::fs::read_to_string(&path).unwrap(), key);
    }
    assert!(!pod.path("key.go").exists(), "no file for a refused key");

    let cases = concat!(
        r#"{"id":"good","output":"Paris mock-score=0.9"}"#,
        "\n",
        r#"{"id":"bad","output":"Lyon mock-score=0.2"}"#,
        "\n",
    );
    assert_success(&pod.run(&config, cases).await);
    let results = pod.final_results();
    let panel: Vec<_> = results.iter().map(|r| r.scores[0].clone()).collect();
    assert_eq!(panel.iter().map(|s| s.outcome).collect::<Vec<_>>(), [Outcome::Passed, Outcome::Failed]);
    assert_eq!((panel[0].score, panel[1].score), (Some(0.9), Some(0.2)), "the mean of the two verdicts");
    assert_eq!(panel.iter().map(|s| s.agreed).collect::<Vec<_>>(), [Some(true), Some(true)]);
    for s in &panel {
        assert!(s.reason.starts_with("2 of 2 judges") || s.reason.starts_with("0 of 2 judges"), "{}", s.reason);
        assert!(s.reason.contains("no verdict from google/gemini-3.5-flash"), "{}", s.reason);
        assert!(
            s.reason.contains("openai/gpt-4o 0.") && s.reason.contains("anthropic/claude-sonnet-4-6 0."),
            "{}",
            s.reason
        );
    }
    // Each judge called its provider with its own key, once per case; the EvalJob's key judged nothing.
    assert_eq!((pod.mock.requests_for_key(&keys[0]), pod.mock.requests_for_key(&keys[1])), (2, 2));
    assert_eq!(pod.mock.requests_for_key(&pod.key), 0);
    let summary = byok_operator::judge::summary::summarize(&results, &["panel".into(), "contains".into()]);
    assert_eq!(summary.scorers[0].agreement, Some(1.0));
    assert_eq!(summary.scorers[1].agreement, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panel_key_revoked_mid_run_errors_only_its_judges_verdicts() {
    let mock_config = MockConfig { latency: Duration::from_millis(100), ..MockConfig::default() };
    let (pod, keys, config) = panel_pod(mock_config).await;
    *pod.broker.revoked_panel_key.lock().unwrap() = Some(("an".into(), keys[1].clone(), None));
    assert_success(&pod.fetch_key().await);
    let cases: String = (0..100).map(|i| format!("{{\"output\":\"answer {i} mock-score=0.9\"}}\n")).collect();
    assert_success(&pod.run(&config, &cases).await);
    let results = pod.final_results();
    assert!(results.iter().all(|r| r.scores[0].outcome == Outcome::Passed), "the OpenAI judge still judged every case");
    let revoked =
        results.iter().filter(|r| r.scores[0].reason.contains("anthropic/claude-sonnet-4-6: KeyRevoked")).count();
    let both = results.iter().filter(|r| r.scores[0].reason.starts_with("2 of 2 judges")).count();
    assert!(revoked > 0 && both > 0 && revoked + both == 100, "revoked {revoked}, judged by both {both}");
    assert_eq!(pod.mock.requests_for_key(&keys[0]), 100);
    let at = pod.broker.revoked_panel_key.lock().unwrap().as_ref().and_then(|r| r.2).expect("never revoked");
    let after = pod.mock.requests_for_key(&keys[1]);
    assert!(after <= at + 4, "{after} Anthropic requests, {at} when revoked: no new call after it");
}
