//! The ByokKey reconcile: fetch (from caches) -> import or open the ciphertext -> validate ->
//! compute the effective default -> apply status, with Events on every transition.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use secrecy::{ExposeSecret, SecretString};

use super::desired::{self, condition, set_condition};
use super::import::{self, ImportError};
use super::validation::{self, Trigger};
use crate::controller::status::{self, Note};
use crate::controller::{Context, Error};
use crate::crd::conditions::byokkey::{DEFAULT, IMPORTED, MODEL_DEPRECATED, READY, VALIDATED};
use crate::crd::{ByokKey, ByokKeyStatus, KeyPhase, TEST_REQUESTED_ANNOTATION};
use crate::crypto::Envelope;
use crate::crypto::sealing::AzureTarget;
use crate::keystore::{self, OpenError};
use crate::labels::FIELD_MANAGER;
use crate::providers::{self, KeyCheck, models};

/// Identity of the key being reconciled, read once.
struct Target<'a> {
    key: &'a ByokKey,
    ns: String,
    name: String,
    generation: Option<i64>,
    now: Time,
    /// The versions of the key this reconcile works from: all older than the status it writes.
    replaced: Vec<String>,
}

/// Reconciles `key`. `patched_from` is the version a metadata patch of this reconcile (the
/// finalizer) replaced: the cache may still show it after the status is written.
pub async fn apply(key: Arc<ByokKey>, ctx: &Context, patched_from: Option<String>) -> Result<Action, Error> {
    let ns = key.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    // The keystore binds the ciphertext to the uid: a key without one is never sealed.
    let uid = key.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let t = Target {
        ns,
        name: key.name_any(),
        key: &key,
        generation: key.metadata.generation,
        now: Time(jiff::Timestamp::now()),
        replaced: key.resource_version().into_iter().chain(patched_from).collect(),
    };
    let old = ctx.written.current(&uid, key.resource_version().as_deref(), key.status.clone().unwrap_or_default());
    let mut st = old.clone();
    let mut notes: Vec<Note> = Vec::new();

    if key.spec.revoked {
        revoke(&t, ctx, &mut st).await?;
        return finish(&t, ctx, &old, st, notes, None).await;
    }

    // 1. Key material: import a new source version, or open the ciphertext we hold.
    let enc = encrypted_secret(&t, ctx).await?;
    let mut imported_now = false;
    let plaintext: Option<SecretString> = match import_if_new(&t, ctx, enc.as_ref(), &mut st, &mut notes).await? {
        Import::Fresh(k) => {
            imported_now = true;
            Some(k)
        }
        Import::Withdrawn => None,
        Import::Unchanged => match &enc {
            Some(secret) => open_ciphertext(&t, ctx, secret, &mut st, &mut notes).await?,
            None => None,
        },
    };

    // 2. Validation, when due.
    let mut requeue = None;
    if let Some(plaintext) = plaintext {
        requeue = validate(&t, ctx, &plaintext, imported_now, &mut st, &mut notes).await;
    }
    finish(&t, ctx, &old, st, notes, requeue).await
}

/// Finalizer cleanup: the ciphertext goes with the ByokKey, at once (not waiting for GC).
pub async fn cleanup(key: Arc<ByokKey>, ctx: &Context) -> Result<Action, Error> {
    let ns = key.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    delete_encrypted(ctx, &ns, &key.name_any()).await?;
    if let Some(uid) = key.uid() {
        ctx.backoff.lock().map(|mut b| b.remove(&uid)).ok();
        ctx.written.forget(&uid);
    }
    let note = "ByokKey deleted: its encrypted key was removed".to_string();
    status::publish(&ctx.recorder, key.as_ref(), vec![(EventType::Normal, "Deleted", note)]);
    // The default may move to a sibling: let each recompute (this key is leaving the cache).
    for sib in siblings(ctx, &key).iter().filter(|s| s.uid() != key.uid()) {
        let _ = ctx.requeue.send(ObjectRef::from_obj(sib.as_ref()));
    }
    Ok(Action::await_change())
}

