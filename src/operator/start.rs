//! Starting the operator: keyring, broker CA, caches, controllers, key broker.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::events::{Recorder, Reporter};
use kube::{Api, Client};
use tokio::sync::{mpsc, oneshot};

use kube::runtime::reflector::Store;
use tokio::task::JoinHandle;

use super::keyring;
use crate::broker::{self, BrokerCa, BrokerState, BrokerStores};
use crate::controller::byokkey::{self, Wiring};
use crate::controller::evaljob::{self, EvalApis, EvalContext, EvalStores, JudgeSettings};
use crate::controller::{Context, Error, OperatorConfig};
use crate::crd::ByokKey;
use crate::crypto::Keyring;
use crate::crypto::sealing::SealingKey;
use crate::kms::KekSource;
use crate::metrics::Metrics;

/// Where and how the key broker serves.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    pub listen: SocketAddr,
    /// URL judge pods use to reach the broker.
    pub url: String,
    /// Names (DNS or IP) in the serving certificate.
    pub names: Vec<String>,
    /// Secret holding the broker CA.
    pub ca_secret: String,
    /// Image with the `byok-judge` binary.
    pub judge_image: String,
    /// Whether /metrics needs an authorized bearer token.
    pub metrics_auth: bool,
    /// Lease-based leader election (for several replicas); None runs as the only leader.
    pub lease: Option<super::leader::LeaseConfig>,
}

/// Waits until a controller's main store has its first full list (see `synced_main_stream`).
async fn listed(
    what: &'static str,
    mut synced: tokio::sync::watch::Receiver<bool>,
) -> Result<(), kube::runtime::reflector::store::WriterDropped> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), synced.wait_for(|s| *s)).await {
            Ok(Ok(_)) => return Ok(()),
            // The controller stopped: nothing will sync; the operator is shutting down.
            Ok(Err(_)) => return std::future::pending().await,
            Err(_) => tracing::warn!(cache = what, "waiting for the cache to sync before the broker answers"),
        }
    }
}

/// Waits until `store` (a reflector nobody else waits on) has synced, saying every 10 s which
/// cache is still loading.
async fn synced_or_say<K: kube::runtime::reflector::Lookup + Clone + 'static>(
    what: &'static str,
    store: &kube::runtime::reflector::Store<K>,
) -> Result<(), kube::runtime::reflector::store::WriterDropped>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(10), store.wait_until_ready()).await {
            Ok(done) => return done,
            Err(_) => tracing::warn!(cache = what, "waiting for the cache to sync before the broker answers"),
        }
    }
}

/// A future that ends when this replica loses the leader lease (never, without election).
type LeaseLost = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Runs every controller and the broker until SIGTERM/SIGINT. `set_level`, when given, lets the
/// ConfigMap `byok-operator-config` change the log level at run time. The start-up order itself:
/// bootstrap Secrets, broker (listening, not answering), lease, controllers, synced caches.
pub async fn run(
    client: Client,
    config: OperatorConfig,
    broker_config: BrokerConfig,
    set_level: Option<super::loglevel::SetLevel>,
) -> Result<(), Error> {
    if let Some(set) = set_level {
        tokio::spawn(super::loglevel::follow(client.clone(), config.namespace.clone(), set));
    }
    tokio::spawn(super::heap::trim_after_bursts());
    let reporter = Reporter { controller: "byok-operator".into(), instance: std::env::var("POD_NAME").ok() };
    let recorder = Recorder::new(client.clone(), reporter);
    let boot = Bootstrap::load(&client, &config, &broker_config, &recorder).await?;
    let metrics = Arc::new(Metrics::default());
    broker::count_from_zero(&metrics);
    let (state, broker_task) = start_broker(&client, &config, &broker_config, &boot, &metrics, &recorder);
    let mut lost: LeaseLost = match broker_config.lease.clone() {
        Some(lease) => Box::pin(super::leader::lead(client.clone(), lease).await?),
        None => Box::pin(std::future::pending()),
    };
    // Never set back to 0: a replica that loses the lease exits.
    metrics.leader.set(1);
    // `kubectl byok version` reads which version leads (and warns on skew).
    if let Err(e) = super::version::publish(&client, &config.namespace).await {
        let configmap = super::version::VERSION_CONFIGMAP;
        tracing::warn!(error = %e, configmap, "could not publish the operator's version");
    }
    // ByokKey controller first: the EvalJob controller and the broker read its caches.
    let keys = start_keys(&client, &config, &boot, &metrics, &recorder).await?;
    let settings = JudgeSettings {
        image: broker_config.judge_image.clone(),
        broker_url: broker_config.url.clone(),
        endpoints: config.endpoints.clone().into(),
        limits: config.judge,
    };
    let (eval_task, evals) = start_evals(&client, &config, settings, &boot, &keys, &metrics, &recorder).await?;
    tokio::spawn(broker::grants::sweep(client.clone(), config.namespace.clone(), Duration::from_secs(600)));
    tokio::select! {
        r = wait_synced(&keys, &evals) => r?,
        _ = &mut lost => return Err(Error::Internal("lost the leader lease".into())),
    }
    let _ = state.stores.set(BrokerStores {
        byokkeys: keys.byokkeys,
        encrypted: keys.encrypted,
        evaljobs: evals.evaljobs,
        jobs: evals.jobs,
    });
    // The controllers stop on SIGTERM/SIGINT; a lost lease stops everything at once, so two
    // replicas never act as leader together (the process exits and is restarted).
    let outcome = tokio::select! {
        _ = async { tokio::join!(keys.task, eval_task) } => Ok(()),
        _ = lost => Err(Error::Internal("lost the leader lease".into())),
    };
    broker_task.abort();
    outcome
}

