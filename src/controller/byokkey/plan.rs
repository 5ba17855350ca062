//! The ByokKey reconcile's decisions, pure: which step the key material needs (from what was
//! observed), and the status and Events that follow from what the steps did. The I/O is in
//! `act.rs`; `reconcile.rs` runs observe -> plan -> act.

use std::sync::Arc;

use crate::events::EventType;
use crate::keystore::Ciphertext;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::ResourceExt;
use secrecy::SecretString;

use super::desired;
use super::import::ImportError;
use super::validation::{self, Trigger};
use crate::controller::status::Note;
use crate::crd::conditions::byokkey::{DEFAULT, IMPORTED, MODEL_DEPRECATED, READY, VALIDATED};
use crate::crd::conditions::{Progress, condition, set_condition, set_progress};
use crate::crd::{ByokKey, ByokKeyStatus, KeyPhase, SourcePolicy};
use crate::keystore;
use crate::providers::CheckOutcome;
use crate::providers::models::Notice;

/// The key being reconciled, read once.
pub struct Target<'a> {
    pub key: &'a ByokKey,
    pub ns: String,
    pub name: String,
    pub uid: String,
    pub generation: Option<i64>,
    pub now: Time,
    /// The versions of the key this reconcile works from: all older than the status it writes.
    pub replaced: Vec<String>,
}

/// What the reconcile saw before acting.
pub struct Observed {
    /// The ciphertext this key owns, if any.
    pub encrypted: Option<Arc<Ciphertext>>,
    /// The uid of a ciphertext of this name left by an earlier ByokKey of the same name, which the
    /// garbage collector has not removed yet: replaced, not written over, before an import.
    pub leftover: Option<String>,
    /// A Secret of the ciphertext's name that is neither: someone else's, never written over.
    pub name_taken: bool,
    /// `spec.secretRef`'s Secret as the metadata cache shows it (never its data).
    pub source: Option<SourceSeen>,
    /// The keys of the namespace and provider that ask to be the default (this one too, if it
    /// does): the effective default is one of them.
    pub siblings: Vec<Arc<ByokKey>>,
}

impl Observed {
    pub fn source_uid(&self) -> Option<String> {
        self.source.as_ref().and_then(|s| s.uid.clone())
    }
}

/// A source Secret's metadata.
pub struct SourceSeen {
    pub uid: Option<String>,
    /// [`keystore::source_version`] of what the cache shows.
    pub version: String,
    /// Its opt-in annotation names another ByokKey: refused without reading it.
    pub names_other_key: bool,
}

/// The step the key material needs.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Revoke,
    /// Read the source Secret (its one read) and import this version of it.
    ImportSecret {
        version: String,
    },
    /// Open `spec.sealed` with the sealing key and import it.
    ImportSealed {
        version: String,
    },
    /// Keep the stored ciphertext, if any; `refused` says why nothing is imported, and
    /// `delete_source` finishes a deletion an interrupted import left undone.
    UseStored {
        refused: Option<ImportError>,
        delete_source: bool,
    },
}

/// Decides the material step from what was observed.
pub fn step(key: &ByokKey, observed: &Observed, ns: &str, operator_ns: &str) -> Step {
    let stored = |refused| Step::UseStored { refused, delete_source: false };
    if key.spec.revoked {
        return Step::Revoke;
    }
    if observed.name_taken && observed.encrypted.is_none() {
        let secret = keystore::encrypted_secret_name(&key.name_any());
        return stored(Some(ImportError::CiphertextNameTaken { secret }));
    }
    let recorded = observed.encrypted.as_ref().and_then(|c| c.imported_from.as_deref());
    let Some(source_ref) = key.spec.secret_ref.as_ref() else {
        let Some(sealed) = key.spec.sealed.as_deref() else { return stored(None) };
        let version = keystore::sealed_version(sealed, key.spec.azure.as_ref().map(sealing_target).as_ref());
        return if recorded == Some(version.as_str()) { stored(None) } else { Step::ImportSealed { version } };
    };
    let secret = source_ref.name.clone();
    if ns == operator_ns {
        // The keyring, the sealing key and the broker CA live there: nothing is imported from it.
        return stored(Some(ImportError::OperatorNamespace { secret }));
    }
    let Some(source) = observed.source.as_ref() else {
        let missing = observed.encrypted.is_none().then_some(ImportError::SecretNotFound { secret });
        return stored(missing);
    };
    if recorded == Some(source.version.as_str()) {
        return Step::UseStored { refused: None, delete_source: key.spec.source_policy == SourcePolicy::Delete };
    }
    if source.names_other_key {
        return stored(Some(ImportError::NotOptedIn { secret, byokkey: key.name_any() }));
    }
    Step::ImportSecret { version: source.version.clone() }
}