async fn revoke(t: &Target<'_>, ctx: &Context, st: &mut ByokKeyStatus) -> Result<(), Error> {
    delete_encrypted(ctx, &t.ns, &t.name).await?;
    let msg = "revoked by spec.revoked: the encrypted key was deleted and is refused from now on";
    set_condition(&mut st.conditions, IMPORTED, "False", "Revoked", msg, t.generation, &t.now);
    st.phase = Some(KeyPhase::Revoked);
    st.encrypted_secret_ref = None;
    st.kek_id = None;
    Ok(())
}

/// The encrypted Secret from the cache. Only when the cache has none (a new key, or the cache
/// lagging right after an import) is the API server asked, so a key is never imported twice.
async fn encrypted_secret(t: &Target<'_>, ctx: &Context) -> Result<Option<Secret>, Error> {
    let name = keystore::encrypted_secret_name(&t.name);
    let owned_by_key = |s: &Secret| s.owner_references().iter().any(|o| Some(&o.uid) == t.key.meta().uid.as_ref());
    if let Some(s) = ctx.encrypted.get(&ObjectRef::new(&name).within(&t.ns)) {
        return Ok(owned_by_key(&s).then(|| (*s).clone()));
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &t.ns);
    Ok(api.get_opt(&name).await?.filter(owned_by_key))
}

/// What an import step decided.
enum Import {
    /// A new version was imported: its plaintext.
    Fresh(SecretString),
    /// Nothing new: the stored ciphertext (if any) stays in use.
    Unchanged,
    /// The stored ciphertext may no longer be used (it was deleted).
    Withdrawn,
}

/// Imports the source Secret when it holds a version not imported yet.
async fn import_if_new(
    t: &Target<'_>,
    ctx: &Context,
    enc: Option<&Secret>,
    st: &mut ByokKeyStatus,
    notes: &mut Vec<Note>,
) -> Result<Import, Error> {
    let recorded = enc.and_then(keystore::imported_from).map(str::to_string);
    let Some(source_ref) = t.key.spec.secret_ref.as_ref() else {
        return import_sealed(t, ctx, recorded, st, notes).await;
    };
    let src_name = &source_ref.name;
    if t.ns == ctx.config.namespace {
        // The keyring, the sealing key and the broker CA live here: nothing is imported from it.
        import_failed(t, st, notes, &ImportError::OperatorNamespace { secret: src_name.clone() }, enc.is_some());
        return Ok(Import::Unchanged);
    }
    let src = ctx.sources.get(&ObjectRef::new(src_name).within(&t.ns));
    let Some(src) = src else {
        if enc.is_none() {
            let err = ImportError::SecretNotFound { secret: src_name.clone() };
            import_failed(t, st, notes, &err, false);
        }
        return Ok(Import::Unchanged);
    };
    let version = keystore::source_version(
        src.uid().as_deref().unwrap_or_default(),
        src.resource_version().as_deref().unwrap_or_default(),
    );
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &t.ns);
    if recorded.as_deref() == Some(version.as_str()) {
        // Already imported: finish a deletion an earlier run may have been interrupted before.
        delete_source_if_policy(t, &api, src.uid(), notes).await?;
        return Ok(Import::Unchanged);
    }
    // A Secret that names another ByokKey is refused without reading it.
    let not_opted_in = || ImportError::NotOptedIn { secret: src_name.clone(), byokkey: t.name.clone() };
    if src.annotations().get(import::SOURCE_ANNOTATION).is_some_and(|v| v != &t.name) {
        import_failed(t, st, notes, &not_opted_in(), enc.is_some());
        return Ok(Import::Unchanged);
    }
    // The one read of Secret data: only when there is something new to import.
    let Some(source) = api.get_opt(src_name).await? else { return Ok(Import::Unchanged) };
    if !import::opted_in(source.type_.as_deref(), source.annotations(), &t.name) {
        import_failed(t, st, notes, &not_opted_in(), enc.is_some());
        return Ok(Import::Unchanged);
    }
    let data_key = &source_ref.key;
    let raw = source.data.as_ref().and_then(|d| d.get(data_key)).map(|b| b.0.as_slice());
    let imported = match import::extract(src_name, data_key, raw) {
        Ok(k) => k,
        Err(err) => {
            import_failed(t, st, notes, &err, enc.is_some());
            return Ok(Import::Unchanged);
        }
    };
    store_imported(t, ctx, &imported, &version, &format!("Secret {src_name}"), st, notes).await?;
    delete_source_if_policy(t, &api, source.uid(), notes).await?;
    Ok(Import::Fresh(imported.key))
}

