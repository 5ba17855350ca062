//! Provider faults, per provider: each fault of the mock's fault table, and a refused connection
//! and a missing model, against every provider client (key check and judge call), table-driven.
//! Each must give its key phase and reason, its case outcome, and no more provider calls than the
//! retry budget allows. A few go through the operator on the real control plane too.
//!
//! The table in docs/operations.md ("Provider faults") is generated from [`CASES`]:
//! `BYOK_BLESS=1 cargo test --features mock --test provider_faults doc_table` rewrites it, and
//! `doc_table_is_current` fails while it is out of date.

mod common;

use std::time::{Duration, Instant};

use byok_operator::crd::conditions::byokkey::VALIDATED;
use byok_operator::crd::{AzureSpec, KeyPhase, Provider};
use byok_operator::mock::{self, Fault, MockConfig, MockHandle, fault_table::HUGE_BODY_BYTES};
use byok_operator::providers::{
    self, CheckOutcome, Endpoints, JudgeRequest, KeyCheck, MAX_BODY_BYTES, ModelTable, RetryPolicy,
};
use common::{TestEnv, condition_reason, fake_key, phase_of};
use futures::future::join_all;
use secrecy::SecretString;

/// How a case makes the provider misbehave.
#[derive(Clone, Copy, Debug)]
enum How {
    /// A key carrying the fault's marker.
    Key(Fault),
    /// A working key asking for a model (Azure: a deployment) that does not exist.
    NoSuchModel,
    /// Endpoints on a port nobody listens on.
    Refused,
}

/// Which providers a case runs against.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Providers {
    All,
    /// Anthropic's own status (529).
    Only(Provider),
}

/// One fault and what it must give.
#[derive(Clone, Copy, Debug)]
struct Case {
    how: How,
    providers: Providers,
    /// Key check: phase (Ready, Invalid, Unknown) and the Validated reason.
    phase: &'static str,
    check_reason: &'static str,
    /// Requests the provider sees for one key check (validation never retries within a check).
    check_calls: u64,
    /// Judge call: the reason an errored case carries.
    judge_reason: &'static str,
    /// Requests the provider sees for one judge call under the default budget (2 retries).
    judge_calls: u64,
}

const fn case(how: How, phase: &'static str, check: &'static str, judge: &'static str, judge_calls: u64) -> Case {
    let calls = if matches!(how, How::Refused) { 0 } else { 1 };
    Case {
        how,
        providers: Providers::All,
        phase,
        check_reason: check,
        check_calls: calls,
        judge_reason: judge,
        judge_calls: if matches!(how, How::Refused) { 0 } else { judge_calls },
    }
}

/// Every case. Retried judge calls make 3 requests (the first and 2 retries), final ones 1.
const CASES: [Case; 16] = [
    case(How::Key(Fault::Unauthorized), "Invalid", "Unauthorized", "Unauthorized", 1),
    case(How::Key(Fault::Forbidden), "Invalid", "PermissionDenied", "PermissionDenied", 1),
    case(How::NoSuchModel, "Invalid", "ModelNotFound", "ModelNotFound", 1),
    case(How::Key(Fault::InvalidKey400), "Invalid", "Unauthorized", "Unauthorized", 1),
    case(How::Key(Fault::RateLimited), "Unknown", "RateLimited", "RateLimited", 3),
    case(How::Key(Fault::RateLimitedNoWait), "Unknown", "RateLimited", "RateLimited", 3),
    case(How::Key(Fault::Internal), "Unknown", "ServerError", "ServerError", 3),
    case(How::Key(Fault::Unavailable), "Unknown", "ServerError", "ServerError", 3),
    Case {
        providers: Providers::Only(Provider::Anthropic),
        ..case(How::Key(Fault::Overloaded), "Unknown", "ServerError", "ServerError", 3)
    },
    case(How::Refused, "Unknown", "NetworkError", "NetworkError", 0),
    case(How::Key(Fault::Reset), "Unknown", "NetworkError", "NetworkError", 3),
    case(How::Key(Fault::Hang), "Unknown", "Timeout", "Timeout", 3),
    case(How::Key(Fault::Drip), "Unknown", "Timeout", "Timeout", 3),
    case(How::Key(Fault::MalformedJson), "Unknown", "UnexpectedResponse", "MalformedResponse", 1),
    case(How::Key(Fault::WrongShape), "Unknown", "UnexpectedResponse", "MalformedResponse", 1),
    case(How::Key(Fault::Huge), "Unknown", "ResponseTooLarge", "ResponseTooLarge", 1),
];

