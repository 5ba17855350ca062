//! The ByokKey reconcile's decisions, without a cluster.

use super::*;
use crate::crd::{ByokKeySpec, Provider};
use crate::crypto::Keyring;
use crate::providers::models::Notice;
use k8s_openapi::api::core::v1::Secret;

const OP_NS: &str = "byok-system";

fn key(name: &str) -> ByokKey {
    let mut k = ByokKey::new(name, ByokKeySpec::from_secret(Provider::OpenAi, "src"));
    k.metadata.namespace = Some("team".into());
    k.metadata.uid = Some(format!("uid-{name}"));
    k.metadata.generation = Some(1);
    k
}

fn target(key: &ByokKey) -> Target<'_> {
    Target {
        key,
        ns: "team".into(),
        name: key.name_any(),
        uid: key.uid().expect("uid"),
        generation: key.metadata.generation,
        now: Time(jiff::Timestamp::from_second(1_800_000_000).expect("time")),
        replaced: vec![],
    }
}

/// The ciphertext of `key`, recording that it was imported from `version`.
fn stored(key: &ByokKey, version: &str) -> Secret {
    let ring = Keyring::generate();
    let envelope = keystore::seal(&ring, key, &SecretString::from("sk-proj-0123456789abcdef")).expect("seal");
    keystore::encrypted_secret(key, &envelope, version)
}

fn observed(encrypted: Option<Secret>, source: Option<SourceSeen>) -> Observed {
    let encrypted = encrypted.map(|s| Arc::new(s.into()));
    Observed { encrypted, leftover: None, name_taken: false, source, siblings: vec![] }
}

fn source(version: &str) -> Option<SourceSeen> {
    Some(SourceSeen { uid: Some("src-uid".into()), version: version.into(), names_other_key: false })
}

fn opened() -> Stored {
    Stored::Opened {
        key: SecretString::from("sk-proj-0123456789abcdef"),
        prefix: "sk-proj-".into(),
        secret: "k-encrypted".into(),
        kek_id: "kek-1".into(),
        resealed_from: None,
    }
}

fn reasons(p: &Planned) -> Vec<&str> {
    p.notes.iter().map(|n| n.1).collect()
}

#[test]
fn a_new_source_version_is_imported_and_a_known_one_is_not() {
    let mut k = key("k");
    k.spec.source_policy = SourcePolicy::Retain;
    let step = step(&k, &observed(None, source("v1")), "team", OP_NS);
    assert_eq!(step, Step::ImportSecret { version: "v1".into() });
    let known = observed(Some(stored(&k, "v1")), source("v1"));
    assert_eq!(step_of(&k, &known), Step::UseStored { refused: None, delete_source: false });
    let newer = observed(Some(stored(&k, "v1")), source("v2"));
    assert_eq!(step_of(&k, &newer), Step::ImportSecret { version: "v2".into() });
}

#[test]
fn an_interrupted_delete_of_the_source_is_finished() {
    let mut k = key("k");
    k.spec.source_policy = SourcePolicy::Delete;
    let known = observed(Some(stored(&k, "v1")), source("v1"));
    assert_eq!(step_of(&k, &known), Step::UseStored { refused: None, delete_source: true });
}

#[test]
fn refusals_are_decided_without_reading_the_secret() {
    let mut k = key("k");
    k.spec.source_policy = SourcePolicy::Retain;
    let other = Some(SourceSeen { uid: None, version: "v1".into(), names_other_key: true });
    let Step::UseStored { refused: Some(e), .. } = step_of(&k, &observed(None, other)) else { panic!("refused") };
    assert_eq!(e.reason(), "SourceNotOptedIn");
    let Step::UseStored { refused: Some(e), .. } = step(&k, &observed(None, source("v1")), OP_NS, OP_NS) else {
        panic!("refused")
    };
    assert_eq!(e.reason(), "SourceInOperatorNamespace");
    let Step::UseStored { refused: Some(e), .. } = step_of(&k, &observed(None, None)) else { panic!("refused") };
    assert_eq!(e.reason(), "SecretNotFound");
    // Cache lag: the ciphertext exists, the source is not in the cache (yet, or any more).
    assert_eq!(
        step_of(&k, &observed(Some(stored(&k, "v1")), None)),
        Step::UseStored { refused: None, delete_source: false }
    );
}

