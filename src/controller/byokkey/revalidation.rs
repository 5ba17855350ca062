//! When Ready keys are validated again: one timer for all of them, not a scheduler entry per key.
//! With 10,000 keys, kube-runtime's scheduler held 10,000 requeues (each two copies of the key's
//! reference and a delay-queue slot) for hours. Here a reconcile only says when its key is next
//! due, the earliest is kept, and at that time one pass over the cache requeues the keys due.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{desired, validation};
use crate::crd::{ByokKey, KeyPhase};

/// The shortest wait between two passes: keys due within it are requeued by the same pass late by
/// at most this (the shortest interval allowed is a minute).
pub const GRAIN: Duration = Duration::from_secs(5);

/// The longest wait between two passes: a key whose next time was not heard (it turned Ready while
/// a pass was under way, before the cache showed it) is still found by the next pass.
pub const LONGEST: Duration = Duration::from_secs(60);

/// The earliest time a Ready key is due, shared by the reconciles (which lower it) and the pass.
#[derive(Clone)]
pub struct Revalidation {
    earliest: Arc<watch::Sender<Option<Instant>>>,
}

impl Default for Revalidation {
    fn default() -> Self {
        Self { earliest: Arc::new(watch::channel(None).0) }
    }
}

impl Revalidation {
    /// A key is due again in `after`.
    pub fn due_in(&self, after: Duration) {
        let at = Instant::now() + after;
        self.earliest.send_if_modified(|e| {
            let sooner = e.is_none_or(|current| at < current);
            if sooner {
                *e = Some(at);
            }
            sooner
        });
    }

    /// When the next pass is due, if any key is waiting.
    pub fn earliest(&self) -> Option<Instant> {
        *self.earliest.borrow()
    }

    /// Requeues the keys due, each time the earliest comes (at least every [`LONGEST`]), until the
    /// controller stops. Keys whose reconciles are failing are left to their error backoff.
    pub async fn run(
        self,
        keys: Store<ByokKey>,
        requeue: mpsc::UnboundedSender<ObjectRef<ByokKey>>,
        failing: impl Fn(&ByokKey) -> bool,
    ) {
        let mut changed = self.earliest.subscribe();
        self.due_in(LONGEST);
        loop {
            let next = *changed.borrow_and_update();
            match next {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        r = changed.changed() => { if r.is_err() { return } else { continue } }
                    }
                }
                None => {
                    if changed.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
            }
            self.earliest.send_replace(None);
            let now = jiff::Timestamp::now();
            let state = keys.state();
            let (due, next) = sweep(state.iter().map(Arc::as_ref).filter(|k| !failing(k)), now);
            for key in due {
                if requeue.send(key).is_err() {
                    return;
                }
            }
            self.due_in(next.unwrap_or(LONGEST).clamp(GRAIN, LONGEST));
            tokio::time::sleep(GRAIN).await;
        }
    }
}

/// The Ready keys due now, and how soon the next one is (pure: what one pass decides).
pub fn sweep<'a>(
    keys: impl IntoIterator<Item = &'a ByokKey>,
    now: jiff::Timestamp,
) -> (Vec<ObjectRef<ByokKey>>, Option<Duration>) {
    let (mut due, mut next) = (Vec::new(), None::<Duration>);
    for key in keys {
        let Some(status) = key.status.as_ref().filter(|s| s.phase == Some(KeyPhase::Ready)) else { continue };
        if key.metadata.deletion_timestamp.is_some() {
            continue;
        }
        // The reconcile warns about an interval the CRD refuses, and uses the default.
        let interval = desired::validation_interval(key).unwrap_or(desired::DEFAULT_VALIDATION_INTERVAL);
        match validation::remaining(status, now, interval) {
            Duration::ZERO => due.push(ObjectRef::from_obj(key)),
            left => next = Some(next.map_or(left, |n| n.min(left))),
        }
    }
    (due, next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ByokKeySpec, ByokKeyStatus, Provider, ValidationSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn key(name: &str, phase: KeyPhase, validated_ago: Duration, interval: Option<&str>) -> ByokKey {
        let mut k = ByokKey::new(name, ByokKeySpec::from_secret(Provider::OpenAi, "s"));
        k.metadata.namespace = Some("team".into());
        k.spec.validation = interval.map(|i| ValidationSpec { interval: Some(i.into()) });
        let at = jiff::Timestamp::now() - jiff::SignedDuration::try_from(validated_ago).expect("duration");
        k.status = Some(ByokKeyStatus { phase: Some(phase), last_validated: Some(Time(at)), ..Default::default() });
        k
    }

    #[test]
    fn a_pass_requeues_only_ready_keys_past_their_interval_and_says_when_the_next_is_due() {
        let hour = Duration::from_secs(3600);
        let keys = [
            key("due", KeyPhase::Ready, 7 * hour, None),
            key("own-interval-due", KeyPhase::Ready, Duration::from_secs(120), Some("1m")),
            key("soon", KeyPhase::Ready, 5 * hour, None),
            key("invalid", KeyPhase::Invalid, 7 * hour, None),
            key("unknown", KeyPhase::Unknown, 7 * hour, None),
            {
                let mut k = key("deleting", KeyPhase::Ready, 7 * hour, None);
                k.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
                k
            },
        ];
        let (due, next) = sweep(keys.iter(), jiff::Timestamp::now());
        let names: Vec<_> = due.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["due", "own-interval-due"]);
        let next = next.expect("the next is known");
        assert!(next <= hour && next > hour - Duration::from_secs(60), "{next:?}");
    }

    #[test]
    fn no_ready_key_means_no_next_pass() {
        let keys = [key("x", KeyPhase::Invalid, Duration::ZERO, None)];
        assert_eq!(sweep(keys.iter(), jiff::Timestamp::now()), (vec![], None));
    }
}
