//! Kubernetes Events, with repeats folded into a series as kube-runtime's `Recorder` does, but
//! with a bounded memory of what was published.
//!
//! kube-runtime's `Recorder` keeps every Event it published for 6 minutes and scans all of them on
//! each publish: at an import of 10,000 keys that is 20,000 Events held and a quadratic scan (most
//! of the operator's CPU per key at that size). Here, as in client-go's EventCorrelator, the memory
//! is a fixed number of entries; an entry pushed out only means that a later repeat starts a new
//! Event instead of counting into the old one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};

pub use kube::runtime::events::{Event, EventType, Reporter};

/// How long a published Event can still take repeats into its series (kube-runtime's figure).
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);
/// Events remembered for folding repeats (client-go's EventCorrelator keeps 4,096).
pub const REMEMBERED: usize = 4096;

/// Publishes Events on behalf of one controller instance. Cheap to clone; clones share the memory.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    reporter: Reporter,
    recent: Arc<Mutex<Recent>>,
}

/// What makes two Events repeats of one another.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    type_: &'static str,
    reason: String,
    action: String,
    regarding: (Option<String>, Option<String>, Option<String>, Option<String>),
}

impl Key {
    fn new(ev: &Event, regarding: &ObjectReference) -> Self {
        let r = regarding;
        Self {
            type_: type_name(ev.type_),
            reason: ev.reason.clone(),
            action: ev.action.clone(),
            regarding: (r.kind.clone(), r.namespace.clone(), r.name.clone(), r.uid.clone()),
        }
    }
}

/// The Events published lately: for each, its name, how often it was seen, and when last.
struct Recent {
    capacity: usize,
    entries: HashMap<Key, Seen>,
}

#[derive(Clone, Debug, PartialEq)]
struct Seen {
    name: String,
    count: i32,
    last: Timestamp,
}

/// What to do with one Event.
#[derive(Debug, PartialEq)]
enum Publish {
    /// A first Event (or the first after its series window closed): create it.
    Create,
    /// A repeat within the window: patch the Event of that name to count `count`.
    Repeat { name: String, count: i32 },
}

impl Recent {
    fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), entries: HashMap::new() }
    }

    fn plan(&self, key: &Key, now: Timestamp) -> Publish {
        match self.entries.get(key) {
            Some(seen) if seen.last + SERIES_WINDOW > now => {
                Publish::Repeat { name: seen.name.clone(), count: seen.count + 1 }
            }
            _ => Publish::Create,
        }
    }

    /// Remembers a published Event, making room first if full: what is out of its window, or
    /// else the Event seen longest ago.
    fn remember(&mut self, key: Key, seen: Seen) {
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            let now = seen.last;
            self.entries.retain(|_, s| s.last + SERIES_WINDOW > now);
            if self.entries.len() >= self.capacity
                && let Some(oldest) = self.entries.iter().min_by_key(|(_, s)| s.last).map(|(k, _)| k.clone())
            {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(key, seen);
    }
}

fn type_name(t: EventType) -> &'static str {
    match t {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}

impl Recorder {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self { client, reporter, recent: Arc::new(Mutex::new(Recent::new(REMEMBERED))) }
    }

    /// Publishes `ev` about the object `regarding`, in that object's namespace (`default` for a
    /// cluster-scoped one); a repeat within 6 minutes counts into the earlier Event's series.
    pub async fn publish(&self, ev: &Event, regarding: &ObjectReference) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = Key::new(ev, regarding);
        let plan = self.recent.lock().map_err(|_| poisoned())?.plan(&key, now);
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        let seen = match plan {
            Publish::Create => {
                let event = self.event(ev, regarding, now);
                let created = events.create(&PostParams::default(), &event).await?;
                // The API server answers with the name we sent; ours is the fallback, never "".
                let name = created
                    .metadata
                    .name
                    .or(event.metadata.name)
                    .ok_or_else(|| kube::Error::Service("an Event was created without a name".into()))?;
                Seen { name, count: 1, last: now }
            }
            Publish::Repeat { name, count } => {
                let series = EventSeries { count, last_observed_time: MicroTime(now) };
                let patch = serde_json::json!({ "series": series });
                events.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
                Seen { name, count, last: now }
            }
        };
        self.recent.lock().map_err(|_| poisoned())?.remember(key, seen);
        Ok(())
    }

    fn event(&self, ev: &Event, regarding: &ObjectReference, now: Timestamp) -> K8sEvent {
        let controller = &self.reporter.controller;
        let object = regarding.name.as_deref().unwrap_or(controller);
        K8sEvent {
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: ev.secondary.clone(),
            note: ev.note.clone(),
            metadata: ObjectMeta {
                namespace: regarding.namespace.clone(),
                // Bounded: `<name>.<time>` of an object named near the 253-character limit would be
                // refused, and the Event lost.
                name: Some(crate::names::bounded(object, &format!("{:x}", now.as_nanosecond()))),
                ..ObjectMeta::default()
            },
            reporting_controller: Some(controller.clone()),
            reporting_instance: Some(self.reporter.instance.clone().unwrap_or_else(|| controller.clone())),
            type_: Some(type_name(ev.type_).into()),
            ..K8sEvent::default()
        }
    }
}

