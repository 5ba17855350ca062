//! End to end with judge pods really running on the node of hack/node.sh: the operator image
//! pulled from the cluster's registry by digest, the init container fetching the key from the broker over
//! HTTPS (TokenReview of its projected token), the judge scoring through the mock provider and
//! reporting to the broker. Run with `BYOK_NODE=true hack/test.sh --test e2e_node`; without
//! BYOK_NODE=true every test prints that it needs it and returns.
//!
//! The operator and the mock provider are host processes listening on the bridge address
//! 10.244.0.1 (see tests/common/node.rs); each test has its own namespace enforcing `restricted`.

mod common;

use std::time::{Duration, Instant};

use byok_operator::crd::{EvalJob, EvalPhase, KeyPhase, Provider};
use byok_operator::mock::MockConfig;
use common::evaljobs::{cases, create_evaljob, default_key, judge_spec, phase, wait_evaljob_within};
use common::node::{self, POD_TIMEOUT, note};
use common::{TestEnv, eventually};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

async fn wait_evaljob(env: &TestEnv, name: &str, what: &str, pred: impl Fn(&EvalJob) -> bool) -> EvalJob {
    wait_evaljob_within(env, name, what, POD_TIMEOUT, pred).await
}

fn job_name(e: &EvalJob) -> String {
    e.status.as_ref().and_then(|s| s.job_name.clone()).expect("job name")
}

fn completed(e: &EvalJob) -> i64 {
    e.status.as_ref().and_then(|s| s.progress.as_ref()).map_or(0, |p| p.completed)
}

/// Waits for Succeeded; a Failed EvalJob fails the test at once, with its status.
async fn wait_succeeded(env: &TestEnv, name: &str) -> EvalJob {
    let ej = wait_evaljob(env, name, "Succeeded or Failed", |e| {
        matches!(phase(e), Some(EvalPhase::Succeeded | EvalPhase::Failed))
    })
    .await;
    assert_eq!(phase(&ej), Some(EvalPhase::Succeeded), "{name}: {:?}", ej.status);
    ej
}

/// All per-case results of a finished EvalJob (its results ConfigMaps, JUnit first).
async fn results_text(env: &TestEnv, ej: &EvalJob) -> (String, String) {
    let refs = ej.status.as_ref().and_then(|s| s.results_ref.clone()).expect("results ref").config_maps;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.ns);
    let (mut junit, mut jsonl) = (String::new(), String::new());
    for r in &refs {
        let data = cms.get(r).await.expect("results ConfigMap").data.unwrap_or_default();
        junit.push_str(data.get("junit.xml").map_or("", String::as_str));
        jsonl.push_str(data.get("results.jsonl").map_or("", String::as_str));
    }
    (junit, jsonl)
}

/// From `applied` until a judge pod of the EvalJob is Running, as polled; and the kubelet's own
/// figure: the judge container's start time minus the EvalJob's creation time.
async fn time_to_running(env: &TestEnv, ej_name: &str, applied: Instant) -> (Duration, Option<Duration>) {
    let ej =
        wait_evaljob(env, ej_name, "Job created", |e| e.status.as_ref().is_some_and(|s| s.job_name.is_some())).await;
    let job = job_name(&ej);
    let pod = eventually(&format!("{job}: pod Running"), POD_TIMEOUT, || async {
        node::job_pods(env, &job)
            .await
            .into_iter()
            .find(|p| matches!(node::pod_phase(p), Some("Running" | "Succeeded")))
    })
    .await;
    let seen = applied.elapsed();
    let judge = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref()).and_then(|cs| {
        let state = cs.iter().find(|c| c.name == "judge")?.state.clone()?;
        state.running.and_then(|r| r.started_at).or_else(|| state.terminated.and_then(|t| t.started_at))
    });
    let created = ej.creation_timestamp().map(|t| t.0);
    (seen, judge.zip(created).map(|(s, c)| s.0.duration_since(c).unsigned_abs()))
}

/// Item 5: the logs of every container and every object in the namespace hold no plaintext key.
async fn no_plaintext_anywhere(env: &mut TestEnv) {
    let judge_bytes = node::collect_pod_logs(env).await;
    assert!(judge_bytes > 0, "judge containers logged nothing: the log scan would prove nothing");
    env.assert_no_plaintext().await;
}

