//! The control plane goes away: kube-apiserver restarted (SIGKILL, 2 s down) mid-import and
//! mid-EvalJob, etcd restarted mid-import. The operator reconnects by itself (watch backoff,
//! reconcile retries), converges, and its broker answers again; nothing is lost, no Job doubled,
//! no status goes back. Each test prints how long it took to converge once the API server served again.
//!
//! These tests restart the cluster's processes (`hack/cluster.sh restart-apiserver|restart-etcd`),
//! so they run only with `BYOK_RESTART_CLUSTER=1` against a cluster of their own: `hack/test.sh`
//! runs them after the other tests on a second cluster. Otherwise each says SKIPPED.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use byok_operator::crd::{EvalJob, EvalPhase, KeyPhase, Provider};
use byok_operator::keystore;
use common::broker::metrics;
use common::evaljobs::{cases, create_evaljob, default_key, judge_spec, phase, wait_evaljob_within};
use common::judge_pod::{LocalPod, judge_pods};
use common::{TestEnv, eventually, fake_key, phase_of};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, ResourceExt};
use serde_json::json;

/// One restart at a time: every test of this file shares the cluster it restarts.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const CONVERGE: Duration = Duration::from_secs(180);

fn allowed(test: &str) -> bool {
    let yes = std::env::var("BYOK_RESTART_CLUSTER").is_ok_and(|v| v == "1");
    if !yes {
        eprintln!(
            "SKIPPED {test}: it restarts kube-apiserver or etcd; run it with BYOK_RESTART_CLUSTER=1 against a \
             cluster of its own (hack/test.sh does, after the other tests)"
        );
    }
    yes
}

/// Restarts `what` (`apiserver` or `etcd`) as a crash would (SIGKILL), 2 s down; returns when
/// the API server serves again.
async fn restart(what: &str) -> Instant {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/hack/cluster.sh");
    let arg = format!("restart-{what}");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .args([script, &arg])
            .env("BYOK_RESTART_SIGNAL", "KILL")
            .env("BYOK_DOWN_SECONDS", "2")
            .output()
            .expect("hack/cluster.sh runs")
    })
    .await
    .expect("join");
    assert!(out.status.success(), "restart-{what}: {}", String::from_utf8_lossy(&out.stderr));
    eprintln!("[controlplane] {}", String::from_utf8_lossy(&out.stderr).trim());
    Instant::now()
}

/// Phases a watch saw go back: a Ready key seen not Ready again.
#[derive(Default)]
struct Regressions {
    ready: HashMap<String, bool>,
    seen: Vec<String>,
}

/// Watches the namespace's ByokKeys through the restart (the watch re-lists by itself).
fn watch_keys(env: &TestEnv) -> Arc<Mutex<Regressions>> {
    let shared = Arc::new(Mutex::new(Regressions::default()));
    let s = shared.clone();
    let stream = watcher::watcher(env.keys(), watcher::Config::default()).default_backoff();
    tokio::spawn(stream.for_each(move |ev| {
        if let Ok(Event::Apply(k) | Event::InitApply(k)) = ev {
            let mut r = s.lock().unwrap_or_else(|e| e.into_inner());
            let ready = phase_of(&k) == Some(KeyPhase::Ready);
            let was = r.ready.insert(k.name_any(), ready).unwrap_or(false) || ready;
            if was && !ready {
                r.seen.push(format!("{}: Ready -> {:?}", k.name_any(), phase_of(&k)));
            }
            r.ready.insert(k.name_any(), was);
        }
        async {}
    }));
    shared
}