/// The Azure target a sealed key is bound to.
pub fn sealing_target(azure: &crate::crd::AzureSpec) -> crate::crypto::sealing::AzureTarget {
    crate::crypto::sealing::AzureTarget::new(&azure.endpoint, &azure.deployment)
}

/// Why nothing new was imported, as conditions and Events say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
    /// Waiting for something that may still come (the source Secret), not an error.
    pub pending: bool,
}

impl From<&ImportError> for Refusal {
    fn from(e: &ImportError) -> Self {
        Self { reason: e.reason(), message: e.to_string(), pending: matches!(e, ImportError::SecretNotFound { .. }) }
    }
}

/// A key just imported and sealed.
pub struct Imported {
    pub key: SecretString,
    pub prefix: String,
    pub kek_id: String,
    /// Where it came from, in words ("Secret openai-src", "spec.sealed").
    pub from: String,
}

/// The stored ciphertext, as the act step found it.
pub enum Stored {
    Nothing,
    Opened {
        key: SecretString,
        prefix: String,
        secret: String,
        kek_id: String,
        /// The KEK it was sealed under, when it was just re-encrypted under the active one.
        resealed_from: Option<String>,
    },
    Unreadable {
        secret: String,
        /// DecryptFailed, or UnsupportedEnvelopeVersion (keystore::OpenError::reason).
        reason: &'static str,
        error: String,
    },
}

/// What the material step did.
pub enum Material {
    Revoked,
    Imported {
        imported: Imported,
        source_deleted: bool,
    },
    /// Nothing new imported; the stored ciphertext (if any) stays in use.
    Kept {
        refused: Option<Refusal>,
        stored: Stored,
        source_deleted: bool,
    },
    /// A stored key that may no longer be used was deleted (a sealed Azure key whose target changed).
    Withdrawn(Refusal),
}

impl Material {
    /// The plaintext to validate with, if the key is usable at all.
    pub fn plaintext(&self) -> Option<&SecretString> {
        match self {
            Material::Imported { imported, .. } => Some(&imported.key),
            Material::Kept { stored: Stored::Opened { key, .. }, .. } => Some(key),
            _ => None,
        }
    }

    pub fn imported_now(&self) -> bool {
        matches!(self, Material::Imported { .. })
    }

    /// Whether the step could not seal or open because the external KMS does not answer: the
    /// reconcile then comes back soon, as nothing else (no watch event) would bring it back.
    pub fn waits_on_kms(&self) -> bool {
        let kms = crate::keystore::KMS_UNAVAILABLE;
        match self {
            Material::Kept { stored: Stored::Unreadable { reason, .. }, .. } if *reason == kms => true,
            Material::Kept { refused: Some(r), .. } => r.reason == kms,
            _ => false,
        }
    }
}

impl Refusal {
    /// An import the external KMS did not let happen: pending while it is unreachable.
    pub fn kms(error: &crate::kms::KmsError) -> Self {
        let unavailable = matches!(error, crate::kms::KmsError::Unavailable(_));
        let reason = if unavailable { crate::keystore::KMS_UNAVAILABLE } else { crate::keystore::KMS_REFUSED };
        let message = format!("the key is not imported yet: {error}; nothing falls back to a local key");
        Self { reason, message, pending: unavailable }
    }
}

