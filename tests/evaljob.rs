//! EvalJob against the local control plane: Job and pod spec, restricted admission, the broker's
//! refusals with real tokens for real Pods, and the judge flow. Pods cannot run without a node
//! yet, so tests named `local_judge_*` run the pod's containers as local processes with the pod
//! spec's own commands, files and tokens.

mod common;

use std::time::Duration;

use byok_operator::crd::{EvalJob, EvalPhase, KeyPhase, Provider};
use byok_operator::judge::wire;
use common::broker::{ask_broker, metrics, report_pod_address};
use common::evaljobs::{cases, create_evaljob, default_key, judge_spec, phase, wait_evaljob};
use common::judge_pod::{LocalPod, judge_pods, pod_token};
use common::{TIMEOUT, TestEnv, eventually};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

#[tokio::test]
async fn judge_pod_spec_is_admitted_under_restricted_pod_security() {
    let mut env = TestEnv::new("ej-restricted").await;
    let nsapi: Api<Namespace> = Api::all(env.client.clone());
    let label = json!({ "metadata": { "labels": { "pod-security.kubernetes.io/enforce": "restricted" } } });
    nsapi.patch(&env.ns, &PatchParams::default(), &Patch::Merge(&label)).await.expect("label namespace");
    default_key(&mut env, "openai", Provider::OpenAi).await;
    create_evaljob(&env, "eval", judge_spec("openai", cases(4))).await;
    let ej = wait_evaljob(&env, "eval", "Running", |e| phase(e) == Some(EvalPhase::Running)).await;
    let job = ej.status.and_then(|s| s.job_name).expect("job name");
    // The Job controller could create the pod: real PodSecurity admission accepted it.
    let pods = judge_pods(&env, &job, 1).await;
    let spec = pods[0].spec.clone().expect("spec");
    assert_eq!(spec.automount_service_account_token, Some(false));
    let key = spec.volumes.iter().flatten().find(|v| v.name == "key").expect("key volume");
    assert_eq!(key.empty_dir.as_ref().and_then(|e| e.medium.as_deref()), Some("Memory"));
    let judge = &spec.containers[0];
    let mounts: Vec<_> = judge.volume_mounts.iter().flatten().map(|m| m.mount_path.clone()).collect();
    assert!(!mounts.iter().any(|m| m.contains("serviceaccount") || m.contains("broker-token")), "{mounts:?}");
    // And a privileged pod is refused in the same namespace, so the check is real.
    let pods_api: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let bad: Pod = serde_json::from_value(json!({
        "metadata": { "name": "privileged" },
        "spec": { "containers": [{ "name": "c", "image": "x", "securityContext": { "privileged": true } }] }
    }))
    .expect("pod");
    assert!(
        pods_api.create(&PostParams::default(), &bad).await.is_err(),
        "restricted namespace refuses privileged pods"
    );
    env.assert_no_plaintext().await;
}

#[tokio::test]
async fn unknown_scorer_and_bad_specs_are_rejected_by_the_api_server() {
    let env = TestEnv::new("ej-badspec").await;
    let api: Api<EvalJob> = Api::namespaced(env.client.clone(), &env.ns);
    let attempt = |spec: serde_json::Value| {
        let api = api.clone();
        let ns = env.ns.clone();
        async move {
            let obj: kube::api::DynamicObject = serde_json::from_value(json!({
                "apiVersion": "launchgate.ai/v1alpha1", "kind": "EvalJob",
                "metadata": { "name": "bad", "namespace": ns }, "spec": spec
            }))
            .expect("object");
            let dynapi: Api<kube::api::DynamicObject> = Api::namespaced_with(
                api.into_client(),
                obj.metadata.namespace.as_deref().unwrap_or_default(),
                &kube::api::ApiResource::erase::<EvalJob>(&()),
            );
            match dynapi.create(&PostParams::default(), &obj).await {
                Err(kube::Error::Api(s)) => s.message,
                other => panic!("expected a rejection, got {other:?}"),
            }
        }
    };
    let msg =
        attempt(json!({ "provider": "openai", "scorers": [{ "type": "bleu" }], "cases": [{ "output": "x" }] })).await;
    assert!(msg.contains("Unsupported value") && msg.contains("bleu"), "{msg}");
    let msg =
        attempt(json!({ "provider": "openai", "scorers": [{ "type": "llm_judge" }], "cases": [{ "output": "x" }] }))
            .await;
    assert!(msg.contains("llm_judge needs a rubric"), "{msg}");
    let msg = attempt(json!({ "provider": "openai", "scorers": [{ "type": "json_valid" }] })).await;
    assert!(msg.contains("set exactly one of cases and casesFrom"), "{msg}");
    let msg =
        attempt(json!({ "provider": "openai", "scorers": [{ "type": "regex" }], "cases": [{ "output": "x" }] })).await;
    assert!(msg.contains("regex needs a pattern"), "{msg}");
}