#[tokio::test]
async fn node_judge_pods_score_all_four_providers() {
    if !node::wanted("node_judge_pods_score_all_four_providers") {
        return;
    }
    let t0 = Instant::now();
    let mut env = node::node_env("e2e-flow", MockConfig::default()).await;
    let providers = [
        ("openai", Provider::OpenAi),
        ("anthropic", Provider::Anthropic),
        ("google", Provider::Google),
        ("azure_openai", Provider::AzureOpenAi),
    ];
    for (name, p) in providers {
        default_key(&mut env, &name.replace('_', "-"), p).await;
    }
    let mut applied = Vec::new();
    for (name, _) in providers {
        let ej_name = format!("eval-{}", name.replace('_', "-"));
        create_evaljob(&env, &ej_name, judge_spec(name, cases(6))).await;
        applied.push((ej_name, Instant::now()));
    }
    // EvalJob applied -> its first judge pod Running (init container fetch-key done, judge started),
    // watched for the four at once.
    let timings = futures::future::join_all(applied.iter().map(|(n, at)| time_to_running(&env, n, *at))).await;
    for ((ej_name, _), (seen, by_kubelet)) in applied.iter().zip(&timings) {
        note(&format!(
            "{ej_name}: applied -> judge pod Running {:.1}s (polled every 100 ms; kubelet's judge start - EvalJob \
             creation, 1 s resolution: {})",
            seen.as_secs_f64(),
            by_kubelet.map_or("n/a".into(), |d| format!("{}s", d.as_secs()))
        ));
    }
    note(&format!(
        "apply -> first judge pod Running: {:.1}s (first of 4 EvalJobs applied together; slowest {:.1}s)",
        timings.iter().map(|t| t.0).min().expect("four").as_secs_f64(),
        timings.iter().map(|t| t.0).max().expect("four").as_secs_f64()
    ));
    for (ej_name, _) in &applied {
        let done = wait_succeeded(&env, ej_name).await;
        let st = done.status.clone().expect("status");
        let summary = st.summary.clone().expect("summary");
        assert_eq!((summary.passed, summary.failed, summary.errored), (3, 3, 0), "{ej_name}: {summary:?}");
        assert_eq!(st.progress.map(|p| (p.completed, p.total)), Some((6, 6)), "{ej_name}");
        assert!(st.usage.is_some_and(|u| u.input_tokens > 0 && u.output_tokens > 0), "{ej_name}: tokens counted");
        let (junit, jsonl) = results_text(&env, &done).await;
        assert!(junit.contains("<testsuite"), "{ej_name}: JUnit XML for CI");
        assert_eq!(jsonl.lines().filter(|l| !l.trim().is_empty()).count(), 6, "{ej_name}: a result per case");
        // The pod really ran to completion on the node, its Job too. The EvalJob succeeds when the
        // broker takes the final report, a moment before the judge exits: wait for the kubelet.
        let job = job_name(&done);
        let pods = eventually(&format!("{ej_name}: judge pod Succeeded"), POD_TIMEOUT, || async {
            let pods = node::job_pods(&env, &job).await;
            pods.iter().any(|p| node::pod_phase(p) == Some("Succeeded")).then_some(pods)
        })
        .await;
        assert!(pods.iter().all(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("byok-node")));
    }
    no_plaintext_anywhere(&mut env).await;
    note(&format!("node_judge_pods_score_all_four_providers took {:.1}s", t0.elapsed().as_secs_f64()));
}

