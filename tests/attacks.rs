//! Attacks on the promise: after a key is added nobody sees more than its 8-character prefix, and
//! the plaintext exists only in memory in the judge pod at the moment of use. Each test does what
//! an attacker in one role would do, against the real control plane (and, for `node_*`, the real
//! node), and asserts that the key does not reach them and that the refusal says why.
//!
//! Roles: the key owner (Secrets, ByokKeys), the evaluator (creates EvalJobs), the namespace
//! editor (pods, ConfigMaps, tokens: the `edit` ClusterRole). See docs/security.md.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use byok_operator::crd::{AzureSpec, ByokKeySpec, EvalPhase, KeyPhase, Provider, SecretKeyRef};
use byok_operator::judge::wire;
use common::broker::{ask_broker, broker_get_with, broker_url, report_pod_address};
use common::evaljobs::{cases, create_evaljob, default_key, judge_spec, phase, wait_evaljob};
use common::judge_pod::{LocalPod, judge_pods, pod_token};
use common::{AZURE_ENDPOINT, EnvOptions, NO_AZURE_GATEWAY, TIMEOUT, TestEnv, eventually, fake_key};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

/// What an attacker's server received: every request line and header block, in full.
#[derive(Clone, Default)]
struct Listener {
    addr: Option<SocketAddr>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Listener {
    /// A plain HTTP server on loopback that records every request and answers 200 `{}`.
    async fn start() -> Self {
        use axum::extract::Request;
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let record = seen.clone();
        let app = axum::Router::new().fallback(move |req: Request| {
            let record = record.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
                let text =
                    format!("{} {} {:?} {}", parts.method, parts.uri, parts.headers, String::from_utf8_lossy(&body));
                record.lock().expect("lock").push(text);
                axum::Json(json!({}))
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr: Some(addr), seen }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr.expect("started"))
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().expect("lock").clone()
    }

    /// Nothing the attacker received holds any of `keys` (nor what follows the prefix).
    fn assert_got_no_key(&self, keys: &[String]) {
        for r in self.requests() {
            for k in keys {
                assert!(!r.contains(k.as_str()) && !r.contains(&k[8..]), "the attacker's listener received the key");
            }
        }
    }
}

/// A server that answers every request with a redirect to `to` (a provider, or a gateway, turned hostile).
async fn redirector(to: String) -> String {
    let app = axum::Router::new().fallback(move || {
        let to = to.clone();
        async move { (axum::http::StatusCode::TEMPORARY_REDIRECT, [(axum::http::header::LOCATION, to)]) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn condition(k: &byok_operator::crd::ByokKey, type_: &str) -> Option<(String, String)> {
    let c = k.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.reason.clone(), c.message.clone()))
}

async fn wait_condition(env: &TestEnv, key: &str, type_: &str, reason: &str) -> byok_operator::crd::ByokKey {
    env.wait_key(key, &format!("{type_} reason {reason}"), |k| condition(k, type_).is_some_and(|(r, _)| r == reason))
        .await
}

/// The EvalJob `name` Running, and its first judge pod.
async fn running_pod(env: &TestEnv, name: &str) -> Pod {
    let ej = wait_evaljob(env, name, "Running", |e| phase(e) == Some(EvalPhase::Running)).await;
    judge_pods(env, &ej.status.and_then(|s| s.job_name).expect("job"), 1).await.remove(0)
}

// ---- evaluator ----------------------------------------------------------------------------------

/// Path 1: an EvalJob that names its own image for the pod that receives the key.
#[tokio::test]
async fn evaluator_cannot_choose_the_image_that_receives_the_key() {
    let mut env = TestEnv::new("atk-image").await;
    let key = default_key(&mut env, "openai", Provider::OpenAi).await;
    let mut spec = judge_spec("openai", cases(2));
    spec["template"] = json!({ "image": "registry.attacker.example/print-the-key:1" });
    let api: Api<byok_operator::crd::EvalJob> = Api::namespaced(env.client.clone(), &env.ns);
    let ej: byok_operator::crd::EvalJob = serde_json::from_value(json!({
        "apiVersion": "launchgate.ai/v1alpha1", "kind": "EvalJob", "metadata": { "name": "steal" }, "spec": spec
    }))
    .expect("evaljob");
    let err = api.create(&PostParams::default(), &ej).await.expect_err("the API server refuses the image");
    assert!(err.to_string().contains("spec.template.image is not allowed"), "{err}");
    // Without the field the run goes ahead with the install's image in both containers.
    create_evaljob(&env, "fair", judge_spec("openai", cases(2))).await;
    let pod = running_pod(&env, "fair").await;
    let spec = pod.spec.expect("spec");
    for c in spec.init_containers.iter().flatten().chain(spec.containers.iter()) {
        // The operator's default judge image (the test environment sets none): the published one.
        let install = concat!("ghcr.io/launchgate-ai/byok-operator:", env!("CARGO_PKG_VERSION"));
        assert_eq!(c.image.as_deref(), Some(install), "{}", c.name);
    }
    assert!(env.plaintexts.contains(&key));
    env.assert_no_plaintext().await;
}

/// The evaluator role (create EvalJobs, read ByokKeys) runs an evaluation but reads no key.
#[tokio::test]
async fn evaluator_runs_evaljobs_but_can_read_no_key() {
    let mut env = TestEnv::new("atk-evaluator").await;
    let key = default_key(&mut env, "openai", Provider::OpenAi).await;
    let evaluator = common::roles::evaluator(&env).await;
    let ejs: Api<byok_operator::crd::EvalJob> = Api::namespaced(evaluator.clone(), &env.ns);
    let ej: byok_operator::crd::EvalJob = serde_json::from_value(json!({
        "apiVersion": "launchgate.ai/v1alpha1", "kind": "EvalJob", "metadata": { "name": "mine" },
        "spec": judge_spec("openai", cases(2))
    }))
    .expect("evaljob");
    ejs.create(&PostParams::default(), &ej).await.expect("the evaluator may create EvalJobs");
    // What the evaluator can read: the ByokKey (prefix only) and the EvalJob. Not Secrets, not pods.
    let keys: Api<byok_operator::crd::ByokKey> = Api::namespaced(evaluator.clone(), &env.ns);
    let k = keys.get("openai").await.expect("the evaluator may read ByokKeys");
    assert_eq!(k.status.and_then(|s| s.key_prefix), Some(key[..8].to_string()));
    let secrets: Api<Secret> = Api::namespaced(evaluator.clone(), &env.ns);
    assert!(secrets.list(&Default::default()).await.is_err(), "the evaluator may not list Secrets");
    let pods: Api<Pod> = Api::namespaced(evaluator.clone(), &env.ns);
    assert!(pods.list(&Default::default()).await.is_err(), "the evaluator may not read pods");
    let running = wait_evaljob(&env, "mine", "Running", |e| phase(e) == Some(EvalPhase::Running)).await;
    let text = serde_json::to_string(&ejs.get("mine").await.expect("own EvalJob")).expect("json");
    assert!(!text.contains(&key[8..]) && running.status.is_some());
    env.assert_no_plaintext().await;
}

// ---- key owner: sources -------------------------------------------------------------------------

/// Path 2: a ByokKey pointing at a Secret that is not a provider key (a database password).
#[tokio::test]
async fn a_secret_that_did_not_opt_in_is_never_imported_nor_deleted() {
    let mut env = TestEnv::new("atk-source").await;
    let password = format!("db-password-{}", common::random_hex(12));
    env.plaintexts.push(password.clone());
    let db = Secret {
        metadata: ObjectMeta { name: Some("postgres".into()), ..Default::default() },
        type_: Some("Opaque".into()),
        data: Some([("password".to_string(), ByteString(password.as_bytes().to_vec()))].into()),
        ..Default::default()
    };
    let before = env.secrets().create(&PostParams::default(), &db).await.expect("secret");
    let spec = ByokKeySpec {
        secret_ref: Some(SecretKeyRef { name: "postgres".into(), key: "password".into() }),
        ..env.spec(Provider::OpenAi, "postgres")
    };
    env.create_key("grab", spec).await;
    let k = wait_condition(&env, "grab", "Imported", "SourceNotOptedIn").await;
    assert!(condition(&k, "Imported").is_some_and(|(_, m)| m.contains("left untouched")));
    assert_eq!(k.status.as_ref().and_then(|s| s.key_prefix.clone()), None, "not even the prefix is shown");
    env.wait_event("grab", "SourceNotOptedIn").await;
    // Annotated for another ByokKey: refused too, without being read.
    let mut other = db.clone();
    other.metadata.name = Some("for-someone-else".into());
    other.metadata.annotations = Some([("launchgate.ai/byokkey".to_string(), "their-key".to_string())].into());
    env.secrets().create(&PostParams::default(), &other).await.expect("secret");
    let spec = ByokKeySpec {
        secret_ref: Some(SecretKeyRef { name: "for-someone-else".into(), key: "password".into() }),
        ..env.spec(Provider::OpenAi, "x")
    };
    env.create_key("borrow", spec).await;
    wait_condition(&env, "borrow", "Imported", "SourceNotOptedIn").await;
    let after = env.secrets().get("postgres").await.expect("the Secret is still there");
    assert_eq!(after.resource_version(), before.resource_version(), "left untouched");
    assert!(env.secrets().get_opt("for-someone-else").await.expect("get").is_some());
    // A Secret that opted in (the plugin's annotation) is imported as before.
    let key = fake_key(Provider::OpenAi, "");
    env.plaintexts.push(key.clone());
    let mut opted = db.clone();
    opted.metadata.name = Some("openai-src".into());
    opted.metadata.annotations = Some([("launchgate.ai/byokkey".to_string(), "openai".to_string())].into());
    opted.data = Some([("apiKey".to_string(), ByteString(key.as_bytes().to_vec()))].into());
    env.secrets().create(&PostParams::default(), &opted).await.expect("secret");
    env.create_key("openai", env.spec(Provider::OpenAi, "openai-src")).await;
    env.wait_phase("openai", KeyPhase::Ready).await;
    env.assert_no_plaintext().await;
}

/// Path 2, by name: a ByokKey named so that its ciphertext's name is a Secret someone already
/// keeps (a namespace editor's, or a planted one) never writes over it nor deletes it; only a
/// ciphertext an earlier ByokKey of that name left behind is replaced.
#[tokio::test]
async fn a_byokkey_never_writes_over_or_deletes_a_secret_holding_its_ciphertexts_name() {
    let mut env = TestEnv::new("atk-squat").await;
    let password = format!("db-password-{}", common::random_hex(12));
    env.plaintexts.push(password.clone());
    let theirs = Secret {
        metadata: ObjectMeta {
            name: Some(byok_operator::keystore::encrypted_secret_name("squat")),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some([("password".to_string(), ByteString(password.as_bytes().to_vec()))].into()),
        ..Default::default()
    };
    let before = env.secrets().create(&PostParams::default(), &theirs).await.expect("secret");
    let key = env.add_key("squat", Provider::OpenAi, "").await;
    let k = wait_condition(&env, "squat", "Imported", "CiphertextNameTaken").await;
    assert!(condition(&k, "Imported").is_some_and(|(_, m)| m.contains("left untouched")), "{k:?}");
    assert_ne!(k.status.as_ref().and_then(|s| s.phase), Some(KeyPhase::Ready));
    env.wait_event("squat", "CiphertextNameTaken").await;
    let after = env.secrets().get(&before.name_any()).await.expect("their Secret is still there");
    assert_eq!(after.resource_version(), before.resource_version(), "left untouched");
    assert_eq!(after.data, before.data);
    // Nothing lost: the source was not deleted, since nothing was stored.
    let src = env.secrets().get("squat-src").await.expect("the source stays");
    assert_eq!(src.data.and_then(|d| d.get("apiKey").cloned()), Some(ByteString(key.into_bytes())));
    // Nor does a revoke delete it: a key deletes only a ciphertext of its own.
    let revoke = json!({ "spec": { "revoked": true } });
    env.keys().patch("squat", &PatchParams::default(), &Patch::Merge(&revoke)).await.expect("revoke");
    env.wait_phase("squat", KeyPhase::Revoked).await;
    let after = env.secrets().get(&before.name_any()).await.expect("their Secret survives the revoke");
    assert_eq!(after.resource_version(), before.resource_version(), "left untouched");
    env.assert_no_plaintext().await;
}

/// Path 2: from the operator's own namespace (the keyring Secret lives there).
#[tokio::test]
async fn keys_are_never_imported_from_the_operators_namespace() {
    let options = EnvOptions { operator_in_team_namespace: true, ..EnvOptions::default() };
    let mut env = TestEnv::with_options("atk-opns", options).await;
    let keyring =
        eventually("keyring", TIMEOUT, || async { env.secrets().get_opt("byok-operator-kek").await.ok().flatten() })
            .await;
    let active =
        keyring.data.as_ref().and_then(|d| d.keys().find(|k| k.as_str() != "active").cloned()).expect("a KEK entry");
    let spec = ByokKeySpec {
        secret_ref: Some(SecretKeyRef { name: "byok-operator-kek".into(), key: active }),
        ..env.spec(Provider::OpenAi, "x")
    };
    env.create_key("kek-thief", spec).await;
    wait_condition(&env, "kek-thief", "Imported", "SourceInOperatorNamespace").await;
    // Even a Secret that opted in is not imported here.
    env.add_key("opted", Provider::OpenAi, "").await;
    wait_condition(&env, "opted", "Imported", "SourceInOperatorNamespace").await;
    let after = env.secrets().get("byok-operator-kek").await.expect("keyring still there");
    assert_eq!(after.resource_version(), keyring.resource_version(), "the keyring was not touched");
    assert!(env.secrets().get_opt("opted-src").await.expect("get").is_some(), "the source was not deleted");
    for k in ["kek-thief", "opted"] {
        let key = env.keys().get(k).await.expect("key");
        assert_eq!(key.status.and_then(|s| s.key_prefix), None);
    }
}

// ---- key owner: where the key is sent ------------------------------------------------------------

/// Path 3: the Azure endpoint is where the key goes. CEL refuses non-https and non-host URLs;
/// the operator refuses hosts off the install's allow-list, without sending anything.
#[tokio::test]
async fn azure_endpoints_off_the_allow_list_never_receive_the_key() {
    let attacker = Listener::start().await;
    let options = EnvOptions {
        operator_args: vec![NO_AZURE_GATEWAY.into(), "--azure-endpoint-allow".into(), "team.openai.azure.com".into()],
        ..EnvOptions::default()
    };
    let mut env = TestEnv::with_options("atk-azure", options).await;
    let key = fake_key(Provider::AzureOpenAi, "");
    env.create_secret("az-src", "apiKey", key.as_bytes()).await;
    for endpoint in [
        attacker.url(),
        format!("https://{}", attacker.addr.expect("addr")) + "/x",
        "https://u@team.openai.azure.com".into(),
    ] {
        let spec = ByokKeySpec {
            azure: Some(AzureSpec { endpoint: endpoint.clone(), deployment: "gpt-4o".into(), api_version: None }),
            ..env.spec(Provider::AzureOpenAi, "az-src")
        };
        let err = env.keys().create(&PostParams::default(), &byok_operator::crd::ByokKey::new("az", spec)).await;
        assert!(err.is_err(), "{endpoint} must be refused by the API server");
    }
    // https and a host, but not one this install allows.
    let spec = ByokKeySpec {
        azure: Some(AzureSpec {
            endpoint: "https://attacker.openai.azure.com".into(),
            deployment: "gpt-4o".into(),
            api_version: None,
        }),
        source_policy: byok_operator::crd::SourcePolicy::Retain,
        ..env.spec(Provider::AzureOpenAi, "az-src")
    };
    env.create_key("az", spec).await;
    let k = wait_condition(&env, "az", "Validated", "EndpointNotAllowed").await;
    assert!(condition(&k, "Validated").is_some_and(|(_, m)| m.contains("not allowed")), "{k:?}");
    attacker.assert_got_no_key(&[key]);
    assert!(attacker.requests().is_empty());
    env.assert_no_plaintext().await;
}

/// A provider (or gateway) that answers with a redirect does not get the key header forwarded.
#[tokio::test]
async fn a_redirect_from_the_provider_does_not_carry_the_key() {
    let attacker = Listener::start().await;
    let hop = redirector(format!("{}/v1/models", attacker.url())).await;
    let options = EnvOptions { operator_args: vec![format!("--openai-base-url={hop}/v1")], ..EnvOptions::default() };
    let mut env = TestEnv::with_options("atk-redirect", options).await;
    let key = env.add_key("openai", Provider::OpenAi, "").await;
    env.wait_key("openai", "validated (not Ready: the redirect is not followed)", |k| {
        condition(k, "Validated").is_some_and(|(r, _)| r == "UnexpectedResponse")
    })
    .await;
    assert!(attacker.requests().is_empty(), "the redirect was followed: {:?}", attacker.requests().len());
    attacker.assert_got_no_key(&[key]);
    env.assert_no_plaintext().await;
}

/// A sealed Azure key (safe in git) cannot be pointed at another endpoint by editing spec.azure.
#[tokio::test]
async fn a_sealed_azure_key_cannot_be_moved_to_another_endpoint() {
    let mut env = TestEnv::new("atk-sealed").await;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.op_ns);
    let public = eventually("sealing public key", TIMEOUT, || async {
        cms.get_opt("byok-sealing-key").await.ok().flatten()?.data?.get("publicKey").cloned()
    })
    .await;
    let key = fake_key(Provider::AzureOpenAi, "");
    env.plaintexts.push(key.clone());
    use byok_operator::crypto::sealing::{AzureTarget, seal};
    let bound = AzureTarget::new(AZURE_ENDPOINT, "gpt-4o");
    let sealed = seal(&public, &env.ns, "az", "azure_openai", Some(&bound), &key.clone().into()).expect("seal");
    let moved = ByokKeySpec {
        secret_ref: None,
        sealed: Some(sealed.clone()),
        azure: Some(AzureSpec {
            endpoint: "https://attacker.openai.azure.com".into(),
            deployment: "gpt-4o".into(),
            api_version: None,
        }),
        ..env.spec(Provider::AzureOpenAi, "x")
    };
    env.create_key("az", moved).await;
    let k = wait_condition(&env, "az", "Imported", "SealedKeyMismatch").await;
    assert!(condition(&k, "Imported").is_some_and(|(_, m)| m.contains("endpoint")), "{k:?}");
    // The same blob with the endpoint it was sealed for imports.
    let fixed = json!({ "spec": { "azure": { "endpoint": AZURE_ENDPOINT, "deployment": "gpt-4o" } } });
    env.keys().patch("az", &PatchParams::default(), &Patch::Merge(&fixed)).await.expect("patch back");
    env.wait_phase("az", KeyPhase::Ready).await;
    // Imported, then pointed elsewhere in git: the stored key is withdrawn, nothing is sent.
    let calls = env.mock.requests_for_key(&key);
    let moved =
        json!({ "spec": { "azure": { "endpoint": "https://attacker.openai.azure.com", "deployment": "gpt-4o" } } });
    env.keys().patch("az", &PatchParams::default(), &Patch::Merge(&moved)).await.expect("edit spec.azure");
    env.wait_key("az", "withdrawn", |k| {
        k.status.as_ref().is_some_and(|s| s.phase == Some(KeyPhase::Error) && s.encrypted_secret_ref.is_none())
    })
    .await;
    let enc = env.secrets().get_opt(&byok_operator::keystore::encrypted_secret_name("az")).await;
    assert!(enc.expect("get").is_none(), "the ciphertext was withdrawn");
    assert_eq!(env.mock.requests_for_key(&key), calls, "no call was made with the key after the edit");
    env.assert_no_plaintext().await;
}

// ---- namespace editor: the broker ---------------------------------------------------------------

/// Path 4: a namespace editor mints a token bound to the real judge pod (`kubectl create token
/// default --audience byok-broker.launchgate.ai --bound-object-kind Pod ...`) and asks from elsewhere.
#[tokio::test]
async fn a_token_minted_for_a_judge_pod_is_useless_outside_the_pod() {
    let mut env = TestEnv::new("atk-mint").await;
    default_key(&mut env, "openai", Provider::OpenAi).await;
    create_evaljob(&env, "eval", judge_spec("openai", cases(2))).await;
    let pod = running_pod(&env, "eval").await;
    // Before the kubelet reports an address: retryable, no key.
    let ns = env.ns.clone();
    let token = pod_token(&env, &ns, &pod, wire::KEY_AUDIENCE).await;
    assert_eq!(ask_broker(&env, &token, &pod.uid().expect("uid")).await, (503, "PodAddressUnknown".into()));
    // The pod runs at another address than the attacker's (the test process, on loopback).
    let pod = report_pod_address(&env, &pod, "10.255.255.7").await;
    assert_eq!(ask_broker(&env, &token, &pod.uid().expect("uid")).await, (403, "NotFromPodAddress".into()));
    let metrics = common::broker::metrics(&env).await;
    assert!(metrics.contains("outcome=\"NotFromPodAddress\"} 1"), "{metrics}");
    env.assert_no_plaintext().await;
}

/// Path 4: a pod that claims the judge Job as its owner (copied uid), without being its pod.
#[tokio::test]
async fn a_pod_with_a_copied_owner_reference_gets_nothing() {
    let mut env = TestEnv::new("atk-owner").await;
    default_key(&mut env, "openai", Provider::OpenAi).await;
    create_evaljob(&env, "eval", judge_spec("openai", cases(2))).await;
    let judge = running_pod(&env, "eval").await;
    let owner = judge.owner_references().iter().find(|o| o.kind == "Job").cloned().expect("owner");
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    // A copy of the judge pod, labels and all: admission refuses it (only the Job controller may).
    let mut copy = judge.clone();
    copy.metadata = ObjectMeta {
        name: Some("copy".into()),
        labels: judge.metadata.labels.clone(),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    };
    copy.status = None;
    // The policy is installed with the CRDs; the API server takes a moment to enforce a new one.
    let err = eventually("admission refuses a fake judge pod", TIMEOUT, || async {
        match pods.create(&PostParams::default(), &copy).await {
            Ok(_) => {
                let _ = pods.delete("copy", &Default::default()).await;
                None
            }
            Err(e) => Some(e),
        }
    })
    .await;
    assert!(err.to_string().contains("Job controller"), "{err}");
    // Without the labels it is created, and the broker refuses it: not the template's pod.
    let forged: Pod = serde_json::from_value(json!({
        "metadata": { "name": "forged", "ownerReferences": [owner], "finalizers": ["launchgate.ai/test-hold"] },
        "spec": { "containers": [{ "name": "c", "image": "attacker" }] }
    }))
    .expect("pod");
    let forged = pods.create(&PostParams::default(), &forged).await.expect("plain pod");
    let forged = report_pod_address(&env, &forged, "127.0.0.1").await;
    let ns = env.ns.clone();
    let token = pod_token(&env, &ns, &forged, wire::KEY_AUDIENCE).await;
    // Refused as not the template's pod, or (once the Job controller has released a pod that does
    // not match the Job's selector, dropping the copied reference) as not owned at all.
    let (status, reason) = ask_broker(&env, &token, &forged.uid().expect("uid")).await;
    assert_eq!(status, 403);
    assert!(["PodNotFromJobTemplate", "NotOwnedByEvalJob"].contains(&reason.as_str()), "{reason}");
    let release = json!({ "metadata": { "finalizers": null } });
    pods.patch("forged", &PatchParams::default(), &Patch::Merge(&release)).await.expect("release");
    env.assert_no_plaintext().await;
}

/// Path 4: a namespace editor deletes the judge Job and creates their own under the same name,
/// owned by the EvalJob, with their image in the template: the Job controller makes its pods (so
/// admission lets them carry the judge label), but it is not the Job the operator created.
#[tokio::test]
async fn a_judge_job_recreated_by_the_editor_gets_nothing() {
    use k8s_openapi::api::batch::v1::Job;
    let mut env = TestEnv::new("atk-rejob").await;
    default_key(&mut env, "openai", Provider::OpenAi).await;
    create_evaljob(&env, "eval", judge_spec("openai", cases(2))).await;
    let original = running_pod(&env, "eval").await;
    let jobs: Api<Job> = Api::namespaced(env.client.clone(), &env.ns);
    let job_name = original.labels().get("batch.kubernetes.io/job-name").cloned().expect("job name");
    let real = jobs.get(&job_name).await.expect("judge Job");
    jobs.delete(&job_name, &kube::api::DeleteParams::background()).await.expect("the editor may delete Jobs");
    eventually("the judge Job gone", TIMEOUT, || async { jobs.get_opt(&job_name).await.ok()?.is_none().then_some(()) })
        .await;
    let mut template = real.spec.clone().expect("spec").template;
    let labels = template.metadata.as_mut().and_then(|m| m.labels.as_mut()).expect("labels");
    labels.retain(|k, _| !k.contains("controller-uid") && !k.contains("job-name"));
    let pod_spec = template.spec.as_mut().expect("pod spec");
    for c in pod_spec.init_containers.iter_mut().flatten().chain(pod_spec.containers.iter_mut()) {
        c.image = Some("registry.attacker.example/print-the-key:1".into());
    }
    let impostor = Job {
        metadata: ObjectMeta {
            name: Some(job_name.clone()),
            labels: real.metadata.labels.clone(),
            owner_references: real.metadata.owner_references.clone(),
            ..Default::default()
        },
        spec: Some(k8s_openapi::api::batch::v1::JobSpec {
            template,
            completion_mode: Some("Indexed".into()),
            completions: Some(1),
            ..Default::default()
        }),
        status: None,
    };
    jobs.create(&PostParams::default(), &impostor).await.expect("the editor may create Jobs");
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let theirs = eventually("a pod of the impostor Job", TIMEOUT, || async {
        let list = pods
            .list(&kube::api::ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job_name}")))
            .await
            .ok()?;
        list.items.into_iter().find(|p| p.uid() != original.uid() && p.metadata.deletion_timestamp.is_none())
    })
    .await;
    let theirs = report_pod_address(&env, &theirs, "127.0.0.1").await;
    let ns = env.ns.clone();
    let token = pod_token(&env, &ns, &theirs, wire::KEY_AUDIENCE).await;
    assert_eq!(ask_broker(&env, &token, &theirs.uid().expect("uid")).await, (403, "NotOwnedByEvalJob".into()));
    env.assert_no_plaintext().await;
}

/// Path 4: a namespace editor creates a Job under the judge Job's name before the operator does
/// (their image, or the operator's plus an extra container): the operator never adopts it.
#[tokio::test]
async fn a_job_precreated_under_the_judge_jobs_name_is_never_adopted() {
    use k8s_openapi::api::batch::v1::Job;
    let mut env = TestEnv::new("atk-prejob").await;
    let jobs: Api<Job> = Api::namespaced(env.client.clone(), &env.ns);
    let squatter: Job = serde_json::from_value(json!({
        "metadata": { "name": "eval-judge" },
        "spec": { "suspend": true, "template": { "spec": { "restartPolicy": "Never",
            "containers": [{ "name": "judge", "image": "registry.attacker.example/print-the-key:1" }] } } }
    }))
    .expect("job");
    jobs.create(&PostParams::default(), &squatter).await.expect("the editor may create Jobs");
    default_key(&mut env, "openai", Provider::OpenAi).await;
    create_evaljob(&env, "eval", judge_spec("openai", cases(2))).await;
    let failed = wait_evaljob(&env, "eval", "Failed", |e| phase(e) == Some(EvalPhase::Failed)).await;
    let st = failed.status.expect("status");
    assert!(st.job_uid.is_none(), "the squatter's Job was not adopted");
    assert!(st.conditions.iter().any(|c| c.reason == "JobNameTaken"), "{:?}", st.conditions);
    env.wait_event("eval", "JobNameTaken").await;
    env.assert_no_plaintext().await;
}

/// The other side of never adopting: the operator's own Job, after a status write it lost (the
/// status lacks the Job), is recognised and taken back, so a run is not failed by a hiccup.
#[tokio::test]
async fn the_operators_own_job_is_taken_back_after_a_lost_status_write() {
    let mut env = TestEnv::new("own-job").await;
    default_key(&mut env, "openai", Provider::OpenAi).await;
    create_evaljob(&env, "eval", judge_spec("openai", cases(2))).await;
    let running = wait_evaljob(&env, "eval", "Running", |e| phase(e) == Some(EvalPhase::Running)).await;
    let job_uid = running.status.as_ref().and_then(|s| s.job_uid.clone()).expect("jobUid recorded");
    env.kill_operator();
    let api: Api<byok_operator::crd::EvalJob> = Api::namespaced(env.client.clone(), &env.ns);
    let lost = json!({ "status": { "jobName": null, "jobUid": null, "phase": "Pending" } });
    api.patch_status("eval", &PatchParams::default(), &Patch::Merge(&lost)).await.expect("status without the Job");
    env.start_operator();
    let back = wait_evaljob(&env, "eval", "Running with its Job again", |e| {
        e.status.as_ref().is_some_and(|s| s.job_uid.is_some() && phase(e) == Some(EvalPhase::Running))
    })
    .await;
    assert_eq!(back.status.and_then(|s| s.job_uid), Some(job_uid), "the same Job, taken back");
}

/// Path 6: a results token minted for the judge pod (the `edit` role may) posts a passing
/// report from outside the pod: refused, the run is not marked passed.
#[tokio::test]
async fn a_minted_results_token_cannot_report_from_outside_the_pod() {
    let mut env = TestEnv::new("atk-results-token").await;
    default_key(&mut env, "openai", Provider::OpenAi).await;
    create_evaljob(&env, "eval", judge_spec("openai", cases(2))).await;
    let pod = report_pod_address(&env, &running_pod(&env, "eval").await, "10.255.255.9").await;
    let ns = env.ns.clone();
    let token = pod_token(&env, &ns, &pod, wire::RESULTS_AUDIENCE).await;
    let forged = json!({ "podUid": pod.uid(), "shard": 0, "total": 2, "done": true, "results": [
        { "id": "c0", "line": 1, "scores": [{ "scorer": "llm_judge", "outcome": "Passed", "score": 1.0 }] },
        { "id": "c1", "line": 2, "scores": [{ "scorer": "llm_judge", "outcome": "Passed", "score": 1.0 }] } ] });
    let http = common::broker::broker_client(&env).await;
    let url = format!("{}{}", broker_url(&env), wire::RESULTS_PATH);
    let r = http.post(url).bearer_auth(token).json(&forged).send().await.expect("answer");
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(r.json::<serde_json::Value>().await.expect("json")["reason"], "NotFromPodAddress");
    let now = wait_evaljob(&env, "eval", "Running", |e| phase(e) == Some(EvalPhase::Running)).await;
    assert_eq!(now.status.and_then(|s| s.progress).map(|p| p.completed), Some(0), "nothing was recorded");
    env.assert_no_plaintext().await;
}

/// A key is handed out once per pod: a second request (a token used twice, or a replay from a
/// compromised judge) is refused, logged as a security event and raised on the EvalJob.
#[tokio::test]
async fn a_second_key_request_for_a_pod_is_refused_and_raised() {
    let mut env = TestEnv::new("atk-twice").await;
    let key = default_key(&mut env, "openai", Provider::OpenAi).await;
    create_evaljob(&env, "eval", judge_spec("openai", cases(2))).await;
    let pod = report_pod_address(&env, &running_pod(&env, "eval").await, "127.0.0.1").await;
    let ns = env.ns.clone();
    let token = pod_token(&env, &ns, &pod, wire::KEY_AUDIENCE).await;
    let uid = pod.uid().expect("uid");
    assert_eq!(ask_broker(&env, &token, &uid).await, (200, key.clone()));
    assert_eq!(ask_broker(&env, &token, &uid).await, (403, "KeyAlreadyGranted".into()));
    env.wait_event("eval", "KeyRequestedTwice").await;
    // The grant is an audit record in the operator's namespace: who, what, which KEK; never the key.
    let records: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.op_ns);
    let record = records.get(&byok_operator::broker::grants::record_name(&uid)).await.expect("grant record");
    let data = record.data.expect("data");
    assert_eq!(data.get("byokKey").map(String::as_str), Some("openai"));
    assert_eq!(data.get("pod").map(String::as_str), Some(pod.name_any().as_str()));
    assert!(data.get("kekId").is_some_and(|k| !k.is_empty()));
    let log = std::fs::read_to_string(&env.log_path).expect("log");
    assert!(log.contains("KeyRequestedTwice") && log.contains("KeyGranted"), "security and audit log lines");
    env.assert_no_plaintext().await;
}

/// Path 5: a namespace editor rewrites the judge config in the cases ConfigMap to send the key to
/// their server; the judge refuses the changed file (its digest is pinned in the Job).
#[tokio::test]
async fn a_tampered_judge_config_never_sends_the_key() {
    let attacker = Listener::start().await;
    let mut env = TestEnv::new("atk-config").await;
    let key = default_key(&mut env, "openai", Provider::OpenAi).await;
    create_evaljob(&env, "eval", judge_spec("openai", cases(2))).await;
    let pod = running_pod(&env, "eval").await;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.ns);
    let name = format!("{}-cases", "eval");
    let cm = cms.get(&name).await.expect("cases ConfigMap");
    let mut config: serde_json::Value = serde_json::from_str(&cm.data.expect("data")["config.json"]).expect("json");
    config["endpoints"]["openai"] = json!(format!("{}/v1", attacker.url()));
    let patch = json!({ "data": { "config.json": config.to_string() } });
    cms.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("the editor may write ConfigMaps");
    let local = LocalPod::prepare(&env, pod).await;
    let fetched = local.run("fetch-key", &[]).await;
    assert!(fetched.status.success(), "fetch-key: {}", String::from_utf8_lossy(&fetched.stderr));
    let ran = local.run("judge", &[]).await;
    env.extra_logs.push(("judge".into(), format!("{ran:?}")));
    assert!(!ran.status.success(), "the judge must refuse a changed config");
    assert!(String::from_utf8_lossy(&ran.stderr).contains("changed after the operator wrote it"), "{ran:?}");
    assert!(attacker.requests().is_empty());
    attacker.assert_got_no_key(&[key]);
    env.assert_no_plaintext().await;
}

/// Path 5: the broker CA bundle swapped for the attacker's CA (so a server of theirs would be
/// trusted): fetch-key refuses the bundle and asks nobody for the key.
#[tokio::test]
async fn a_swapped_broker_ca_is_refused() {
    let mut env = TestEnv::new("atk-ca").await;
    default_key(&mut env, "openai", Provider::OpenAi).await;
    create_evaljob(&env, "eval", judge_spec("openai", cases(2))).await;
    let pod = running_pod(&env, "eval").await;
    let theirs = byok_operator::broker::BrokerCa::generate().expect("a CA").cert_pem;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.ns);
    let patch = json!({ "data": { "ca.crt": theirs } });
    cms.patch("byok-broker-ca", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("editor writes");
    let local = LocalPod::prepare(&env, pod).await;
    let fetched = local.run("fetch-key", &[]).await;
    assert!(!fetched.status.success(), "fetch-key must refuse a swapped CA");
    assert!(String::from_utf8_lossy(&fetched.stderr).contains("changed after the operator wrote it"), "{fetched:?}");
    assert!(!local.key_file().exists(), "no key was written");
    // The operator restores its bundle on the next EvalJob; the pinned digest is what counts.
    env.assert_no_plaintext().await;
}

/// Path 6: results forged by whoever can create ConfigMaps do not make an EvalJob pass.
#[tokio::test]
async fn forged_results_do_not_make_an_evaljob_pass() {
    let mut env = TestEnv::new("atk-results").await;
    default_key(&mut env, "openai", Provider::OpenAi).await;
    create_evaljob(&env, "eval", judge_spec("openai", cases(4))).await;
    let pod = running_pod(&env, "eval").await;
    let ej = wait_evaljob(&env, "eval", "Running", |e| phase(e) == Some(EvalPhase::Running)).await;
    let all_pass: String = (1..=4)
        .map(|i| json!({ "id": format!("c{i}"), "line": i, "scores": [{ "scorer": "llm_judge", "outcome": "Passed", "score": 1.0 }] }).to_string() + "\n")
        .collect();
    let forged = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": "eval-results-0-0",
            "labels": { "app.kubernetes.io/managed-by": "byok-operator", "app.kubernetes.io/component": "eval-results",
                        "launchgate.ai/evaljob-uid": ej.uid().expect("uid") },
            "annotations": { "launchgate.ai/shard": "0/4/done", "launchgate.ai/results-mac": "00".repeat(32) },
            "ownerReferences": [{ "apiVersion": "launchgate.ai/v1alpha1", "kind": "EvalJob", "name": "eval",
                                  "uid": ej.uid().expect("uid"), "controller": true }]
        },
        "data": { "results.jsonl": all_pass }
    });
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.ns);
    cms.create(&PostParams::default(), &serde_json::from_value(forged).expect("cm")).await.expect("editor creates");
    env.wait_event("eval", "ForgedResultsIgnored").await;
    let now = wait_evaljob(&env, "eval", "ResultsTrusted=False", |e| {
        e.status
            .as_ref()
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "ResultsTrusted" && c.status == "False"))
    })
    .await;
    assert_eq!(phase(&now), Some(EvalPhase::Running), "forged results did not finish the run");
    assert_eq!(now.status.and_then(|s| s.progress).map(|p| p.completed), Some(0));
    // The real judge's results (which overwrite that name, signed) decide: 2 pass, 2 fail.
    let local = LocalPod::prepare(&env, pod).await;
    assert!(local.run("fetch-key", &[]).await.status.success());
    let ran = local.run("judge", &[]).await;
    env.extra_logs.push(("judge".into(), format!("{ran:?}")));
    assert!(ran.status.success(), "judge: {}", String::from_utf8_lossy(&ran.stderr));
    let done = wait_evaljob(&env, "eval", "Succeeded", |e| phase(e) == Some(EvalPhase::Succeeded)).await;
    let s = done.status.and_then(|s| s.summary).expect("summary");
    assert_eq!((s.passed, s.failed), (2, 2), "{s:?}");
    env.assert_no_plaintext().await;
}