/// Seals a freshly imported key under the active KEK into the encrypted Secret and says so.
async fn store_imported(
    t: &Target<'_>,
    ctx: &Context,
    imported: &import::ImportedKey,
    version: &str,
    from: &str,
    st: &mut ByokKeyStatus,
    notes: &mut Vec<Note>,
) -> Result<(), Error> {
    let envelope = {
        let ring = ctx.keyring.read().map_err(|_| Error::Internal("keyring lock poisoned".into()))?;
        keystore::seal(&ring, t.key, &imported.key)?
    };
    apply_encrypted(t, ctx, &envelope, version).await?;
    st.key_prefix = Some(imported.prefix.clone());
    st.encrypted_secret_ref = Some(keystore::encrypted_secret_name(&t.name));
    st.kek_id = Some(envelope.kek_id().to_string());
    let msg = format!("imported from {from} and encrypted under KEK {}", envelope.kek_id());
    set_condition(&mut st.conditions, IMPORTED, "True", "Imported", msg.clone(), t.generation, &t.now);
    notes.push((EventType::Normal, "Imported", msg));
    Ok(())
}

/// Imports `spec.sealed` when it differs from what was imported last: opened with the operator's
/// sealing key, checked to be made for this very ByokKey, then sealed under the KEK like any key.
async fn import_sealed(
    t: &Target<'_>,
    ctx: &Context,
    recorded: Option<String>,
    st: &mut ByokKeyStatus,
    notes: &mut Vec<Note>,
) -> Result<Import, Error> {
    let Some(sealed) = t.key.spec.sealed.as_deref() else { return Ok(Import::Unchanged) };
    let provider = t.key.spec.provider.as_str();
    let azure = t.key.spec.azure.as_ref().map(|a| AzureTarget::new(&a.endpoint, &a.deployment));
    // An Azure key's target is part of what was imported: the key is not used while it is checked again.
    let version = keystore::sealed_version(sealed, azure.as_ref());
    if recorded.as_deref() == Some(version.as_str()) {
        return Ok(Import::Unchanged);
    }
    let opened = ctx.sealing.unseal(sealed, &t.ns, &t.name, provider, azure.as_ref());
    let imported = opened.map_err(|e| e.to_string()).and_then(|key| {
        import::extract("spec.sealed", "key", Some(key.expose_secret().as_bytes())).map_err(|e| e.to_string())
    });
    let imported = match imported {
        Ok(k) => k,
        Err(msg) => {
            let reason = if msg.contains("made for") { "SealedKeyMismatch" } else { "SealedKeyInvalid" };
            let changed = condition(&st.conditions, IMPORTED).is_none_or(|c| c.reason != reason || c.message != msg);
            set_condition(&mut st.conditions, IMPORTED, "False", reason, msg.clone(), t.generation, &t.now);
            if changed {
                notes.push((EventType::Warning, reason, msg));
            }
            // A key sealed for another Azure target must not be sent to this one, even if an
            // earlier import of it is stored: withdraw it (spec.sealed can re-import it later).
            if recorded.is_some() && reason == "SealedKeyMismatch" && azure.is_some() {
                delete_encrypted(ctx, &t.ns, &t.name).await?;
                st.encrypted_secret_ref = None;
                st.kek_id = None;
                st.phase = Some(KeyPhase::Error);
                return Ok(Import::Withdrawn);
            }
            if recorded.is_none() {
                st.phase = Some(KeyPhase::Error);
            }
            return Ok(Import::Unchanged);
        }
    };
    store_imported(t, ctx, &imported, &version, "spec.sealed", st, notes).await?;
    Ok(Import::Fresh(imported.key))
}

