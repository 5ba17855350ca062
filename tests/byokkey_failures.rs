//! ByokKey under stress and bad input: KEK rotation, moved ciphertexts, invalid manifests and
//! Secrets, and an operator killed mid-import.

mod common;

use std::time::Duration;

use byok_operator::cli::kek;
use byok_operator::crd::conditions::byokkey::IMPORTED;
use byok_operator::crd::{ByokKey, KeyPhase, Provider};
use byok_operator::keystore::{ENVELOPE_DATA_KEY, KEK_ID_ANNOTATION, encrypted_secret_name};
use common::{TestEnv, condition_reason, phase_of};
use k8s_openapi::ByteString;
use kube::ResourceExt;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

const KEYRING: &str = "byok-operator-kek";

#[tokio::test]
async fn kek_rotation_reencrypts_every_key_and_frees_the_old_kek() {
    let mut env = TestEnv::new("rotation").await;
    for (i, p) in [Provider::OpenAi, Provider::Anthropic, Provider::Google].into_iter().enumerate() {
        env.add_key(&format!("k{i}"), p, "").await;
    }
    let mut old = String::new();
    for i in 0..3 {
        let k = env.wait_phase(&format!("k{i}"), KeyPhase::Ready).await;
        old = k.status.and_then(|s| s.kek_id).expect("kekId");
    }
    let new = kek::rotate(&env.client, &env.op_ns, KEYRING).await.expect("rotate");
    assert_ne!(new, old);
    for i in 0..3 {
        let name = format!("k{i}");
        env.wait_key(&name, "re-encrypted", |k| k.status.as_ref().and_then(|s| s.kek_id.as_deref()) == Some(&new))
            .await;
        let enc = env.secrets().get(&encrypted_secret_name(&name)).await.expect("enc");
        let envelope = String::from_utf8(enc.data.clone().expect("data")[ENVELOPE_DATA_KEY].0.clone()).expect("utf8");
        assert!(envelope.starts_with(&format!("byok1.{new}.")), "ciphertext sealed under the new KEK");
        assert_eq!(enc.annotations().get(KEK_ID_ANNOTATION), Some(&new));
    }
    let usage = kek::status(&env.client, &env.op_ns, KEYRING).await.expect("status");
    assert_eq!(usage.active, new);
    assert_eq!(usage.unused(), vec![old.as_str()], "the old KEK is reported unused:\n{}", usage.render());
    kek::remove(&env.client, &env.op_ns, KEYRING, &old).await.expect("old KEK removed");
    assert!(kek::remove(&env.client, &env.op_ns, KEYRING, &new).await.is_err(), "the active KEK cannot be removed");
    // Keys still open under the remaining KEK: a requested test passes.
    let patch = json!({ "metadata": { "annotations": { "launchgate.ai/test-requested": "after-rotation" } } });
    env.keys().patch("k0", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("annotate");
    let k = env
        .wait_key("k0", "test after rotation", |k| {
            k.status.as_ref().and_then(|s| s.last_test.as_ref()).is_some_and(|t| t.request_token == "after-rotation")
        })
        .await;
    assert_eq!(k.status.and_then(|s| s.last_test).map(|t| t.result), Some("Valid".into()));
    env.wait_event("k1", "ReEncrypted").await;
    env.assert_no_plaintext().await;
}

/// A ciphertext in a later envelope format (as a newer operator would write, then a downgrade):
/// refused by its version, named in the condition and the Event, not called damaged or altered.
#[tokio::test]
async fn ciphertext_of_an_unknown_envelope_version_is_refused_by_name() {
    let mut env = TestEnv::new("envver").await;
    env.add_key("k", Provider::OpenAi, "").await;
    env.wait_phase("k", KeyPhase::Ready).await;
    let stored = env.secrets().get(&encrypted_secret_name("k")).await.expect("enc");
    let text = String::from_utf8(stored.data.expect("data")[ENVELOPE_DATA_KEY].0.clone()).expect("utf8");
    let later = text.replacen("byok1.", "byok3.", 1);
    assert_ne!(later, text, "the stored envelope starts with its version byok1");
    let patch = json!({ "data": { ENVELOPE_DATA_KEY: ByteString(later.into_bytes()) } });
    env.secrets()
        .patch(&encrypted_secret_name("k"), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch");
    let k = env.wait_phase("k", KeyPhase::Error).await;
    let imported = k.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == IMPORTED)).expect("Imported");
    assert_eq!(imported.reason, "UnsupportedEnvelopeVersion");
    assert!(
        imported.message.contains("\"byok3\"") && imported.message.contains("newer byok-operator"),
        "{}",
        imported.message
    );
    env.wait_event("k", "UnsupportedEnvelopeVersion").await;
    env.assert_no_plaintext().await;
}