/// Path 6: a large report from a caller with no valid token is refused before it is parsed.
#[tokio::test]
async fn an_unauthenticated_report_is_refused_before_parsing() {
    let env = TestEnv::new("atk-report").await;
    // The CA bundle is published with the first EvalJob's namespace; trust nothing instead.
    let http = reqwest::Client::builder().danger_accept_invalid_certs(true).build().expect("client");
    let url = format!("{}{}", broker_url(&env), wire::RESULTS_PATH);
    eventually("broker up", TIMEOUT, || async { http.get(format!("{}/healthz", broker_url(&env))).send().await.ok() })
        .await;
    // Not a JSON report at all: a parser would say 400; the broker says who is missing first.
    let r = http.post(&url).body("[[[").send().await.expect("answer");
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.json::<serde_json::Value>().await.expect("json")["reason"], "MissingToken");
    let r = http.post(&url).bearer_auth("e30.e30.sig").body("[[[").send().await.expect("answer");
    assert_eq!(r.status().as_u16(), 401, "not 400: the body was never parsed");
    assert_eq!(r.json::<serde_json::Value>().await.expect("json")["reason"], "WrongAudience");
    // Large bodies: refused from the headers alone. The broker may answer before reading the body
    // and close, which the client sees as a broken pipe; it never reads, parses or stores it.
    for size in [3 << 20, 5 << 20] {
        let r = http.post(&url).bearer_auth("e30.e30.sig").body(vec![b'['; size]).send().await;
        match r {
            Ok(r) => assert_eq!(r.status().as_u16(), 401, "{size} bytes"),
            Err(e) => assert!(e.is_request() || e.is_body(), "closed unread ({size} bytes): {e}"),
        }
    }
    let token = common::metrics_token(&env).await;
    let metrics_url = format!("{}/metrics", broker_url(&env));
    let metrics = http.get(metrics_url).bearer_auth(token).send().await.expect("metrics").text().await.expect("text");
    // Every outcome is exported from 0 (so alerts see the first one): compare the counts.
    let count = |outcome: &str| -> f64 {
        let series = format!("endpoint=\"results\",outcome=\"{outcome}\"}}");
        metrics.lines().filter(|l| l.contains(&series)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
    };
    assert!(count("MissingToken") >= 1.0, "{metrics}");
    assert_eq!(count("BadRequest"), 0.0, "nothing was parsed: {metrics}");
}