#[tokio::test]
async fn node_judge_container_sees_the_key_on_tmpfs_0400_and_no_api_token() {
    if !node::wanted("node_judge_container_sees_the_key_on_tmpfs_0400_and_no_api_token") {
        return;
    }
    let t0 = Instant::now();
    let mut env = node::node_env("e2e-mounts", MockConfig::default()).await;
    default_key(&mut env, "openai", Provider::OpenAi).await;
    // Slow provider, one call at a time: the judge is still running while we look inside it.
    env.mock.set_latency(Duration::from_secs(2));
    let mut spec = judge_spec("openai", cases(6));
    spec["concurrency"] = json!(1);
    create_evaljob(&env, "eval", spec).await;
    let ej = wait_evaljob(&env, "eval", "Running", |e| e.status.as_ref().is_some_and(|s| s.job_name.is_some())).await;
    let (pod, _) = node::wait_container_running(&env, &job_name(&ej), "judge", &[]).await;
    let id = node::running_container_id(&pod, "judge").expect("judge container id");
    // The image has no shell, cat or stat, and kube-rs exec needs kube's `ws` feature: look from
    // the host into the judge container's own mount namespace and root, /proc/<its pid>.
    let pid = node::container_pid(&id);
    let proc_dir = format!("/proc/{pid}");
    let cmdline = std::fs::read(format!("{proc_dir}/cmdline")).expect("cmdline");
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(cmdline.contains("byok-judge run"), "pid {pid} is the judge: {cmdline}");
    let mounts = std::fs::read_to_string(format!("{proc_dir}/mounts")).expect("the judge's /proc/mounts");
    let key_mount = mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(1) == Some(&"/var/run/byok/key"))
        .unwrap_or_else(|| panic!("no mount at /var/run/byok/key:\n{mounts}"));
    assert_eq!(key_mount[2], "tmpfs", "the key volume is memory-backed: {key_mount:?}");
    assert!(key_mount[3].split(',').any(|o| o == "ro"), "read-only in the judge: {key_mount:?}");
    for forbidden in ["/var/run/secrets/kubernetes.io", "/run/secrets/kubernetes.io", "/var/run/byok/broker-token"] {
        assert!(!mounts.contains(forbidden), "{forbidden} is mounted in the judge container:\n{mounts}");
    }
    use std::os::unix::fs::MetadataExt;
    let key_file = format!("{proc_dir}/root/var/run/byok/key/key");
    let meta = std::fs::metadata(&key_file).expect("key file in the judge's root");
    assert_eq!(meta.mode() & 0o7777, 0o400, "key file mode");
    assert_eq!(meta.uid(), 65532, "key file owned by the judge's uid");
    assert!(meta.len() > 0, "key file holds the key");
    let status = std::fs::read_to_string(format!("{proc_dir}/status")).expect("status");
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).expect("Uid line");
    assert!(uid_line.split_whitespace().skip(1).all(|u| u == "65532"), "judge runs as 65532: {uid_line}");
    let cap_eff = status.lines().find(|l| l.starts_with("CapEff:")).expect("CapEff line");
    assert!(cap_eff.ends_with("0000000000000000"), "no capabilities: {cap_eff}");
    note(&format!(
        "judge pid {pid}: key mount {} {} ({}), key file mode {:o} uid {}, no service-account mount",
        key_mount[1],
        key_mount[2],
        key_mount[3],
        meta.mode() & 0o7777,
        meta.uid()
    ));
    env.mock.set_latency(Duration::ZERO);
    let done = wait_succeeded(&env, "eval").await;
    let s = done.status.and_then(|s| s.summary).expect("summary");
    assert_eq!((s.passed, s.failed, s.errored), (3, 3, 0), "{s:?}");
    no_plaintext_anywhere(&mut env).await;
    note(&format!(
        "node_judge_container_sees_the_key_on_tmpfs_0400_and_no_api_token took {:.1}s",
        t0.elapsed().as_secs_f64()
    ));
}

