//! ByokKey lifecycle against the local control plane: import, validate, default, test, revoke.

mod common;

use byok_operator::crd::conditions::byokkey::{DEFAULT, IMPORTED, VALIDATED};
use byok_operator::crd::{
    ByokKey, ByokKeySpec, KeyPhase, Provider, SourcePolicy, TEST_REQUESTED_ANNOTATION, ValidationSpec,
};
use byok_operator::keystore::{ENVELOPE_DATA_KEY, encrypted_secret_name};
use common::{TestEnv, condition_reason, phase_of};
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn each_provider_is_imported_encrypted_and_ready() {
    let mut env = TestEnv::new("providers").await;
    let mut keys = Vec::new();
    for (name, provider) in [
        ("openai", Provider::OpenAi),
        ("anthropic", Provider::Anthropic),
        ("google", Provider::Google),
        ("azure", Provider::AzureOpenAi),
    ] {
        keys.push((name, env.add_key(name, provider, "").await));
    }
    for (name, plaintext) in &keys {
        let k = env.wait_phase(name, KeyPhase::Ready).await;
        let st = k.status.expect("status");
        assert_eq!(st.key_prefix.as_deref(), Some(&plaintext[..8]), "{name}: prefix is the first 8 characters");
        assert_eq!(condition_reason_of(&st.conditions, IMPORTED).as_deref(), Some("Imported"));
        assert_eq!(condition_reason_of(&st.conditions, VALIDATED).as_deref(), Some("Valid"));
        assert!(st.kek_id.is_some());
        // The ciphertext is the only copy left: an envelope, owned by the ByokKey.
        let enc = env.secrets().get(&encrypted_secret_name(name)).await.expect("encrypted secret");
        let data = enc.data.expect("data");
        let envelope = String::from_utf8(data[ENVELOPE_DATA_KEY].0.clone()).expect("utf8");
        assert!(envelope.starts_with("byok1.") && !envelope.contains(plaintext.as_str()));
        assert_eq!(enc.metadata.owner_references.expect("owner")[0].uid, k.metadata.uid.clone().expect("uid"));
        // sourcePolicy Delete (the default): the plaintext source is gone.
        let src = env.secrets().get_opt(&format!("{name}-src")).await.expect("get");
        assert!(src.is_none(), "{name}: source Secret deleted");
        // One check: OpenAI lists models and probes for a restricted key; Azure sends one empty chat
        // request (key, endpoint and deployment at once); Anthropic and Google need one call.
        let per_check = if *name == "openai" { 2 } else { 1 };
        assert_eq!(env.mock.requests_for_key(plaintext), per_check, "{name}: exactly one validation");
    }
    env.assert_no_plaintext().await;
}

fn condition_reason_of(conds: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition], t: &str) -> Option<String> {
    conds.iter().find(|c| c.type_ == t).map(|c| c.reason.clone())
}

