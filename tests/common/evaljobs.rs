//! EvalJob helpers shared by the EvalJob, node end-to-end and HA tests.

use std::time::Duration;

use byok_operator::crd::{EvalJob, EvalPhase, Provider};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

use super::{TIMEOUT, TestEnv, eventually, fake_key};

/// A Ready ByokKey that is the effective default for `provider`; returns its plaintext.
pub async fn default_key(env: &mut TestEnv, name: &str, provider: Provider) -> String {
    let key = fake_key(provider, "");
    env.create_secret(&format!("{name}-src"), "apiKey", key.as_bytes()).await;
    let mut spec = env.spec(provider, &format!("{name}-src"));
    spec.default = true;
    env.create_key(name, spec).await;
    // Ready as well: a Pending key (its source not in the cache yet) may already be the default.
    env.wait_key(name, "Ready effective default", |k| {
        k.status.as_ref().is_some_and(|s| s.effective_default && s.phase == Some(byok_operator::crd::KeyPhase::Ready))
    })
    .await;
    key
}

pub async fn create_evaljob(env: &TestEnv, name: &str, mut spec: serde_json::Value) -> EvalJob {
    if !env.node && spec.get("template").is_none() {
        // Without the node the judge pods stay unscheduled; the tests run their containers locally.
        spec["template"] = json!({ "nodeSelector": { "launchgate.ai/test-no-node": "true" } });
    }
    let api: Api<EvalJob> = Api::namespaced(env.client.clone(), &env.ns);
    let ej: EvalJob = serde_json::from_value(json!({
        "apiVersion": "launchgate.ai/v1alpha1", "kind": "EvalJob",
        "metadata": { "name": name, "namespace": env.ns }, "spec": spec
    }))
    .expect("evaljob");
    api.create(&PostParams::default(), &ej).await.expect("EvalJob created")
}

pub async fn wait_evaljob_within(
    env: &TestEnv,
    name: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&EvalJob) -> bool,
) -> EvalJob {
    let api: Api<EvalJob> = Api::namespaced(env.client.clone(), &env.ns);
    eventually(&format!("{name}: {what}"), timeout, || async { api.get(name).await.ok().filter(|e| pred(e)) }).await
}

pub async fn wait_evaljob(env: &TestEnv, name: &str, what: &str, pred: impl Fn(&EvalJob) -> bool) -> EvalJob {
    wait_evaljob_within(env, name, what, TIMEOUT, pred).await
}

pub fn phase(e: &EvalJob) -> Option<EvalPhase> {
    e.status.as_ref().and_then(|s| s.phase)
}

/// An EvalJob spec with an `llm_judge` and a `contains` scorer over `cases`.
pub fn judge_spec(provider: &str, cases: serde_json::Value) -> serde_json::Value {
    json!({
        "provider": provider,
        "scorers": [
            { "type": "llm_judge", "rubric": "The answer is correct and polite.", "passThreshold": 0.5 },
            { "type": "contains", "value": "answer" }
        ],
        "cases": cases
    })
}

/// `n` cases: even ones score 0.9 (pass), odd ones 0.2 (fail): the mock's verdicts are predictable.
pub fn cases(n: usize) -> serde_json::Value {
    let v: Vec<_> = (0..n)
        .map(|i| {
            let score = if i % 2 == 0 { "0.9" } else { "0.2" };
            json!({ "id": format!("c{i}"), "input": "q", "output": format!("the answer mock-score={score}") })
        })
        .collect();
    json!(v)
}