/// The broker answers again, and authenticates its caller by a TokenReview against the restarted
/// API server: /metrics with a token allowed to read it, over TLS checked against the broker's CA.
async fn broker_answers(env: &TestEnv) {
    let cas: Api<Secret> = Api::namespaced(env.client.clone(), &env.op_ns);
    let ca = cas.get("byok-broker-ca").await.expect("broker CA").data.expect("data")["ca.crt"].0.clone();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("ca"))
        .tls_built_in_root_certs(false)
        .build()
        .expect("client");
    let token = common::metrics_token(env).await;
    let url = format!("https://{}/metrics", env.broker_addr());
    eventually("the broker answering /metrics", CONVERGE, || async {
        let resp = http.get(&url).bearer_auth(&token).send().await.ok()?;
        (resp.status() == 200).then_some(())
    })
    .await;
}

/// Imports `n` keys, restarts `what` once some are Ready, and checks they all converge.
async fn import_through_restart(test: &str, what: &str, n: usize) {
    let _serial = SERIAL.lock().await;
    let mut env = TestEnv::new(test).await;
    let regressions = watch_keys(&env);
    // Every key there before the operator looks, and slow answers: the restart lands mid-import.
    env.kill_operator();
    env.mock.set_latency(Duration::from_millis(300));
    let mut plaintexts = BTreeMap::new();
    for i in 0..n {
        let name = format!("k{i:03}");
        let key = fake_key(Provider::OpenAi, "");
        env.create_secret(&format!("{name}-src"), "apiKey", key.as_bytes()).await;
        env.create_key(&name, env.spec(Provider::OpenAi, &format!("{name}-src"))).await;
        plaintexts.insert(name, key);
    }
    env.start_operator();
    let api = env.keys();
    let ready = || async {
        let keys = api.list(&ListParams::default()).await.ok()?;
        Some(keys.items.iter().filter(|k| phase_of(k) == Some(KeyPhase::Ready)).count())
    };
    let before = eventually("some keys Ready", CONVERGE, || async { ready().await.filter(|r| *r >= 10) }).await;
    let back = restart(what).await;
    eventually("every key Ready", CONVERGE, || async { ready().await.filter(|r| *r == n) }).await;
    let converged = back.elapsed();
    // Exactly one ciphertext per key, every source deleted, no answer asked for more than twice.
    let lp = ListParams::default().labels(&keystore::selector());
    assert_eq!(env.secrets().list_metadata(&lp).await.expect("list").items.len(), n, "one ciphertext per key");
    let mut by_calls: BTreeMap<u64, usize> = BTreeMap::new();
    for (name, key) in &plaintexts {
        assert!(env.secrets().get_opt(&format!("{name}-src")).await.expect("get").is_none(), "{name}: source deleted");
        *by_calls.entry(env.mock.requests_for_key(key)).or_default() += 1;
    }
    let seen = regressions.lock().unwrap_or_else(|e| e.into_inner()).seen.clone();
    assert!(seen.is_empty(), "statuses went back: {seen:?}");
    broker_answers(&env).await;
    eprintln!(
        "[controlplane] {what} restarted with {before} of {n} keys Ready: all Ready {:.1}s after it served again; \
         keys by provider calls (2 per validation): {by_calls:?}",
        converged.as_secs_f64()
    );
    assert!(!env.operator_exited(), "the operator rode it out");
    env.assert_no_plaintext().await;
}

#[tokio::test]
async fn apiserver_restarted_mid_import_every_key_converges() {
    if allowed("apiserver_restarted_mid_import_every_key_converges") {
        import_through_restart("cp-api-import", "apiserver", 150).await;
    }
}

#[tokio::test]
async fn etcd_restarted_mid_import_every_key_converges() {
    if allowed("etcd_restarted_mid_import_every_key_converges") {
        import_through_restart("cp-etcd-import", "etcd", 150).await;
    }
}

fn completed(e: &EvalJob) -> i64 {
    e.status.as_ref().and_then(|s| s.progress.as_ref()).map_or(0, |p| p.completed)
}