#[tokio::test]
async fn ciphertext_copied_to_another_key_fails_to_decrypt() {
    let mut env = TestEnv::new("moved").await;
    env.add_key("victim", Provider::OpenAi, "").await;
    env.add_key("attacker", Provider::OpenAi, "").await;
    env.wait_phase("victim", KeyPhase::Ready).await;
    env.wait_phase("attacker", KeyPhase::Ready).await;
    let stolen = env.secrets().get(&encrypted_secret_name("victim")).await.expect("victim enc");
    let data = stolen.data.expect("data");
    let patch = json!({ "data": { ENVELOPE_DATA_KEY: data[ENVELOPE_DATA_KEY] } });
    env.secrets()
        .patch(&encrypted_secret_name("attacker"), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("copy");
    let k = env.wait_phase("attacker", KeyPhase::Error).await;
    assert_eq!(condition_reason(&k, IMPORTED).as_deref(), Some("DecryptFailed"));
    env.wait_event("attacker", "DecryptFailed").await;
    // The victim is untouched and still Ready.
    assert_eq!(phase_of(&env.keys().get("victim").await.expect("victim")), Some(KeyPhase::Ready));
    env.assert_no_plaintext().await;
}

async fn rejected(env: &TestEnv, manifest: serde_json::Value) -> String {
    let api: kube::Api<kube::api::DynamicObject> =
        kube::Api::namespaced_with(env.client.clone(), &env.ns, &kube::api::ApiResource::erase::<ByokKey>(&()));
    let obj: kube::api::DynamicObject = serde_json::from_value(manifest).expect("dynamic object");
    match api.create(&PostParams::default(), &obj).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422, "rejected as invalid: {}", s.message);
            s.message
        }
        other => panic!("expected the API server to reject the manifest, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_manifests_are_rejected_by_the_api_server() {
    let env = TestEnv::new("badspec").await;
    let base = |provider: &str| {
        json!({
            "apiVersion": "launchgate.ai/v1alpha1", "kind": "ByokKey",
            "metadata": { "name": "bad", "namespace": env.ns },
            "spec": { "provider": provider, "secretRef": { "name": "s" } }
        })
    };
    let msg = rejected(&env, base("azure_openai")).await;
    assert!(msg.contains("spec.azure is required"), "{msg}");
    let mut both = base("openai");
    both["spec"]["sealed"] = json!("byoksealed1.AAAA");
    let msg = rejected(&env, both).await;
    assert!(msg.contains("set exactly one of secretRef and sealed"), "{msg}");
    let msg = rejected(&env, base("mistral")).await;
    assert!(msg.contains("Unsupported value") && msg.contains("mistral"), "{msg}");
    let mut azure_on_openai = base("openai");
    azure_on_openai["spec"]["azure"] = json!({ "endpoint": "https://x.openai.azure.com", "deployment": "d" });
    rejected(&env, azure_on_openai).await;
    let mut bad_interval = base("openai");
    bad_interval["spec"]["validation"] = json!({ "interval": "10s" });
    let msg = rejected(&env, bad_interval).await;
    assert!(msg.contains("at least 1m"), "{msg}");

    // Provider is immutable.
    env.create_key("fixed", env.spec(Provider::OpenAi, "s")).await;
    let patch = json!({ "spec": { "provider": "anthropic" } });
    match env.keys().patch("fixed", &PatchParams::default(), &Patch::Merge(&patch)).await {
        Err(kube::Error::Api(s)) => assert!(s.message.contains("provider is immutable"), "{}", s.message),
        other => panic!("provider change must be rejected, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_secrets_are_reported_while_other_keys_keep_working() {
    let mut env = TestEnv::new("badsecret").await;
    let cases: [(&str, &str, Vec<u8>, &str); 5] = [
        ("missing-key", "otherKey", b"sk-proj-0123456789abcdef0123".to_vec(), "SecretKeyMissing"),
        ("empty", "apiKey", Vec::new(), "EmptyKey"),
        (
            "not-utf8",
            "apiKey",
            vec![0xff, 0xfe, 0xfd, 0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8b],
            "NotUtf8",
        ),
        ("huge", "apiKey", vec![b'a'; 1_000_000], "KeyTooLarge"),
        ("spaces", "apiKey", b"sk-proj-0123 4567 89ab cdef".to_vec(), "InvalidCharacters"),
    ];
    for (name, data_key, value, _) in &cases {
        env.create_secret(&format!("{name}-src"), data_key, value).await;
        env.create_key(name, env.spec(Provider::OpenAi, &format!("{name}-src"))).await;
    }
    env.create_key("no-secret", env.spec(Provider::OpenAi, "no-such-secret")).await;
    env.add_key("healthy", Provider::OpenAi, "").await;

    for (name, _, _, reason) in &cases {
        let k = env.wait_phase(name, KeyPhase::Error).await;
        assert_eq!(condition_reason(&k, IMPORTED).as_deref(), Some(*reason), "{name}");
        env.wait_event(name, reason).await;
        // Nothing is lost: a source that could not be imported is never deleted.
        assert!(env.secrets().get_opt(&format!("{name}-src")).await.expect("get").is_some(), "{name}: source kept");
    }
    let k = env.wait_phase("no-secret", KeyPhase::Pending).await;
    assert_eq!(condition_reason(&k, IMPORTED).as_deref(), Some("SecretNotFound"));
    env.wait_phase("healthy", KeyPhase::Ready).await;

    // Fixing the input recovers without restarting anything.
    let key = common::fake_key(Provider::OpenAi, "");
    env.create_secret("no-such-secret", "apiKey", key.as_bytes()).await;
    env.wait_phase("no-secret", KeyPhase::Ready).await;
    env.assert_no_plaintext().await;
}

#[tokio::test]
async fn sigkill_mid_import_of_200_keys_converges_with_nothing_lost_or_doubled() {
    const N: usize = 200;
    let mut env = TestEnv::new("sigkill").await;
    // All 200 keys exist before the operator sees them, and validation is slow enough that the
    // kill lands while imports and validations are in flight.
    env.kill_operator();
    env.mock.set_latency(Duration::from_millis(300));
    let mut plaintexts = Vec::with_capacity(N);
    for i in 0..N {
        let key = common::fake_key(Provider::OpenAi, "");
        let name = format!("k{i:03}");
        env.create_secret(&format!("{name}-src"), "apiKey", key.as_bytes()).await;
        env.create_key(&name, env.spec(Provider::OpenAi, &format!("{name}-src"))).await;
        plaintexts.push((name, key));
    }
    env.start_operator();
    // Kill the operator once it is part-way through.
    let api = env.keys();
    let secrets = env.secrets();
    let enc_count = || async {
        let lp = ListParams::default().labels("app.kubernetes.io/component=encrypted-key");
        secrets.list_metadata(&lp).await.map(|l| l.items.len()).unwrap_or(0)
    };
    common::eventually("some keys imported", Duration::from_secs(120), || async {
        let n = enc_count().await;
        (n >= 10).then_some(n)
    })
    .await;
    env.kill_operator();
    let at_kill = enc_count().await;
    env.mock.set_latency(Duration::from_millis(50));
    assert!(at_kill < N, "the kill must land mid-import ({at_kill} of {N} done)");
    env.start_operator();
    common::eventually("all keys Ready after restart", Duration::from_secs(240), || async {
        let keys = api.list(&ListParams::default()).await.ok()?;
        let ready = keys.items.iter().filter(|k| phase_of(k) == Some(KeyPhase::Ready)).count();
        (ready == N).then_some(())
    })
    .await;
    assert_eq!(enc_count().await, N, "exactly one ciphertext per key");
    for (name, key) in &plaintexts {
        let k = api.get(name).await.expect("key");
        assert_eq!(k.status.and_then(|s| s.key_prefix), Some(key[..8].to_string()));
        assert!(env.secrets().get_opt(&format!("{name}-src")).await.expect("get").is_none(), "{name}: source deleted");
        let imported = env.event_reasons(name).await.iter().filter(|r| *r == "Imported").count();
        assert!(imported <= 1, "{name} imported {imported} times");
        // Validation may repeat once after the kill, never per reconcile.
        // One check is two OpenAI calls; it may repeat once for a key caught by the kill, never per reconcile.
        assert!(env.mock.requests_for_key(key) <= 4, "{name}: {} validation calls", env.mock.requests_for_key(key));
    }
    env.assert_no_plaintext().await;
}