/// The operator's own Secrets, each loaded (or created on first start) once, and the KEK source.
struct Bootstrap {
    /// The keyring Secret: the KEK source by default; with an external KMS, only what opens keys
    /// sealed before the move (absent on a fresh install).
    ring: Option<Arc<RwLock<Keyring>>>,
    kek: KekSource,
    ca: Arc<BrokerCa>,
    sealing: Arc<SealingKey>,
}

impl Bootstrap {
    async fn load(
        client: &Client,
        config: &OperatorConfig,
        broker_config: &BrokerConfig,
        recorder: &Recorder,
    ) -> Result<Self, Error> {
        let scope = config.watch_namespace.as_deref();
        let kms = config.kms.connect().map_err(|e| Error::Internal(format!("KMS: {e}")))?;
        let (ring, kek) = match kms {
            None => {
                let ring =
                    keyring::load_or_create(client, &config.namespace, &config.keyring_secret, scope, recorder).await?;
                tracing::info!(active_kek = ring.active().id(), keks = ring.ids().count(), "keyring loaded");
                let ring = Arc::new(RwLock::new(ring));
                (Some(ring.clone()), KekSource::Keyring(ring))
            }
            Some(kms) => {
                let legacy = keyring::load_existing(client, &config.namespace, &config.keyring_secret).await?;
                let legacy = legacy.map(|r| Arc::new(RwLock::new(r)));
                tracing::info!(kms = kms.kind(), legacy_keyring = legacy.is_some(), "keys are sealed under the KMS");
                let kek = KekSource::remote(kms, legacy.clone(), config.kms.policy);
                (legacy, kek)
            }
        };
        let ca = BrokerCa::load_or_create(client, &config.namespace, &broker_config.ca_secret)
            .await
            .map_err(|e| Error::Internal(format!("broker CA: {e}")))?;
        let sealing = super::sealing::load_or_create(client, &config.namespace).await?;
        Ok(Self { ring, kek, ca: Arc::new(ca), sealing: Arc::new(sealing) })
    }
}

/// The broker listens on every replica from the start (health checks pass); it answers, and
/// reports ready, only once this replica leads and its caches exist (`BrokerState::stores`).
fn start_broker(
    client: &Client,
    config: &OperatorConfig,
    broker_config: &BrokerConfig,
    boot: &Bootstrap,
    metrics: &Arc<Metrics>,
    recorder: &Recorder,
) -> (Arc<BrokerState>, JoinHandle<()>) {
    let state = Arc::new(BrokerState {
        client: client.clone(),
        tokens: Arc::new(client.clone()),
        kek: boot.kek.clone(),
        stores: Default::default(),
        metrics: metrics.clone(),
        namespace: config.namespace.clone(),
        recorder: recorder.clone(),
        results_mac: boot.ca.results_mac(),
        metrics_auth: broker_config.metrics_auth,
        results_slots: tokio::sync::Semaphore::new(broker::RESULTS_IN_FLIGHT),
    });
    let (served, ca, listen, names) =
        (state.clone(), boot.ca.clone(), broker_config.listen, broker_config.names.clone());
    let task = tokio::spawn(async move {
        if let Err(e) = broker::serve(served, &ca, listen, &names).await {
            tracing::error!(error = %e, "key broker stopped");
        }
    });
    (state, task)
}

fn boot_kind(remote: &crate::kms::RemoteKek) -> String {
    remote.kind().to_string()
}

/// Says which KEK source is in use and what new keys are sealed under (`kek status` reads it).
async fn publish_kek_state(client: &Client, namespace: &str, source: &str, active: Option<String>) {
    let state = super::kek_state::KekState { source: source.to_string(), active: active.unwrap_or_default() };
    if let Err(e) = super::kek_state::publish(client, namespace, &state).await {
        tracing::warn!(error = %e, "could not publish the KEK state ConfigMap");
    }
}

/// Builds an Api over the watched scope: one namespace, or the cluster.
fn scoped<K>(client: &Client, config: &OperatorConfig) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match &config.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The running ByokKey controller and the caches the others read.
struct Keys {
    task: JoinHandle<()>,
    byokkeys: Store<ByokKey>,
    encrypted: Store<crate::keystore::Ciphertext>,
    synced: tokio::sync::watch::Receiver<bool>,
}

