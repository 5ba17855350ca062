//! The ByokKey reconcile as observe -> plan -> act: observe the ciphertext and the source, plan
//! the material step, carry it out, validate when due, plan the status, write it with its Events.
//! Decisions are pure (`plan.rs`, unit-tested); I/O is `act.rs`.

use std::sync::Arc;

use crate::events::EventType;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use super::act;
use super::plan::{self, Checked, Target};
use crate::controller::status;
use crate::controller::{Context, Error};
use crate::crd::{ByokKey, KeyPhase};
use crate::providers::CheckOutcome;

/// How soon a key waiting on an unreachable external KMS is tried again.
const KMS_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// Reconciles `key`.
pub async fn apply(key: Arc<ByokKey>, ctx: &Context) -> Result<Action, Error> {
    let t = Target {
        ns: key.namespace().ok_or(Error::MissingField("metadata.namespace"))?,
        // The keystore binds the ciphertext to the uid: a key without one is never sealed.
        uid: key.uid().ok_or(Error::MissingField("metadata.uid"))?,
        name: key.name_any(),
        key: &key,
        generation: key.metadata.generation,
        now: Time(jiff::Timestamp::now()),
        replaced: key.resource_version().into_iter().collect(),
    };
    let old = ctx.written.current(&t.uid, key.resource_version().as_deref(), key.status.clone().unwrap_or_default());

    let observed = act::observe(&t, ctx).await?;
    let step = plan::step(&key, &observed, &t.ns, &ctx.config.namespace);
    let material = act::material(&t, ctx, &observed, step).await?;
    let mut planned = plan::after_material(&t, &old, &material);
    // A retry (backoff, KMS) goes to the controller's scheduler; a Ready key's next validation
    // to the one revalidation timer.
    let (mut requeue, mut revalidate) = (None, None);
    if let Some(plaintext) = material.plaintext() {
        let v = act::validate(&t, ctx, plaintext, material.imported_now(), &planned.status).await;
        (requeue, revalidate) = (v.requeue, v.revalidate);
        if let Some((outcome, trigger, model, notice)) = &v.checked {
            let checked = Checked { outcome, trigger, model, notice: notice.as_ref() };
            plan::after_check(&t, &mut planned, &checked);
            if !matches!(outcome, CheckOutcome::Unknown { .. }) {
                requeue = None;
                revalidate = (planned.status.phase == Some(KeyPhase::Ready)).then_some(v.interval);
            }
        }
    }
    if material.waits_on_kms() {
        (requeue, revalidate) = (Some(KMS_RETRY), None);
    }
    let winner = plan::finish(&t, &old, &mut planned, &observed.siblings);

    act::write_status(&t, ctx, &old, &planned.status).await?;
    status::publish(&ctx.recorder, t.key, planned.notes);
    act::requeue_siblings(ctx, t.key, &observed.siblings, winner);
    if let Some(after) = revalidate {
        ctx.revalidation.due_in(after);
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Cleanup of a key that carries the finalizer of an earlier release: the ciphertext goes at once.
pub async fn cleanup(key: Arc<ByokKey>, ctx: &Context) -> Result<Action, Error> {
    let ns = key.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let uid = key.uid().ok_or(Error::MissingField("metadata.uid"))?;
    act::delete_encrypted(ctx, &ns, &key.name_any(), &uid).await?;
    let note = "ByokKey deleted: its encrypted key was removed".to_string();
    status::publish(&ctx.recorder, key.as_ref(), vec![(EventType::Normal, "Deleted", note)]);
    forget(&key, ctx);
    Ok(Action::await_change())
}

/// What the operator does when a ByokKey is gone (its delete event): forget its per-key state and
/// let the keys that may inherit the default recompute. Its ciphertext is the garbage collector's
/// (ownerReference); a new key of the same name replaces a leftover one before it imports.
pub fn forget(key: &ByokKey, ctx: &Context) {
    if let Some(uid) = key.uid() {
        ctx.backoff.lock().map(|mut b| b.remove(&uid)).ok();
        ctx.written.forget(&uid);
        ctx.retries.succeeded(&uid);
    }
    for sib in act::siblings(ctx, key).iter().filter(|s| s.uid() != key.uid()) {
        let _ = ctx.requeue.send(ObjectRef::from_obj(sib.as_ref()));
    }
}