/// A status and the Events that explain how it came about.
pub struct Planned {
    pub status: ByokKeyStatus,
    pub notes: Vec<Note>,
}

/// The status after the material step.
pub fn after_material(t: &Target<'_>, old: &ByokKeyStatus, material: &Material) -> Planned {
    let mut p = Planned { status: old.clone(), notes: Vec::new() };
    let (generation, now) = (t.generation, &t.now);
    let st = &mut p.status;
    match material {
        Material::Revoked => {
            let msg = "revoked by spec.revoked: the encrypted key was deleted and is refused from now on";
            set_condition(&mut st.conditions, IMPORTED, "False", "Revoked", msg, generation, now);
            st.phase = Some(KeyPhase::Revoked);
            (st.encrypted_secret_ref, st.kek_id) = (None, None);
        }
        Material::Imported { imported, source_deleted } => {
            let mut msg = format!("imported from {} and encrypted under KEK {}", imported.from, imported.kek_id);
            if *source_deleted {
                msg.push_str("; source Secret deleted (sourcePolicy: Delete)");
            }
            st.key_prefix = Some(imported.prefix.clone());
            st.encrypted_secret_ref = Some(keystore::encrypted_secret_name(&t.name));
            st.kek_id = Some(imported.kek_id.clone());
            set_condition(&mut st.conditions, IMPORTED, "True", "Imported", msg.clone(), generation, now);
            p.notes.push((EventType::Normal, "Imported", msg));
        }
        Material::Kept { refused, stored, source_deleted } => {
            // A refused import keeps condition Imported False (with the refusal) while the
            // stored key stays in use, so the refusal is said once, not at every reconcile.
            kept(t, &mut p, stored, refused.is_none());
            if let Some(refusal) = refused {
                refuse(t, &mut p, refusal, !matches!(stored, Stored::Nothing));
            }
            if *source_deleted {
                let msg = format!("deleted source Secret {} (sourcePolicy: Delete)", source_name(t.key));
                p.notes.push((EventType::Normal, "SourceDeleted", msg));
            }
        }
        Material::Withdrawn(refusal) => {
            refuse(t, &mut p, refusal, false);
            p.status.phase = Some(KeyPhase::Error);
            (p.status.encrypted_secret_ref, p.status.kek_id) = (None, None);
        }
    }
    p
}

fn source_name(key: &ByokKey) -> &str {
    key.spec.secret_ref.as_ref().map_or("", |s| s.name.as_str())
}

/// The stored ciphertext opened (its KEK and prefix recomputed from it, so a status lost to a
/// crash right after an import heals) or did not (the key is unusable until imported again).
fn kept(t: &Target<'_>, p: &mut Planned, stored: &Stored, imported: bool) {
    let (generation, now, st) = (t.generation, &t.now, &mut p.status);
    match stored {
        Stored::Nothing => {}
        Stored::Opened { prefix, secret, kek_id, resealed_from, .. } => {
            st.kek_id = Some(kek_id.clone());
            st.encrypted_secret_ref = Some(secret.clone());
            st.key_prefix = Some(prefix.clone());
            if imported && condition(&st.conditions, IMPORTED).is_none_or(|c| c.status != "True") {
                set_condition(
                    &mut st.conditions,
                    IMPORTED,
                    "True",
                    "Imported",
                    "the encrypted key opens",
                    generation,
                    now,
                );
            }
            if let Some(from) = resealed_from {
                p.notes.push((
                    EventType::Normal,
                    "ReEncrypted",
                    format!("re-encrypted from KEK {from} to KEK {kek_id}"),
                ));
            }
        }
        Stored::Unreadable { secret, reason, error } => {
            let msg = format!("cannot decrypt Secret {secret}: {error}");
            let changed = condition(&st.conditions, IMPORTED).is_none_or(|c| c.reason != *reason);
            set_condition(&mut st.conditions, IMPORTED, "False", reason, msg.clone(), generation, now);
            // A KMS that does not answer says nothing about the key: its phase stays what it was
            // (the broker refuses KmsUnavailable meanwhile, and the reconcile comes back soon).
            if *reason != crate::keystore::KMS_UNAVAILABLE {
                st.phase = Some(KeyPhase::Error);
            }
            if changed {
                p.notes.push((EventType::Warning, reason, msg));
            }
        }
    }
}