async fn start_keys(
    client: &Client,
    config: &OperatorConfig,
    boot: &Bootstrap,
    metrics: &Arc<Metrics>,
    recorder: &Recorder,
) -> Result<Keys, Error> {
    let (changed_tx, changed_rx) = mpsc::unbounded_channel();
    match (&boot.kek, &boot.ring) {
        (KekSource::Remote(remote), _) => {
            // Each change of the remote key: published for `kek status`, then every key reconciled.
            let (rotated_tx, mut rotated) = mpsc::unbounded_channel();
            tokio::spawn(crate::kms::follow(remote.clone(), config.kms.poll, rotated_tx));
            let (client, ns, remote) = (client.clone(), config.namespace.clone(), remote.clone());
            tokio::spawn(async move {
                while rotated.recv().await.is_some() {
                    publish_kek_state(&client, &ns, &boot_kind(&remote), remote.latest_key_id()).await;
                    let _ = changed_tx.send(());
                }
            });
        }
        (KekSource::Keyring(_), Some(ring)) => {
            let active = ring.read().ok().map(|r| r.active().id().to_string());
            publish_kek_state(client, &config.namespace, "keyring", active).await;
            let (ns, name) = (config.namespace.clone(), config.keyring_secret.clone());
            tokio::spawn(keyring::follow(client.clone(), ns, name, ring.clone(), changed_tx));
        }
        (KekSource::Keyring(_), None) => {}
    }
    let wiring = Wiring {
        byokkeys: scoped(client, config),
        secrets: scoped(client, config),
        secret_metadata: scoped(client, config),
        keyring_changed: changed_rx,
    };
    let http = provider_http()?;
    let (keys_tx, keys_rx) = oneshot::channel();
    let (client, recorder, config, kek, metrics, sealing) =
        (client.clone(), recorder.clone(), config.clone(), boot.kek.clone(), metrics.clone(), boot.sealing.clone());
    let make_ctx = move |parts: byokkey::ContextParts| {
        let _ = keys_tx.send((parts.byokkeys.clone(), parts.encrypted.clone(), parts.byokkeys_synced.clone()));
        Context {
            client,
            recorder,
            config,
            http,
            kek,
            metrics,
            sealing,
            byokkeys: parts.byokkeys,
            index: parts.index,
            encrypted: parts.encrypted,
            sources: parts.sources,
            requeue: parts.requeue,
            revalidation: parts.revalidation,
            backoff: Mutex::new(HashMap::new()),
            written: Default::default(),
            retries: Default::default(),
        }
    };
    let task = tokio::spawn(byokkey::run(wiring, make_ctx));
    let (byokkeys, encrypted, synced) =
        keys_rx.await.map_err(|_| Error::Internal("ByokKey controller did not start".into()))?;
    Ok(Keys { task, byokkeys, encrypted, synced })
}

/// The client for provider calls: each call has its own timeout; this bounds connection setup.
fn provider_http() -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        // A redirect would carry the key's header to wherever the answer points.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("byok-operator/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Internal(format!("http client: {e}")))
}

async fn start_evals(
    client: &Client,
    config: &OperatorConfig,
    settings: JudgeSettings,
    boot: &Bootstrap,
    keys: &Keys,
    metrics: &Arc<Metrics>,
    recorder: &Recorder,
) -> Result<(JoinHandle<()>, EvalStores), Error> {
    let apis = EvalApis {
        evaljobs: scoped(client, config),
        jobs: scoped(client, config),
        config_maps: scoped(client, config),
        byokkeys: scoped(client, config),
    };
    let (eval_tx, eval_rx) = oneshot::channel();
    let (client, recorder, models, byokkeys, metrics) =
        (client.clone(), recorder.clone(), config.models.clone(), keys.byokkeys.clone(), metrics.clone());
    let (ca_pem, results_mac) = (boot.ca.cert_pem.clone(), Arc::new(boot.ca.results_mac()));
    let make_ctx = move |jobs| EvalContext {
        client,
        recorder,
        models,
        settings,
        ca_pem,
        byokkeys,
        results_mac,
        jobs,
        metrics,
        written: Default::default(),
        retries: Default::default(),
    };
    let task = tokio::spawn(evaljob::run(apis, config.concurrency, make_ctx, eval_tx));
    let stores = eval_rx.await.map_err(|_| Error::Internal("EvalJob controller did not start".into()))?;
    Ok((task, stores))
}

/// Ready means synced: until every cache the broker reads holds what the API server has, an
/// answer from it could call a key revoked that is merely not loaded yet.
async fn wait_synced(keys: &Keys, evals: &EvalStores) -> Result<(), Error> {
    let syncing = std::time::Instant::now();
    futures::future::try_join4(
        listed("ByokKeys", keys.synced.clone()),
        synced_or_say("encrypted keys", &keys.encrypted),
        listed("EvalJobs", evals.evaljobs_synced.clone()),
        synced_or_say("Jobs", &evals.jobs),
    )
    .await
    .map_err(|_| Error::Internal("a controller stopped before its cache synced".into()))?;
    let (keys, seconds) = (keys.byokkeys.state().len(), syncing.elapsed().as_secs_f64());
    tracing::info!(keys, seconds, "caches synced: the broker answers and reports ready");
    Ok(())
}