#[test]
fn revoked_wins_over_everything() {
    let mut k = key("k");
    k.spec.revoked = true;
    assert_eq!(step_of(&k, &observed(Some(stored(&k, "v1")), source("v2"))), Step::Revoke);
    let p = after_material(&target(&k), &ByokKeyStatus::default(), &Material::Revoked);
    assert_eq!(p.status.phase, Some(KeyPhase::Revoked));
    assert_eq!(condition(&p.status.conditions, IMPORTED).map(|c| c.reason.as_str()), Some("Revoked"));
}

#[test]
fn sealed_keys_are_imported_once_per_sealed_text() {
    let mut k = key("k");
    k.spec.secret_ref = None;
    k.spec.sealed = Some("sealed-text".into());
    let Step::ImportSealed { version } = step_of(&k, &observed(None, None)) else { panic!("import") };
    assert_eq!(
        step_of(&k, &observed(Some(stored(&k, &version)), None)),
        Step::UseStored { refused: None, delete_source: false }
    );
}

#[test]
fn an_import_fills_status_and_says_where_the_key_came_from() {
    let k = key("k");
    let imported = Imported {
        key: SecretString::from("sk-proj-0123456789abcdef"),
        prefix: "sk-proj-".into(),
        kek_id: "kek-1".into(),
        from: "Secret src".into(),
    };
    let p =
        after_material(&target(&k), &ByokKeyStatus::default(), &Material::Imported { imported, source_deleted: true });
    assert_eq!(p.status.key_prefix.as_deref(), Some("sk-proj-"));
    assert_eq!(p.status.kek_id.as_deref(), Some("kek-1"));
    assert_eq!(p.status.encrypted_secret_ref, Some(keystore::encrypted_secret_name("k")));
    assert_eq!(reasons(&p), ["Imported"]);
    assert!(p.notes[0].2.ends_with("source Secret deleted (sourcePolicy: Delete)"), "{}", p.notes[0].2);
}

#[test]
fn a_refused_import_keeps_the_stored_key_and_is_said_once() {
    let k = key("k");
    let t = target(&k);
    let old = ByokKeyStatus { phase: Some(KeyPhase::Ready), ..Default::default() };
    let refusal = Refusal { reason: "SourceNotOptedIn", message: "did not opt in".into(), pending: false };
    let m = || Material::Kept { refused: Some(refusal.clone()), stored: opened(), source_deleted: false };
    let first = after_material(&t, &old, &m());
    assert_eq!(first.status.phase, Some(KeyPhase::Ready), "the stored key stays in use");
    let imported = condition(&first.status.conditions, IMPORTED).expect("Imported");
    assert_eq!((imported.status.as_str(), imported.reason.as_str()), ("False", "SourceNotOptedIn"));
    assert!(imported.message.ends_with("the previously imported key stays in use"));
    assert_eq!(reasons(&first), ["SourceNotOptedIn"]);
    assert!(first.notes[0].0 == EventType::Warning);
    let again = after_material(&t, &first.status, &m());
    assert!(again.notes.is_empty(), "said once: {:?}", reasons(&again));
    assert_eq!(again.status, first.status);
}

#[test]
fn a_missing_source_is_pending_and_a_bad_one_an_error() {
    let k = key("k");
    let t = target(&k);
    let missing = Refusal { reason: "SecretNotFound", message: "not found".into(), pending: true };
    let m = Material::Kept { refused: Some(missing), stored: Stored::Nothing, source_deleted: false };
    assert_eq!(after_material(&t, &ByokKeyStatus::default(), &m).status.phase, Some(KeyPhase::Pending));
    let bad = Refusal { reason: "EmptyKey", message: "empty".into(), pending: false };
    let m = Material::Kept { refused: Some(bad), stored: Stored::Nothing, source_deleted: false };
    assert_eq!(after_material(&t, &ByokKeyStatus::default(), &m).status.phase, Some(KeyPhase::Error));
}