#[tokio::test]
async fn retain_keeps_the_source_and_reimports_its_changes() {
    let mut env = TestEnv::new("retain").await;
    let first = common::fake_key(Provider::OpenAi, "");
    env.create_secret("src", "apiKey", first.as_bytes()).await;
    let mut spec = env.spec(Provider::OpenAi, "src");
    spec.source_policy = SourcePolicy::Retain;
    env.create_key("kept", spec).await;
    env.wait_phase("kept", KeyPhase::Ready).await;
    assert!(env.secrets().get_opt("src").await.expect("get").is_some(), "Retain keeps the source Secret");

    // A new value in the source is imported and validated.
    let second = common::fake_key(Provider::OpenAi, "");
    env.plaintexts.push(second.clone());
    let patch = json!({ "stringData": { "apiKey": second } });
    env.secrets().patch("src", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch");
    env.wait_key("kept", "new prefix", |k| {
        k.status.as_ref().and_then(|s| s.key_prefix.clone()) == Some(second[..8].to_string())
            && env.mock.requests_for_key(&second) == 2
    })
    .await;
    env.assert_no_plaintext().await;
}

#[tokio::test]
async fn invalid_key_is_invalid_without_a_retry_storm() {
    let mut env = TestEnv::new("invalid").await;
    let bad = env.add_key("bad", Provider::OpenAi, "invalid").await;
    let good = env.add_key("good", Provider::Anthropic, "").await;
    let k = env.wait_phase("bad", KeyPhase::Invalid).await;
    assert_eq!(condition_reason(&k, VALIDATED).as_deref(), Some("Unauthorized"));
    env.wait_phase("good", KeyPhase::Ready).await;

    // Changes that reconcile the key (labels, a second ByokKey) do not call the provider again...
    for i in 0..3 {
        let patch = json!({ "metadata": { "labels": { "touch": i.to_string() } } });
        env.keys().patch("bad", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch");
    }
    // ...only an explicit test does: the request count matches the triggers exactly.
    request_test(&env, "bad", "after-invalid").await;
    env.wait_key("bad", "test answered", |k| last_test_token(k).as_deref() == Some("after-invalid")).await;
    assert_eq!(env.mock.requests_for_key(&bad), 2, "one validation plus one requested test, nothing more");
    assert_eq!(env.mock.requests_for_key(&good), 1);
    env.assert_no_plaintext().await;
}

#[tokio::test]
async fn rate_limited_validation_is_unknown_then_ready() {
    let mut env = TestEnv::new("ratelimit").await;
    let key = common::fake_key(Provider::OpenAi, "");
    env.mock.set_behaviour(&key, byok_operator::mock::Behaviour::RateLimited, Some(2));
    env.create_secret("src", "apiKey", key.as_bytes()).await;
    env.create_key("limited", env.spec(Provider::OpenAi, "src")).await;
    let k = env.wait_phase("limited", KeyPhase::Unknown).await;
    assert_eq!(condition_reason(&k, VALIDATED).as_deref(), Some("RateLimited"));
    env.wait_phase("limited", KeyPhase::Ready).await;
    // Two checks answered 429 at their first call, then one full check (models + probe).
    assert_eq!(env.mock.requests_for_key(&key), 4, "two 429s honouring Retry-After, then success");
    env.wait_event("limited", "Validated").await;
    env.assert_no_plaintext().await;
}

#[tokio::test]
async fn a_ready_key_is_validated_again_after_its_interval() {
    let mut env = TestEnv::new("revalidate").await;
    let key = common::fake_key(Provider::OpenAi, "again");
    env.create_secret("src", "apiKey", key.as_bytes()).await;
    let spec = ByokKeySpec {
        validation: Some(ValidationSpec { interval: Some("1m".into()) }),
        ..env.spec(Provider::OpenAi, "src")
    };
    env.create_key("k", spec).await;
    let first = env.wait_phase("k", KeyPhase::Ready).await;
    let validated = |k: &ByokKey| k.status.as_ref().and_then(|s| s.last_validated.clone()).map(|t| t.0);
    let at = validated(&first).expect("lastValidated");
    assert_eq!(env.mock.requests_for_key(&key), 2, "one validation: the model list and the scope probe");
    // Due one minute later; the one timer of all Ready keys requeues it (within its 5 s grain).
    let keys = env.keys();
    let again = common::eventually("k: validated again", Duration::from_secs(150), || async {
        keys.get("k").await.ok().filter(|k| validated(k).is_some_and(|t| t > at))
    })
    .await;
    let elapsed = validated(&again).expect("lastValidated").duration_since(at).unsigned_abs();
    assert!(elapsed >= Duration::from_secs(60), "not before its interval: {elapsed:?}");
    assert_eq!(env.mock.requests_for_key(&key), 4, "one more validation, not a storm");
    assert_eq!(phase_of(&again), Some(KeyPhase::Ready));
}

async fn request_test(env: &TestEnv, name: &str, token: &str) {
    let patch = json!({ "metadata": { "annotations": { TEST_REQUESTED_ANNOTATION: token } } });
    env.keys().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("annotate");
}

fn last_test_token(k: &byok_operator::crd::ByokKey) -> Option<String> {
    k.status.as_ref()?.last_test.as_ref().map(|t| t.request_token.clone())
}

#[tokio::test]
async fn on_demand_test_answers_its_own_token() {
    let mut env = TestEnv::new("ondemand").await;
    let key = env.add_key("k", Provider::Google, "").await;
    env.wait_phase("k", KeyPhase::Ready).await;
    request_test(&env, "k", "token-1").await;
    let k = env.wait_key("k", "token-1 answered", |k| last_test_token(k).as_deref() == Some("token-1")).await;
    let t = k.status.and_then(|s| s.last_test).expect("lastTest");
    assert_eq!((t.result.as_str(), t.http_status), ("Valid", Some(200)));
    // The provider starts refusing the key: the next test says so, with its own token.
    env.mock.set_behaviour(&key, byok_operator::mock::Behaviour::Invalid, None);
    request_test(&env, "k", "token-2").await;
    let k = env.wait_key("k", "token-2 answered", |k| last_test_token(k).as_deref() == Some("token-2")).await;
    let t = k.status.clone().and_then(|s| s.last_test).expect("lastTest");
    assert_eq!((t.result.as_str(), t.http_status), ("Invalid", Some(400)), "Gemini reports a bad key as HTTP 400");
    assert_eq!(phase_of(&k), Some(KeyPhase::Invalid));
    env.assert_no_plaintext().await;
}

fn effective(k: &byok_operator::crd::ByokKey) -> bool {
    k.status.as_ref().is_some_and(|s| s.effective_default)
}

#[tokio::test]
async fn newest_default_wins_across_three_keys() {
    let mut env = TestEnv::new("defaults").await;
    let mut names = Vec::new();
    for name in ["first", "second", "third"] {
        let key = common::fake_key(Provider::OpenAi, "");
        env.create_secret(&format!("{name}-src"), "apiKey", key.as_bytes()).await;
        let mut spec = env.spec(Provider::OpenAi, &format!("{name}-src"));
        spec.default = true;
        env.create_key(name, spec).await;
        env.wait_key(name, "effective default", effective).await;
        names.push(name);
        // Exactly one effective default, and the others say why not.
        for other in names.iter().filter(|n| **n != name) {
            let k = env.wait_key(other, "superseded", |k| !effective(k)).await;
            assert_eq!(condition_reason(&k, DEFAULT).as_deref(), Some("Superseded"));
        }
    }
    // Revoking the newest hands the default back to the next newest.
    let patch = json!({ "spec": { "revoked": true } });
    env.keys().patch("third", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("revoke");
    env.wait_key("second", "default again", effective).await;
    // Deleting that one hands it to the first.
    env.keys().delete("second", &DeleteParams::default()).await.expect("delete");
    env.wait_key("first", "default again", effective).await;
    // The controller never wrote a spec: `default` is still what the user set.
    for name in ["first", "third"] {
        assert!(env.keys().get(name).await.expect("get").spec.default);
    }
    env.assert_no_plaintext().await;
}

#[tokio::test]
async fn revoke_by_spec_and_by_delete_removes_the_ciphertext() {
    let mut env = TestEnv::new("revoke").await;
    env.add_key("by-spec", Provider::Anthropic, "").await;
    env.add_key("by-delete", Provider::Anthropic, "").await;
    env.wait_phase("by-spec", KeyPhase::Ready).await;
    env.wait_phase("by-delete", KeyPhase::Ready).await;

    let patch = json!({ "spec": { "revoked": true } });
    env.keys().patch("by-spec", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("revoke");
    let k = env.wait_phase("by-spec", KeyPhase::Revoked).await;
    assert_eq!(condition_reason(&k, "Ready").as_deref(), Some("Revoked"));
    assert!(env.secrets().get_opt(&encrypted_secret_name("by-spec")).await.expect("get").is_none());

    env.keys().delete("by-delete", &DeleteParams::default()).await.expect("delete");
    common::eventually("by-delete gone", common::TIMEOUT, || async {
        env.keys().get_opt("by-delete").await.expect("get").is_none().then_some(())
    })
    .await;
    // No finalizer: the garbage collector removes the ciphertext through its owner reference.
    common::eventually("by-delete's ciphertext collected", common::TIMEOUT, || async {
        env.secrets().get_opt(&encrypted_secret_name("by-delete")).await.expect("get").is_none().then_some(())
    })
    .await;
    env.assert_no_plaintext().await;
}

#[tokio::test]
async fn a_key_deleted_and_made_again_under_its_name_keeps_its_new_ciphertext() {
    let mut env = TestEnv::new("rename").await;
    env.add_key("again", Provider::OpenAi, "").await;
    let old = env.wait_phase("again", KeyPhase::Ready).await;
    let old_enc = env.secrets().get(&encrypted_secret_name("again")).await.expect("ciphertext");
    // Delete and make it again at once, before the garbage collector has come by.
    env.keys().delete("again", &DeleteParams::default()).await.expect("delete");
    common::eventually("the old key gone", common::TIMEOUT, || async {
        env.keys().get_opt("again").await.expect("get").is_none().then_some(())
    })
    .await;
    let key = env.add_key("again", Provider::OpenAi, "").await;
    let new = env.wait_phase("again", KeyPhase::Ready).await;
    assert_ne!(new.uid(), old.uid());
    // The collector has had its turn at the old ciphertext (it deletes by that object's uid).
    common::eventually("the old ciphertext gone", common::TIMEOUT, || async {
        let now = env.secrets().get_opt(&encrypted_secret_name("again")).await.expect("get")?;
        (now.uid() != old_enc.uid()).then_some(())
    })
    .await;
    let enc = env.secrets().get(&encrypted_secret_name("again")).await.expect("the new ciphertext stays");
    assert_eq!(enc.owner_references()[0].uid, new.uid().expect("uid"));
    assert_eq!(new.status.and_then(|s| s.key_prefix), Some(key[..8].to_string()));
    env.assert_no_plaintext().await;
}

#[tokio::test]
async fn sealed_key_imports_only_into_the_byokkey_it_was_sealed_for() {
    let mut env = TestEnv::new("sealed").await;
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(env.client.clone(), &env.op_ns);
    let public = common::eventually("sealing public key published", common::TIMEOUT, || async {
        cms.get_opt("byok-sealing-key").await.ok().flatten()?.data?.get("publicKey").cloned()
    })
    .await;
    let key = common::fake_key(Provider::Anthropic, "");
    env.plaintexts.push(key.clone());
    let sealed =
        byok_operator::crypto::sealing::seal(&public, &env.ns, "claude", "anthropic", None, &key.clone().into())
            .expect("seal");
    assert!(!sealed.contains(&key[8..]), "the sealed text is safe to commit");
    let mut spec = env.spec(Provider::Anthropic, "unused");
    spec.secret_ref = None;
    spec.sealed = Some(sealed.clone());
    env.create_key("claude", spec.clone()).await;
    let k = env.wait_phase("claude", KeyPhase::Ready).await;
    assert_eq!(k.status.and_then(|s| s.key_prefix), Some(key[..8].to_string()));
    assert_eq!(env.mock.requests_for_key(&key), 1);
    // The same sealed text under another name is refused with a clear reason.
    env.create_key("copy", spec).await;
    let k = env.wait_phase("copy", KeyPhase::Error).await;
    assert_eq!(condition_reason(&k, IMPORTED).as_deref(), Some("SealedKeyMismatch"));
    env.wait_event("copy", "SealedKeyMismatch").await;
    env.assert_no_plaintext().await;
}

#[tokio::test]
async fn log_level_changes_at_run_time_from_the_operator_configmap() {
    let mut env = TestEnv::new("loglevel").await;
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(env.client.clone(), &env.op_ns);
    let cm: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": "byok-operator-config" }, "data": { "logLevel": "debug" }
    }))
    .expect("configmap");
    cms.create(&Default::default(), &cm).await.expect("create");
    let log = env.log_path.clone();
    common::eventually("level changed to debug", common::TIMEOUT, || async {
        let text = std::fs::read_to_string(&log).ok()?;
        text.lines().any(|l| l.contains("log level changed") && l.contains("debug")).then_some(())
    })
    .await;
    // Debug lines now appear, and still no key material.
    env.add_key("k", Provider::OpenAi, "").await;
    env.wait_phase("k", KeyPhase::Ready).await;
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("\"level\":\"DEBUG\""), "debug lines after the change");
    env.assert_no_plaintext().await;
}