#[tokio::test]
async fn node_revoking_the_key_mid_run_errors_the_remaining_llm_cases() {
    if !node::wanted("node_revoking_the_key_mid_run_errors_the_remaining_llm_cases") {
        return;
    }
    let t0 = Instant::now();
    let mut env = node::node_env("e2e-revoke", MockConfig::default()).await;
    let key = default_key(&mut env, "openai", Provider::OpenAi).await;
    // 40 cases, 2 calls in flight, 300 ms each: about 6 s of judging, time enough to revoke mid-run.
    env.mock.set_latency(Duration::from_millis(300));
    let mut spec = judge_spec("openai", cases(40));
    spec["concurrency"] = json!(2);
    create_evaljob(&env, "eval", spec).await;
    wait_evaljob(&env, "eval", "some results", |e| completed(e) >= 2).await;
    let patch = json!({ "spec": { "revoked": true } });
    env.keys().patch("openai", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("revoke");
    env.wait_phase("openai", KeyPhase::Revoked).await;
    let done = wait_succeeded(&env, "eval").await;
    let s = done.status.clone().and_then(|s| s.summary).expect("summary");
    assert!(s.errored > 0 && s.errored < 40, "some llm_judge cases errored with KeyRevoked: {s:?}");
    let (_, jsonl) = results_text(&env, &done).await;
    assert!(jsonl.contains("KeyRevoked"), "errored cases say KeyRevoked");
    let calls = env.mock.requests_for_key(&key);
    assert!(calls < 40, "no provider calls after revocation ({calls})");
    note(&format!("revoked mid-run: {s:?}, provider calls with the key {calls}"));
    no_plaintext_anywhere(&mut env).await;
    note(&format!(
        "node_revoking_the_key_mid_run_errors_the_remaining_llm_cases took {:.1}s",
        t0.elapsed().as_secs_f64()
    ));
}

#[tokio::test]
async fn node_judge_killed_mid_run_is_retried_by_the_job() {
    if !node::wanted("node_judge_killed_mid_run_is_retried_by_the_job") {
        return;
    }
    let t0 = Instant::now();
    let mut env = node::node_env("e2e-kill", MockConfig::default()).await;
    default_key(&mut env, "anthropic", Provider::Anthropic).await;
    // Slow enough that the judge is still running when two results are seen, on a loaded machine
    // too (at 300 ms it had finished once before the kill); set back to 0 after the kill.
    env.mock.set_latency(Duration::from_millis(1000));
    let mut spec = judge_spec("anthropic", cases(20));
    spec["concurrency"] = json!(1);
    create_evaljob(&env, "eval", spec).await;
    let ej = wait_evaljob(&env, "eval", "some results", |e| completed(e) >= 2).await;
    let job = job_name(&ej);
    let pods = node::job_pods(&env, &job).await;
    let first = pods.iter().find(|p| node::running_container_id(p, "judge").is_some()).expect("a running judge");
    let first_uid = first.uid().expect("uid");
    // SIGKILL the judge process, as the OOM killer or a crash would: the pod fails (restartPolicy
    // Never) and the Job, within its backoffLimit, starts another pod for the shard.
    let pid = node::container_pid(&node::running_container_id(first, "judge").expect("id"));
    let killed = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().expect("kill runs");
    assert!(killed.success(), "kill -KILL {pid}");
    let killed_at = Instant::now();
    let (second, _) = node::wait_container_running(&env, &job, "judge", std::slice::from_ref(&first_uid)).await;
    note(&format!(
        "judge pid {pid} of pod {} killed; replacement pod {} judging {:.1}s later",
        first.name_any(),
        second.name_any(),
        killed_at.elapsed().as_secs_f64()
    ));
    env.mock.set_latency(Duration::ZERO);
    let done = wait_succeeded(&env, "eval").await;
    let st = done.status.clone().expect("status");
    let s = st.summary.expect("summary");
    assert_eq!((s.passed, s.failed, s.errored), (10, 10, 0), "every case scored once in the end: {s:?}");
    assert_eq!(st.progress.map(|p| (p.completed, p.total)), Some((20, 20)));
    let killed_pod = node::job_pods(&env, &job).await.into_iter().find(|p| p.uid().as_deref() == Some(&first_uid));
    assert_eq!(killed_pod.as_ref().and_then(node::pod_phase), Some("Failed"), "the killed pod failed");
    let jobs: Api<Job> = Api::namespaced(env.client.clone(), &env.ns);
    let failed = jobs.get(&job).await.expect("job").status.and_then(|s| s.failed).unwrap_or(0);
    assert!(failed >= 1, "the Job counted the failure ({failed}) and retried");
    no_plaintext_anywhere(&mut env).await;
    note(&format!("node_judge_killed_mid_run_is_retried_by_the_job took {:.1}s", t0.elapsed().as_secs_f64()));
}

#[tokio::test]
async fn node_operator_deployment_from_the_chart_runs_an_evaljob() {
    if !node::wanted("node_operator_deployment_from_the_chart_runs_an_evaljob") {
        return;
    }
    let mut env = node::node_env("e2e-incluster", MockConfig::default()).await;
    common::chart::install(&mut env).await;

    let key = default_key(&mut env, "openai", Provider::OpenAi).await;
    create_evaljob(&env, "eval", judge_spec("openai", cases(4))).await;
    let done = wait_evaljob(&env, "eval", "Succeeded", |e| phase(e) == Some(EvalPhase::Succeeded)).await;
    let s = done.status.and_then(|s| s.summary).expect("summary");
    assert_eq!((s.passed, s.failed, s.errored), (2, 2, 0), "{s:?}");
    assert!(env.mock.requests_for_key(&key) >= 6, "validation + 4 judge calls from the pod");
    // The operator's own logs (both replicas) join the plaintext scan.
    common::chart::collect_logs(&mut env).await;
    node::collect_pod_logs(&mut env).await;
    env.assert_no_plaintext().await;
}
