//! The ByokKey reconcile in milliseconds: against a fake API server and hand-filled caches, with
//! key checks going to the mock provider on loopback. No cluster, no root.
//!
//! Each scenario asserts the requests the reconcile made (what changed, in order) and the status
//! it wrote.

mod fast;

use byok_operator::controller::byokkey::FINALIZER;
use byok_operator::controller::byokkey::desired::DEFAULT_VALIDATION_INTERVAL;
use byok_operator::crd::conditions::byokkey::{DEFAULT, IMPORTED, READY, VALIDATED};
use byok_operator::crd::{ByokKey, ByokKeyStatus, KeyPhase};
use byok_operator::keystore;
use fast::keys::Keys;
use fast::{NS, changes};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use secrecy::ExposeSecret;
use serde_json::json;

const KEYS: &str = "/apis/launchgate.ai/v1alpha1/namespaces/team/byokkeys";
const SECRETS: &str = "/api/v1/namespaces/team/secrets";

/// Distinct, well-formed OpenAI keys the mock accepts.
fn plaintext(tag: &str) -> String {
    format!("sk-proj-fast-{tag}-0123456789abcdef")
}

fn status(key: &ByokKey) -> ByokKeyStatus {
    key.status.clone().unwrap_or_else(|| panic!("{} has a status", key.name_any()))
}

/// (status, reason) of condition `type_`.
fn cond(st: &ByokKeyStatus, type_: &str) -> (String, String) {
    let c = st.conditions.iter().find(|c| c.type_ == type_).unwrap_or_else(|| panic!("condition {type_}"));
    (c.status.clone(), c.reason.clone())
}

fn pair(status: &str, reason: &str) -> (String, String) {
    (status.to_string(), reason.to_string())
}

/// Imports `name` (a fresh ByokKey importing `name-src`) and lets the caches catch up.
async fn imported(w: &mut Keys, name: &str, key: &str, default: bool) -> ByokKey {
    let created = w.add(name, key, default);
    w.reconcile(&created).await.expect("import reconcile");
    w.sync();
    w.api.take_calls();
    w.requeued();
    w.stored(name)
}

