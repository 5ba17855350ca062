//! The KEK outside the cluster, against real KMS processes: a Kubernetes KMS v2 plugin (k8s.io/kms's
//! gRPC service over a unix socket) and a Vault dev server (Transit, Kubernetes auth against the
//! local API server), both built from the Go module proxy by hack/kms.sh.
//!
//! Shown: one remote call per batch of keys, not per key; a rotated remote key makes new keys go
//! under it and old ones reseal; an unreachable KMS fails closed (no local fallback) and imports
//! wait with a condition; the operator under a KMS leaves no plaintext key and no plaintext DEK in
//! etcd; a move from the keyring Secret to Vault loses no key.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use byok_operator::crd::{KeyPhase, Provider};
use byok_operator::crypto::{Aad, Envelope};
use byok_operator::keystore;
use byok_operator::kms::kmsv2::KmsV2;
use byok_operator::kms::vault::{VaultAuth, VaultConfig, VaultTransit};
use byok_operator::kms::{DekPolicy, KekError, KekSource, Kms, KmsError, RemoteKek};
use common::kms::{Plugin, TRANSIT_KEY, Vault, etcd_hits};
use common::{EnvOptions, TIMEOUT, TestEnv, condition_reason, eventually, phase_of};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use secrecy::{ExposeSecret, SecretString};

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

fn remote(kms: Arc<dyn Kms>) -> (KekSource, Arc<RemoteKek>) {
    let source = KekSource::remote(kms, None, DekPolicy::default());
    let KekSource::Remote(r) = &source else { unreachable!("a remote source") };
    let r = r.clone();
    (source, r)
}

fn aad(i: usize) -> Aad {
    Aad::new("team-a", &format!("key-{i}"), &format!("uid-{i}"), "openai")
}

/// Seals `n` keys, then opens them from a fresh source (a restarted operator): the remote calls
/// each took, and the envelopes.
async fn batch(kms: Arc<dyn Kms>, n: usize) -> (u64, u64, Vec<Envelope>) {
    let (kek, r) = remote(kms.clone());
    let mut envs = Vec::new();
    for i in 0..n {
        envs.push(kek.seal(&aad(i), &SecretString::from(format!("sk-secret-{i}"))).await.expect("seals"));
    }
    let (restarted, r2) = remote(kms);
    for (i, env) in envs.iter().enumerate() {
        let key = restarted.open(&aad(i), env).await.expect("opens after a restart");
        assert_eq!(key.expose_secret(), format!("sk-secret-{i}"));
    }
    (r.calls.wraps.load(Ordering::Relaxed), r2.calls.unwraps.load(Ordering::Relaxed), envs)
}

#[tokio::test]
async fn a_kms_v2_plugin_wraps_one_dek_per_batch_rotates_and_fails_closed() {
    let mut plugin = Plugin::start("plugin").await;
    let kms: Arc<dyn Kms> = Arc::new(KmsV2::new(plugin.socket.clone(), CALL_TIMEOUT).expect("client"));
    assert_eq!(kms.current_key_id().await.expect("status"), "key-1");

    let (wraps, unwraps, envs) = batch(kms.clone(), 50).await;
    assert_eq!((wraps, unwraps), (1, 1), "50 keys: one Encrypt, and one Decrypt after a restart");
    assert!(envs.iter().all(|e| e.kek_id() == "key-1" && e.encode().starts_with("byok2.")));
    // The plugin's annotations travel in the envelope and back (it refuses a Decrypt without them).
    assert!(envs[0].wrapped().is_some_and(|w| w.annotations.contains_key("kms.byok.test/alg")));

    // The remote key rotates: seen at the next status, new keys go under it, old ones still open
    // and are due for a reseal.
    let (kek, r) = remote(kms.clone());
    assert!(r.refresh().await.expect("status"), "the first status is news");
    plugin.rotate("key-2");
    assert!(r.refresh().await.expect("status"), "the rotation is seen");
    let fresh = kek.seal(&aad(0), &SecretString::from("sk-secret-0")).await.expect("seals");
    assert_eq!(fresh.kek_id(), "key-2");
    assert!(kek.needs_reseal(&envs[0]) && !kek.needs_reseal(&fresh));
    assert_eq!(kek.open(&aad(0), &envs[0]).await.expect("an old key opens").expose_secret(), "sk-secret-0");

    // The plugin goes away: a DEK not in memory cannot be had, and nothing falls back.
    plugin.stop();
    let (cold, _) = remote(kms.clone());
    let err = cold.open(&aad(1), &envs[1]).await.expect_err("no KMS, no key");
    assert!(matches!(err, KekError::Kms(KmsError::Unavailable(_))), "{err}");
    assert!(matches!(
        cold.seal(&aad(1), &SecretString::from("sk-x")).await,
        Err(KekError::Kms(KmsError::Unavailable(_)))
    ));
    // A key whose DEK is still cached keeps opening (a running judge's key is already out anyway).
    assert!(kek.open(&aad(0), &fresh).await.is_ok());
    plugin.restart().await;
    assert_eq!(cold.open(&aad(1), &envs[1]).await.expect("opens again").expose_secret(), "sk-secret-1");

    // A tampered envelope: the plugin refuses another key id; the AAD refuses another object.
    let moved = Envelope::parse(&envs[2].encode().replacen("byok2.a2V5LTE", "byok2.a2V5LTI", 1)).expect("parses");
    let refused = cold.open(&aad(2), &moved).await.expect_err("relabelled");
    assert!(matches!(refused, KekError::Kms(KmsError::Refused(_)) | KekError::Crypto(_)), "not an outage: {refused}");
    assert!(matches!(cold.open(&aad(3), &envs[2]).await, Err(KekError::Crypto(_))), "another object's AAD");
}