#[test]
fn a_ciphertext_that_does_not_open_is_an_error_said_once() {
    let k = key("k");
    let t = target(&k);
    let m = || Material::Kept {
        refused: None,
        stored: Stored::Unreadable {
            secret: "k-encrypted".into(),
            reason: "DecryptFailed",
            error: "unknown KEK".into(),
        },
        source_deleted: false,
    };
    let first = after_material(&t, &ByokKeyStatus::default(), &m());
    assert_eq!(first.status.phase, Some(KeyPhase::Error));
    assert_eq!(reasons(&first), ["DecryptFailed"]);
    assert!(after_material(&t, &first.status, &m()).notes.is_empty());
}

#[test]
fn an_unreachable_kms_keeps_the_phase_says_why_and_comes_back_soon() {
    let k = key("k");
    let t = target(&k);
    let stored = Material::Kept {
        refused: None,
        stored: Stored::Unreadable {
            secret: "byok-enc-k".into(),
            reason: crate::keystore::KMS_UNAVAILABLE,
            error: "the KMS is unavailable: connection refused".into(),
        },
        source_deleted: false,
    };
    let ready = ByokKeyStatus { phase: Some(KeyPhase::Ready), ..ByokKeyStatus::default() };
    let p = after_material(&t, &ready, &stored);
    assert_eq!(p.status.phase, Some(KeyPhase::Ready), "the key is not broken, the KMS is away");
    assert_eq!(reasons(&p), ["KmsUnavailable"]);
    assert!(stored.waits_on_kms());
    // A new key that cannot be sealed yet: Pending, not Error; a KMS that refuses: Error.
    let error = crate::kms::KmsError::Unavailable("timed out".into());
    let new = Material::Kept { refused: Some(Refusal::kms(&error)), stored: Stored::Nothing, source_deleted: false };
    assert_eq!(after_material(&t, &ByokKeyStatus::default(), &new).status.phase, Some(KeyPhase::Pending));
    assert!(new.waits_on_kms());
    let refused = crate::kms::KmsError::Refused("permission denied".into());
    let denied =
        Material::Kept { refused: Some(Refusal::kms(&refused)), stored: Stored::Nothing, source_deleted: false };
    assert_eq!(after_material(&t, &ByokKeyStatus::default(), &denied).status.phase, Some(KeyPhase::Error));
    assert!(!denied.waits_on_kms());
}

#[test]
fn a_ciphertext_of_an_unknown_envelope_version_is_named_not_called_damaged() {
    let k = key("k");
    let error = crate::crypto::EnvelopeError::Version("byok3".into()).to_string();
    let m = Material::Kept {
        refused: None,
        stored: Stored::Unreadable { secret: "byok-enc-k".into(), reason: "UnsupportedEnvelopeVersion", error },
        source_deleted: false,
    };
    let p = after_material(&target(&k), &ByokKeyStatus::default(), &m);
    assert_eq!(p.status.phase, Some(KeyPhase::Error));
    assert_eq!(reasons(&p), ["UnsupportedEnvelopeVersion"]);
    let imported = condition(&p.status.conditions, IMPORTED).expect("Imported");
    assert_eq!((imported.status.as_str(), imported.reason.as_str()), ("False", "UnsupportedEnvelopeVersion"));
    assert!(
        imported.message.contains("\"byok3\"") && imported.message.contains("newer byok-operator"),
        "{}",
        imported.message
    );
}

#[test]
fn a_reseal_is_said_and_the_new_kek_recorded() {
    let k = key("k");
    let Stored::Opened { key, prefix, secret, .. } = opened() else { unreachable!() };
    let stored = Stored::Opened { key, prefix, secret, kek_id: "kek-2".into(), resealed_from: Some("kek-1".into()) };
    let p = after_material(
        &target(&k),
        &ByokKeyStatus::default(),
        &Material::Kept { refused: None, stored, source_deleted: false },
    );
    assert_eq!(p.status.kek_id.as_deref(), Some("kek-2"));
    assert_eq!(reasons(&p), ["ReEncrypted"]);
    assert_eq!(condition(&p.status.conditions, IMPORTED).map(|c| c.status.as_str()), Some("True"));
}