#[tokio::test]
async fn first_import_encrypts_the_key_deletes_the_source_and_is_ready() {
    let mut w = Keys::new().await;
    let key = plaintext("first");
    let created = w.add("openai", &key, true);
    let source_uid = w.api.get::<Secret>(NS, "openai-src").and_then(|s| s.uid()).expect("source uid");
    w.api.take_calls();

    let action = w.reconcile(&created).await.expect("reconcile");

    let calls = w.api.take_calls();
    // Three writes, the fewest an import under sourcePolicy Delete can make: no finalizer (the
    // ciphertext's ownerReference has the garbage collector remove it) and no Event for a first
    // import that went straight to Ready (its conditions say it).
    assert_eq!(
        changes(&calls),
        [
            format!("PATCH {SECRETS}/byok-enc-openai"), // the ciphertext
            format!("DELETE {SECRETS}/openai-src"),     // the plaintext source
            format!("PATCH {KEYS}/openai/status"),      // Ready
        ]
    );
    // The source's data is read once, and deleted only if it is still the Secret that was read.
    let reads = calls.iter().filter(|c| c.line() == format!("GET {SECRETS}/openai-src")).count();
    assert_eq!(reads, 1, "one read of the source Secret's data");
    let delete = calls.iter().find(|c| c.method == "DELETE").expect("delete");
    assert_eq!(delete.body["preconditions"]["uid"], json!(source_uid));
    let apply = calls.iter().find(|c| c.path.ends_with("/byok-enc-openai") && c.method == "PATCH").expect("apply");
    assert!(apply.content_type.starts_with("application/apply-patch"), "server-side apply");
    assert!(apply.query.contains("fieldManager=byok-operator") && apply.query.contains("force=true"));
    assert!(!apply.body.to_string().contains(&key), "the plaintext never goes to the API server");

    let stored = w.stored("openai");
    let st = status(&stored);
    let active = w.ctx.kek.keyring().expect("keyring source").read().expect("keyring").active().id().to_string();
    assert_eq!(st.phase, Some(KeyPhase::Ready));
    assert_eq!(st.key_prefix.as_deref(), Some(&key[..keystore::PREFIX_LEN]));
    assert_eq!(st.kek_id.as_deref(), Some(active.as_str()));
    assert_eq!(st.encrypted_secret_ref.as_deref(), Some("byok-enc-openai"));
    assert!(st.effective_default && st.default_since.is_some());
    assert_eq!(cond(&st, IMPORTED), pair("True", "Imported"));
    assert_eq!(cond(&st, VALIDATED), pair("True", "Valid"));
    assert_eq!(cond(&st, READY), pair("True", "Ready"));
    assert_eq!(cond(&st, DEFAULT), pair("True", "EffectiveDefault"));
    assert_eq!(st.observed_generation, stored.metadata.generation);
    assert!(stored.finalizers().is_empty(), "no finalizer: {:?}", stored.finalizers());
    let imported = st.conditions.iter().find(|c| c.type_ == IMPORTED).expect("Imported");
    assert!(imported.message.contains(&active) && imported.message.contains("source Secret deleted"), "{imported:?}");

    // The ciphertext is the only copy left: owned by the key, sealed under the active KEK, and it opens.
    let enc = w.ciphertext("openai").expect("encrypted Secret");
    assert_eq!(enc.owner_references()[0].uid, stored.uid().expect("uid"));
    assert_eq!(keystore::envelope_kek(&enc), active);
    assert_eq!(enc.type_.as_deref(), Some(keystore::ENCRYPTED_SECRET_TYPE));
    let opened =
        keystore::open(Some(&enc), &stored, &w.ctx.kek.keyring().expect("keyring source").read().expect("keyring"))
            .expect("opens");
    assert_eq!(opened.key.expose_secret(), key);
    assert!(w.api.get::<Secret>(NS, "openai-src").is_none(), "sourcePolicy Delete: the source is gone");

    assert_eq!(w.mock.requests_for_key(&key), 2, "one validation: the model list and the scope probe");
    assert_eq!(action, Action::await_change(), "no scheduler entry: the revalidation timer has it");
    let due = w.ctx.revalidation.earliest().expect("re-validated after the interval");
    let after = due.saturating_duration_since(tokio::time::Instant::now());
    assert!(
        after <= DEFAULT_VALIDATION_INTERVAL
            && after > DEFAULT_VALIDATION_INTERVAL - std::time::Duration::from_secs(60)
    );
    // The one Event: it became the default (a change other keys' users care about).
    w.api.event("openai", "DefaultChanged", "now the default").await;
    let reasons: Vec<String> = w.api.events("openai").into_iter().map(|(r, _)| r).collect();
    assert_eq!(reasons, ["DefaultChanged"]);
    assert!(!format!("{:?}", w.api.events("openai")).contains(&key), "Events never hold the key");
}

#[tokio::test]
async fn a_lagging_cache_makes_no_second_import_validation_or_status_write() {
    let mut w = Keys::new().await;
    let key = plaintext("lag");
    let created = w.add("openai", &key, false);
    w.reconcile(&created).await.expect("import reconcile");
    w.api.take_calls();
    // The watch has delivered neither the status write nor the ciphertext: the cache still shows
    // the key as created, and the source cache the source deleted a moment ago.
    let written = w.stored("openai");

    w.reconcile(&created).await.expect("reconcile on the lagging cache");
    let calls = w.api.take_calls();
    assert_eq!(changes(&calls), Vec::<String>::new(), "nothing written again: {calls:#?}");
    assert!(!calls.iter().any(|c| c.line() == format!("GET {SECRETS}/openai-src")), "no second read of the source");
    // What it may do: look up the ciphertext the cache does not show yet, and finish a source
    // deletion the stale cache suggests is pending (answered 404).
    let lines: Vec<String> =
        calls.iter().filter(|c| !c.is_event()).map(|c| format!("{} {}", c.line(), c.code)).collect();
    assert_eq!(lines, [format!("GET {SECRETS}/byok-enc-openai 200"), format!("DELETE {SECRETS}/openai-src 404")]);
    assert_eq!(w.mock.requests_for_key(&key), 2, "no second validation");
    assert_eq!(w.stored("openai").resource_version(), written.resource_version(), "status not rewritten");

    // Once the caches caught up, a reconcile needs no API call at all.
    w.sync();
    w.reconcile(&w.cached("openai")).await.expect("reconcile");
    let calls: Vec<String> = w.api.take_calls().iter().filter(|c| !c.is_event()).map(|c| c.line()).collect();
    assert_eq!(calls, Vec::<String>::new());
    assert_eq!(w.mock.requests_for_key(&key), 2);
}

