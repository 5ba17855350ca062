//! The ByokKey controller's world: the fake API server, its three caches, its context, and the
//! mock provider the key checks go to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use byok_operator::controller::byokkey::index::KeyIndex;
use byok_operator::controller::{Context, Error, OperatorConfig};
use byok_operator::crd::{ByokKey, Provider};
use byok_operator::crypto::Keyring;
use byok_operator::crypto::sealing::SealingKey;
use byok_operator::keystore;
use byok_operator::kms::KekSource;
use byok_operator::providers::ModelTable;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tokio::sync::mpsc;

use super::{Cache, FakeApi, NS, OPERATOR_NS, byokkey, metadata_of, recorder, source_secret};

/// The ByokKey controller's world: the fake API server, its caches, its context, the mock provider.
pub struct Keys {
    pub api: FakeApi,
    pub ctx: Arc<Context>,
    pub mock: byok_operator::mock::MockHandle,
    pub keys: Cache<ByokKey>,
    /// The controller's index over `keys`, kept from the same events.
    pub index: KeyIndex,
    pub encrypted: Cache<keystore::Ciphertext>,
    pub sources: Cache<PartialObjectMeta<Secret>>,
    /// What the reconciles asked the controller to reconcile next.
    pub requeued: mpsc::UnboundedReceiver<ObjectRef<ByokKey>>,
}

impl Keys {
    pub async fn new() -> Self {
        let api = FakeApi::new();
        let client = api.client();
        let mock = byok_operator::mock::start(byok_operator::mock::MockConfig::default()).await.expect("mock provider");
        let (keys, encrypted, sources) = (Cache::new(), Cache::new(), Cache::new());
        let (requeue, requeued) = mpsc::unbounded_channel();
        let index = KeyIndex::default();
        let config = OperatorConfig {
            namespace: OPERATOR_NS.into(),
            keyring_secret: "byok-keyring".into(),
            endpoints: mock.endpoints(),
            models: ModelTable::default(),
            concurrency: 1,
            watch_namespace: None,
            judge: Default::default(),
            kms: Default::default(),
        };
        let ctx = Context {
            recorder: recorder(&client),
            client,
            config,
            http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("http"),
            kek: KekSource::Keyring(Arc::new(RwLock::new(Keyring::generate()))),
            metrics: Arc::new(byok_operator::metrics::Metrics::default()),
            sealing: Arc::new(SealingKey::generate()),
            byokkeys: keys.store.clone(),
            index: index.clone(),
            encrypted: encrypted.store.clone(),
            sources: sources.store.clone(),
            requeue,
            revalidation: Default::default(),
            backoff: Mutex::new(HashMap::new()),
            written: Default::default(),
            retries: Default::default(),
        };
        Self { api, ctx: Arc::new(ctx), mock, keys, index, encrypted, sources, requeued }
    }

    /// Every cache shows what the API server holds now, with the controller's watch filters:
    /// encrypted Secrets by their label, sources as metadata (no ciphertexts, no SA tokens).
    pub fn sync(&mut self) {
        let keys = self.api.all::<ByokKey>();
        self.index.observe(&watcher::Event::Init);
        for k in &keys {
            self.index.observe(&watcher::Event::InitApply(k.clone()));
        }
        self.index.observe(&watcher::Event::InitDone);
        self.keys.reset(keys);
        let secrets = self.api.all::<Secret>();
        let (ours, others): (Vec<Secret>, Vec<Secret>) = secrets.into_iter().partition(|s| {
            s.labels().get("app.kubernetes.io/component").map(String::as_str) == Some(keystore::COMPONENT)
        });
        self.encrypted.reset(ours.into_iter().map(keystore::Ciphertext::from));
        let sources = others.iter().filter(|s| {
            !matches!(s.type_.as_deref(), Some(keystore::ENCRYPTED_SECRET_TYPE | "kubernetes.io/service-account-token"))
        });
        self.sources.reset(sources.map(metadata_of));
    }

    /// Stores a source Secret holding `key` and a ByokKey importing it; the caches show both.
    pub fn add(&mut self, name: &str, key: &str, default: bool) -> ByokKey {
        self.api.put(&source_secret(&format!("{name}-src"), key));
        let created = self.api.put(&byokkey(name, Provider::OpenAi, &format!("{name}-src"), default));
        self.sync();
        created
    }

    /// The ByokKey as the API server holds it now.
    pub fn stored(&self, name: &str) -> ByokKey {
        self.api.get::<ByokKey>(NS, name).unwrap_or_else(|| panic!("ByokKey {name} is stored"))
    }

    /// The ByokKey as the cache shows it.
    pub fn cached(&self, name: &str) -> ByokKey {
        self.keys.get(name).map(|k| (*k).clone()).unwrap_or_else(|| panic!("ByokKey {name} is cached"))
    }

    /// One reconcile of `key`, as the controller would run it.
    pub async fn reconcile(&self, key: &ByokKey) -> Result<Action, Error> {
        byok_operator::controller::byokkey::reconcile(Arc::new(key.clone()), self.ctx.clone()).await
    }

    /// Reconciles the cached `name` and expects success.
    pub async fn reconcile_cached(&self, name: &str) -> Action {
        self.reconcile(&self.cached(name)).await.unwrap_or_else(|e| panic!("reconcile {name}: {e}"))
    }

    /// Names the reconciles asked to requeue since the last call.
    pub fn requeued(&mut self) -> Vec<String> {
        let mut names = Vec::new();
        while let Ok(r) = self.requeued.try_recv() {
            names.push(r.name);
        }
        names
    }

    /// The encrypted Secret of ByokKey `name` as stored.
    pub fn ciphertext(&self, name: &str) -> Option<Secret> {
        self.api.get::<Secret>(NS, &keystore::encrypted_secret_name(name))
    }
}
