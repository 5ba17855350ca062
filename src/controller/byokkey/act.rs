//! The ByokKey reconcile's I/O: observing the ciphertext and the source, carrying out a material
//! step, asking the provider, writing status. Decisions are `plan.rs`'s; these functions return
//! what happened and never touch a status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::events::EventType;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use secrecy::{ExposeSecret, SecretString};

use super::desired;
use super::import::{self, ImportError};
use super::plan::{self, Imported, Material, Observed, Refusal, SourceSeen, Step, Stored, Target};
use super::validation::{self, Trigger};
use crate::controller::status;
use crate::controller::{Context, Error};
use crate::crd::{ByokKey, ByokKeyStatus, KeyPhase, TEST_REQUESTED_ANNOTATION};
use crate::crypto::Envelope;
use crate::keystore::{self, Ciphertext, SealError};
use crate::labels::FIELD_MANAGER;
use crate::providers::{self, CheckOutcome, KeyCheck, models};

/// Observes the ciphertext, the source Secret's metadata and the siblings.
pub async fn observe(t: &Target<'_>, ctx: &Context) -> Result<Observed, Error> {
    let source = t.key.spec.secret_ref.as_ref().and_then(|r| ctx.sources.get(&ObjectRef::new(&r.name).within(&t.ns)));
    let source = source.map(|s| SourceSeen {
        version: keystore::source_version(
            s.uid().as_deref().unwrap_or_default(),
            s.resource_version().as_deref().unwrap_or_default(),
        ),
        uid: s.uid(),
        names_other_key: s.annotations().get(import::SOURCE_ANNOTATION).is_some_and(|v| v != &t.name),
    });
    let (encrypted, other) = encrypted_secret(t, ctx).await?;
    let (leftover, name_taken) = match other {
        Some(Other::Leftover(uid)) => (Some(uid), false),
        Some(Other::Taken) => (None, true),
        None => (None, false),
    };
    Ok(Observed { encrypted, leftover, name_taken, source, siblings: siblings(ctx, t.key) })
}

/// A Secret of the ciphertext's name that is not this key's.
enum Other {
    /// The ciphertext of an earlier ByokKey of this name (its uid): replaced before an import.
    Leftover(String),
    /// Anything else: left alone, and the import refused.
    Taken,
}

/// The encrypted Secret from the cache, or what else holds its name. Only when the cache shows
/// none of this key's (a new key, or the cache lagging right after an import) is the API server
/// asked, so a key is never imported twice.
async fn encrypted_secret(t: &Target<'_>, ctx: &Context) -> Result<(Option<Arc<Ciphertext>>, Option<Other>), Error> {
    let name = keystore::encrypted_secret_name(&t.name);
    if let Some(c) = ctx.encrypted.get(&ObjectRef::new(&name).within(&t.ns)).filter(|c| c.owned_by(&t.uid)) {
        return Ok((Some(c), None));
    }
    let Some(secret) = Api::<Secret>::namespaced(ctx.client.clone(), &t.ns).get_opt(&name).await? else {
        return Ok((None, None));
    };
    if keystore::owned_by(&secret, &t.uid) {
        return Ok((Some(Arc::new(secret.into())), None));
    }
    // Ours, of an earlier ByokKey of this very name, now gone (two live keys never share a name;
    // a longer name cut to the same Secret name is another key's and is never touched). It
    // opens for nobody: the old uid is in its AAD.
    let leftover = secret.type_.as_deref() == Some(keystore::ENCRYPTED_SECRET_TYPE)
        && secret.owner_references().iter().any(|o| o.kind == "ByokKey" && o.name == t.name);
    Ok((None, Some(secret.uid().filter(|_| leftover).map_or(Other::Taken, Other::Leftover))))
}