/// The provider clients' targets; Azure in both URL styles.
#[derive(Clone, Copy, Debug)]
enum Target {
    OpenAi,
    Anthropic,
    Google,
    AzureV1,
    AzureDated,
}

const TARGETS: [Target; 5] = [Target::OpenAi, Target::Anthropic, Target::Google, Target::AzureV1, Target::AzureDated];

impl Target {
    fn provider(self) -> Provider {
        match self {
            Self::OpenAi => Provider::OpenAi,
            Self::Anthropic => Provider::Anthropic,
            Self::Google => Provider::Google,
            Self::AzureV1 | Self::AzureDated => Provider::AzureOpenAi,
        }
    }

    fn azure(self, endpoint: &str, deployment: &str) -> Option<AzureSpec> {
        let api_version = match self {
            Self::AzureV1 => None,
            Self::AzureDated => Some("2024-10-21".to_string()),
            _ => return None,
        };
        Some(AzureSpec { endpoint: endpoint.into(), deployment: deployment.into(), api_version })
    }
}

impl Case {
    fn runs_on(&self, provider: Provider) -> bool {
        self.providers == Providers::All || self.providers == Providers::Only(provider)
    }

    /// What the case does, for the doc table and messages.
    fn what(&self) -> String {
        match self.how {
            How::Key(fault) => {
                let spec = mock::FAULTS.iter().find(|s| s.fault == fault).map_or("?", |s| s.what);
                format!("{spec} (key marker `{}`)", fault.marker())
            }
            How::NoSuchModel => "404 for the model or Azure deployment".into(),
            How::Refused => "connection refused".into(),
        }
    }

    fn key(&self, provider: Provider) -> String {
        match self.how {
            How::Key(fault) => fake_key(provider, fault.marker()),
            How::NoSuchModel | How::Refused => fake_key(provider, ""),
        }
    }
}

/// The phase a check outcome gives a ByokKey (as `validation::record` writes it).
fn phase(outcome: &CheckOutcome) -> &'static str {
    match outcome {
        CheckOutcome::Valid { .. } => "Ready",
        CheckOutcome::Invalid { .. } | CheckOutcome::ModelUnavailable { .. } => "Invalid",
        CheckOutcome::Unknown { .. } => "Unknown",
    }
}

/// Per-attempt deadline for the faults that time out: short, so that they do so quickly.
const DEADLINE: Duration = Duration::from_secs(1);
/// Per-attempt deadline otherwise: 4 MiB of a 50 MiB body must be read within it by a debug
/// build while every other case runs too.
const RELAXED: Duration = Duration::from_secs(20);

/// What one case did on one target.
struct Observed {
    phase: &'static str,
    check_reason: &'static str,
    check_message: String,
    check_calls: u64,
    judge_reason: String,
    judge_message: String,
    judge_calls: u64,
    /// Body bytes the mock handed to the socket for the key (the 50 MiB fault).
    streamed: u64,
}

async fn run(mock: &MockHandle, http: &reqwest::Client, case: Case, target: Target) -> Observed {
    let endpoints: Endpoints = match case.how {
        How::Refused => mock.refused_endpoints(),
        _ => mock.endpoints(),
    };
    let azure_endpoint = endpoints.azure.clone().unwrap_or_default();
    let missing = matches!(case.how, How::NoSuchModel).then_some("no-such-model");
    let azure = target.azure(&azure_endpoint, missing.unwrap_or("gpt-4o"));
    let model = missing
        .map(str::to_string)
        .unwrap_or_else(|| ModelTable::default().model_for(target.provider(), azure.as_ref()));
    // Each of check and judge gets its own key, so the mock counts them apart.
    let (check_key, judge_key) = (case.key(target.provider()), case.key(target.provider()));
    let deadline = if matches!(case.how, How::Key(Fault::Hang | Fault::Drip)) { DEADLINE } else { RELAXED };
    let secret = SecretString::from(check_key.clone());
    let check = KeyCheck { provider: target.provider(), key: &secret, model: &model, azure: azure.as_ref() };
    let outcome = providers::check_key_with_timeout(http, &endpoints, check, deadline).await;
    let secret = SecretString::from(judge_key.clone());
    let request = JudgeRequest {
        provider: target.provider(),
        key: &secret,
        model: &model,
        azure: azure.as_ref(),
        system: "judge",
        user: "mock-score=0.9 an answer",
        max_tokens: 512,
        timeout: deadline,
    };
    let policy = RetryPolicy { base_delay: Duration::from_millis(10), ..RetryPolicy::default() };
    let judged = providers::judge(http, &endpoints, &request, &policy).await;
    let (judge_reason, judge_message) = match &judged {
        Ok(_) => ("Passed".to_string(), String::new()),
        Err(e) => (e.reason().to_string(), e.to_string()),
    };
    Observed {
        phase: phase(&outcome),
        check_reason: outcome.reason_str(),
        check_message: outcome.message().unwrap_or_default().to_string(),
        check_calls: mock.requests_for_key(&check_key),
        judge_reason,
        judge_message,
        judge_calls: mock.requests_for_key(&judge_key),
        streamed: mock.streamed_for_key(&check_key).max(mock.streamed_for_key(&judge_key)),
    }
}

