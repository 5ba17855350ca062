//! `kubectl byok` against the local control plane: the real plugin binary, run as users run it
//! (KUBECONFIG from the environment, the key on stdin), with this test's operator and mock provider.

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};

use byok_operator::crd::conditions::byokkey::IMPORTED;
use byok_operator::crd::{ByokKey, EvalJob, EvalPhase, KeyPhase, Provider, TEST_REQUESTED_ANNOTATION};
use byok_operator::judge::wire::CaseResult;
use common::judge_pod::{LocalPod, judge_pods};
use common::{TIMEOUT, TestEnv, condition_reason, eventually, fake_key, phase_of};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use kube::{Api, ResourceExt};

/// What one run of the plugin said.
struct Ran {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ok={} exit={:?}\n--- stdout\n{}\n--- stderr\n{}", self.ok, self.code, self.stdout, self.stderr)
    }
}

/// Runs `kubectl-byok -n <ns> --operator-namespace <ns> ARGS`, with `stdin` piped in (empty when None),
/// off the runtime thread so the in-process mock provider keeps serving.
async fn byok(env: &TestEnv, args: &[&str], stdin: Option<&str>) -> Ran {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubectl-byok"));
    cmd.args(["-n", &env.ns, "--operator-namespace", &env.op_ns])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let input = stdin.unwrap_or_default().to_string();
    let out = tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().expect("kubectl-byok starts");
        if let Some(mut s) = child.stdin.take() {
            s.write_all(input.as_bytes()).expect("write stdin");
        }
        child.wait_with_output().expect("kubectl-byok runs")
    })
    .await
    .expect("join");
    Ran {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Records the plugin's output for the plaintext scan, and checks it here too.
fn no_key_in(env: &mut TestEnv, what: &str, ran: &Ran, key: &str) {
    for (stream, text) in [("stdout", &ran.stdout), ("stderr", &ran.stderr)] {
        assert!(!text.contains(&key[8..]), "key material in {what} {stream}: {ran:?}");
    }
    env.extra_logs.push((format!("kubectl-byok {what}"), format!("{}\n{}", ran.stdout, ran.stderr)));
}

fn effective_default(k: &ByokKey) -> bool {
    k.status.as_ref().is_some_and(|s| s.effective_default)
}

#[tokio::test]
async fn plugin_create_list_test_set_default_revoke() {
    let mut env = TestEnv::new("plugin-life").await;
    let key = fake_key(Provider::OpenAi, "");
    env.plaintexts.push(key.clone());
    let ran =
        byok(&env, &["create", "main", "--provider", "openai", "--default", "--timeout", "60s"], Some(&key)).await;
    no_key_in(&mut env, "create main", &ran, &key);
    assert!(ran.ok, "{ran:?}");
    assert!(ran.stdout.contains("Ready") && ran.stdout.contains(&key[..8]), "{ran:?}");
    // The plaintext Secret the plugin wrote is gone once imported (sourcePolicy Delete).
    eventually("source Secret deleted", TIMEOUT, || async {
        env.secrets().get_opt("main-key").await.ok().filter(Option::is_none)
    })
    .await;

    let ran = byok(&env, &["list"], None).await;
    assert!(ran.ok, "{ran:?}");
    let header = ran.stdout.lines().next().unwrap_or_default().to_string();
    assert!(
        header.split_whitespace().eq(["NAME", "PROVIDER", "DEFAULT", "PREFIX", "STATUS", "MODEL", "KEK", "AGE"]),
        "{ran:?}"
    );
    let row = ran.stdout.lines().find(|l| l.starts_with("main ")).unwrap_or_default().to_string();
    assert!(row.contains(&key[..8]) && row.contains("Ready") && row.contains("true"), "{ran:?}");
    assert!(row.contains("gpt-5.1") && !row.contains("deprecated"), "the current default model: {ran:?}");
    let ran = byok(&env, &["list", "-o", "json"], None).await;
    let listed: Vec<ByokKey> = serde_json::from_str(&ran.stdout).expect("list -o json");
    assert_eq!(listed.len(), 1);

    // Each test waits for the answer to its own request token.
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let ran = byok(&env, &["test", "main"], None).await;
        no_key_in(&mut env, "test main", &ran, &key);
        assert!(ran.ok && ran.stdout.contains("Valid"), "{ran:?}");
        let k = env.keys().get("main").await.expect("key");
        let asked = k.annotations().get(TEST_REQUESTED_ANNOTATION).cloned().expect("token annotation");
        let answered = k.status.and_then(|s| s.last_test).map(|t| t.request_token);
        assert_eq!(answered.as_deref(), Some(asked.as_str()));
        assert!(ran.stderr.contains(&asked), "the command waited for {asked}: {ran:?}");
        tokens.push(asked);
    }
    assert_ne!(tokens[0], tokens[1], "a fresh token per test");

    // A newer default takes over; set-default gives it back.
    let second = fake_key(Provider::OpenAi, "");
    env.plaintexts.push(second.clone());
    let ran = byok(&env, &["create", "second", "--provider", "openai", "--default"], Some(&second)).await;
    no_key_in(&mut env, "create second", &ran, &second);
    assert!(ran.ok, "{ran:?}");
    env.wait_key("second", "effective default", effective_default).await;
    env.wait_key("main", "superseded", |k| !effective_default(k)).await;
    let ran = byok(&env, &["set-default", "main"], None).await;
    assert!(ran.ok, "{ran:?}");
    assert!(ran.stderr.contains("most recently marked"), "explains who wins: {ran:?}");
    assert!(effective_default(&env.keys().get("main").await.expect("key")));
    env.wait_key("second", "no longer default", |k| !effective_default(k)).await;

    let ran = byok(&env, &["revoke", "main"], None).await;
    assert!(ran.ok, "{ran:?}");
    assert!(ran.stderr.contains("GitOps"), "warns GitOps users: {ran:?}");
    let k = env.keys().get("main").await.expect("key");
    assert!(k.spec.revoked && phase_of(&k) == Some(KeyPhase::Revoked));
    env.assert_no_plaintext().await;
}

