//! `hack/live-smoke.sh`, the opt-in live smoke test, run offline against the mock provider: the
//! same script and `byok-judge smoke` a release check runs against the real APIs, with fake keys.
//! No cluster, no network: the mock listens on loopback, and the judge binary cargo built for
//! this test is handed to the script (BYOK_JUDGE_BIN), so the script builds nothing.

use std::collections::BTreeMap;
use std::process::{Command, Output};

use byok_operator::judge::smoke::{self, CASE_IDS, TableLine};
use byok_operator::mock::{self, MockConfig, MockHandle};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/hack/live-smoke.sh");
const JUDGE: &str = env!("CARGO_BIN_EXE_byok-judge");

/// Everything the script reads: the caller's own values (a developer's real keys) never get in.
const SCRIPT_ENV: [&str; 14] = [
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_OPENAI_DEPLOYMENT",
    "AZURE_OPENAI_API_VERSION",
    "BYOK_SMOKE_KEY",
    "BYOK_SMOKE_MOCK_URL",
    "BYOK_SMOKE_OPENAI_MODEL",
    "BYOK_SMOKE_ANTHROPIC_MODEL",
    "BYOK_SMOKE_GOOGLE_MODEL",
    "BYOK_JUDGE_BIN",
];

/// (environment variable, fake key, provider): distinct prefixes, so each row must show its own.
const KEYS: [(&str, &str, &str); 4] = [
    ("OPENAI_API_KEY", "sk-oai-smoke-7f3a9c1e5b2d4680", "openai"),
    ("ANTHROPIC_API_KEY", "sk-ant-smoke-19d8e7c6b5a43210", "anthropic"),
    ("GEMINI_API_KEY", "AIzaSmokeTest-0a1b2c3d4e5f6789", "google"),
    ("AZURE_OPENAI_API_KEY", "azsmokekey-5e6f7a8b9c0d1e2f", "azure_openai"),
];

/// The script with a clean environment, the test's judge binary, and every log line the judge
/// can write (so a key in any of them would be caught).
fn script(args: &[&str]) -> Command {
    let mut command = Command::new("bash");
    command.arg(SCRIPT).args(args);
    for var in SCRIPT_ENV {
        command.env_remove(var);
    }
    command.env("BYOK_JUDGE_BIN", JUDGE).env("RUST_LOG", "debug");
    command
}

fn with_all_keys(command: &mut Command, mock: &MockHandle) {
    for (var, key, _) in KEYS {
        command.env(var, key);
    }
    command
        .env("AZURE_OPENAI_ENDPOINT", "https://smoke-test.openai.azure.com")
        .env("AZURE_OPENAI_DEPLOYMENT", "gpt-4o")
        .env("BYOK_SMOKE_MOCK_URL", format!("http://{}", mock.addr()));
}

/// Runs a command off the runtime, which keeps serving the mock meanwhile.
async fn output(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().expect("bash runs")).await.expect("joined")
}