/// An import that did not happen: said in condition Imported (and once per change in an Event).
/// With a key kept, the key stays in use and the phase stays what validation says.
fn refuse(t: &Target<'_>, p: &mut Planned, refusal: &Refusal, kept: bool) {
    let st = &mut p.status;
    let mut msg = refusal.message.clone();
    if kept {
        msg.push_str("; the previously imported key stays in use");
    } else {
        st.phase = Some(if refusal.pending { KeyPhase::Pending } else { KeyPhase::Error });
    }
    let changed = condition(&st.conditions, IMPORTED).is_none_or(|c| c.reason != refusal.reason || c.message != msg);
    set_condition(&mut st.conditions, IMPORTED, "False", refusal.reason, msg.clone(), t.generation, &t.now);
    if changed {
        p.notes.push((EventType::Warning, refusal.reason, msg));
    }
}

/// A provider's answer, with what it is checked against.
pub struct Checked<'a> {
    pub outcome: &'a CheckOutcome,
    pub trigger: &'a Trigger,
    pub model: &'a str,
    pub notice: Option<&'a Notice>,
}

/// Records a provider's answer in `p`, with an Event for a test, a phase or reason change, and a
/// model newly deprecated.
pub fn after_check(t: &Target<'_>, p: &mut Planned, checked: &Checked<'_>) {
    let st = &mut p.status;
    let old_phase = st.phase;
    let old_reason = condition(&st.conditions, VALIDATED).map(|c| c.reason.clone());
    let old_lifecycle = condition(&st.conditions, MODEL_DEPRECATED).map(|c| (c.status.clone(), c.message.clone()));
    validation::record(st, checked.outcome, checked.trigger, checked.model, checked.notice, t.generation, &t.now);
    let lifecycle = condition(&st.conditions, MODEL_DEPRECATED).map(|c| (c.status.clone(), c.message.clone()));
    if let Some((_, message)) = lifecycle.filter(|l| l.0 == "True" && old_lifecycle.as_ref() != Some(l)) {
        p.notes.push((EventType::Warning, "ModelDeprecated", message));
    }
    // validation::record always sets Validated.
    let Some((reason, message)) = condition(&st.conditions, VALIDATED).map(|c| (c.reason.clone(), c.message.clone()))
    else {
        return;
    };
    let type_ = if st.phase == Some(KeyPhase::Ready) { EventType::Normal } else { EventType::Warning };
    let word = validation::result_word(checked.outcome);
    if let Trigger::TestRequested(_) = checked.trigger {
        p.notes.push((type_, "Tested", format!("{word}: {message}")));
    }
    if old_phase != st.phase || old_reason.as_deref() != Some(reason.as_str()) {
        p.notes.push((type_, "Validated", format!("{reason}: {message}")));
    }
}