fn import_failed(t: &Target<'_>, st: &mut ByokKeyStatus, notes: &mut Vec<Note>, err: &ImportError, kept: bool) {
    let mut msg = err.to_string();
    if kept {
        msg.push_str("; the previously imported key stays in use");
    } else {
        st.phase =
            Some(if matches!(err, ImportError::SecretNotFound { .. }) { KeyPhase::Pending } else { KeyPhase::Error });
    }
    let changed = condition(&st.conditions, IMPORTED).is_none_or(|c| c.reason != err.reason() || c.message != msg);
    set_condition(&mut st.conditions, IMPORTED, "False", err.reason(), msg.clone(), t.generation, &t.now);
    if changed {
        notes.push((EventType::Warning, err.reason(), msg));
    }
}

async fn delete_source_if_policy(
    t: &Target<'_>,
    api: &Api<Secret>,
    uid: Option<String>,
    notes: &mut Vec<Note>,
) -> Result<(), Error> {
    let Some(source) = t.key.spec.secret_ref.as_ref() else { return Ok(()) };
    if t.key.spec.source_policy != crate::crd::SourcePolicy::Delete {
        return Ok(());
    }
    let name = &source.name;
    // The uid precondition makes sure a Secret re-created meanwhile (a new key) is not deleted unread.
    let dp = DeleteParams { preconditions: Some(Preconditions { uid, resource_version: None }), ..Default::default() };
    match api.delete(name, &dp).await {
        Ok(_) => {
            tracing::info!(namespace = %t.ns, name = %t.name, secret = %name, "deleted imported source Secret");
            if let Some(note) = notes.iter_mut().find(|n| n.1 == "Imported") {
                note.2.push_str("; source Secret deleted (sourcePolicy: Delete)");
            } else {
                notes.push((
                    EventType::Normal,
                    "SourceDeleted",
                    format!("deleted source Secret {name} (sourcePolicy: Delete)"),
                ));
            }
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn apply_encrypted(t: &Target<'_>, ctx: &Context, envelope: &Envelope, version: &str) -> Result<(), Error> {
    let secret = keystore::encrypted_secret(t.key, envelope, version);
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &t.ns);
    let name = keystore::encrypted_secret_name(&t.name);
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&secret)).await?;
    Ok(())
}

/// Opens the stored ciphertext; re-encrypts it under the active KEK when it is sealed under an older one.
async fn open_ciphertext(
    t: &Target<'_>,
    ctx: &Context,
    secret: &Secret,
    st: &mut ByokKeyStatus,
    notes: &mut Vec<Note>,
) -> Result<Option<SecretString>, Error> {
    let opened = {
        let ring = ctx.keyring.read().map_err(|_| Error::Internal("keyring lock poisoned".into()))?;
        keystore::open(Some(secret), t.key, &ring)
            .and_then(|opened| Ok::<_, OpenError>((keystore::reseal(&ring, t.key, &opened)?, opened)))
    };
    let (resealed, opened) = match opened {
        Ok(v) => v,
        Err(e) => {
            decrypt_failed(t, secret, &e, st, notes);
            return Ok(None);
        }
    };
    let kek = match resealed {
        Some(new_env) => {
            apply_encrypted(t, ctx, &new_env, keystore::imported_from(secret).unwrap_or_default()).await?;
            let msg = format!("re-encrypted from KEK {} to KEK {}", opened.kek_id(), new_env.kek_id());
            notes.push((EventType::Normal, "ReEncrypted", msg));
            new_env.kek_id().to_string()
        }
        None => opened.kek_id().to_string(),
    };
    st.kek_id = Some(kek);
    st.encrypted_secret_ref = Some(secret.name_any());
    // Recomputed from the key itself, so a status lost to a crash right after import heals.
    st.key_prefix = Some(keystore::prefix(opened.key.expose_secret()));
    if condition(&st.conditions, IMPORTED).is_none_or(|c| c.status != "True") {
        let msg = "the encrypted key opens";
        set_condition(&mut st.conditions, IMPORTED, "True", "Imported", msg, t.generation, &t.now);
    }
    Ok(Some(opened.key))
}