#[tokio::test]
async fn the_newer_default_wins_and_the_old_one_hands_over() {
    let mut w = Keys::new().await;
    let old = imported(&mut w, "old", &plaintext("old"), true).await;
    assert!(status(&old).effective_default);

    let created = w.add("new", &plaintext("new"), true);
    w.reconcile(&created).await.expect("reconcile new");
    let st = status(&w.stored("new"));
    assert_eq!(st.phase, Some(KeyPhase::Ready));
    assert!(st.effective_default, "the newest default wins");
    assert_eq!(cond(&st, DEFAULT), pair("True", "EffectiveDefault"));
    // The old default is told to look again; its status is its own reconcile's to write.
    assert_eq!(w.requeued(), ["old"]);
    assert!(status(&w.stored("old")).effective_default);

    w.sync();
    w.api.take_calls();
    let validations = w.mock.requests_total();
    w.reconcile_cached("old").await;
    assert_eq!(changes(&w.api.take_calls()), [format!("PATCH {KEYS}/old/status")]);
    let st = status(&w.stored("old"));
    assert!(!st.effective_default);
    assert_eq!(cond(&st, DEFAULT), pair("False", "Superseded"));
    assert_eq!(st.phase, Some(KeyPhase::Ready), "still usable, just not the default");
    assert_eq!(w.mock.requests_total(), validations, "a hand-off calls no provider");
    w.api.event("new", "DefaultChanged", "now the default").await;
    // Said on the old default too. Its note is not checked: kube-runtime's Recorder keys Events by
    // type, reason and object, not by note, so within 6 minutes of its first DefaultChanged this
    // one is sent as a series of it and keeps the first note ("now the default openai key").
    w.api.wait_published("old", "DefaultChanged", 2).await;

    // Settled: neither key asks for the other again, and nothing more is written.
    w.sync();
    for name in ["new", "old"] {
        w.reconcile_cached(name).await;
    }
    assert_eq!(w.requeued(), Vec::<String>::new());
    assert_eq!(changes(&w.api.take_calls()), Vec::<String>::new());
}

#[tokio::test]
async fn a_kek_rotation_reseals_the_ciphertext_under_the_new_kek() {
    let mut w = Keys::new().await;
    let key = plaintext("rotate");
    let before = imported(&mut w, "openai", &key, false).await;
    let old_kek = status(&before).kek_id.expect("kek");
    let old_envelope = w.ciphertext("openai").expect("ciphertext").data;
    let new_kek = w.ctx.kek.keyring().expect("keyring source").write().expect("keyring").rotate();
    assert_ne!(old_kek, new_kek);

    w.reconcile_cached("openai").await;
    let calls = w.api.take_calls();
    assert_eq!(changes(&calls), [format!("PATCH {SECRETS}/byok-enc-openai"), format!("PATCH {KEYS}/openai/status")]);
    let enc = w.ciphertext("openai").expect("ciphertext");
    assert_ne!(enc.data, old_envelope);
    assert_eq!(keystore::envelope_kek(&enc), new_kek);
    assert_eq!(enc.annotations().get(keystore::KEK_ID_ANNOTATION), Some(&new_kek));
    let source = w.ciphertext("openai").and_then(|s| keystore::imported_from(&s).map(str::to_string));
    assert!(source.is_some_and(|s| s.contains('/')), "still records the import it came from");
    let stored = w.stored("openai");
    let opened =
        keystore::open(Some(&enc), &stored, &w.ctx.kek.keyring().expect("keyring source").read().expect("keyring"))
            .expect("opens");
    assert_eq!(opened.key.expose_secret(), key);
    assert_eq!(status(&stored).kek_id.as_deref(), Some(new_kek.as_str()));
    assert_eq!(status(&stored).phase, Some(KeyPhase::Ready));
    assert_eq!(w.mock.requests_for_key(&key), 2, "resealing is not a reason to validate again");
    let note = w.api.event("openai", "ReEncrypted", &new_kek).await;
    assert!(note.contains(&old_kek), "{note}");

    // Done once: the next reconcile finds it under the active KEK.
    w.sync();
    w.reconcile_cached("openai").await;
    assert_eq!(changes(&w.api.take_calls()), Vec::<String>::new());
}

