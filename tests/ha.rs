//! High availability: two operator replicas with Lease-based leader election; the leader is
//! killed and the other takes over within 15 s, with no duplicate Jobs and no regressed status.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use byok_operator::crd::{EvalJob, EvalPhase, KeyPhase, Provider};
use common::{TIMEOUT, TestEnv, eventually};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;

struct Replica {
    identity: String,
    child: Child,
    log: std::path::PathBuf,
}

fn spawn_replica(env: &TestEnv, identity: &str) -> Replica {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let log = env.log_path.with_file_name(format!("{}-{identity}.log", env.ns));
    let file = std::fs::File::create(&log).expect("log file");
    let ep = env.mock.endpoints();
    let broker = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_byok-operator"))
        .args(["--namespace", &env.op_ns, "--watch-namespace", &env.ns, "--leader-elect", "--lease-seconds", "6"])
        .args(["--broker-listen", &broker, "--broker-url", &format!("https://{broker}")])
        .args(["--openai-base-url", &ep.openai, "--anthropic-base-url", &ep.anthropic, "--google-base-url", &ep.google])
        .env("POD_NAME", identity)
        .env("RUST_LOG", "info,kube=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::from(file))
        .spawn()
        .expect("replica starts");
    Replica { identity: identity.into(), child, log }
}

async fn holder(env: &TestEnv) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.op_ns);
    leases.get_opt("byok-operator-leader").await.ok()??.spec?.holder_identity
}

async fn create_evaljob(env: &TestEnv, name: &str) {
    let api: Api<EvalJob> = Api::namespaced(env.client.clone(), &env.ns);
    let ej: EvalJob = serde_json::from_value(json!({
        "apiVersion": "launchgate.ai/v1alpha1", "kind": "EvalJob", "metadata": { "name": name },
        "spec": { "provider": "openai", "scorers": [{ "type": "llm_judge", "rubric": "correct" }],
                  "cases": [{ "output": "x" }] }
    }))
    .expect("evaljob");
    api.create(&PostParams::default(), &ej).await.expect("EvalJob created");
}

async fn running(env: &TestEnv, name: &str) -> EvalJob {
    let api: Api<EvalJob> = Api::namespaced(env.client.clone(), &env.ns);
    eventually(&format!("{name} Running"), TIMEOUT, || async {
        api.get(name).await.ok().filter(|e| e.status.as_ref().and_then(|s| s.phase) == Some(EvalPhase::Running))
    })
    .await
}

#[tokio::test]
async fn leader_killed_another_replica_takes_over_within_15s_without_duplicates() {
    let mut env = TestEnv::new("ha").await;
    // The harness's single operator makes the keyring; replicas with leader election replace it.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(env.client.clone(), &env.op_ns);
    eventually("keyring created", TIMEOUT, || async { secrets.get_opt("byok-operator-kek").await.ok().flatten() })
        .await;
    env.kill_operator();
    let mut replicas = vec![spawn_replica(&env, "replica-a"), spawn_replica(&env, "replica-b")];
    let leader = eventually("a leader", TIMEOUT, || holder(&env)).await;

    let mut spec = env.spec(Provider::OpenAi, "first-src");
    spec.default = true;
    let key = common::fake_key(Provider::OpenAi, "");
    env.create_secret("first-src", "apiKey", key.as_bytes()).await;
    env.create_key("first", spec).await;
    env.add_key("second", Provider::Anthropic, "").await;
    let first = env
        .wait_key("first", "Ready default", |k| {
            k.status.as_ref().is_some_and(|s| s.effective_default && s.phase == Some(KeyPhase::Ready))
        })
        .await;
    let second = env.wait_phase("second", KeyPhase::Ready).await;
    create_evaljob(&env, "before").await;
    let before = running(&env, "before").await;

    // Kill the leader the hard way.
    let index = replicas.iter().position(|r| r.identity == leader).expect("leader is a replica");
    let mut dead = replicas.remove(index);
    let killed_at = Instant::now();
    let _ = dead.child.kill();
    let _ = dead.child.wait();
    let survivor = replicas[0].identity.clone();
    let new_leader =
        eventually("a new leader", Duration::from_secs(20), || async { holder(&env).await.filter(|h| *h == survivor) })
            .await;
    let takeover = killed_at.elapsed();
    eprintln!("[ha] {leader} killed; {new_leader} leads after {:.1} s", takeover.as_secs_f64());
    assert!(takeover < Duration::from_secs(15), "takeover took {takeover:?}");

    // The new leader works: a new key and a new EvalJob are handled.
    env.add_key("third", Provider::Google, "").await;
    env.wait_phase("third", KeyPhase::Ready).await;
    create_evaljob(&env, "after").await;
    let after = running(&env, "after").await;

    // Nothing duplicated: one Job per EvalJob.
    let jobs: Api<Job> = Api::namespaced(env.client.clone(), &env.ns);
    let names: Vec<String> = jobs
        .list(&ListParams::default())
        .await
        .expect("jobs")
        .items
        .into_iter()
        .filter_map(|j| j.metadata.name)
        .collect();
    assert_eq!(names.len(), 2, "one Job per EvalJob: {names:?}");
    // Nothing regressed: what was done before the kill is unchanged.
    let first_now = env.keys().get("first").await.expect("first");
    let second_now = env.keys().get("second").await.expect("second");
    for (was, now) in [(&first, &first_now), (&second, &second_now)] {
        let (w, n) = (was.status.clone().expect("status"), now.status.clone().expect("status"));
        assert_eq!(
            (n.phase, n.key_prefix, n.kek_id, n.effective_default),
            (w.phase, w.key_prefix, w.kek_id, w.effective_default)
        );
    }
    let ejs: Api<EvalJob> = Api::namespaced(env.client.clone(), &env.ns);
    let before_now = ejs.get("before").await.expect("before").status.expect("status");
    let was = before.status.expect("status");
    assert_eq!((before_now.job_name, before_now.start_time), (was.job_name, was.start_time));
    assert!(after.status.and_then(|s| s.job_name).is_some());
    assert_eq!(env.mock.requests_for_key(&key), 2, "the first key was validated once, not again by the new leader");

    for r in replicas.iter_mut().chain(std::iter::once(&mut dead)) {
        let _ = r.child.kill();
        let _ = r.child.wait();
        env.extra_logs.push((format!("replica {}", r.identity), std::fs::read_to_string(&r.log).unwrap_or_default()));
    }
    env.assert_no_plaintext().await;
}