#[tokio::test]
async fn waits_for_a_key_and_resumes_when_one_appears() {
    let mut env = TestEnv::new("ej-wait").await;
    create_evaljob(&env, "eval", judge_spec("anthropic", cases(2))).await;
    let ej = wait_evaljob(&env, "eval", "WaitingForKey", |e| phase(e) == Some(EvalPhase::WaitingForKey)).await;
    assert!(ej.status.and_then(|s| s.job_name).is_none(), "no Job while waiting");
    default_key(&mut env, "claude", Provider::Anthropic).await;
    let ej = wait_evaljob(&env, "eval", "Running", |e| phase(e) == Some(EvalPhase::Running)).await;
    let st = ej.status.expect("status");
    assert_eq!(st.key_ref.as_deref(), Some("claude"));
    assert_eq!(st.progress.map(|p| p.total), Some(2));
    env.assert_no_plaintext().await;
}

fn owner_job(pod: &Pod) -> OwnerReference {
    pod.owner_references().iter().find(|o| o.kind == "Job").cloned().expect("job owner")
}

async fn create_pod(env: &TestEnv, ns: &str, name: &str, owners: Vec<OwnerReference>) -> Pod {
    let api: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            owner_references: Some(owners),
            finalizers: Some(vec!["launchgate.ai/test-hold".into()]),
            ..Default::default()
        },
        spec: Some(serde_json::from_value(json!({ "containers": [{ "name": "c", "image": "x" }] })).expect("spec")),
        ..Default::default()
    };
    api.create(&PostParams::default(), &pod).await.expect("pod created")
}