#[test]
fn a_withdrawn_key_is_unusable() {
    let k = key("k");
    let old = ByokKeyStatus { phase: Some(KeyPhase::Ready), kek_id: Some("kek-1".into()), ..Default::default() };
    let refusal = Refusal { reason: "SealedKeyMismatch", message: "made for another".into(), pending: false };
    let p = after_material(&target(&k), &old, &Material::Withdrawn(refusal));
    assert_eq!(p.status.phase, Some(KeyPhase::Error));
    assert_eq!((p.status.kek_id.clone(), p.status.encrypted_secret_ref.clone()), (None, None));
}

#[test]
fn a_requested_test_is_answered_with_an_event() {
    let k = key("k");
    let t = target(&k);
    let mut p = Planned { status: ByokKeyStatus::default(), notes: vec![] };
    let outcome = CheckOutcome::Valid { http_status: 200, request_id: None, note: None, lifecycle: None };
    let trigger = Trigger::TestRequested("t1".into());
    after_check(&t, &mut p, &Checked { outcome: &outcome, trigger: &trigger, model: "gpt-5.1", notice: None });
    assert_eq!(p.status.phase, Some(KeyPhase::Ready));
    assert_eq!(reasons(&p), ["Tested", "Validated"]);
    assert_eq!(p.status.last_test.as_ref().map(|l| l.request_token.as_str()), Some("t1"));
}

#[test]
fn a_deprecated_model_is_warned_about_once() {
    let k = key("k");
    let t = target(&k);
    let notice = Notice {
        model: "gpt-4o".into(),
        shutdown: crate::providers::models::parse_date("2027-01-14"),
        replacement: Some("gpt-5.1".into()),
        retired: false,
        source: "test".into(),
    };
    let outcome = CheckOutcome::Valid { http_status: 200, request_id: None, note: None, lifecycle: None };
    let checked = Checked { outcome: &outcome, trigger: &Trigger::Periodic, model: "gpt-4o", notice: Some(&notice) };
    let mut p = Planned { status: ByokKeyStatus::default(), notes: vec![] };
    after_check(&t, &mut p, &checked);
    assert!(reasons(&p).contains(&"ModelDeprecated"), "{:?}", reasons(&p));
    p.notes.clear();
    after_check(&t, &mut p, &checked);
    assert!(p.notes.is_empty(), "{:?}", reasons(&p));
}

#[test]
fn kstatus_reads_the_phase() {
    let k = key("k");
    let t = target(&k);
    for (phase, reconciling, stalled) in [
        (KeyPhase::Ready, false, false),
        (KeyPhase::Revoked, false, false),
        (KeyPhase::Pending, true, false),
        (KeyPhase::Unknown, true, false),
        (KeyPhase::Invalid, false, true),
        (KeyPhase::Error, false, true),
    ] {
        let mut p = Planned { status: ByokKeyStatus { phase: Some(phase), ..Default::default() }, notes: vec![] };
        finish(&t, &ByokKeyStatus::default(), &mut p, &[]);
        let has = |type_| condition(&p.status.conditions, type_).is_some_and(|c| c.status == "True");
        assert_eq!(has("Reconciling"), reconciling, "{phase:?}");
        assert_eq!(has("Stalled"), stalled, "{phase:?}");
        assert_eq!(has("Ready"), phase == KeyPhase::Ready, "{phase:?}");
        assert_eq!(p.status.observed_generation, Some(1));
    }
}