/// A panic while holding the memory's lock: said as a client-side error (the Event is not sent).
fn poisoned() -> kube::Error {
    kube::Error::Service("the event recorder's memory is poisoned".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, reason: &str) -> Key {
        let regarding = ObjectReference { kind: Some("ByokKey".into()), name: Some(name.into()), ..Default::default() };
        let ev =
            Event { type_: EventType::Normal, reason: reason.into(), note: None, action: "a".into(), secondary: None };
        Key::new(&ev, &regarding)
    }

    fn seen(name: &str, count: i32, last: Timestamp) -> Seen {
        Seen { name: name.into(), count, last }
    }

    #[test]
    fn a_repeat_within_the_window_counts_into_the_first_events_series() {
        let t0 = Timestamp::UNIX_EPOCH + SignedDuration::from_hours(24);
        let mut recent = Recent::new(8);
        assert_eq!(recent.plan(&key("k", "Imported"), t0), Publish::Create);
        recent.remember(key("k", "Imported"), seen("k.1", 1, t0));
        let later = t0 + SignedDuration::from_mins(5);
        assert_eq!(recent.plan(&key("k", "Imported"), later), Publish::Repeat { name: "k.1".into(), count: 2 });
        assert_eq!(recent.plan(&key("k", "Validated"), later), Publish::Create, "another reason is another Event");
        assert_eq!(recent.plan(&key("j", "Imported"), later), Publish::Create, "another object too");
        let closed = t0 + SignedDuration::from_mins(7);
        assert_eq!(recent.plan(&key("k", "Imported"), closed), Publish::Create, "the window closed");
    }

    #[tokio::test]
    async fn an_event_about_an_object_named_at_the_limit_has_a_valid_name() {
        let ev =
            Event { type_: EventType::Warning, reason: "R".into(), note: None, action: "a".into(), secondary: None };
        let name = "k".repeat(253);
        let regarding =
            ObjectReference { name: Some(name.clone()), namespace: Some("ns".into()), ..Default::default() };
        let reporter = Reporter { controller: "byok-operator".into(), instance: None };
        // No request is made: the client is only held.
        let client =
            Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().expect("a URL"))).expect("a client");
        let recorder = Recorder::new(client, reporter);
        let now = Timestamp::UNIX_EPOCH + SignedDuration::from_hours(24);
        let event = recorder.event(&ev, &regarding, now);
        let event_name = event.metadata.name.expect("a name");
        assert!(event_name.len() <= 253, "{} characters", event_name.len());
        assert!(event_name.starts_with("kkk") && !event_name.contains(".."));
        assert_eq!(event.regarding.and_then(|r| r.name), Some(name), "the Event still names the whole object");
    }

    #[test]
    fn the_memory_holds_a_fixed_number_of_events_and_forgets_the_oldest() {
        let t0 = Timestamp::UNIX_EPOCH + SignedDuration::from_hours(24);
        let mut recent = Recent::new(3);
        for (i, name) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            recent.remember(key(name, "Imported"), seen(name, 1, t0 + SignedDuration::from_secs(i as i64)));
        }
        assert_eq!(recent.entries.len(), 3);
        let now = t0 + SignedDuration::from_secs(10);
        assert_eq!(recent.plan(&key("a", "Imported"), now), Publish::Create, "a, the oldest, was forgotten");
        assert_eq!(recent.plan(&key("e", "Imported"), now), Publish::Repeat { name: "e".into(), count: 2 });
        // Entries out of their window go first, however recent the others.
        let late = t0 + SignedDuration::from_mins(10);
        recent.remember(key("f", "Imported"), seen("f", 1, late));
        recent.remember(key("g", "Imported"), seen("g", 1, late));
        assert_eq!(recent.entries.len(), 2, "c, d and e had left their window");
    }
}
