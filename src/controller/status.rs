//! What both controllers do at the end of a reconcile: apply the status they computed, remember it
//! until the cache shows it, and publish the reconcile's Events; and how they retry a failed one.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Mutex;
use std::time::Duration;

use crate::events::{Event, EventType, Recorder};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::Error;
use super::memo::StatusMemo;
use crate::labels::FIELD_MANAGER;

/// An Event a reconcile wants published: its type, reason and message.
pub type Note = (EventType, &'static str, String);

/// Applies `status` to `obj` (server-side apply, our field manager) and records it in `memo`
/// against the versions it replaces, so a reconcile on a lagging cache sees what we wrote.
pub async fn write<K, S>(
    obj: &K,
    replaced: &[String],
    status: &S,
    memo: &StatusMemo<S>,
    api: &Api<K>,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    S: Serialize + Clone,
{
    let patch = json!({ "apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let written = api.patch_status(&obj.name_any(), &params, &Patch::Apply(&patch)).await?;
    if let Some(uid) = obj.uid() {
        memo.record(uid, replaced, written.resource_version().as_deref(), status.clone());
    }
    Ok(())
}

/// Publishes `notes` on `obj` in order, in the background: an Event is a courtesy to the user,
/// and a slow events API must not hold up reconciles (or make them fail).
pub fn publish<K: Resource<DynamicType = ()>>(recorder: &Recorder, obj: &K, notes: Vec<Note>) {
    if notes.is_empty() {
        return;
    }
    let (recorder, reference) = (recorder.clone(), obj.object_ref(&()));
    tokio::spawn(async move {
        for (type_, reason, note) in notes {
            let action = action_for(&note);
            let ev = Event { type_, reason: reason.into(), note: Some(note), action, secondary: None };
            if let Err(e) = recorder.publish(&ev, &reference).await {
                tracing::warn!(error = %e, reason, "could not publish event");
            }
        }
    });
}

/// The Event's `action`. kube-runtime's Recorder folds an Event into an earlier one of the same
/// type, reason and action on the same object (a "series") and keeps the earlier note, so "no longer
/// the default" would show as a repeat of "now the default". A digest of the note in the action
/// keeps different messages apart and still folds true repeats; `kubectl describe` does not show it.
fn action_for(note: &str) -> String {
    format!("Reconcile-{:08x}", crate::names::fnv1a(note.as_bytes()) as u32)
}

/// How a failed reconcile is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    /// Clears up by itself soon: a conflict with another writer, throttling.
    Contention,
    /// The API server or the network is unwell: back off harder.
    Unavailable,
    /// Needs someone to act (a keyring to restore, an object the API refuses): retry slowly.
    NeedsAction,
}

impl Error {
    /// The retry category of this error.
    pub fn category(&self) -> Category {
        match self {
            Self::Kube(kube::Error::Api(s)) if matches!(s.code, 409 | 429) => Category::Contention,
            Self::Kube(kube::Error::Api(s)) if s.code >= 500 => Category::Unavailable,
            Self::Kube(kube::Error::Api(_)) => Category::NeedsAction,
            Self::Kube(_) => Category::Unavailable,
            Self::KeyringMissing { .. } | Self::MissingField(_) | Self::Serialization(_) => Category::NeedsAction,
            Self::Internal(_) | Self::Crypto(_) | Self::Seal(_) | Self::Keyring(_) => Category::NeedsAction,
        }
    }
}

/// Per-object exponential backoff of failed reconciles, reset when a reconcile succeeds.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// The requeue after a failure of the object `uid`: the category's first step, doubled per
    /// failure in a row, capped (first, cap): contention 0.5 s / 30 s, unavailable 2 s / 2 min,
    /// needs action 10 s / 5 min.
    pub fn failed(&self, uid: &str, category: Category) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(uid.to_string()).or_insert(0);
        let wait = delay(category, *n);
        *n = n.saturating_add(1);
        wait
    }

    /// Whether the last reconcile of `uid` failed (it is waiting on its backoff).
    pub fn failing(&self, uid: &str) -> bool {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).contains_key(uid)
    }

    /// Forgets the failures of `uid` (after a successful reconcile, or when it is gone).
    pub fn succeeded(&self, uid: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(uid);
    }
}