#[tokio::test]
async fn plugin_create_with_an_invalid_key_fails_and_says_so() {
    let mut env = TestEnv::new("plugin-invalid").await;
    let key = fake_key(Provider::Anthropic, "invalid");
    env.plaintexts.push(key.clone());
    let ran = byok(&env, &["create", "bad", "--provider", "anthropic"], Some(&key)).await;
    no_key_in(&mut env, "create bad", &ran, &key);
    assert!(!ran.ok, "an Invalid key fails the command: {ran:?}");
    assert!(ran.stderr.contains("Invalid") && ran.stderr.contains("create it again"), "{ran:?}");
    assert_eq!(phase_of(&env.keys().get("bad").await.expect("key")), Some(KeyPhase::Invalid));
    // A taken name is refused before the key is read or written anywhere.
    let ran = byok(&env, &["create", "bad", "--provider", "anthropic"], Some(&key)).await;
    assert!(!ran.ok && ran.stderr.contains("already exists"), "{ran:?}");
    // A missing key says where it looked and how to find the right name.
    let ran = byok(&env, &["test", "nope"], None).await;
    assert!(!ran.ok, "{ran:?}");
    assert!(ran.stderr.contains(&format!("ByokKey nope not found in namespace {}", env.ns)), "{ran:?}");
    assert!(ran.stderr.contains("kubectl byok list"), "{ran:?}");
    // No key on stdin: nothing is created.
    let ran = byok(&env, &["create", "empty", "--provider", "openai"], None).await;
    assert!(!ran.ok && ran.stderr.contains("no key was given"), "{ran:?}");
    assert!(env.keys().get_opt("empty").await.expect("get").is_none());
    env.assert_no_plaintext().await;
}

/// The YAML `seal` printed, applied as `kubectl apply` would create it (optionally under another name).
async fn apply_manifest(env: &TestEnv, yaml: &str, rename: Option<&str>) -> String {
    let mut key: ByokKey = serde_yaml::from_str(yaml).expect("seal prints a ByokKey manifest");
    assert!(key.spec.secret_ref.is_none() && key.spec.sealed.is_some(), "sealed, no secretRef");
    assert_eq!(key.namespace().as_deref(), Some(env.ns.as_str()));
    if let Some(name) = rename {
        key.metadata.name = Some(name.into());
    }
    env.keys().create(&PostParams::default(), &key).await.expect("manifest applies").name_any()
}