/// /metrics (key counts per KEK, refusal reasons) needs a token allowed to read it.
#[tokio::test]
async fn metrics_need_an_authorized_token() {
    let mut env = TestEnv::new("atk-metrics").await;
    env.add_key("openai", Provider::OpenAi, "").await;
    env.wait_phase("openai", KeyPhase::Ready).await;
    let (status, _) = {
        // The broker's CA is published with the first EvalJob; read it from the operator's Secret instead.
        let http = reqwest::Client::builder().danger_accept_invalid_certs(true).build().expect("client");
        let r = http.get(format!("{}/metrics", broker_url(&env))).send().await.expect("answer");
        (r.status().as_u16(), r.text().await.expect("text"))
    };
    assert_eq!(status, 401, "no token");
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(env.client.clone(), &env.ns);
    let req = k8s_openapi::api::authentication::v1::TokenRequest::default();
    let nobody = sas.create_token_request("default", &PostParams::default(), &req).await.expect("token");
    let http = reqwest::Client::builder().danger_accept_invalid_certs(true).build().expect("client");
    let get = |t: String| {
        let http = http.clone();
        let url = format!("{}/metrics", broker_url(&env));
        async move { http.get(url).bearer_auth(t).send().await.expect("answer").status().as_u16() }
    };
    assert_eq!(get(nobody.status.expect("token").token).await, 403, "a token without the role");
    let allowed = common::metrics_token(&env).await;
    assert_eq!(get(allowed).await, 200);
    let _ = broker_get_with;
}

