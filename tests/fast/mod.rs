//! The fast tier's fixture: reconciles and broker handlers run against a fake API server
//! ([`api::FakeApi`]) with reflector stores filled by hand, so a scenario takes milliseconds and
//! needs no cluster, no root and no network beyond loopback (the mock provider, for validation).
//!
//! The caches are what the tests control: [`keys::Keys::sync`] makes every cache show what the fake
//! API server holds (the watch caught up); not calling it leaves them behind (cache lag).

#![allow(dead_code)] // each test binary uses part of the fixture

pub mod api;
pub mod evals;
#[cfg(feature = "mock")]
pub mod keys;

use std::sync::Arc;

use byok_operator::crd::{ByokKey, ByokKeySpec, Provider};
use byok_operator::events::{Recorder, Reporter};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{Lookup, ObjectRef, Store};
use kube::runtime::watcher;

pub use api::{Call, FakeApi};

/// The namespace of the tests' ByokKeys, Secrets and EvalJobs.
pub const NS: &str = "team";
/// The operator's namespace.
pub const OPERATOR_NS: &str = "byok-system";

/// A reflector store and its writer: what a watch would fill, filled by the test.
pub struct Cache<K: Lookup<DynamicType = ()> + Clone + 'static> {
    pub store: Store<K>,
    writer: Writer<K>,
}

impl<K: Lookup<DynamicType = ()> + Clone + 'static> Cache<K> {
    pub fn new() -> Self {
        let mut writer = Writer::default();
        // Synced and empty, as after the first list of an empty namespace.
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        Self { store: writer.as_reader(), writer }
    }

    /// The cache now shows exactly `objects`, as after a re-list.
    pub fn reset(&mut self, objects: impl IntoIterator<Item = K>) {
        self.writer.apply_watcher_event(&watcher::Event::Init);
        for obj in objects {
            self.writer.apply_watcher_event(&watcher::Event::InitApply(obj));
        }
        self.writer.apply_watcher_event(&watcher::Event::InitDone);
    }

    /// One watch event: `obj` added or changed.
    pub fn apply(&mut self, obj: K) {
        self.writer.apply_watcher_event(&watcher::Event::Apply(obj));
    }

    pub fn get(&self, name: &str) -> Option<Arc<K>> {
        self.store.get(&ObjectRef::new(name).within(NS))
    }
}

impl<K: Lookup<DynamicType = ()> + Clone + 'static> Default for Cache<K> {
    fn default() -> Self {
        Self::new()
    }
}

/// A Recorder publishing to the fake API server.
pub fn recorder(client: &kube::Client) -> Recorder {
    Recorder::new(client.clone(), Reporter { controller: "byok-operator".into(), instance: None })
}

/// A plain source Secret opted in to being imported (the `byok-source` type), holding `key`.
pub fn source_secret(name: &str, key: &str) -> Secret {
    Secret {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some(NS.into()), ..Default::default() },
        type_: Some(byok_operator::controller::byokkey::import::SOURCE_SECRET_TYPE.into()),
        data: Some([("apiKey".to_string(), ByteString(key.as_bytes().to_vec()))].into()),
        ..Default::default()
    }
}

/// The metadata-only form the source cache holds.
pub fn metadata_of(secret: &Secret) -> PartialObjectMeta<Secret> {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": secret.metadata
    }))
    .expect("partial object metadata")
}

/// A ByokKey of namespace [`NS`] importing Secret `source`.
pub fn byokkey(name: &str, provider: Provider, source: &str, default: bool) -> ByokKey {
    let mut key = ByokKey::new(name, ByokKeySpec { default, ..ByokKeySpec::from_secret(provider, source) });
    key.metadata.namespace = Some(NS.into());
    key
}

/// Lines (`METHOD path`) of the calls that changed something, Events aside.
pub fn changes(calls: &[Call]) -> Vec<String> {
    calls.iter().filter(|c| c.changed()).map(Call::line).collect()
}