#[tokio::test]
async fn broker_refuses_every_wrong_caller_with_its_reason() {
    let mut env = TestEnv::new("ej-broker").await;
    let plaintext = default_key(&mut env, "openai", Provider::OpenAi).await;
    create_evaljob(&env, "eval", judge_spec("openai", cases(2))).await;
    let ej = wait_evaljob(&env, "eval", "Running", |e| phase(e) == Some(EvalPhase::Running)).await;
    let pod = judge_pods(&env, &ej.status.and_then(|s| s.job_name).expect("job"), 1).await.remove(0);
    // Its containers would run here: the kubelet would report this address for it.
    let pod = report_pod_address(&env, &pod, "127.0.0.1").await;
    let uid = pod.uid().expect("uid");
    let ns = env.ns.clone();
    let token = pod_token(&env, &ns, &pod, wire::KEY_AUDIENCE).await;

    // The pod the key belongs to gets it.
    assert_eq!(ask_broker(&env, &token, &uid).await, (200, plaintext.clone()));
    // Replay: the token of this pod, presented as another pod.
    assert_eq!(ask_broker(&env, &token, "another-pod-uid").await, (403, "ReplayFromOtherPod".into()));
    // A token for another audience (the results one, or the API server's).
    let results_token = pod_token(&env, &ns, &pod, wire::RESULTS_AUDIENCE).await;
    assert_eq!(ask_broker(&env, &results_token, &uid).await, (401, "WrongAudience".into()));
    let api_token = pod_token(&env, &ns, &pod, "https://kubernetes.default.svc").await;
    assert_eq!(ask_broker(&env, &api_token, &uid).await, (401, "WrongAudience".into()));
    // Not a token at all, and an expired one signed by the cluster's own service-account key.
    assert_eq!(ask_broker(&env, "not.a.token", &uid).await, (401, "InvalidToken".into()));
    if let Some(expired) = common::expired_token(&env, &pod) {
        assert_eq!(ask_broker(&env, &expired, &uid).await, (401, "TokenExpired".into()));
    }
    // A pod of the same namespace that the EvalJob's Job does not own.
    let stray = create_pod(&env, &ns, "stray", vec![]).await;
    let t = pod_token(&env, &ns, &stray, wire::KEY_AUDIENCE).await;
    assert_eq!(ask_broker(&env, &t, &stray.uid().expect("uid")).await, (403, "NotOwnedByEvalJob".into()));
    // A pod in another namespace that claims the Job as its owner.
    let other_ns = format!("{ns}-other");
    let nsapi: Api<Namespace> = Api::all(env.client.clone());
    let obj =
        Namespace { metadata: ObjectMeta { name: Some(other_ns.clone()), ..Default::default() }, ..Default::default() };
    nsapi.create(&PostParams::default(), &obj).await.expect("namespace");
    eventually("default ServiceAccount", TIMEOUT, || async {
        let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(env.client.clone(), &other_ns);
        sas.get_opt("default").await.ok().flatten()
    })
    .await;
    // The garbage collector deletes a pod whose owner is not in its namespace: a finalizer keeps
    // it (and its token valid) long enough, and the owner is added after the token is issued.
    let borrower = create_pod(&env, &other_ns, "borrower", vec![]).await;
    let t = pod_token(&env, &other_ns, &borrower, wire::KEY_AUDIENCE).await;
    let other_pods: Api<Pod> = Api::namespaced(env.client.clone(), &other_ns);
    let claim = json!({ "metadata": { "ownerReferences": [owner_job(&pod)] } });
    other_pods.patch("borrower", &PatchParams::default(), &Patch::Merge(&claim)).await.expect("claim the Job");
    assert_eq!(ask_broker(&env, &t, &borrower.uid().expect("uid")).await, (403, "PodInOtherNamespace".into()));
    // Every refusal is counted under its own reason.
    let metrics = metrics(&env).await;
    for reason in ["ReplayFromOtherPod", "WrongAudience", "InvalidToken", "NotOwnedByEvalJob", "PodInOtherNamespace"] {
        let line = format!("byok_broker_requests_total{{endpoint=\"key\",outcome=\"{reason}\"}}");
        assert!(metrics.contains(&line), "{line} missing in:\n{metrics}");
    }
    assert!(metrics.contains("byok_validations_total{provider=\"openai\",outcome=\"Valid\"} 1"), "{metrics}");
    // Revoked key: refused from that moment.
    let patch = json!({ "spec": { "revoked": true } });
    env.keys().patch("openai", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("revoke");
    env.wait_phase("openai", KeyPhase::Revoked).await;
    let (status, reason) = ask_broker(&env, &token, &uid).await;
    assert_eq!((status, reason.as_str()), (403, "KeyRevoked"));
    env.assert_no_plaintext().await;
}

#[tokio::test]
async fn local_judge_scores_all_four_providers_and_reports_results() {
    let mut env = TestEnv::new("ej-flow").await;
    let providers = [
        ("openai", Provider::OpenAi),
        ("anthropic", Provider::Anthropic),
        ("google", Provider::Google),
        ("azure_openai", Provider::AzureOpenAi),
    ];
    for (name, p) in providers {
        default_key(&mut env, &name.replace('_', "-"), p).await;
        create_evaljob(&env, &format!("eval-{}", name.replace('_', "-")), judge_spec(name, cases(6))).await;
    }
    for (name, _) in providers {
        let ej_name = format!("eval-{}", name.replace('_', "-"));
        let ej = wait_evaljob(&env, &ej_name, "Running", |e| phase(e) == Some(EvalPhase::Running)).await;
        let pod = judge_pods(&env, &ej.status.and_then(|s| s.job_name).expect("job"), 1).await.remove(0);
        let local = LocalPod::prepare(&env, pod).await;
        let fetched = local.run("fetch-key", &[]).await;
        env.extra_logs.push((format!("{ej_name} fetch-key"), format!("{fetched:?}")));
        assert!(fetched.status.success(), "fetch-key: {}", String::from_utf8_lossy(&fetched.stderr));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(local.key_file()).expect("key file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o400, "key file is owner-read-only");
        let ran = local.run("judge", &[]).await;
        env.extra_logs.push((format!("{ej_name} judge"), format!("{ran:?}")));
        assert!(ran.status.success(), "judge: {}", String::from_utf8_lossy(&ran.stderr));
        let done = wait_evaljob(&env, &ej_name, "Succeeded", |e| phase(e) == Some(EvalPhase::Succeeded)).await;
        let st = done.status.expect("status");
        let summary = st.summary.expect("summary");
        assert_eq!((summary.passed, summary.failed, summary.errored), (3, 3, 0), "{name}: {summary:?}");
        assert_eq!(st.progress.map(|p| (p.completed, p.total)), Some((6, 6)));
        assert!(st.usage.is_some_and(|u| u.input_tokens > 0 && u.output_tokens > 0), "{name}: tokens counted");
        let refs = st.results_ref.expect("results ref").config_maps;
        let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.ns);
        let junit = cms.get(&refs[0]).await.expect("junit").data.expect("data");
        assert!(junit["junit.xml"].contains("<testsuite"), "JUnit XML for CI");
        // The run is over: the broker no longer hands out its key.
        let token = std::fs::read_to_string(local.path("broker-token/token")).expect("token");
        let (status, reason) = ask_broker(&env, &token, &local.pod.uid().expect("uid")).await;
        assert_eq!((status, reason.as_str()), (403, "JobFinished"));
    }
    env.assert_no_plaintext().await;
}

#[tokio::test]
async fn local_judge_errors_malformed_cases_by_line_and_runs_the_rest() {
    let mut env = TestEnv::new("ej-malformed").await;
    default_key(&mut env, "openai", Provider::OpenAi).await;
    let jsonl = "{\"id\":\"a\",\"output\":\"the answer mock-score=0.9\"}\n{not json\n{\"id\":\"c\",\"output\":\"the answer mock-score=0.8\"}\n";
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.ns);
    let cm = ConfigMap {
        metadata: ObjectMeta { name: Some("suite".into()), ..Default::default() },
        data: Some([("cases.jsonl".to_string(), jsonl.to_string())].into()),
        ..Default::default()
    };
    cms.create(&PostParams::default(), &cm).await.expect("cases");
    let mut spec = judge_spec("openai", json!([]));
    spec.as_object_mut().expect("object").remove("cases");
    spec["casesFrom"] = json!({ "configMapKeyRef": { "name": "suite", "key": "cases.jsonl" } });
    create_evaljob(&env, "eval", spec).await;
    let ej = wait_evaljob(&env, "eval", "Running", |e| phase(e) == Some(EvalPhase::Running)).await;
    let pod = judge_pods(&env, &ej.status.and_then(|s| s.job_name).expect("job"), 1).await.remove(0);
    let local = LocalPod::prepare(&env, pod).await;
    assert!(local.run("fetch-key", &[]).await.status.success());
    let ran = local.run("judge", &[]).await;
    env.extra_logs.push(("judge".into(), format!("{ran:?}")));
    assert!(ran.status.success(), "{}", String::from_utf8_lossy(&ran.stderr));
    let done = wait_evaljob(&env, "eval", "Succeeded", |e| phase(e) == Some(EvalPhase::Succeeded)).await;
    let s = done.status.clone().and_then(|s| s.summary).expect("summary");
    let refs = done.status.and_then(|s| s.results_ref).expect("refs").config_maps;
    let all: String = futures::future::join_all(refs.iter().map(|r| cms.get(r)))
        .await
        .into_iter()
        .filter_map(|c| c.ok()?.data?.get("results.jsonl").cloned())
        .collect();
    assert_eq!((s.passed, s.errored), (2, 1), "{s:?}\n{all}");
    assert!(all.contains("line 2"), "the malformed case names its line: {all}");
    env.assert_no_plaintext().await;
}