#[tokio::test]
async fn every_fault_maps_to_its_phase_and_case_outcome_within_the_retry_budget() {
    let mock = mock::start(MockConfig::default()).await.expect("mock starts");
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let runs = CASES.iter().flat_map(|case| TARGETS.iter().map(move |target| (*case, *target)));
    let runs: Vec<(Case, Target)> = runs.filter(|(case, target)| case.runs_on(target.provider())).collect();
    let started = Instant::now();
    let observed = join_all(runs.iter().map(|(case, target)| run(&mock, &http, *case, *target))).await;
    let mut failures = Vec::new();
    for ((case, target), seen) in runs.iter().zip(&observed) {
        let label = format!("{} on {target:?}", case.what());
        let want = (case.phase, case.check_reason, case.check_calls, case.judge_reason, case.judge_calls);
        let got = (seen.phase, seen.check_reason, seen.check_calls, seen.judge_reason.as_str(), seen.judge_calls);
        if want != got {
            failures.push(format!(
                "{label}: want {want:?}, got {got:?} (check: {}; judge: {})",
                seen.check_message, seen.judge_message
            ));
        }
        // A clear reason: every outcome says what happened, in words.
        if seen.check_message.trim().is_empty() || seen.judge_message.trim().is_empty() {
            failures.push(format!("{label}: empty message ({:?} / {:?})", seen.check_message, seen.judge_message));
        }
        if matches!(case.how, How::Key(Fault::Huge)) && seen.streamed > 4 * MAX_BODY_BYTES as u64 {
            failures.push(format!("{label}: the client read on, {} of {HUGE_BODY_BYTES} bytes sent", seen.streamed));
        }
    }
    assert!(failures.is_empty(), "{} of {} runs wrong:\n{}", failures.len(), runs.len(), failures.join("\n"));
    // Every target ran every case at once: the slowest (a 1 s Retry-After twice, three 1 s
    // deadlines) bounds the whole table.
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
}

/// The generated table (markdown), one row per case.
fn doc_table() -> String {
    let mut out = String::from(
        "| fault | providers | key check: phase / reason | calls | judge call: case errored with | calls |\n|---|---|---|---|---|---|\n",
    );
    for case in CASES {
        let providers = match case.providers {
            Providers::All => "all".to_string(),
            Providers::Only(p) => p.to_string(),
        };
        let retried = if case.judge_calls > 1 { " (retried twice)" } else { "" };
        out.push_str(&format!(
            "| {} | {providers} | `{}` / `{}` | {} | `{}`{retried} | {} |\n",
            case.what(),
            case.phase,
            case.check_reason,
            case.check_calls,
            case.judge_reason,
            case.judge_calls
        ));
    }
    out
}

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md");
const BEGIN: &str = "<!-- provider-faults: generated by tests/provider_faults.rs (BYOK_BLESS=1 to rewrite) -->\n";
const END: &str = "<!-- provider-faults: end -->";