/// A service account token from the API server (TokenRequest).
async fn token(sa: &Api<ServiceAccount>, name: &str, audiences: Vec<String>) -> String {
    let req = TokenRequest {
        spec: TokenRequestSpec { audiences, expiration_seconds: Some(3600), bound_object_ref: None },
        ..Default::default()
    };
    let answer = sa.create_token_request(name, &PostParams::default(), &req).await.expect("token request");
    answer.status.expect("token status").token
}

async fn service_account(sa: &Api<ServiceAccount>, name: &str) {
    let obj = ServiceAccount {
        metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
        ..Default::default()
    };
    sa.create(&PostParams::default(), &obj).await.expect("service account");
}

fn pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("ascii")).collect();
    format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", lines.join("\n"))
}

/// Vault's Kubernetes auth method against the local API server: a reviewer account allowed to
/// make TokenReviews, and the operator's account, whose `vault`-audience token is written to a file.
async fn kubernetes_auth(env: &TestEnv, vault: &Vault) -> std::path::PathBuf {
    let sa: Api<ServiceAccount> = Api::namespaced(env.client.clone(), &env.op_ns);
    service_account(&sa, "vault-reviewer").await;
    service_account(&sa, "byok-operator").await;
    let binding = ClusterRoleBinding {
        metadata: kube::api::ObjectMeta { name: Some(format!("{}-vault-reviewer", env.op_ns)), ..Default::default() },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: "system:auth-delegator".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "vault-reviewer".into(),
            namespace: Some(env.op_ns.clone()),
            api_group: None,
        }]),
    };
    Api::<ClusterRoleBinding>::all(env.client.clone()).create(&PostParams::default(), &binding).await.expect("binding");
    let config = kube::Config::infer().await.expect("kubeconfig");
    let ca = config.root_cert.as_ref().and_then(|c| c.first()).map(|der| pem(der)).expect("the API server's CA");
    let reviewer = token(&sa, "vault-reviewer", vec![]).await;
    vault.enable_kubernetes_auth(&config.cluster_url.to_string(), &ca, &reviewer, &env.op_ns, "byok-operator").await;
    let jwt = vault.dir().join("operator-token");
    std::fs::write(&jwt, token(&sa, "byok-operator", vec!["vault".into()]).await).expect("token file");
    jwt
}

fn vault_config(vault: &Vault, auth: VaultAuth) -> VaultConfig {
    VaultConfig {
        address: vault.addr.clone(),
        mount: "transit".into(),
        key: TRANSIT_KEY.into(),
        auth,
        ca_file: None,
        timeout: CALL_TIMEOUT,
    }
}