fn text(output: &Output) -> (String, String) {
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// No key in any output: not whole, not one character past its 8-character prefix, not its end.
fn assert_no_key(output: &Output, keys: &[&str]) {
    let (stdout, stderr) = text(output);
    for key in keys {
        for shown in [*key, &key[..9], &key[key.len() - 10..]] {
            assert!(!stdout.contains(shown) && !stderr.contains(shown), "{shown:?} of a key was printed");
        }
    }
}

/// The table's rows by provider: the cells of each `| ... |` line after the header.
fn table(stdout: &str) -> BTreeMap<String, Vec<String>> {
    stdout
        .lines()
        .filter(|line| line.starts_with("| ") && !line.starts_with("| provider "))
        .map(|line| line.trim_matches('|').split('|').map(|cell| cell.trim().to_string()).collect::<Vec<_>>())
        .map(|cells| (cells[0].clone(), cells))
        .collect()
}

/// (pass, fail, error) from a `p/f/e` cell.
fn counts(cell: &str) -> (u32, u32, u32) {
    let n: Vec<u32> = cell.split('/').map(|n| n.parse().expect("a count")).collect();
    (n[0], n[1], n[2])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_provider_validates_and_judges_three_cases() {
    let mock = mock::start(MockConfig::default()).await.unwrap();
    let mut command = script(&[]);
    with_all_keys(&mut command, &mock);
    command.env("BYOK_SMOKE_OPENAI_MODEL", "gpt-4.1");
    let run = output(command).await;
    let (stdout, stderr) = text(&run);
    assert_eq!(run.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_no_key(&run, &KEYS.map(|(_, key, _)| key));

    let rows = table(&stdout);
    assert_eq!(rows.len(), 4, "{stdout}");
    for (_, key, provider) in KEYS {
        let row = &rows[provider];
        assert_eq!(row[2], format!("{}...", &key[..8]), "{provider}: the key prefix");
        assert_eq!(row[3], "Valid", "{provider}: {stdout}");
        let (passed, failed, errored) = counts(&row[4]);
        assert_eq!((passed + failed, errored), (3, 0), "{provider}: {stdout}");
        assert_eq!(row[5].split('/').count(), 3, "{provider}: a score per case");
        let (input, output) = row[6].split_once('/').unwrap();
        assert!(input.parse::<u64>().unwrap() > 0 && output.parse::<u64>().unwrap() > 0, "{provider}: tokens");
    }
    assert_eq!(rows["openai"][1], "gpt-4.1", "the model override");
    assert_eq!(rows["anthropic"][1], "claude-sonnet-4-6", "the operator's default model");
    assert_eq!(rows["azure_openai"][1], "gpt-4o", "Azure judges with the deployment");
    assert!(stdout.contains("OK: 4 provider(s) checked, none failed"), "{stdout}");
    assert!(stderr.contains("MOCK MODE"), "{stderr}");
    // Validation (a request or two) and one judge call per case, nothing more.
    for (_, key, provider) in KEYS {
        let requests = mock.requests_for_key(key);
        assert!((4..=6).contains(&requests), "{provider}: {requests} requests");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_key_fails_its_row_and_the_script() {
    let mock = mock::start(MockConfig::default()).await.unwrap();
    let invalid = "sk-invalid-smoke-3c4d5e6f7a8b9c0d";
    let anthropic = KEYS[1].1;
    let mut command = script(&[]);
    command
        .env("OPENAI_API_KEY", invalid)
        .env("ANTHROPIC_API_KEY", anthropic)
        .env("BYOK_SMOKE_MOCK_URL", format!("http://{}", mock.addr()));
    let run = output(command).await;
    let (stdout, stderr) = text(&run);
    assert_eq!(run.status.code(), Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_no_key(&run, &[invalid, anthropic]);
    let rows = table(&stdout);
    assert_eq!(rows["openai"][3], "Unauthorized", "{stdout}");
    assert_eq!(counts(&rows["openai"][4]), (0, 0, 3), "every case errors with the key");
    assert_eq!(rows["anthropic"][3], "Valid", "{stdout}");
    assert_eq!(rows["google"][3], "SKIPPED", "{stdout}");
    assert_eq!(rows["azure_openai"][3], "SKIPPED", "{stdout}");
    assert!(stdout.contains("openai: case right errored: Unauthorized: "), "{stdout}");
    assert!(stdout.contains("FAILED: 1 of 2 provider(s): openai"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_it_skips_loudly_unless_keys_are_required() {
    let skipped = output(script(&[])).await;
    let (stdout, stderr) = text(&skipped);
    assert_eq!(skipped.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("SKIPPED: no provider keys in the environment (set OPENAI_API_KEY"), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");

    let required = output(script(&["--require-keys"])).await;
    let (_, stderr) = text(&required);
    assert_eq!(required.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("SKIPPED: no provider keys"), "{stderr}");

    // Keys are only ever sent to a mock on this machine.
    let mut remote = script(&["--mock=http://mock.example.com:8090"]);
    remote.env("OPENAI_API_KEY", KEYS[0].1);
    let refused = output(remote).await;
    assert_eq!(refused.status.code(), Some(2));
    assert_no_key(&refused, &[KEYS[0].1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_judge_takes_its_key_from_the_environment_only() {
    let mock = mock::start(MockConfig::default()).await.unwrap();
    let endpoints = mock.endpoints();
    let mut command = Command::new(JUDGE);
    command.args(["smoke", "--provider", "anthropic", "--anthropic-base-url", &endpoints.anthropic]);
    command.env_remove("BYOK_SMOKE_KEY");
    let missing = output(command).await;
    let (stdout, stderr) = text(&missing);
    assert_eq!(missing.status.code(), Some(1), "{stderr}");
    let note: TableLine = serde_json::from_str(stdout.trim()).unwrap();
    assert!(note.failed());
    assert!(stdout.contains(&format!("set {} in the environment", smoke::KEY_ENV)), "{stdout}");
    assert_eq!(mock.requests_total(), 0);

    // There is no option to pass a key on the command line.
    let mut command = Command::new(JUDGE);
    command.args(["smoke", "--provider", "anthropic", "--key", KEYS[1].1]);
    let refused = output(command).await;
    assert_eq!(refused.status.code(), Some(2), "a usage error");
    assert_no_key(&refused, &[KEYS[1].1]);

    // One run, printed as one JSON line the script can tabulate.
    let mut command = Command::new(JUDGE);
    command.args(["smoke", "--provider", "anthropic", "--anthropic-base-url", &endpoints.anthropic]);
    command.env(smoke::KEY_ENV, KEYS[1].1);
    let run = output(command).await;
    let (stdout, stderr) = text(&run);
    assert_eq!(run.status.code(), Some(0), "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let TableLine::Row(row) = serde_json::from_str::<TableLine>(&stdout).unwrap() else { panic!("{stdout}") };
    assert!(row.ok && row.validation.reason == "Valid", "{row:?}");
    assert_eq!(row.key_prefix, &KEYS[1].1[..8]);
    assert_eq!(row.cases.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), CASE_IDS);
    assert!(row.cases.iter().all(|c| c.score.is_some() && c.error.is_none()), "{row:?}");
    assert_no_key(&run, &[KEYS[1].1]);
}

#[test]
fn a_short_key_is_never_shown_whole() {
    let prefix = |key: &str| smoke::key_prefix(&key.to_string().into());
    assert_eq!(prefix("sk-proj-0123456789abcdef"), "sk-proj-");
    assert_eq!(prefix("sk-12345"), "sk-1");
    assert_eq!(prefix("x"), "");
}