#[tokio::test]
async fn local_judge_revoked_mid_run_errors_the_remaining_llm_cases() {
    let mut env = TestEnv::new("ej-revoke").await;
    let key = default_key(&mut env, "openai", Provider::OpenAi).await;
    let mut spec = judge_spec("openai", cases(40));
    spec["concurrency"] = json!(2);
    create_evaljob(&env, "eval", spec).await;
    let ej = wait_evaljob(&env, "eval", "Running", |e| phase(e) == Some(EvalPhase::Running)).await;
    let pod = judge_pods(&env, &ej.status.and_then(|s| s.job_name).expect("job"), 1).await.remove(0);
    let local = LocalPod::prepare(&env, pod).await;
    assert!(local.run("fetch-key", &[]).await.status.success());
    // Slow provider: 40 cases at concurrency 2 take seconds, time enough to revoke mid-run.
    env.mock.set_latency(Duration::from_millis(250));
    let judge = tokio::spawn(async move { local.run("judge", &[]).await });
    wait_evaljob(&env, "eval", "some results", |e| {
        e.status.as_ref().and_then(|s| s.progress.as_ref()).is_some_and(|p| p.completed >= 2)
    })
    .await;
    let patch = json!({ "spec": { "revoked": true } });
    env.keys().patch("openai", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("revoke");
    let ran = judge.await.expect("judge task");
    env.extra_logs.push(("judge".into(), format!("{ran:?}")));
    let done = wait_evaljob(&env, "eval", "Succeeded", |e| phase(e) == Some(EvalPhase::Succeeded)).await;
    let s = done.status.and_then(|s| s.summary).expect("summary");
    assert!(s.errored > 0 && s.errored < 40, "some llm_judge cases errored with KeyRevoked: {s:?}");
    let calls_at_end = env.mock.requests_for_key(&key);
    assert!(calls_at_end < 40, "no provider calls after revocation ({calls_at_end})");
    // New EvalJobs for the provider wait for a new key.
    create_evaljob(&env, "after", judge_spec("openai", cases(2))).await;
    wait_evaljob(&env, "after", "WaitingForKey", |e| phase(e) == Some(EvalPhase::WaitingForKey)).await;
    env.assert_no_plaintext().await;
}

#[tokio::test]
async fn dying_and_retired_models_are_named_on_keys_and_evaljobs() {
    use byok_operator::crd::conditions::{MODEL_DEPRECATED, byokkey::VALIDATED, lifecycle};
    let mut env = TestEnv::new("ej-models").await;
    let condition = |k: &byok_operator::crd::ByokKey, t: &str| {
        k.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == t).cloned())
    };
    // A key for a model that shuts down on a known date: Ready, warned, with the date.
    let key = common::fake_key(Provider::OpenAi, "dying");
    env.create_secret("dying-src", "apiKey", key.as_bytes()).await;
    let spec = byok_operator::crd::ByokKeySpec {
        model: Some("gpt-4o".into()),
        default: true,
        ..env.spec(Provider::OpenAi, "dying-src")
    };
    env.create_key("dying", spec).await;
    let k = env.wait_phase("dying", KeyPhase::Ready).await;
    let c = condition(&k, MODEL_DEPRECATED).expect("ModelDeprecated");
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", lifecycle::DEPRECATED));
    assert!(c.message.contains("2027-01-14") && c.message.contains("gpt-5.1"), "{}", c.message);
    env.wait_event("dying", "ModelDeprecated").await;
    // A shut-down model: Invalid with a reason that says so, not a bare 404.
    let key = common::fake_key(Provider::Anthropic, "gone");
    env.create_secret("gone-src", "apiKey", key.as_bytes()).await;
    let spec = byok_operator::crd::ByokKeySpec {
        model: Some("claude-sonnet-4-5".into()),
        ..env.spec(Provider::Anthropic, "gone-src")
    };
    env.create_key("gone", spec).await;
    let k = env.wait_phase("gone", KeyPhase::Invalid).await;
    let c = condition(&k, VALIDATED).expect("Validated");
    assert_eq!(c.reason, lifecycle::RETIRED);
    assert!(c.message.contains("2026-11-30") && c.message.contains("claude-sonnet-4-6"), "{}", c.message);
    // A current default: the condition says so.
    default_key(&mut env, "current", Provider::Anthropic).await;
    let k = env.wait_phase("current", KeyPhase::Ready).await;
    assert_eq!(condition(&k, MODEL_DEPRECATED).map(|c| c.reason), Some(lifecycle::CURRENT.to_string()));
    // An EvalJob judged by the dying model carries the warning and its Event.
    create_evaljob(&env, "eval", judge_spec("openai", cases(1))).await;
    let ej = wait_evaljob(&env, "eval", "ModelDeprecated", |e| {
        e.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == MODEL_DEPRECATED))
    })
    .await;
    let st = ej.status.expect("status");
    let c = st.conditions.iter().find(|c| c.type_ == MODEL_DEPRECATED).expect("condition");
    assert_eq!((c.status.as_str(), st.model.as_deref()), ("True", Some("gpt-4o")));
    assert!(c.message.contains("2027-01-14"), "{}", c.message);
    env.wait_event("eval", "ModelDeprecated").await;
    env.assert_no_plaintext().await;
}