/// The stored ciphertext does not open: the key is unusable until it is imported again (or its
/// KEK restored). Said once per change, not at every reconcile.
fn decrypt_failed(t: &Target<'_>, secret: &Secret, e: &OpenError, st: &mut ByokKeyStatus, notes: &mut Vec<Note>) {
    let msg = format!("cannot decrypt Secret {}: {e}", secret.name_any());
    let changed = condition(&st.conditions, IMPORTED).is_none_or(|c| c.reason != "DecryptFailed");
    set_condition(&mut st.conditions, IMPORTED, "False", "DecryptFailed", msg.clone(), t.generation, &t.now);
    st.phase = Some(KeyPhase::Error);
    if changed {
        tracing::warn!(namespace = %t.ns, name = %t.name, error = %e, "ciphertext does not open");
        notes.push((EventType::Warning, "DecryptFailed", msg));
    }
}

/// Validates against the provider when due; returns when to look again.
async fn validate(
    t: &Target<'_>,
    ctx: &Context,
    plaintext: &SecretString,
    imported_now: bool,
    st: &mut ByokKeyStatus,
    notes: &mut Vec<Note>,
) -> Option<Duration> {
    let uid = t.key.uid().unwrap_or_default();
    let interval = interval(t, ctx).await;
    let backoff_until = ctx.backoff.lock().ok().and_then(|b| b.get(&uid).map(|(_, at)| *at));
    let backoff_passed = backoff_until.is_none_or(|at| Instant::now() >= at);
    let token = t.key.annotations().get(TEST_REQUESTED_ANNOTATION).map(String::as_str).filter(|s| !s.is_empty());
    let now = t.now.0;
    let Some(trigger) = validation::due(st, t.generation, token, imported_now, now, interval, backoff_passed) else {
        return match st.phase {
            Some(KeyPhase::Ready) => Some(validation::remaining(st, now, interval)),
            Some(KeyPhase::Unknown) => backoff_until.map(|at| at.saturating_duration_since(Instant::now())),
            _ => None,
        };
    };
    let outcome = check(t, ctx, plaintext, &trigger, st, notes).await;
    if let providers::CheckOutcome::Unknown { retry_after, .. } = &outcome {
        let mut map = ctx.backoff.lock().ok()?;
        let attempts = map.get(&uid).map_or(0, |(n, _)| *n);
        let wait = validation::backoff(attempts, *retry_after);
        map.insert(uid, (attempts + 1, Instant::now() + wait));
        return Some(wait);
    }
    ctx.backoff.lock().map(|mut b| b.remove(&uid)).ok();
    (st.phase == Some(KeyPhase::Ready)).then_some(interval)
}

/// The re-validation interval. One the CRD's rule refuses (only an object stored before the rule
/// can hold one) does not silently become the default: a Warning says so at every reconcile.
async fn interval(t: &Target<'_>, ctx: &Context) -> Duration {
    let e = match desired::validation_interval(t.key) {
        Ok(interval) => return interval,
        Err(e) => e,
    };
    let every = desired::DEFAULT_VALIDATION_INTERVAL.as_secs() / 3600;
    tracing::warn!(namespace = %t.ns, name = %t.name, error = %e, "unusable spec.validation.interval");
    let msg = format!("spec.validation.interval: {e}; re-validating every {every}h (the default) instead");
    status::publish(&ctx.recorder, t.key, vec![(EventType::Warning, "InvalidInterval", msg)]);
    desired::DEFAULT_VALIDATION_INTERVAL
}