// ---- the keyring ---------------------------------------------------------------------------------

/// The keyring fails closed: with ciphertexts and no keyring the operator refuses to start and
/// generates nothing (a new keyring would silently lose every stored key).
#[tokio::test]
async fn the_operator_refuses_to_start_without_the_keyring_that_sealed_its_keys() {
    let mut env = TestEnv::new("atk-keyring").await;
    env.add_key("openai", Provider::OpenAi, "").await;
    env.wait_phase("openai", KeyPhase::Ready).await;
    env.kill_operator();
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.op_ns);
    secrets.delete("byok-operator-kek", &Default::default()).await.expect("delete keyring");
    env.start_operator();
    let exited = eventually("the operator exits", TIMEOUT, || async {
        let log = std::fs::read_to_string(&env.log_path).unwrap_or_default();
        log.contains("refusing to start").then_some(log)
    })
    .await;
    assert!(exited.contains("KEK keyring Secret"), "the error names what is missing");
    let started = std::time::Instant::now();
    while !env.operator_exited() {
        assert!(started.elapsed() < TIMEOUT, "the operator process did not end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(secrets.get_opt("byok-operator-kek").await.expect("get").is_none(), "no new keyring was generated");
}

// ---- on the real node --------------------------------------------------------------------------

use byok_operator::mock::MockConfig;
use common::node;

/// Runs the cluster's kubectl with `args`; (success, stdout + stderr).
fn kubectl(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(format!("{}/kubectl", node::bin_dir())).args(args).output().expect("kubectl");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Path 4 on the node: while a real judge pod runs, a namespace editor mints a token bound to it
/// and asks the broker from outside the pod. Refused; the run is not disturbed.
#[tokio::test]
async fn node_a_token_minted_for_a_running_judge_pod_gets_nothing() {
    if !node::wanted("node_a_token_minted_for_a_running_judge_pod_gets_nothing") {
        return;
    }
    let mut env = node::node_env("atk-node-mint", MockConfig::default()).await;
    let key = default_key(&mut env, "openai", Provider::OpenAi).await;
    env.mock.set_latency(Duration::from_secs(1));
    let mut spec = judge_spec("openai", cases(6));
    spec["concurrency"] = json!(1);
    create_evaljob(&env, "eval", spec).await;
    let ej = wait_evaljob(&env, "eval", "job", |e| e.status.as_ref().is_some_and(|s| s.job_name.is_some())).await;
    let job = ej.status.and_then(|s| s.job_name).expect("job");
    let (pod, _) = node::wait_container_running(&env, &job, "judge", &[]).await;
    let ns = env.ns.clone();
    let token = pod_token(&env, &ns, &pod, wire::KEY_AUDIENCE).await;
    let (status, reason) = ask_broker(&env, &token, &pod.uid().expect("uid")).await;
    assert_eq!(status, 403, "{reason}");
    assert!(["PodNotStarting", "NotFromPodAddress"].contains(&reason.as_str()), "refused with its reason: {reason}");
    assert_ne!(reason, key);
    env.mock.set_latency(Duration::ZERO);
    let done = wait_evaljob(&env, "eval", "Succeeded", |e| phase(e) == Some(EvalPhase::Succeeded)).await;
    let s = done.status.and_then(|s| s.summary).expect("summary");
    assert_eq!((s.passed, s.failed, s.errored), (3, 3, 0), "{s:?}");
    node::collect_pod_logs(&mut env).await;
    env.assert_no_plaintext().await;
}

/// A namespace editor may exec into pods, patch their images and add debug containers. On a judge
/// pod (the key is on its tmpfs) admission refuses all three.
#[tokio::test]
async fn node_judge_pods_cannot_be_exec_ed_re_imaged_or_debugged() {
    if !node::wanted("node_judge_pods_cannot_be_exec_ed_re_imaged_or_debugged") {
        return;
    }
    let mut env = node::node_env("atk-node-exec", MockConfig::default()).await;
    default_key(&mut env, "openai", Provider::OpenAi).await;
    env.mock.set_latency(Duration::from_secs(1));
    let mut spec = judge_spec("openai", cases(8));
    spec["concurrency"] = json!(1);
    create_evaljob(&env, "eval", spec).await;
    let ej = wait_evaljob(&env, "eval", "job", |e| e.status.as_ref().is_some_and(|s| s.job_name.is_some())).await;
    let (pod, _) =
        node::wait_container_running(&env, &ej.status.and_then(|s| s.job_name).expect("job"), "judge", &[]).await;
    let name = pod.name_any();
    let (ok, out) = kubectl(&["-n", &env.ns, "exec", &name, "-c", "judge", "--", "byok-judge", "--version"]);
    assert!(!ok && out.contains("judge pods"), "exec refused by admission: {out}");
    let patch =
        json!({ "spec": { "containers": [{ "name": "judge", "image": "localhost/byok/pause:dev" }] } }).to_string();
    let (ok, out) = kubectl(&["-n", &env.ns, "patch", "pod", &name, "--type", "strategic", "-p", &patch]);
    assert!(!ok && out.contains("image"), "image change refused: {out}");
    let (ok, out) =
        kubectl(&["-n", &env.ns, "debug", &name, "--image", "localhost/byok/pause:dev", "--target", "judge"]);
    assert!(!ok, "debug container refused: {out}");
    let (ok, out) = kubectl(&["-n", &env.ns, "label", "pod", &name, "launchgate.ai/evaljob-uid-", "--overwrite"]);
    assert!(!ok, "the judge label cannot be removed (then re-added elsewhere): {out}");
    env.mock.set_latency(Duration::ZERO);
    wait_evaljob(&env, "eval", "Succeeded", |e| phase(e) == Some(EvalPhase::Succeeded)).await;
    node::collect_pod_logs(&mut env).await;
    env.assert_no_plaintext().await;
}

/// The key lives on tmpfs only: after a run, nothing on the node's disk (kubelet and containerd
/// state, container logs) holds it.
#[tokio::test]
async fn node_disk_holds_no_plaintext_after_a_run() {
    if !node::wanted("node_disk_holds_no_plaintext_after_a_run") {
        return;
    }
    let mut env = node::node_env("atk-node-disk", MockConfig::default()).await;
    let key = default_key(&mut env, "anthropic", Provider::Anthropic).await;
    create_evaljob(&env, "eval", judge_spec("anthropic", cases(4))).await;
    wait_evaljob(&env, "eval", "Succeeded", |e| phase(e) == Some(EvalPhase::Succeeded)).await;
    let scanned = node::scan_node_disk(&[key.as_str(), &key[8..]]);
    node::note(&format!("node disk scan: {} files, {} bytes, no key", scanned.files, scanned.bytes));
    assert!(scanned.files > 100 && scanned.bytes > 1 << 20, "the scan read the node's state: {scanned:?}");
    node::collect_pod_logs(&mut env).await;
    env.assert_no_plaintext().await;
}

/// A judge panel widens what one pod receives, so an evaluator tries to widen it further: a panel
/// judge naming a key of another provider (a Google key for an Anthropic judge) never starts, the
/// evaluator cannot write the status the broker reads, and a panel pod gets the keys its judges
/// name and no other key of the namespace.
#[tokio::test]
async fn a_panel_gets_only_the_keys_its_judges_name() {
    use common::broker::ask_broker_body;
    let mut env = TestEnv::new("atk-panel").await;
    let main = default_key(&mut env, "openai", Provider::OpenAi).await;
    let anthropic = default_key(&mut env, "anthropic", Provider::Anthropic).await;
    let google = default_key(&mut env, "google", Provider::Google).await;
    let evaluator = common::roles::evaluator(&env).await;
    let ejs: Api<byok_operator::crd::EvalJob> = Api::namespaced(evaluator.clone(), &env.ns);
    let panel_spec = |judges: serde_json::Value| {
        let mut spec = judge_spec("openai", cases(2));
        spec["scorers"][0]["judges"] = judges;
        spec["template"] = json!({ "nodeSelector": { "launchgate.ai/test-no-node": "true" } });
        spec
    };
    let evaljob = |name: &str, spec: serde_json::Value| -> byok_operator::crd::EvalJob {
        serde_json::from_value(json!({
            "apiVersion": "launchgate.ai/v1alpha1", "kind": "EvalJob", "metadata": { "name": name }, "spec": spec
        }))
        .expect("evaljob")
    };
    let wrong = panel_spec(json!([{ "provider": "openai" }, { "provider": "anthropic", "keyRef": "google" }]));
    ejs.create(&PostParams::default(), &evaljob("wrong", wrong)).await.expect("created");
    let waiting = wait_evaljob(&env, "wrong", "WaitingForKey", |e| phase(e) == Some(EvalPhase::WaitingForKey)).await;
    let resolved = waiting.status.iter().flat_map(|s| &s.conditions).find(|c| c.type_ == "KeyResolved").cloned();
    let msg = resolved.map(|c| c.message).unwrap_or_default();
    assert!(msg.contains("judge anthropic") && msg.contains("google is not a Ready anthropic key"), "{msg}");
    assert!(waiting.status.as_ref().is_some_and(|s| s.job_name.is_none() && s.judges.is_empty()), "no Job, no keys");

    let good = panel_spec(json!([{ "provider": "openai" }, { "provider": "anthropic" }]));
    ejs.create(&PostParams::default(), &evaljob("panel", good)).await.expect("created");
    wait_evaljob(&env, "panel", "Running", |e| phase(e) == Some(EvalPhase::Running)).await;
    // The status is the broker's list: the evaluator may not add the Google key to it.
    let widened = json!({ "status": { "judges": [{ "scorer": "llm_judge", "provider": "google", "model": "m",
        "keyRef": "google", "keyPrefix": "x" }] } });
    let refused = ejs.patch_status("panel", &PatchParams::default(), &Patch::Merge(&widened)).await;
    assert!(matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403), "{refused:?}");
    let pod = report_pod_address(&env, &running_pod(&env, "panel").await, "127.0.0.1").await;
    let ns = env.ns.clone();
    let token = pod_token(&env, &ns, &pod, wire::KEY_AUDIENCE).await;
    let (status, body) = ask_broker_body(&env, &token, &pod.uid().expect("uid")).await;
    assert_eq!(status, 200, "{body}");
    let text = body.to_string();
    assert!(text.contains(&main) && text.contains(&anthropic), "the panel's keys are handed out");
    assert!(!text.contains(&google[8..]), "a key no judge names is never handed out");
    let names: Vec<&str> =
        body["panel"].as_array().expect("panel").iter().filter_map(|p| p["byokKey"].as_str()).collect();
    assert_eq!(names, ["anthropic", "openai"]);
    let text = serde_json::to_string(&ejs.get("panel").await.expect("own EvalJob")).expect("json");
    assert!(!text.contains(&anthropic[8..]) && !text.contains(&main[8..]), "status shows prefixes only");
    env.assert_no_plaintext().await;
}