#[tokio::test]
async fn revoking_deletes_the_ciphertext_and_the_key_is_revoked() {
    let mut w = Keys::new().await;
    let key = plaintext("revoke");
    imported(&mut w, "openai", &key, true).await;
    let keys: Api<ByokKey> = Api::namespaced(w.api.client(), NS);
    let revoke = json!({ "spec": { "revoked": true } });
    keys.patch("openai", &PatchParams::default(), &Patch::Merge(&revoke)).await.expect("revoke");
    w.sync();
    w.api.take_calls();

    let action = w.reconcile_cached("openai").await;
    assert_eq!(
        changes(&w.api.take_calls()),
        [format!("DELETE {SECRETS}/byok-enc-openai"), format!("PATCH {KEYS}/openai/status")]
    );
    assert!(w.ciphertext("openai").is_none(), "the ciphertext is gone");
    let stored = w.stored("openai");
    let st = status(&stored);
    assert_eq!(st.phase, Some(KeyPhase::Revoked));
    assert_eq!((st.encrypted_secret_ref.as_deref(), st.kek_id.as_deref()), (None, None));
    assert_eq!(cond(&st, IMPORTED), pair("False", "Revoked"));
    assert_eq!(cond(&st, READY), pair("False", "Revoked"));
    assert!(!st.effective_default, "a revoked key is nobody's default");
    assert_eq!(st.observed_generation, stored.metadata.generation);
    assert_eq!(w.mock.requests_for_key(&key), 2, "revoking calls no provider");
    assert_eq!(action, Action::await_change());
    // The default moved away (see the hand-off test for why its note is not checked).
    w.api.wait_published("openai", "DefaultChanged", 2).await;
}

#[tokio::test]
async fn a_deleted_key_goes_at_once_and_the_default_candidates_look_again() {
    let mut w = Keys::new().await;
    imported(&mut w, "openai", &plaintext("delete"), true).await;
    imported(&mut w, "spare", &plaintext("spare"), true).await;
    imported(&mut w, "plain", &plaintext("plain"), false).await;
    let keys: Api<ByokKey> = Api::namespaced(w.api.client(), NS);
    let gone = w.stored("openai");
    keys.delete("openai", &DeleteParams::default()).await.expect("delete");
    assert!(w.api.get::<ByokKey>(NS, "openai").is_none(), "no finalizer holds it");
    w.sync();
    w.api.take_calls();

    // What the watch's delete event sets off.
    byok_operator::controller::byokkey::forget(&gone, &w.ctx);
    assert_eq!(changes(&w.api.take_calls()), Vec::<String>::new(), "the ciphertext is the garbage collector's");
    assert_eq!(w.requeued(), ["spare"], "the default may move: the other candidates look again (not every key)");
}

#[tokio::test]
async fn a_new_key_of_a_deleted_keys_name_replaces_its_leftover_ciphertext() {
    let mut w = Keys::new().await;
    imported(&mut w, "openai", &plaintext("old"), false).await;
    let leftover = w.ciphertext("openai").expect("ciphertext");
    let keys: Api<ByokKey> = Api::namespaced(w.api.client(), NS);
    keys.delete("openai", &DeleteParams::default()).await.expect("delete");
    // The garbage collector has not come by yet: the old ciphertext is still there.
    let key = plaintext("new");
    let created = w.add("openai", &key, false);
    assert_ne!(created.uid(), leftover.owner_references()[0].uid.clone().into(), "a new ByokKey");
    w.api.take_calls();

    w.reconcile(&created).await.expect("reconcile");
    let calls = w.api.take_calls();
    assert_eq!(
        changes(&calls),
        [
            format!("DELETE {SECRETS}/byok-enc-openai"), // the leftover, by its uid
            format!("PATCH {SECRETS}/byok-enc-openai"),  // a new ciphertext, a new object
            format!("DELETE {SECRETS}/openai-src"),
            format!("PATCH {KEYS}/openai/status"),
        ]
    );
    let delete = calls.iter().find(|c| c.line() == format!("DELETE {SECRETS}/byok-enc-openai")).expect("delete");
    assert_eq!(delete.body["preconditions"]["uid"], json!(leftover.uid()));
    // A collector deleting the leftover by its uid now misses: the new ciphertext is another object.
    let enc = w.ciphertext("openai").expect("new ciphertext");
    assert_ne!(enc.uid(), leftover.uid());
    assert_eq!(enc.owner_references()[0].uid, created.uid().expect("uid"));
    assert_eq!(status(&w.stored("openai")).phase, Some(KeyPhase::Ready));
}