/// Deletes a leftover ciphertext (see [`Observed::leftover`]) by uid, so that the garbage
/// collector, which deletes it by that uid too, can never take the new key's ciphertext instead.
async fn replace_leftover(t: &Target<'_>, ctx: &Context, leftover: Option<&String>) -> Result<(), Error> {
    let Some(uid) = leftover else { return Ok(()) };
    let secret = keystore::encrypted_secret_name(&t.name);
    tracing::info!(namespace = %t.ns, name = %t.name, %secret, %uid, "deleting the ciphertext an earlier ByokKey of this name left");
    delete_by_uid(ctx, &t.ns, &secret, uid.clone()).await
}

/// Deletes Secret `name` if it is still the object `uid` (gone or replaced: nothing to do).
async fn delete_by_uid(ctx: &Context, ns: &str, name: &str, uid: String) -> Result<(), Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let dp = DeleteParams {
        preconditions: Some(Preconditions { uid: Some(uid), resource_version: None }),
        ..Default::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The keys of the same namespace and provider that ask to be the default (the effective default
/// is one of them), from the cache's index: not a scan of every key.
pub fn siblings(ctx: &Context, key: &ByokKey) -> Vec<Arc<ByokKey>> {
    ctx.index.defaults(&ctx.byokkeys, &key.namespace().unwrap_or_default(), key.spec.provider)
}

/// Carries out a material step.
pub async fn material(t: &Target<'_>, ctx: &Context, observed: &Observed, step: Step) -> Result<Material, Error> {
    let enc = observed.encrypted.as_deref();
    match step {
        Step::Revoke => {
            delete_encrypted(ctx, &t.ns, &t.name, &t.uid).await?;
            Ok(Material::Revoked)
        }
        Step::ImportSecret { version } => {
            replace_leftover(t, ctx, observed.leftover.as_ref()).await?;
            import_secret(t, ctx, enc, &version).await
        }
        Step::ImportSealed { version } => {
            replace_leftover(t, ctx, observed.leftover.as_ref()).await?;
            import_sealed(t, ctx, enc, &version).await
        }
        Step::UseStored { refused, delete_source } => {
            let source_deleted = delete_source && delete_source_secret(t, ctx, observed.source_uid()).await?;
            let stored = open_stored(t, ctx, enc).await?;
            Ok(Material::Kept { refused: refused.as_ref().map(Refusal::from), stored, source_deleted })
        }
    }
}

/// The one read of a source Secret's data, then the import; a Secret that did not opt in, or whose
/// value is not a key, is refused and the stored key (if any) stays in use.
async fn import_secret(
    t: &Target<'_>,
    ctx: &Context,
    enc: Option<&Ciphertext>,
    version: &str,
) -> Result<Material, Error> {
    let source_ref = t.key.spec.secret_ref.as_ref().ok_or(Error::MissingField("spec.secretRef"))?;
    let (name, data_key) = (&source_ref.name, &source_ref.key);
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &t.ns);
    let refused = |e: ImportError| Some(Refusal::from(&e));
    let extracted = match api.get_opt(name).await? {
        // Gone since the cache saw it: nothing to import.
        None => return keep(t, ctx, enc, None).await,
        Some(s) if !import::opted_in(s.type_.as_deref(), s.annotations(), &t.name) => {
            Err(ImportError::NotOptedIn { secret: name.clone(), byokkey: t.name.clone() })
        }
        Some(s) => {
            let raw = s.data.as_ref().and_then(|d| d.get(data_key)).map(|b| b.0.as_slice());
            import::extract(name, data_key, raw).map(|key| (key, s.uid()))
        }
    };
    let (key, uid) = match extracted {
        Ok(v) => v,
        Err(e) => return keep(t, ctx, enc, refused(e)).await,
    };
    let imported = match store(t, ctx, key, version, format!("Secret {name}")).await {
        Err(Error::Seal(SealError::Kms(e))) => return keep(t, ctx, enc, Some(Refusal::kms(&e))).await,
        other => other?,
    };
    crate::crash_point!(crate::failpoints::AFTER_STORE);
    let source_deleted =
        t.key.spec.source_policy == crate::crd::SourcePolicy::Delete && delete_source_secret(t, ctx, uid).await?;
    Ok(Material::Imported { imported, source_deleted })
}

async fn keep(
    t: &Target<'_>,
    ctx: &Context,
    enc: Option<&Ciphertext>,
    refused: Option<Refusal>,
) -> Result<Material, Error> {
    Ok(Material::Kept { refused, stored: open_stored(t, ctx, enc).await?, source_deleted: false })
}

/// Imports `spec.sealed`: opened with the operator's sealing key, checked to be made for this very
/// ByokKey, then sealed under the KEK like any key.
async fn import_sealed(
    t: &Target<'_>,
    ctx: &Context,
    enc: Option<&Ciphertext>,
    version: &str,
) -> Result<Material, Error> {
    let sealed = t.key.spec.sealed.as_deref().ok_or(Error::MissingField("spec.sealed"))?;
    let provider = t.key.spec.provider.as_str();
    let azure = t.key.spec.azure.as_ref().map(plan::sealing_target);
    let opened = ctx.sealing.unseal(sealed, &t.ns, &t.name, provider, azure.as_ref());
    let extracted = opened.map_err(|e| e.to_string()).and_then(|key| {
        import::extract("spec.sealed", "key", Some(key.expose_secret().as_bytes())).map_err(|e| e.to_string())
    });
    let message = match extracted {
        Ok(key) => {
            return match store(t, ctx, key, version, "spec.sealed".into()).await {
                Ok(imported) => Ok(Material::Imported { imported, source_deleted: false }),
                Err(Error::Seal(SealError::Kms(e))) => keep(t, ctx, enc, Some(Refusal::kms(&e))).await,
                Err(e) => Err(e),
            };
        }
        Err(message) => message,
    };
    let mismatch = message.contains("made for");
    let reason = if mismatch { "SealedKeyMismatch" } else { "SealedKeyInvalid" };
    let refusal = Refusal { reason, message, pending: false };
    // A key sealed for another Azure target must not be sent to this one, even if an earlier
    // import of it is stored: withdraw it (spec.sealed can re-import it later).
    if enc.is_some() && mismatch && azure.is_some() {
        delete_encrypted(ctx, &t.ns, &t.name, &t.uid).await?;
        return Ok(Material::Withdrawn(refusal));
    }
    keep(t, ctx, enc, Some(refusal)).await
}

/// Seals a freshly imported key under the active KEK into the encrypted Secret.
async fn store(
    t: &Target<'_>,
    ctx: &Context,
    key: import::ImportedKey,
    version: &str,
    from: String,
) -> Result<Imported, Error> {
    let envelope = keystore::seal_under(&ctx.kek, t.key, &key.key).await?;
    apply_encrypted(t, ctx, &envelope, version).await?;
    Ok(Imported { key: key.key, prefix: key.prefix, kek_id: envelope.kek_id().to_string(), from })
}

/// Opens the stored ciphertext; re-encrypts it under the active KEK when it is sealed under an older one.
async fn open_stored(t: &Target<'_>, ctx: &Context, enc: Option<&Ciphertext>) -> Result<Stored, Error> {
    let Some(secret) = enc else { return Ok(Stored::Nothing) };
    let opened = match keystore::open_under(Some(secret), t.key, &ctx.kek).await {
        // A reseal that fails (a KMS allowing decrypt but not encrypt, or away for a moment) leaves
        // the key usable where it is: said in the log, tried again at the next reconcile.
        Ok(opened) => match keystore::reseal_under(&ctx.kek, t.key, &opened).await {
            Ok(resealed) => Ok((resealed, opened)),
            Err(e) => {
                tracing::warn!(namespace = %t.ns, name = %t.name, error = %e, "the key opens but could not be re-encrypted");
                Ok((None, opened))
            }
        },
        Err(e) => Err(e),
    };
    let (resealed, opened) = match opened {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(namespace = %t.ns, name = %t.name, error = %e, "ciphertext does not open");
            return Ok(Stored::Unreadable { secret: secret.name.clone(), reason: e.reason(), error: e.to_string() });
        }
    };
    let (kek_id, resealed_from) = match resealed {
        Some(new_env) => {
            apply_encrypted(t, ctx, &new_env, secret.imported_from.as_deref().unwrap_or_default()).await?;
            crate::crash_point!(crate::failpoints::AFTER_RESEAL);
            (new_env.kek_id().to_string(), Some(opened.kek_id().to_string()))
        }
        None => (opened.kek_id().to_string(), None),
    };
    let prefix = keystore::prefix(opened.key.expose_secret());
    Ok(Stored::Opened { key: opened.key, prefix, secret: secret.name.clone(), kek_id, resealed_from })
}

