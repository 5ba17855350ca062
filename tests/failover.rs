//! Failover that loses nothing: the leader replica of the chart's Deployment is SIGKILLed while
//! judge pods on the real node fetch keys and report results, twice. Every EvalJob succeeds with
//! no errored case, no case is judged twice, and a leader is back within the lease time.

mod common;

use std::time::{Duration, Instant};

use byok_operator::crd::{EvalJob, EvalPhase, Provider};
use byok_operator::mock::MockConfig;
use common::evaljobs::{cases, create_evaljob, default_key, judge_spec, phase, wait_evaljob_within};
use common::{chart, eventually, node};
use kube::Api;
use serde_json::json;

const CASES: usize = 200;
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

fn completed(e: &EvalJob) -> i64 {
    e.status.as_ref().and_then(|s| s.progress.as_ref()).map_or(0, |p| p.completed)
}

/// Starts three EvalJobs named `<round>-<i>`, kills the leader once each has reported some
/// results, and checks that all three finish whole. Returns how long until a leader was Ready again.
async fn round(env: &mut common::TestEnv, round: &str) -> Duration {
    let names: Vec<String> = (0..3).map(|i| format!("{round}-{i}")).collect();
    for name in &names {
        let mut spec = judge_spec("openai", cases(CASES));
        spec["concurrency"] = json!(4);
        create_evaljob(env, name, spec).await;
    }
    let api: Api<EvalJob> = Api::namespaced(env.client.clone(), &env.ns);
    eventually("every EvalJob reporting results", node::POD_TIMEOUT, || async {
        let all = futures::future::join_all(names.iter().map(|n| api.get(n))).await;
        all.iter().all(|e| e.as_ref().is_ok_and(|e| completed(e) > 0)).then_some(())
    })
    .await;
    let killed_at = Instant::now();
    let killed = chart::kill_leader(env).await;
    let pods = chart::operator_pods(env);
    // A leader again: the Lease held and its replica Ready (the Service routes to it).
    let (_, lease) = eventually("a leader Ready again", RUN_TIMEOUT, || async {
        let (holder, lease) = chart::leader(env).await?;
        let pod = pods.get(&holder).await.ok()?;
        let ready = pod.status?.conditions?.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        let restarted = holder != killed || killed_at.elapsed() > Duration::from_secs(1);
        (ready && restarted).then_some((holder, lease))
    })
    .await;
    let back = killed_at.elapsed();
    node::note(&format!(
        "{round}: leader {killed} SIGKILLed; a leader was Ready again after {:.1}s (lease {}s)",
        back.as_secs_f64(),
        lease.as_secs()
    ));
    assert!(back <= lease + Duration::from_secs(15), "took over within the lease time (+ cache sync): {back:?}");
    for name in &names {
        let done = wait_evaljob_within(env, name, "Succeeded", RUN_TIMEOUT, |e| {
            matches!(phase(e), Some(EvalPhase::Succeeded | EvalPhase::Failed))
        })
        .await;
        assert_eq!(phase(&done), Some(EvalPhase::Succeeded), "{name}: {:?}", done.status);
        let s = done.status.as_ref().and_then(|s| s.summary.clone()).expect("summary");
        assert_eq!(
            (s.passed + s.failed, s.errored),
            (CASES as i64, 0),
            "{name}: every case judged, none errored: {s:?}"
        );
        let job = done.status.and_then(|s| s.job_name).expect("job");
        assert_eq!(node::job_pods(env, &job).await.len(), 1, "{name}: the Job never re-ran its pod");
    }
    back
}

#[tokio::test]
async fn node_leader_killed_twice_mid_run_loses_nothing() {
    if !node::wanted("node_leader_killed_twice_mid_run_loses_nothing") {
        return;
    }
    let mut env = node::node_env("failover", MockConfig::default()).await;
    chart::install(&mut env).await;
    let key = default_key(&mut env, "openai", Provider::OpenAi).await;
    let validation_calls = env.mock.requests_for_key(&key);
    env.mock.set_latency(Duration::from_millis(150));
    let first = round(&mut env, "one").await;
    let second = round(&mut env, "two").await;
    // Each case is one judge call: nothing judged twice, and no re-validation by a new leader.
    let judge_calls = env.mock.requests_for_key(&key) - validation_calls;
    assert_eq!(judge_calls, 6 * CASES as u64, "provider calls after the key was validated");
    node::note(&format!(
        "failover: back after {:.1}s and {:.1}s; {judge_calls} judge calls for {} cases",
        first.as_secs_f64(),
        second.as_secs_f64(),
        6 * CASES
    ));
    chart::collect_logs(&mut env).await;
    node::collect_pod_logs(&mut env).await;
    env.assert_no_plaintext().await;
}