/// A judge panel on the control plane: an OpenAI and an Anthropic judge, each with its provider's
/// default key of the namespace; the Anthropic key is revoked after the pod fetched it. Its
/// verdicts error, the OpenAI judge's carry every case, and the agreement is reported.
#[tokio::test]
async fn local_judge_panel_with_two_providers_and_one_revoked_key() {
    let mut env = TestEnv::new("ej-panel").await;
    let main = default_key(&mut env, "openai", Provider::OpenAi).await;
    let anthropic = default_key(&mut env, "anthropic", Provider::Anthropic).await;
    let google = default_key(&mut env, "google", Provider::Google).await;
    let mut spec = judge_spec("openai", cases(10));
    spec["scorers"][0]["name"] = json!("panel");
    spec["scorers"][0]["judges"] = json!([{ "provider": "openai" }, { "provider": "anthropic" }]);
    spec["scorers"][0]["aggregate"] = json!("majority");
    spec["concurrency"] = json!(1);
    create_evaljob(&env, "eval", spec).await;
    let ej = wait_evaljob(&env, "eval", "Running", |e| phase(e) == Some(EvalPhase::Running)).await;
    let st = ej.status.expect("status");
    let judges: Vec<(String, String, String)> =
        st.judges.iter().map(|j| (j.scorer.clone(), j.key_ref.clone(), j.key_prefix.clone())).collect();
    assert_eq!(
        judges,
        [
            ("panel".into(), "openai".into(), main[..8].to_string()),
            ("panel".into(), "anthropic".into(), anthropic[..8].to_string())
        ]
    );
    let pod = judge_pods(&env, &st.job_name.expect("job"), 1).await.remove(0);
    let local = LocalPod::prepare(&env, pod).await;
    let fetched = local.run("fetch-key", &[]).await;
    assert!(fetched.status.success(), "fetch-key: {}", String::from_utf8_lossy(&fetched.stderr));
    let key_dir = local.key_file().parent().expect("key dir").to_path_buf();
    let names: std::collections::BTreeSet<String> = std::fs::read_dir(&key_dir)
        .expect("key dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into())
        .collect();
    assert_eq!(names, ["key", "key.anthropic", "key.openai"].map(String::from).into(), "the panel's keys, no other");
    assert_eq!(std::fs::read_to_string(key_dir.join("key.anthropic")).expect("anthropic key"), anthropic);
    // Revoked once the pod has it: the broker tells the judge in the answer to its first progress
    // report (one a second); a slow provider makes that mid-run.
    env.mock.set_latency(Duration::from_millis(300));
    let patch = json!({ "spec": { "revoked": true } });
    env.keys().patch("anthropic", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("revoke");
    env.wait_key("anthropic", "Revoked", |k| k.status.as_ref().and_then(|s| s.phase) == Some(KeyPhase::Revoked)).await;
    // The operator's own validations of the keys are counted by the mock as well.
    let before = [&main, &anthropic, &google].map(|k| env.mock.requests_for_key(k));
    let ran = local.run("judge", &[]).await;
    assert!(ran.status.success(), "judge: {}", String::from_utf8_lossy(&ran.stderr));
    let done = wait_evaljob(&env, "eval", "Succeeded", |e| phase(e) == Some(EvalPhase::Succeeded)).await;
    let summary = done.status.and_then(|s| s.summary).expect("summary");
    let panel = summary.scorers.iter().find(|s| s.name == "panel").expect("panel scorer");
    // Even cases score 0.9, odd ones 0.2: the OpenAI judge alone is the majority once Anthropic's key is gone.
    assert_eq!((panel.passed, panel.failed, panel.errored), (5, 5, 0), "{summary:?}");
    assert!(panel.agreement.is_none_or(|a| a == 1.0), "the judges that answered together agreed: {summary:?}");
    assert_eq!(env.mock.requests_for_key(&main) - before[0], 10, "the OpenAI judge judged every case");
    let judged = env.mock.requests_for_key(&anthropic) - before[1];
    assert!(judged < 10, "no Anthropic call once the broker said revoked ({judged} in all)");
    assert_eq!(env.mock.requests_for_key(&google), before[2], "a key no judge names is never judged with");
    env.assert_no_plaintext().await;
}