/// Deletes the imported source Secret; the uid precondition makes sure a Secret re-created
/// meanwhile (a new key) is not deleted unread. Whether it was deleted now.
async fn delete_source_secret(t: &Target<'_>, ctx: &Context, uid: Option<String>) -> Result<bool, Error> {
    let Some(name) = t.key.spec.secret_ref.as_ref().map(|s| &s.name) else { return Ok(false) };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &t.ns);
    let dp = DeleteParams { preconditions: Some(Preconditions { uid, resource_version: None }), ..Default::default() };
    match api.delete(name, &dp).await {
        Ok(_) => {
            tracing::info!(namespace = %t.ns, name = %t.name, secret = %name, "deleted imported source Secret");
            Ok(true)
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(false),
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

pub async fn delete_encrypted(ctx: &Context, ns: &str, name: &str, owner_uid: &str) -> Result<(), Error> {
    // Only this key's own ciphertext, by its uid: a Secret that merely holds the name (someone
    // else's, or another key's under a cut long name) is never deleted.
    let secret_name = keystore::encrypted_secret_name(name);
    let cached = ctx.encrypted.get(&ObjectRef::new(&secret_name).within(ns)).filter(|c| c.owned_by(owner_uid));
    let found = match cached {
        Some(c) => c.uid.clone(),
        None => Api::<Secret>::namespaced(ctx.client.clone(), ns)
            .get_opt(&secret_name)
            .await?
            .filter(|s| keystore::owned_by(s, owner_uid))
            .and_then(|s| s.uid()),
    };
    match found {
        Some(uid) => delete_by_uid(ctx, ns, &secret_name, uid).await,
        None => Ok(()),
    }
}

/// A validation when one is due: the provider's answer and what it was checked against, and when
/// to look again (for a verdict, once its phase is known: `interval` when Ready).
pub struct Validation {
    pub checked: Option<(CheckOutcome, Trigger, String, Option<models::Notice>)>,
    /// A retry after a check without a verdict, or while one is backing off.
    pub requeue: Option<Duration>,
    /// A Ready key's next validation, when none was due now.
    pub revalidate: Option<Duration>,
    pub interval: Duration,
}

/// Validates against the provider when due (`validation::due`, given the status so far).
pub async fn validate(
    t: &Target<'_>,
    ctx: &Context,
    plaintext: &SecretString,
    imported_now: bool,
    st: &ByokKeyStatus,
) -> Validation {
    let interval = interval(t, ctx);
    let backoff_until = ctx.backoff.lock().ok().and_then(|b| b.get(&t.uid).map(|(_, at)| *at));
    let backoff_passed = backoff_until.is_none_or(|at| Instant::now() >= at);
    let token = t.key.annotations().get(TEST_REQUESTED_ANNOTATION).map(String::as_str).filter(|s| !s.is_empty());
    let now = t.now.0;
    let Some(trigger) = validation::due(st, t.generation, token, imported_now, now, interval, backoff_passed) else {
        let revalidate = (st.phase == Some(KeyPhase::Ready)).then(|| validation::remaining(st, now, interval));
        let requeue = match st.phase {
            Some(KeyPhase::Unknown) => backoff_until.map(|at| at.saturating_duration_since(Instant::now())),
            _ => None,
        };
        return Validation { checked: None, requeue, revalidate, interval };
    };
    let (outcome, model, notice) = check(t, ctx, plaintext, &trigger).await;
    crate::crash_point!(crate::failpoints::AFTER_VALIDATE);
    let requeue = match &outcome {
        CheckOutcome::Unknown { retry_after, .. } => backoff(ctx, &t.uid, *retry_after),
        _ => {
            ctx.backoff.lock().map(|mut b| b.remove(&t.uid)).ok();
            None
        }
    };
    Validation { checked: Some((outcome, trigger, model, notice)), requeue, revalidate: None, interval }
}

/// Records one more attempt without a verdict; returns when to try again.
fn backoff(ctx: &Context, uid: &str, retry_after: Option<Duration>) -> Option<Duration> {
    let mut map = ctx.backoff.lock().ok()?;
    let attempts = map.get(uid).map_or(0, |(n, _)| *n);
    let wait = validation::backoff(attempts, retry_after);
    map.insert(uid.to_string(), (attempts + 1, Instant::now() + wait));
    Some(wait)
}

/// The re-validation interval. One the CRD's rule refuses (only an object stored before the rule
/// can hold one) does not silently become the default: a Warning says so at every reconcile.
fn interval(t: &Target<'_>, ctx: &Context) -> Duration {
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

/// Asks the provider whether the key works, with the model it is checked against and what is
/// known of that model's lifecycle.
async fn check(
    t: &Target<'_>,
    ctx: &Context,
    plaintext: &SecretString,
    trigger: &Trigger,
) -> (CheckOutcome, String, Option<models::Notice>) {
    let provider = t.key.spec.provider;
    let model =
        t.key.spec.model.clone().unwrap_or_else(|| ctx.config.models.model_for(provider, t.key.spec.azure.as_ref()));
    let check = KeyCheck { provider, key: plaintext, model: &model, azure: t.key.spec.azure.as_ref() };
    let outcome = providers::check_key(&ctx.http, &ctx.config.endpoints, check).await;
    let labels = crate::metrics::ValidationLabels { provider: provider.as_str(), outcome: outcome.reason_str() };
    ctx.metrics.validations.get_or_create(&labels).inc();
    tracing::info!(namespace = %t.ns, name = %t.name, %provider, ?trigger,
        result = validation::result_word(&outcome), reason = outcome.reason_str(), "validated key");
    let reported = match &outcome {
        CheckOutcome::Valid { lifecycle, .. } => lifecycle.as_ref(),
        _ => None,
    };
    let notice = models::notice(provider, &model, models::today(), reported);
    (outcome, model, notice)
}

/// Applies status when it changed (remembered until the cache shows it, see `StatusMemo`).
pub async fn write_status(t: &Target<'_>, ctx: &Context, old: &ByokKeyStatus, st: &ByokKeyStatus) -> Result<(), Error> {
    if st == old {
        return Ok(());
    }
    let api: Api<ByokKey> = Api::namespaced(ctx.client.clone(), &t.ns);
    status::write(t.key, &t.replaced, st, &ctx.written, &api).await
}

/// Reconciles siblings whose `effectiveDefault` disagrees with the winner just computed.
pub fn requeue_siblings(ctx: &Context, key: &ByokKey, siblings: &[Arc<ByokKey>], winner: Option<String>) {
    for sib in siblings.iter().filter(|s| s.uid() != key.uid()) {
        let shown = sib.status.as_ref().is_some_and(|s| s.effective_default);
        let is = winner.is_some() && sib.uid() == winner;
        if shown != is {
            let _ = ctx.requeue.send(ObjectRef::from_obj(sib.as_ref()));
        }
    }
}