/// Asks the provider whether the key works, records the answer in status, and notes what changed.
async fn check(
    t: &Target<'_>,
    ctx: &Context,
    plaintext: &SecretString,
    trigger: &Trigger,
    st: &mut ByokKeyStatus,
    notes: &mut Vec<Note>,
) -> providers::CheckOutcome {
    let model = ctx.config.models.model_for(t.key.spec.provider, t.key.spec.azure.as_ref());
    let model = t.key.spec.model.clone().unwrap_or(model);
    let check =
        KeyCheck { provider: t.key.spec.provider, key: plaintext, model: &model, azure: t.key.spec.azure.as_ref() };
    let outcome = providers::check_key(&ctx.http, &ctx.config.endpoints, check).await;
    let labels =
        crate::metrics::ValidationLabels { provider: t.key.spec.provider.as_str(), outcome: outcome.reason_str() };
    ctx.metrics.validations.get_or_create(&labels).inc();
    let old_phase = st.phase;
    let old_reason = condition(&st.conditions, VALIDATED).map(|c| c.reason.clone());
    let old_lifecycle = condition(&st.conditions, MODEL_DEPRECATED).map(|c| (c.status.clone(), c.message.clone()));
    let reported = match &outcome {
        providers::CheckOutcome::Valid { lifecycle, .. } => lifecycle.as_ref(),
        _ => None,
    };
    let notice = models::notice(t.key.spec.provider, &model, models::today(), reported);
    validation::record(st, &outcome, trigger, &model, notice.as_ref(), t.generation, &t.now);
    let lifecycle = condition(&st.conditions, MODEL_DEPRECATED).map(|c| (c.status.clone(), c.message.clone()));
    if let Some((_, message)) = lifecycle.filter(|l| l.0 == "True" && old_lifecycle.as_ref() != Some(l)) {
        notes.push((EventType::Warning, "ModelDeprecated", message));
    }
    let reason = condition(&st.conditions, VALIDATED).map(|c| c.reason.clone()).unwrap_or_default();
    let message = condition(&st.conditions, VALIDATED).map(|c| c.message.clone()).unwrap_or_default();
    tracing::info!(namespace = %t.ns, name = %t.name, provider = %t.key.spec.provider, ?trigger,
        result = validation::result_word(&outcome), reason = %reason, "validated key");
    if let Trigger::TestRequested(_) = trigger {
        let type_ = if st.phase == Some(KeyPhase::Ready) { EventType::Normal } else { EventType::Warning };
        notes.push((type_, "Tested", format!("{}: {message}", validation::result_word(&outcome))));
    }
    if old_phase != st.phase || old_reason.as_deref() != Some(reason.as_str()) {
        let type_ = if st.phase == Some(KeyPhase::Ready) { EventType::Normal } else { EventType::Warning };
        notes.push((type_, "Validated", format!("{reason}: {message}")));
    }
    outcome
}