#[tokio::test]
async fn vault_transit_with_kubernetes_auth_wraps_rotates_and_fails_closed() {
    let env = TestEnv::new("vault_auth").await;
    let mut vault = Vault::start("vault-auth").await;
    let jwt = kubernetes_auth(&env, &vault).await;
    let auth =
        VaultAuth::Kubernetes { mount: "kubernetes".into(), role: "byok-operator".into(), jwt_file: jwt.clone() };
    let kms: Arc<dyn Kms> = Arc::new(VaultTransit::new(vault_config(&vault, auth)).expect("client"));
    assert_eq!(kms.current_key_id().await.expect("key info"), format!("vault:{TRANSIT_KEY}:v1"));

    let (wraps, unwraps, envs) = batch(kms.clone(), 50).await;
    assert_eq!((wraps, unwraps), (1, 1), "50 keys: one encrypt, and one decrypt after a restart");

    // Another account's token is refused by Vault, not taken for an outage.
    let wrong = vault.dir().join("wrong-token");
    let sa: Api<ServiceAccount> = Api::namespaced(env.client.clone(), &env.op_ns);
    std::fs::write(&wrong, token(&sa, "vault-reviewer", vec!["vault".into()]).await).expect("token file");
    let auth = VaultAuth::Kubernetes { mount: "kubernetes".into(), role: "byok-operator".into(), jwt_file: wrong };
    let intruder: Arc<dyn Kms> = Arc::new(VaultTransit::new(vault_config(&vault, auth)).expect("client"));
    let (intruder, _) = remote(intruder);
    assert!(matches!(intruder.open(&aad(0), &envs[0]).await, Err(KekError::Kms(KmsError::Refused(_)))));

    vault.rotate().await;
    let (kek, r) = remote(kms.clone());
    r.refresh().await.expect("key info");
    let fresh = kek.seal(&aad(0), &SecretString::from("sk-secret-0")).await.expect("seals");
    assert_eq!(fresh.kek_id(), format!("vault:{TRANSIT_KEY}:v2"));
    assert!(kek.needs_reseal(&envs[0]));
    assert_eq!(kek.open(&aad(0), &envs[0]).await.expect("v1 opens").expose_secret(), "sk-secret-0");
    // An envelope whose id was edited to another version is refused before Vault is asked.
    let edited = Envelope::parse(&envs[1].encode().replacen(
        &b64(&format!("vault:{TRANSIT_KEY}:v1")),
        &b64(&format!("vault:{TRANSIT_KEY}:v2")),
        1,
    ))
    .expect("parses");
    assert!(matches!(kek.open(&aad(1), &edited).await, Err(KekError::Kms(KmsError::Refused(_)))));

    vault.stop();
    let (cold, _) = remote(kms);
    assert!(matches!(cold.open(&aad(1), &envs[1]).await, Err(KekError::Kms(KmsError::Unavailable(_)))));
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

/// The envelopes of the test namespace's encrypted Secrets, by ByokKey name.
async fn envelopes(env: &TestEnv) -> Vec<(String, Envelope)> {
    let lp = ListParams::default().labels(&keystore::selector());
    let secrets: Vec<Secret> = env.secrets().list(&lp).await.expect("list").items;
    secrets
        .iter()
        .map(|s| (s.name_any().trim_start_matches("byok-enc-").to_string(), keystore::envelope(s).expect("envelope")))
        .collect()
}

#[tokio::test]
async fn the_operator_under_kms_v2_leaves_no_plaintext_key_or_dek_in_etcd_and_waits_for_it() {
    let plugin = Plugin::start("operator").await;
    let socket = plugin.socket.to_string_lossy().to_string();
    let args =
        vec!["--kms".into(), "kms-v2".into(), "--kms-socket".into(), socket, "--kms-poll-seconds".into(), "1".into()];
    let mut env =
        TestEnv::with_options("kms_v2_operator", EnvOptions { operator_args: args, ..Default::default() }).await;
    let mut plaintexts = Vec::new();
    for (i, provider) in [Provider::OpenAi, Provider::Anthropic, Provider::Google].into_iter().enumerate() {
        plaintexts.push(env.add_key(&format!("k{i}"), provider, &format!("kms{i}")).await);
    }
    for i in 0..3 {
        env.wait_phase(&format!("k{i}"), KeyPhase::Ready).await;
    }
    let stored = envelopes(&env).await;
    assert_eq!(stored.len(), 3);
    assert!(stored.iter().all(|(_, e)| e.kek_id() == "key-1" && e.wrapped().is_some()), "sealed under the plugin");
    // No keyring Secret was made: with a KMS there is no local KEK.
    let op_secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.op_ns);
    assert!(op_secrets.get_opt("byok-operator-kek").await.expect("get").is_none(), "a local keyring was generated");
    env.assert_no_plaintext().await;

    // etcd: neither a key nor a DEK (unwrapped here by asking the plugin, as only the operator may).
    let kms = KmsV2::new(plugin.socket.clone(), CALL_TIMEOUT).expect("client");
    let mut needles: Vec<Vec<u8>> = plaintexts.iter().map(|k| k.as_bytes().to_vec()).collect();
    for (_, e) in &stored {
        let dek = kms.unwrap(e.kek_id(), e.wrapped().expect("wrapped")).await.expect("unwraps");
        needles.push(dek.to_vec());
    }
    let (hits, scanned) = etcd_hits(&needles).await;
    let (control, _) = etcd_hits(&[stored[0].1.wrapped().expect("wrapped").ciphertext.clone()]).await;
    assert!(control > 0 && scanned > 0, "the scan reads the stored ciphertexts ({scanned} bytes)");
    assert_eq!(hits, 0, "a plaintext key or DEK is in etcd");

    // The plugin goes away and the operator restarts (nothing in memory): a new key waits, saying why.
    let mut plugin = plugin;
    plugin.stop();
    env.kill_operator();
    env.start_operator();
    env.add_key("late", Provider::OpenAi, "kms-late").await;
    let waiting = env
        .wait_key("late", "waiting on the KMS", |k| {
            condition_reason(k, "Imported").as_deref() == Some("KmsUnavailable")
        })
        .await;
    assert_eq!(phase_of(&waiting), Some(KeyPhase::Pending));
    plugin.restart().await;
    env.wait_phase("late", KeyPhase::Ready).await;
    for i in 0..3 {
        env.wait_phase(&format!("k{i}"), KeyPhase::Ready).await;
    }
    env.assert_no_plaintext().await;
}