#[test]
fn doc_table_is_current() {
    let doc = std::fs::read_to_string(DOC).expect("docs/operations.md");
    let (Some(start), Some(end)) = (doc.find(BEGIN), doc.find(END)) else {
        panic!("docs/operations.md has no generated provider-faults table (markers {BEGIN:?} ... {END:?})")
    };
    let current = &doc[start + BEGIN.len()..end];
    let table = doc_table();
    if current == table {
        return;
    }
    if std::env::var_os("BYOK_BLESS").is_some() {
        let rewritten = format!("{}{BEGIN}{table}{}", &doc[..start], &doc[end..]);
        std::fs::write(DOC, rewritten).expect("docs/operations.md written");
        return;
    }
    panic!(
        "the provider-faults table in docs/operations.md is out of date; rewrite it with\n  BYOK_BLESS=1 cargo test --features mock --test provider_faults doc_table\nexpected:\n{table}"
    );
}

/// Faults through the operator: ByokKeys whose keys carry fault markers reach the phase and
/// reason of [`CASES`], next to a working key that becomes Ready, and the mock sees no more
/// validation calls than the backoff allows (5 s doubling): an Invalid key is never asked again.
#[tokio::test]
async fn the_operator_gives_each_fault_its_phase_and_no_retry_storm() {
    let mut env = TestEnv::new("faults").await;
    let faults = [
        (Provider::OpenAi, Fault::Unauthorized),
        (Provider::Google, Fault::InvalidKey400),
        (Provider::AzureOpenAi, Fault::Forbidden),
        (Provider::Anthropic, Fault::Overloaded),
        (Provider::Google, Fault::RateLimited),
        (Provider::AzureOpenAi, Fault::Reset),
        (Provider::OpenAi, Fault::Huge),
        (Provider::Anthropic, Fault::MalformedJson),
        (Provider::Google, Fault::Drip),
    ];
    let started = Instant::now();
    let mut keys = Vec::new();
    for (i, (provider, fault)) in faults.into_iter().enumerate() {
        let name = format!("f{i}-{}", fault.marker().trim_start_matches("fault-"));
        keys.push((name.clone(), env.add_key(&name, provider, fault.marker()).await, fault));
    }
    env.add_key("healthy", Provider::Anthropic, "").await;
    env.wait_phase("healthy", KeyPhase::Ready).await;
    for (name, _, fault) in &keys {
        let case = CASES.iter().find(|c| matches!(c.how, How::Key(f) if f == *fault)).expect("a case");
        let k = env
            .wait_key(name, &format!("{} / {}", case.phase, case.check_reason), |k| {
                phase_of(k).map(|p| format!("{p:?}")).as_deref() == Some(case.phase)
                    && condition_reason(k, VALIDATED).as_deref() == Some(case.check_reason)
            })
            .await;
        let message = k.status.and_then(|s| s.conditions.into_iter().find(|c| c.type_ == VALIDATED)).map(|c| c.message);
        assert!(message.is_some_and(|m| !m.trim().is_empty()), "{name}: the Validated condition says why");
    }
    // Wait until an Unknown key has been asked again (its first backoff is 5 s), then check every
    // key's count against the schedule: Invalid ones were asked once, Unknown ones no more than
    // the backoff allows in the time that passed.
    let (_, overloaded, _) = &keys[3];
    common::eventually("a retried check", Duration::from_secs(60), || async {
        (env.mock.requests_for_key(overloaded) >= 2).then_some(())
    })
    .await;
    let elapsed = started.elapsed();
    for (name, key, fault) in &keys {
        let calls = env.mock.requests_for_key(key);
        let case = CASES.iter().find(|c| matches!(c.how, How::Key(f) if f == *fault)).expect("a case");
        let budget = if case.phase == "Invalid" { 1 } else { 1 + backoff_retries_within(elapsed) };
        assert!(calls >= 1 && calls <= budget, "{name}: {calls} checks in {elapsed:?}, budget {budget}");
    }
    env.assert_no_plaintext().await;
    let log = std::fs::read_to_string(&env.log_path).unwrap_or_default();
    assert!(!log.contains("panicked"), "the operator panicked:\n{log}");
}

/// Checks the operator's validation backoff (5 s doubling, capped at 5 min) allows after a first
/// check, within `elapsed`.
fn backoff_retries_within(elapsed: Duration) -> u64 {
    let (mut at, mut step, mut retries) = (Duration::ZERO, Duration::from_secs(5), 0);
    loop {
        at += step;
        if at > elapsed {
            return retries;
        }
        retries += 1;
        step = (step * 2).min(Duration::from_secs(300));
    }
}