#[tokio::test]
async fn a_key_of_an_earlier_release_is_cleaned_up_through_its_finalizer() {
    let mut w = Keys::new().await;
    imported(&mut w, "openai", &plaintext("delete"), true).await;
    imported(&mut w, "spare", &plaintext("spare"), true).await;
    let keys: Api<ByokKey> = Api::namespaced(w.api.client(), NS);
    let add = json!([{ "op": "add", "path": "/metadata/finalizers", "value": [FINALIZER] }]);
    let add: json_patch::Patch = serde_json::from_value(add).expect("patch");
    keys.patch("openai", &PatchParams::default(), &Patch::<()>::Json(add)).await.expect("finalizer of 0.2");
    keys.delete("openai", &DeleteParams::default()).await.expect("delete");
    let deleting = w.stored("openai");
    assert!(deleting.metadata.deletion_timestamp.is_some(), "held by the finalizer");
    w.sync();
    w.api.take_calls();

    let action = w.reconcile_cached("openai").await;
    let calls = w.api.take_calls();
    assert_eq!(changes(&calls), [format!("DELETE {SECRETS}/byok-enc-openai"), format!("PATCH {KEYS}/openai")]);
    let removal = calls.iter().find(|c| c.line() == format!("PATCH {KEYS}/openai")).expect("finalizer removal");
    assert_eq!(
        removal.body,
        json!([
            { "op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER },
            { "op": "remove", "path": "/metadata/finalizers/0" },
        ])
    );
    assert!(w.api.get::<ByokKey>(NS, "openai").is_none(), "the last finalizer gone, the ByokKey is gone");
    assert!(w.ciphertext("openai").is_none());
    assert!(w.ciphertext("spare").is_some(), "a sibling's ciphertext is untouched");
    assert_eq!(w.requeued(), ["spare"], "the default may move: the other candidates look again");
    assert_eq!(action, Action::await_change());
    w.api.event("openai", "Deleted", "its encrypted key was removed").await;

    // A reconcile of the gone key's last cached version (a lagging cache) is harmless.
    w.reconcile(&deleting).await.expect_err("the removal's test op finds no such object");
    assert_eq!(changes(&w.api.take_calls()), Vec::<String>::new());
}

#[tokio::test]
async fn a_secret_holding_the_ciphertexts_name_is_never_replaced_nor_deleted_even_by_a_revoke() {
    let mut w = Keys::new().await;
    // What another key's ciphertext looks like under a long name cut to this Secret name: the
    // operator's type, owned by a ByokKey, but not one named "openai".
    let mut planted = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(keystore::encrypted_secret_name("openai")),
            namespace: Some(NS.into()),
            owner_references: Some(vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "launchgate.ai/v1alpha1".into(),
                kind: "ByokKey".into(),
                name: "another-key-cut-to-the-same-name".into(),
                uid: "uid-of-another-key".into(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        type_: Some(keystore::ENCRYPTED_SECRET_TYPE.into()),
        ..Default::default()
    };
    planted = w.api.put(&planted);
    let created = w.add("openai", &plaintext("taken"), false);
    w.api.take_calls();

    w.reconcile(&created).await.expect("reconcile");
    assert_eq!(changes(&w.api.take_calls()), [format!("PATCH {KEYS}/openai/status")], "only the status");
    let st = status(&w.stored("openai"));
    assert_eq!(cond(&st, IMPORTED), pair("False", "CiphertextNameTaken"));
    assert!(w.api.get::<Secret>(NS, "openai-src").is_some(), "nothing stored, so the source stays");

    // Revoking the key deletes only a ciphertext of its own: here, nothing.
    let keys: Api<ByokKey> = Api::namespaced(w.api.client(), NS);
    keys.patch("openai", &PatchParams::default(), &Patch::Merge(&json!({ "spec": { "revoked": true } })))
        .await
        .expect("revoke");
    w.sync();
    w.api.take_calls();
    w.reconcile_cached("openai").await;
    assert_eq!(changes(&w.api.take_calls()), [format!("PATCH {KEYS}/openai/status")]);
    assert_eq!(w.ciphertext("openai").and_then(|s| s.uid()), planted.uid(), "the other Secret is untouched");
}