/// Computes Ready and Default, applies status when it changed, publishes Events.
async fn finish(
    t: &Target<'_>,
    ctx: &Context,
    old: &ByokKeyStatus,
    mut st: ByokKeyStatus,
    mut notes: Vec<Note>,
    requeue: Option<Duration>,
) -> Result<Action, Error> {
    set_ready(t, &mut st);
    let winner = set_default(t, ctx, old, &mut st, &mut notes);
    // A phase change gets its own Event only when no other Event of this reconcile explains it.
    if let (true, Some(phase)) = (old.phase != st.phase && notes.is_empty(), st.phase) {
        let type_ = if matches!(phase, KeyPhase::Ready | KeyPhase::Revoked | KeyPhase::Pending) {
            EventType::Normal
        } else {
            EventType::Warning
        };
        notes.push((type_, "PhaseChanged", format!("phase {:?} -> {phase:?}", old.phase)));
    }
    st.observed_generation = t.generation;
    if st != *old {
        write_status(t, ctx, st).await?;
    }
    status::publish(&ctx.recorder, t.key, notes);
    requeue_siblings(ctx, t.key, winner);
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Condition Ready, from the phase; when not ready, why, from the first condition that is not True.
fn set_ready(t: &Target<'_>, st: &mut ByokKeyStatus) {
    let usable = st.phase == Some(KeyPhase::Ready);
    let (ready_reason, ready_msg) = match st.phase {
        Some(KeyPhase::Ready) => ("Ready".to_string(), "imported, encrypted and validated".to_string()),
        Some(KeyPhase::Revoked) => ("Revoked".to_string(), "the key is revoked".to_string()),
        _ => {
            let c = condition(&st.conditions, IMPORTED).filter(|c| c.status != "True");
            let c = c.or_else(|| condition(&st.conditions, VALIDATED));
            c.map_or(("Pending".into(), "waiting for import and validation".into()), |c| {
                (c.reason.clone(), c.message.clone())
            })
        }
    };
    let status = if usable { "True" } else { "False" };
    set_condition(&mut st.conditions, READY, status, &ready_reason, ready_msg, t.generation, &t.now);
}

/// The effective default, computed over this key's siblings with this key's fresh phase, and
/// condition Default; returns the winner's uid.
fn set_default(
    t: &Target<'_>,
    ctx: &Context,
    old: &ByokKeyStatus,
    st: &mut ByokKeyStatus,
    notes: &mut Vec<Note>,
) -> Option<String> {
    st.default_since = match (t.key.spec.default, st.default_since.take()) {
        (true, Some(since)) => Some(since),
        (true, None) => Some(MicroTime(jiff::Timestamp::now())),
        (false, _) => None,
    };
    let mut me = t.key.clone();
    me.status = Some(st.clone());
    let siblings = siblings(ctx, t.key);
    let group = siblings.iter().map(|k| k.as_ref()).filter(|k| k.uid() != me.uid()).chain(std::iter::once(&me));
    let winner = desired::effective_default(group).and_then(|k| k.uid());
    st.effective_default = winner.is_some() && winner == me.uid();
    let (dstatus, dreason, dmsg) = match (t.key.spec.default, st.effective_default) {
        (_, true) => ("True", "EffectiveDefault", format!("the default {} key in this namespace", t.key.spec.provider)),
        (true, false) if winner.is_some() => {
            ("False", "Superseded", "a newer default key for this provider wins".into())
        }
        (true, false) => ("False", "NotUsable", "asked to be default but the key is not usable".into()),
        (false, _) => ("False", "NotRequested", "spec.default is false".into()),
    };
    set_condition(&mut st.conditions, DEFAULT, dstatus, dreason, dmsg, t.generation, &t.now);
    if old.effective_default != st.effective_default {
        let what = if st.effective_default { "now the default" } else { "no longer the default" };
        notes.push((EventType::Normal, "DefaultChanged", format!("{what} {} key", t.key.spec.provider)));
    }
    winner
}

/// Applies status and remembers it until the cache shows it (see `StatusMemo`).
async fn write_status(t: &Target<'_>, ctx: &Context, st: ByokKeyStatus) -> Result<(), Error> {
    let api: Api<ByokKey> = Api::namespaced(ctx.client.clone(), &t.ns);
    status::write(t.key, &t.replaced, &st, &ctx.written, &api).await
}

fn siblings(ctx: &Context, key: &ByokKey) -> Vec<Arc<ByokKey>> {
    let ns = key.namespace();
    ctx.byokkeys.state().into_iter().filter(|k| k.namespace() == ns && k.spec.provider == key.spec.provider).collect()
}

/// Reconciles siblings whose `effectiveDefault` disagrees with the winner just computed.
fn requeue_siblings(ctx: &Context, key: &ByokKey, winner: Option<String>) {
    for sib in siblings(ctx, key) {
        if sib.uid() == key.uid() {
            continue;
        }
        let shown = sib.status.as_ref().is_some_and(|s| s.effective_default);
        let is = winner.is_some() && sib.uid() == winner;
        if shown != is {
            let _ = ctx.requeue.send(ObjectRef::from_obj(sib.as_ref()));
        }
    }
}

async fn delete_encrypted(ctx: &Context, ns: &str, name: &str) -> Result<(), Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    match api.delete(&keystore::encrypted_secret_name(name), &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