#[tokio::test]
async fn plugin_sealed_manifest_imports_and_is_refused_under_another_name() {
    let mut env = TestEnv::new("plugin-seal").await;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.op_ns);
    let published = eventually("sealing public key published", TIMEOUT, || async {
        cms.get_opt("byok-sealing-key").await.ok().flatten()?.data?.get("publicKey").cloned()
    })
    .await;
    let ran = byok(&env, &["fetch-cert"], None).await;
    assert!(ran.ok && ran.stdout.trim() == published.trim(), "{ran:?}");

    let key = fake_key(Provider::OpenAi, "");
    env.plaintexts.push(key.clone());
    let ran = byok(&env, &["seal", "gitops", "--provider", "openai", "--fetch-cert", "--default"], Some(&key)).await;
    no_key_in(&mut env, "seal gitops", &ran, &key);
    assert!(ran.ok, "{ran:?}");
    assert!(ran.stdout.contains("safe to commit"), "{ran:?}");
    apply_manifest(&env, &ran.stdout, None).await;
    let k = env.wait_phase("gitops", KeyPhase::Ready).await;
    assert_eq!(k.status.and_then(|s| s.key_prefix).as_deref(), Some(&key[..8]));
    // The same manifest under another name is refused with a condition that says why.
    apply_manifest(&env, &ran.stdout, Some("copied")).await;
    let k = env.wait_phase("copied", KeyPhase::Error).await;
    assert_eq!(condition_reason(&k, IMPORTED).as_deref(), Some("SealedKeyMismatch"));

    // Offline: the public key kept in a file, no cluster read needed to seal.
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("sealing-key.pub");
    std::fs::write(&cert, format!("{published}\n")).expect("write cert");
    let other = fake_key(Provider::Google, "");
    env.plaintexts.push(other.clone());
    let cert_arg = cert.display().to_string();
    let ran = byok(&env, &["seal", "offline", "--provider", "google", "--cert", &cert_arg], Some(&other)).await;
    no_key_in(&mut env, "seal offline", &ran, &other);
    assert!(ran.ok, "{ran:?}");
    apply_manifest(&env, &ran.stdout, None).await;
    env.wait_phase("offline", KeyPhase::Ready).await;
    env.assert_no_plaintext().await;
}