/// Polls the EvalJob until it is finished: its progress never goes back, nor its phase.
fn watch_progress(env: &TestEnv, name: &str) -> tokio::task::JoinHandle<Vec<String>> {
    let api: Api<EvalJob> = Api::namespaced(env.client.clone(), &env.ns);
    let name = name.to_string();
    let rank = |p: Option<EvalPhase>| match p {
        None | Some(EvalPhase::Pending) => 0,
        Some(EvalPhase::WaitingForKey) => 1,
        Some(EvalPhase::Running) => 2,
        Some(EvalPhase::Succeeded | EvalPhase::Failed) => 3,
    };
    tokio::spawn(async move {
        let (mut last, mut wrong) = ((0, 0), Vec::new());
        let deadline = Instant::now() + CONVERGE;
        while last.1 < 3 && Instant::now() < deadline {
            if let Ok(e) = api.get(&name).await {
                let now = (completed(&e), rank(phase(&e)));
                if now.0 < last.0 || now.1 < last.1 {
                    wrong.push(format!("{last:?} -> {now:?}"));
                }
                last = now;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        wrong
    })
}

#[tokio::test]
async fn apiserver_restarted_mid_evaljob_loses_no_result() {
    const CASES: i64 = 40;
    if !allowed("apiserver_restarted_mid_evaljob_loses_no_result") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let mut env = TestEnv::new("cp-api-evaljob").await;
    let key = default_key(&mut env, "openai", Provider::OpenAi).await;
    let validation_calls = env.mock.requests_for_key(&key);
    let mut spec = judge_spec("openai", cases(CASES as usize));
    spec["concurrency"] = json!(2);
    create_evaljob(&env, "eval", spec).await;
    let ej = wait_evaljob_within(&env, "eval", "Running", CONVERGE, |e| phase(e) == Some(EvalPhase::Running)).await;
    let job = ej.status.and_then(|s| s.job_name).expect("job");
    let local = LocalPod::prepare(&env, judge_pods(&env, &job, 1).await.remove(0)).await;
    assert!(local.run("fetch-key", &[]).await.status.success(), "fetch-key");
    // 40 cases at concurrency 2, 250 ms each: about 5 s of judging, reported every second.
    env.mock.set_latency(Duration::from_millis(250));
    let progress = watch_progress(&env, "eval");
    let judge = tokio::spawn(async move { local.run("judge", &[]).await });
    wait_evaljob_within(&env, "eval", "some results", CONVERGE, |e| completed(e) >= 2).await;
    let back = restart("apiserver").await;
    let ran = judge.await.expect("judge task");
    let judged = back.elapsed();
    env.extra_logs.push(("judge".into(), format!("{ran:?}")));
    assert!(ran.status.success(), "the judge delivered its results: {}", String::from_utf8_lossy(&ran.stderr));
    let done =
        wait_evaljob_within(&env, "eval", "finished", CONVERGE, |e| phase(e) == Some(EvalPhase::Succeeded)).await;
    let converged = back.elapsed();
    let s = done.status.as_ref().and_then(|s| s.summary.clone()).expect("summary");
    assert_eq!((s.passed + s.failed, s.errored), (CASES, 0), "every case judged, none errored: {s:?}");
    let jobs: Api<Job> = Api::namespaced(env.client.clone(), &env.ns);
    assert_eq!(jobs.list_metadata(&ListParams::default()).await.expect("jobs").items.len(), 1, "one Job");
    assert_eq!(env.mock.requests_for_key(&key) - validation_calls, CASES as u64, "no case judged twice");
    let wrong = progress.await.expect("progress watch");
    assert!(wrong.is_empty(), "progress or phase went back: {wrong:?}");
    metrics(&env).await;
    eprintln!(
        "[controlplane] apiserver restarted mid-EvalJob: the judge done {:.1}s and the EvalJob Succeeded {:.1}s after it \
         served again, {CASES} of {CASES} cases",
        judged.as_secs_f64(),
        converged.as_secs_f64()
    );
    env.assert_no_plaintext().await;
}