/// The wait before retry after `failures` failures in a row.
pub fn delay(category: Category, failures: u32) -> Duration {
    let (first, cap) = match category {
        Category::Contention => (Duration::from_millis(500), Duration::from_secs(30)),
        Category::Unavailable => (Duration::from_secs(2), Duration::from_secs(120)),
        Category::NeedsAction => (Duration::from_secs(10), Duration::from_secs(300)),
    };
    first.saturating_mul(1u32 << failures.min(16)).min(cap)
}

/// Runs one reconcile of `resource` (metrics label): records its duration and result, and
/// forgets the object's failures when it succeeds.
pub async fn measured<F>(
    resource: &'static str,
    uid: Option<String>,
    metrics: &crate::metrics::Metrics,
    retries: &Backoff,
    reconcile: F,
) -> Result<Action, Error>
where
    F: std::future::Future<Output = Result<Action, Error>>,
{
    let start = std::time::Instant::now();
    let result = reconcile.await;
    let labels = crate::metrics::ResourceLabels { resource };
    metrics.reconcile_seconds.get_or_create(&labels).observe(start.elapsed().as_secs_f64());
    let outcome = result.as_ref().map_or_else(Error::kind, |_| "ok");
    metrics.reconciles.get_or_create(&crate::metrics::ReconcileLabels { resource, result: outcome }).inc();
    if let (Ok(_), Some(uid)) = (&result, uid) {
        retries.succeeded(&uid);
    }
    result
}

/// The error policy of both controllers: log, count, and requeue with per-object backoff.
pub fn on_error<K: Resource<DynamicType = ()>>(obj: &K, err: &Error, backoff: &Backoff) -> Action {
    let category = err.category();
    let wait = backoff.failed(&obj.uid().unwrap_or_default(), category);
    tracing::warn!(kind = K::kind(&()).as_ref(), namespace = ?obj.namespace(), name = %obj.name_any(),
        error_kind = err.kind(), ?category, ?wait, error = %err, "reconcile failed");
    Action::requeue(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> Error {
        Error::Kube(kube::Error::Api(kube::core::Status::failure("m", "r").with_code(code).boxed()))
    }

    #[test]
    fn different_notes_are_different_events_and_repeats_fold() {
        assert_eq!(action_for("now the default"), action_for("now the default"));
        assert_ne!(action_for("now the default"), action_for("no longer the default"));
        assert!(action_for("x").len() <= 128, "the API's limit for action");
    }

    #[test]
    fn errors_fall_into_categories() {
        assert_eq!(api_error(409).category(), Category::Contention);
        assert_eq!(api_error(429).category(), Category::Contention);
        assert_eq!(api_error(503).category(), Category::Unavailable);
        assert_eq!(api_error(422).category(), Category::NeedsAction);
        assert_eq!(Error::Internal("x".into()).category(), Category::NeedsAction);
    }

    #[test]
    fn backoff_doubles_per_object_caps_and_resets() {
        let b = Backoff::default();
        let waits: Vec<_> = (0..4).map(|_| b.failed("a", Category::Unavailable).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16]);
        assert_eq!(b.failed("b", Category::Unavailable), Duration::from_secs(2), "per object");
        b.succeeded("a");
        assert_eq!(b.failed("a", Category::Contention), Duration::from_millis(500));
        assert_eq!(delay(Category::Contention, 40), Duration::from_secs(30));
        assert_eq!(delay(Category::NeedsAction, 40), Duration::from_secs(300));
        assert_eq!(delay(Category::NeedsAction, 0), Duration::from_secs(10));
    }
}