#[tokio::test]
async fn plugin_eval_run_watch_and_results() {
    let mut env = TestEnv::new("plugin-eval").await;
    let key = fake_key(Provider::OpenAi, "");
    env.plaintexts.push(key.clone());
    let ran = byok(&env, &["create", "judge-key", "--provider", "openai", "--default"], Some(&key)).await;
    no_key_in(&mut env, "create judge-key", &ran, &key);
    assert!(ran.ok, "{ran:?}");
    env.wait_key("judge-key", "effective default", effective_default).await;

    // Even cases score 0.9 (pass), odd ones 0.2 (fail): the mock's verdicts are predictable.
    let cases: String = (0..4)
        .map(|i| {
            let score = if i % 2 == 0 { "0.9" } else { "0.2" };
            format!("{{\"id\":\"c{i}\",\"input\":\"q\",\"output\":\"the answer mock-score={score}\"}}\n")
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cases.jsonl");
    std::fs::write(&file, cases).expect("write cases");
    let file_arg = file.display().to_string();
    let args = [
        "eval",
        "run",
        "-f",
        &file_arg,
        "--provider",
        "openai",
        "--name",
        "smoke",
        "--scorer",
        "llm_judge:The answer is correct.",
        "--scorer",
        "contains:answer",
        // Its containers run as local processes below: keep the pod off the node.
        "--node-selector",
        "launchgate.ai/test-no-node=true",
    ];
    let ran = byok(&env, &args, None).await;
    assert!(ran.ok, "{ran:?}");
    let ejs: Api<EvalJob> = Api::namespaced(env.client.clone(), &env.ns);
    let ej = eventually("EvalJob running", TIMEOUT, || async {
        ejs.get("smoke").await.ok().filter(|e| e.status.as_ref().and_then(|s| s.phase) == Some(EvalPhase::Running))
    })
    .await;
    assert!(ej.spec.cases_from.is_some(), "cases come from the ConfigMap the plugin wrote");
    let selector = ej.spec.template.as_ref().and_then(|t| t.node_selector.clone()).unwrap_or_default();
    assert_eq!(selector.get("launchgate.ai/test-no-node").map(String::as_str), Some("true"), "--node-selector");

    // Watch while the judge pod's containers run as local processes (no node runs pods yet).
    let watch_env = (env.ns.clone(), env!("CARGO_BIN_EXE_kubectl-byok"), env.op_ns.clone());
    let watcher = tokio::task::spawn_blocking(move || {
        Command::new(watch_env.1)
            .args(["-n", &watch_env.0, "--operator-namespace", &watch_env.2, "eval", "watch", "smoke"])
            .args(["--timeout", "120s"])
            .output()
            .expect("watch runs")
    });
    let pod = judge_pods(&env, &ej.status.and_then(|s| s.job_name).expect("job"), 1).await.remove(0);
    let local = LocalPod::prepare(&env, pod).await;
    let fetched = local.run("fetch-key", &[]).await;
    env.extra_logs.push(("fetch-key".into(), format!("{fetched:?}")));
    assert!(fetched.status.success(), "fetch-key: {}", String::from_utf8_lossy(&fetched.stderr));
    let judged = local.run("judge", &[]).await;
    env.extra_logs.push(("judge".into(), format!("{judged:?}")));
    assert!(judged.status.success(), "judge: {}", String::from_utf8_lossy(&judged.stderr));
    let watched = watcher.await.expect("join");
    let stdout = String::from_utf8_lossy(&watched.stdout);
    assert!(watched.status.success(), "watch: {stdout}\n{}", String::from_utf8_lossy(&watched.stderr));
    assert!(stdout.contains("Succeeded") && stdout.contains("passed 2, failed 2"), "{stdout}");

    let ran = byok(&env, &["eval", "results", "smoke", "--json"], None).await;
    assert!(ran.ok, "{ran:?}");
    let results: Vec<CaseResult> = serde_json::from_str(&ran.stdout).expect("results JSON");
    let ids: Vec<&str> = results.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["c0", "c1", "c2", "c3"]);
    assert!(results.iter().all(|r| r.scores.len() == 2));
    let ran = byok(&env, &["eval", "results", "smoke", "--junit"], None).await;
    assert!(ran.ok, "{ran:?}");
    let doc = roxmltree::Document::parse(&ran.stdout).expect("JUnit XML");
    assert_eq!(doc.root_element().attribute("tests"), Some("8"));
    assert_eq!(doc.root_element().attribute("failures"), Some("2"));
    let ran = byok(&env, &["eval", "results", "smoke"], None).await;
    assert!(ran.ok && ran.stdout.contains("CASE") && ran.stdout.contains("llm_judge"), "{ran:?}");
    env.assert_no_plaintext().await;
}

/// `eval run --wait` with pass criteria: it follows the run (whose judge containers run here),
/// prints the criteria, and exits 1 when they are not met, 0 when they are; the EvalJob carries the
/// `Passed` condition that says so (and a Warning Event when it failed).
#[tokio::test]
async fn plugin_eval_run_wait_exits_by_the_pass_criteria() {
    let mut env = TestEnv::new("plugin-gate").await;
    let key = fake_key(Provider::OpenAi, "");
    env.plaintexts.push(key.clone());
    let ran = byok(&env, &["create", "gate-key", "--provider", "openai", "--default"], Some(&key)).await;
    assert!(ran.ok, "{ran:?}");
    env.wait_key("gate-key", "effective default", effective_default).await;
    // c0 and c2 pass (0.9), c1 and c3 fail (0.2): a pass rate of 0.5.
    let cases: String = (0..4)
        .map(|i| {
            let score = if i % 2 == 0 { "0.9" } else { "0.2" };
            format!("{{\"id\":\"c{i}\",\"input\":\"q\",\"output\":\"mock-score={score}\"}}\n")
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cases.jsonl");
    std::fs::write(&file, cases).expect("write cases");
    let ejs: Api<EvalJob> = Api::namespaced(env.client.clone(), &env.ns);
    for (name, min_pass_rate, exit, status, reason) in
        [("strict", "0.8", 1, "False", "CriteriaNotMet"), ("lenient", "0.5", 0, "True", "CriteriaMet")]
    {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubectl-byok"));
        cmd.args(["-n", &env.ns, "--operator-namespace", &env.op_ns, "eval", "run", "-f"])
            .arg(&file)
            .args(["--provider", "openai", "--name", name, "--scorer", "llm_judge:The answer is correct."])
            .args(["--min-pass-rate", min_pass_rate, "--max-errored", "0", "--wait", "--wait-timeout", "180s"])
            // Its containers run as local processes below: keep the pod off the node.
            .args(["--node-selector", "launchgate.ai/test-no-node=true"]);
        let waiter = tokio::task::spawn_blocking(move || cmd.output().expect("kubectl-byok runs"));
        let ej = eventually("EvalJob running", TIMEOUT, || async {
            ejs.get_opt(name)
                .await
                .ok()
                .flatten()
                .filter(|e| e.status.as_ref().and_then(|s| s.phase) == Some(EvalPhase::Running))
        })
        .await;
        let pod = judge_pods(&env, &ej.status.and_then(|s| s.job_name).expect("job"), 1).await.remove(0);
        let local = LocalPod::prepare(&env, pod).await;
        for container in ["fetch-key", "judge"] {
            let ran = local.run(container, &[]).await;
            env.extra_logs.push((format!("{name} {container}"), format!("{ran:?}")));
            assert!(ran.status.success(), "{name} {container}: {}", String::from_utf8_lossy(&ran.stderr));
        }
        let out = waiter.await.expect("join");
        let ran = Ran {
            ok: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        no_key_in(&mut env, &format!("eval run --wait {name}"), &ran, &key);
        assert_eq!(ran.code, Some(exit), "{name}: {ran:?}");
        assert!(ran.stdout.contains("minPassRate"), "{name}: the criteria table: {ran:?}");
        assert!(ran.stdout.contains(&format!("Passed={status} ({reason})")), "{name}: {ran:?}");
        let ej = ejs.get(name).await.expect("get EvalJob");
        let passed = ej.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Passed")).cloned();
        let passed = passed.expect("Passed condition");
        assert_eq!((passed.status.as_str(), passed.reason.as_str()), (status, reason), "{name}: {passed:?}");
        if exit == 1 {
            assert!(passed.message.contains("pass rate 0.5 (2 of 4 cases)"), "{passed:?}");
            env.wait_event(name, reason).await;
        }
    }
    env.assert_no_plaintext().await;
}

#[tokio::test]
async fn plugin_kek_status_rotate_and_completion() {
    let mut env = TestEnv::new("plugin-kek").await;
    let key = fake_key(Provider::Google, "");
    env.plaintexts.push(key.clone());
    let ran = byok(&env, &["create", "gem", "--provider", "google"], Some(&key)).await;
    no_key_in(&mut env, "create gem", &ran, &key);
    assert!(ran.ok, "{ran:?}");
    let status = |ran: &Ran| -> serde_json::Value { serde_json::from_str(&ran.stdout).expect("kek status JSON") };
    let before = status(&byok(&env, &["kek", "status", "-o", "json"], None).await);
    let old = before["active"].as_str().expect("active KEK").to_string();
    let ran = byok(&env, &["kek", "rotate"], None).await;
    assert!(ran.ok && ran.stdout.contains("new active KEK"), "{ran:?}");
    // The operator re-encrypts under the new KEK; then the old one is removable.
    env.wait_key("gem", "re-encrypted", |k| {
        k.status.as_ref().and_then(|s| s.kek_id.as_deref()).is_some_and(|id| id != old)
    })
    .await;
    let after = eventually("old KEK unused", TIMEOUT, || async {
        let v = status(&byok(&env, &["kek", "status", "-o", "json"], None).await);
        let keks = v["keks"].as_array()?.clone();
        keks.iter().any(|k| k["id"] == old.as_str() && k["removable"] == true).then_some(v)
    })
    .await;
    assert_ne!(after["active"], before["active"]);
    let ran = byok(&env, &["kek", "status"], None).await;
    assert!(ran.ok && ran.stdout.contains("REMOVABLE"), "{ran:?}");
    let ran = byok(&env, &["kek", "backup-help"], None).await;
    assert!(
        ran.ok && ran.stdout.contains(&format!("kubectl get secret byok-operator-kek -n {}", env.op_ns)),
        "{ran:?}"
    );
    for shell in ["bash", "zsh", "fish"] {
        let ran = byok(&env, &["completion", shell], None).await;
        assert!(ran.ok && ran.stdout.contains("set-default"), "{shell}: {ran:?}");
    }
    env.assert_no_plaintext().await;
}