/// The final status: Ready, Reconciling/Stalled, the effective default among `siblings`, and a
/// PhaseChanged Event when no other Event explains a phase change. Returns the default's uid.
pub fn finish(t: &Target<'_>, old: &ByokKeyStatus, p: &mut Planned, siblings: &[Arc<ByokKey>]) -> Option<String> {
    set_ready(t, &mut p.status);
    let progress = progress(&p.status);
    set_progress(&mut p.status.conditions, &progress, t.generation, &t.now);
    let winner = set_default(t, old, p, siblings);
    if first_import_ready(old, &p.status) {
        // Said by the conditions alone: at 10,000 keys these two Events were a third of the
        // import's API writes. What changes later, and every problem, still gets its Event.
        p.notes.retain(|(type_, reason, _)| {
            !(matches!(type_, EventType::Normal) && matches!(*reason, "Imported" | "Validated"))
        });
        p.status.observed_generation = t.generation;
        return winner;
    }
    if let (true, Some(phase)) = (old.phase != p.status.phase && p.notes.is_empty(), p.status.phase) {
        let type_ = if matches!(phase, KeyPhase::Ready | KeyPhase::Revoked | KeyPhase::Pending) {
            EventType::Normal
        } else {
            EventType::Warning
        };
        p.notes.push((type_, "PhaseChanged", format!("phase {:?} -> {phase:?}", old.phase)));
    }
    p.status.observed_generation = t.generation;
    winner
}

/// A key's first import, gone straight to Ready: nothing had been stored or checked before.
fn first_import_ready(old: &ByokKeyStatus, new: &ByokKeyStatus) -> bool {
    matches!(old.phase, None | Some(KeyPhase::Pending))
        && old.encrypted_secret_ref.is_none()
        && new.phase == Some(KeyPhase::Ready)
}

/// Condition Ready, from the phase; when not ready, why, from the first condition that is not True.
fn set_ready(t: &Target<'_>, st: &mut ByokKeyStatus) {
    let (reason, message) = match st.phase {
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
    let status = if st.phase == Some(KeyPhase::Ready) { "True" } else { "False" };
    set_condition(&mut st.conditions, READY, status, &reason, message, t.generation, &t.now);
}

/// kstatus' reading of a phase: Pending and Unknown converge by themselves (a Secret to come, a
/// provider to answer); Invalid and Error need a person; Ready and Revoked are where they stay.
pub fn progress(st: &ByokKeyStatus) -> Progress {
    let ready = condition(&st.conditions, READY);
    let (reason, message) = ready.map_or_else(Default::default, |c| (c.reason.clone(), c.message.clone()));
    match st.phase {
        Some(KeyPhase::Ready | KeyPhase::Revoked) => Progress::Current,
        Some(KeyPhase::Invalid | KeyPhase::Error) => Progress::Stalled(reason, message),
        Some(KeyPhase::Pending | KeyPhase::Unknown) | None => Progress::Reconciling(reason, message),
    }
}

/// The effective default, computed over the siblings with this key's fresh status, and condition
/// Default; returns the winner's uid.
fn set_default(t: &Target<'_>, old: &ByokKeyStatus, p: &mut Planned, siblings: &[Arc<ByokKey>]) -> Option<String> {
    let st = &mut p.status;
    st.default_since = match (t.key.spec.default, st.default_since.take()) {
        (true, Some(since)) => Some(since),
        (true, None) => Some(MicroTime(t.now.0)),
        (false, _) => None,
    };
    let mut me = t.key.clone();
    me.status = Some(st.clone());
    let others = siblings.iter().map(|k| k.as_ref()).filter(|k| k.uid() != me.uid());
    let winner = desired::effective_default(others.chain(std::iter::once(&me))).and_then(|k| k.uid());
    st.effective_default = winner.is_some() && winner == me.uid();
    let provider = t.key.spec.provider;
    let (status, reason, message) = match (t.key.spec.default, st.effective_default) {
        (_, true) => ("True", "EffectiveDefault", format!("the default {provider} key in this namespace")),
        (true, false) if winner.is_some() => {
            ("False", "Superseded", "a newer default key for this provider wins".into())
        }
        (true, false) => ("False", "NotUsable", "asked to be default but the key is not usable".into()),
        (false, _) => ("False", "NotRequested", "spec.default is false".into()),
    };
    set_condition(&mut st.conditions, DEFAULT, status, reason, message, t.generation, &t.now);
    if old.effective_default != st.effective_default {
        let what = if st.effective_default { "now the default" } else { "no longer the default" };
        p.notes.push((EventType::Normal, "DefaultChanged", format!("{what} {provider} key")));
    }
    winner
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