#[test]
fn the_default_is_handed_to_the_newest_usable_default() {
    let mut older = key("older");
    older.spec.default = true;
    older.status = Some(ByokKeyStatus {
        phase: Some(KeyPhase::Ready),
        effective_default: true,
        default_since: Some(MicroTime(jiff::Timestamp::from_second(1_700_000_000).expect("time"))),
        ..Default::default()
    });
    let mut k = key("k");
    k.spec.default = true;
    let t = target(&k);
    let siblings = [Arc::new(older.clone())];
    let mut invalid =
        Planned { status: ByokKeyStatus { phase: Some(KeyPhase::Invalid), ..Default::default() }, notes: vec![] };
    assert_eq!(finish(&t, &ByokKeyStatus::default(), &mut invalid, &siblings), older.uid(), "not usable");
    assert!(!invalid.status.effective_default);
    let mut ready =
        Planned { status: ByokKeyStatus { phase: Some(KeyPhase::Ready), ..Default::default() }, notes: vec![] };
    assert_eq!(finish(&t, &ByokKeyStatus::default(), &mut ready, &siblings), k.uid());
    assert!(ready.status.effective_default);
    assert_eq!(reasons(&ready), ["DefaultChanged"]);
}

#[test]
fn a_phase_change_nobody_explained_gets_its_own_event() {
    let k = key("k");
    let old = ByokKeyStatus { phase: Some(KeyPhase::Ready), ..Default::default() };
    let mut p =
        Planned { status: ByokKeyStatus { phase: Some(KeyPhase::Unknown), ..Default::default() }, notes: vec![] };
    finish(&target(&k), &old, &mut p, &[]);
    assert_eq!(reasons(&p), ["PhaseChanged"]);
}

#[test]
fn a_first_import_straight_to_ready_is_said_by_conditions_and_a_later_one_by_an_event() {
    let k = key("k");
    let t = target(&k);
    let imported = || Imported {
        key: SecretString::from("sk-proj-0123456789abcdef"),
        prefix: "sk-proj-".into(),
        kek_id: "kek-1".into(),
        from: "Secret src".into(),
    };
    let ready = |p: &mut Planned| {
        p.status.phase = Some(KeyPhase::Ready);
        p.notes.push((EventType::Normal, "Validated", "Valid: ok".into()));
    };
    // First: nothing stored before. No Event; the Imported condition says it all.
    let new = ByokKeyStatus::default();
    let mut p = after_material(&t, &new, &Material::Imported { imported: imported(), source_deleted: true });
    ready(&mut p);
    finish(&t, &new, &mut p, &[]);
    assert_eq!(reasons(&p), Vec::<&str>::new());
    let msg = &condition(&p.status.conditions, IMPORTED).expect("Imported").message;
    assert!(msg.ends_with("source Secret deleted (sourcePolicy: Delete)"), "{msg}");

    // A new source version replacing a stored key is a change: it gets its Event.
    let before = p.status.clone();
    let mut p = after_material(&t, &before, &Material::Imported { imported: imported(), source_deleted: false });
    ready(&mut p);
    finish(&t, &before, &mut p, &[]);
    assert_eq!(reasons(&p), ["Imported", "Validated"]);

    // A first import that fails keeps its Warning.
    let mut p =
        Planned { status: ByokKeyStatus { phase: Some(KeyPhase::Invalid), ..Default::default() }, notes: vec![] };
    p.notes.push((EventType::Warning, "Validated", "Unauthorized: 401".into()));
    finish(&t, &new, &mut p, &[]);
    assert_eq!(reasons(&p), ["Validated"]);
}

#[test]
fn a_secret_holding_the_ciphertexts_name_is_never_written_over() {
    let k = key("k");
    let taken = Observed { name_taken: true, ..observed(None, source("v1")) };
    let expected = ImportError::CiphertextNameTaken { secret: keystore::encrypted_secret_name("k") };
    assert_eq!(step_of(&k, &taken), Step::UseStored { refused: Some(expected.clone()), delete_source: false });
    let refusal = Refusal::from(&expected);
    assert_eq!(refusal.reason, "CiphertextNameTaken");
    assert!(!refusal.pending, "someone has to act");
    // A leftover of an earlier key of this name is no obstacle: it is replaced.
    let leftover = Observed { leftover: Some("old-uid".into()), ..observed(None, source("v1")) };
    assert_eq!(step_of(&k, &leftover), Step::ImportSecret { version: "v1".into() });
}

fn step_of(k: &ByokKey, o: &Observed) -> Step {
    step(k, o, "team", OP_NS)
}