#[tokio::test]
async fn moving_from_the_keyring_secret_to_vault_loses_no_key() {
    let mut env = TestEnv::new("kms_migration").await;
    let mut plaintexts = Vec::new();
    for i in 0..5 {
        plaintexts.push(env.add_key(&format!("m{i}"), Provider::OpenAi, &format!("mig{i}")).await);
    }
    for i in 0..5 {
        env.wait_phase(&format!("m{i}"), KeyPhase::Ready).await;
    }
    assert!(envelopes(&env).await.iter().all(|(_, e)| e.wrapped().is_none()), "sealed under the keyring first");

    let vault = Vault::start("migration").await;
    env.kill_operator();
    let token_file = vault.root_token_file.to_string_lossy().to_string();
    env.set_operator_args(vec![
        "--kms".into(),
        "vault-transit".into(),
        "--vault-addr".into(),
        vault.addr.clone(),
        "--vault-token-file".into(),
        token_file,
    ]);
    env.start_operator();
    let want = format!("vault:{TRANSIT_KEY}:v1");
    let moved = eventually("every key resealed under Vault", TIMEOUT, || async {
        let all = envelopes(&env).await;
        (all.len() == 5 && all.iter().all(|(_, e)| e.kek_id() == want)).then_some(all)
    })
    .await;
    // `kek status` counts them under Vault's key version, none left on the keyring's KEK.
    let usage =
        byok_operator::cli::kek::status(&env.client, &env.op_ns, "byok-operator-kek").await.expect("kek status");
    // (It counts the whole cluster: other tests' keys are in it too.)
    let op_secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.op_ns);
    let ring =
        byok_operator::operator::keyring::from_secret(&op_secrets.get("byok-operator-kek").await.expect("keyring"))
            .expect("keyring loads");
    assert_eq!(usage.active, want);
    assert!(usage.usage.get(&want).is_some_and(|u| u.1 >= 5), "{usage:?}");
    assert_eq!(usage.usage.get(ring.active().id()), Some(&(0, 0)), "nothing left on the keyring's KEK: {usage:?}");
    // Each opens, under Vault alone (no keyring), to the key that was imported.
    let auth = VaultAuth::TokenFile(vault.root_token_file.clone());
    let (kek, _) = remote(Arc::new(VaultTransit::new(vault_config(&vault, auth)).expect("client")));
    for (name, envelope) in &moved {
        let key = env.keys().get(name).await.expect("key");
        let i: usize = name.trim_start_matches('m').parse().expect("index");
        let opened = kek.open(&keystore::aad(&key).expect("aad"), envelope).await.expect("opens under Vault");
        assert_eq!(opened.expose_secret(), plaintexts[i]);
        assert_eq!(phase_of(&key), Some(KeyPhase::Ready));
    }
    // etcd holds neither a key nor a DEK Vault wrapped (unwrapped here, as only the operator may).
    let vault_kms =
        VaultTransit::new(vault_config(&vault, VaultAuth::TokenFile(vault.root_token_file.clone()))).expect("client");
    let mut needles: Vec<Vec<u8>> = plaintexts.iter().map(|k| k.as_bytes().to_vec()).collect();
    for (_, e) in &moved {
        needles.push(vault_kms.unwrap(e.kek_id(), e.wrapped().expect("wrapped")).await.expect("unwraps").to_vec());
    }
    let (control, _) = etcd_hits(&[moved[0].1.wrapped().expect("wrapped").ciphertext.clone()]).await;
    assert!(control > 0, "the scan reads the stored ciphertexts");
    assert_eq!(etcd_hits(&needles).await.0, 0, "a plaintext key or DEK is in etcd");
    env.assert_no_plaintext().await;
}
