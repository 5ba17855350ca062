//! Starting the operator: keyring, broker CA, caches, controllers, key broker.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use kube::runtime::events::{Recorder, Reporter};
use kube::{Api, Client};
use tokio::sync::{mpsc, oneshot};

use super::keyring;
use crate::broker::{self, BrokerCa, BrokerState, BrokerStores};
use crate::controller::byokkey::{self, Wiring};
use crate::controller::evaljob::{self, EvalApis, EvalContext, JudgeSettings};
use crate::controller::{Context, Error, OperatorConfig};

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
async fn synced_or_say<K: kube::Resource + Clone + 'static>(
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

/// Runs every controller and the broker until SIGTERM/SIGINT. `set_level`, when given, lets the
/// ConfigMap `byok-operator-config` change the log level at run time.
/// Long because it is the start-up order itself (caches, leader, controllers, broker), written once
/// in sequence; each step is a call into the module that owns it.
pub async fn run(
    client: Client,
    config: OperatorConfig,
    broker_config: BrokerConfig,
    set_level: Option<super::loglevel::SetLevel>,
) -> Result<(), Error> {
    if let Some(set) = set_level {
        tokio::spawn(super::loglevel::follow(client.clone(), config.namespace.clone(), set));
    }
    let reporter = Reporter { controller: "byok-operator".into(), instance: std::env::var("POD_NAME").ok() };
    let recorder = Recorder::new(client.clone(), reporter);
    let scope = config.watch_namespace.as_deref();
    let ring = keyring::load_or_create(&client, &config.namespace, &config.keyring_secret, scope, &recorder).await?;
    tracing::info!(active_kek = ring.active().id(), keks = ring.ids().count(), "keyring loaded");
    let ring = Arc::new(RwLock::new(ring));
    let ca = BrokerCa::load_or_create(&client, &config.namespace, &broker_config.ca_secret)
        .await
        .map_err(|e| Error::Internal(format!("broker CA: {e}")))?;

    let sealing = Arc::new(super::sealing::load_or_create(&client, &config.namespace).await?);
    let metrics = Arc::new(crate::metrics::Metrics::default());
    broker::count_from_zero(&metrics);

    // The broker listens on every replica from the start (health checks pass); it answers, and
    // reports ready, only once this replica leads and its caches exist.
    let state = Arc::new(BrokerState {
        client: client.clone(),
        tokens: Arc::new(client.clone()),
        keyring: ring.clone(),
        stores: Default::default(),
        metrics: metrics.clone(),
        namespace: config.namespace.clone(),
        recorder: recorder.clone(),
        results_mac: ca.results_mac(),
        metrics_auth: broker_config.metrics_auth,
        results_slots: tokio::sync::Semaphore::new(broker::RESULTS_IN_FLIGHT),
    });
    let results_mac = Arc::new(ca.results_mac());
    let ca_pem = ca.cert_pem.clone();
    let broker_task = {
        let (state, listen, names) = (state.clone(), broker_config.listen, broker_config.names.clone());
        tokio::spawn(async move {
            if let Err(e) = broker::serve(state, &ca, listen, &names).await {
                tracing::error!(error = %e, "key broker stopped");
            }
        })
    };
    let mut lost: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> = match broker_config.lease.clone() {
        Some(lease) => Box::pin(super::leader::lead(client.clone(), lease).await?),
        None => Box::pin(std::future::pending()),
    };
    // Never set back to 0: a replica that loses the lease exits.
    metrics.leader.set(1);

    let (changed_tx, changed_rx) = mpsc::unbounded_channel();
    tokio::spawn(keyring::follow(
        client.clone(),
        config.namespace.clone(),
        config.keyring_secret.clone(),
        ring.clone(),
        changed_tx,
    ));
    // `kubectl byok version` reads which version leads (and warns on skew).
    if let Err(e) = super::version::publish(&client, &config.namespace).await {
        let configmap = super::version::VERSION_CONFIGMAP;
        tracing::warn!(error = %e, configmap, "could not publish the operator's version");
    }

    // Provider calls get their own timeout per request; this bounds connection setup.
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        // A redirect would carry the key's header to wherever the answer points.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("byok-operator/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Internal(format!("http client: {e}")))?;

    let c = || client.clone();
    let scoped = config.watch_namespace.clone();
    macro_rules! api {
        () => {
            match &scoped {
                Some(ns) => Api::namespaced(c(), ns),
                None => Api::all(c()),
            }
        };
    }
    let wiring = Wiring { byokkeys: api!(), secrets: api!(), secret_metadata: api!(), keyring_changed: changed_rx };

    // ByokKey controller first: the EvalJob controller and the broker read its caches.
    let (keys_tx, keys_rx) = oneshot::channel();
    let key_ctx = {
        let (client, recorder, config, ring, metrics) =
            (client.clone(), recorder.clone(), config.clone(), ring.clone(), metrics.clone());
        move |parts: byokkey::ContextParts| {
            let _ = keys_tx.send((parts.byokkeys.clone(), parts.encrypted.clone(), parts.byokkeys_synced.clone()));
            Context {
                client,
                recorder,
                config,
                http,
                keyring: ring,
                metrics,
                sealing,
                byokkeys: parts.byokkeys,
                index: parts.index,
                encrypted: parts.encrypted,
                sources: parts.sources,
                requeue: parts.requeue,
                backoff: Mutex::new(HashMap::new()),
                written: Default::default(),
                retries: Default::default(),
            }
        }
    };
    let keys_task = tokio::spawn(byokkey::run(wiring, key_ctx));
    let (key_store, enc_store, keys_synced) =
        keys_rx.await.map_err(|_| Error::Internal("ByokKey controller did not start".into()))?;

    let settings = JudgeSettings {
        image: broker_config.judge_image.clone(),
        broker_url: broker_config.url.clone(),
        endpoints: config.endpoints.clone().into(),
        limits: config.judge,
    };
    let apis = EvalApis { evaljobs: api!(), jobs: api!(), config_maps: api!(), byokkeys: api!() };
    let (eval_tx, eval_rx) = oneshot::channel();
    let eval_ctx = {
        let (client, recorder, models, ca_pem, byokkeys, metrics) =
            (client.clone(), recorder.clone(), config.models.clone(), ca_pem, key_store.clone(), metrics.clone());
        move |jobs| EvalContext {
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
        }
    };
    let eval_task = tokio::spawn(evaljob::run(apis, config.concurrency, eval_ctx, eval_tx));
    let stores = eval_rx.await.map_err(|_| Error::Internal("EvalJob controller did not start".into()))?;

    tokio::spawn(broker::grants::sweep(client.clone(), config.namespace.clone(), Duration::from_secs(600)));
    // Ready means synced: until every cache the broker reads holds what the API server has, an
    // answer from it could call a key revoked that is merely not loaded yet.
    let syncing = std::time::Instant::now();
    let synced = futures::future::try_join4(
        listed("ByokKeys", keys_synced),
        synced_or_say("encrypted keys", &enc_store),
        listed("EvalJobs", stores.evaljobs_synced.clone()),
        synced_or_say("Jobs", &stores.jobs),
    );
    tokio::select! {
        r = synced => { r.map_err(|_| Error::Internal("a controller stopped before its cache synced".into()))?; }
        _ = &mut lost => return Err(Error::Internal("lost the leader lease".into())),
    }
    tracing::info!(
        keys = key_store.state().len(),
        seconds = syncing.elapsed().as_secs_f64(),
        "caches synced: the broker answers and reports ready"
    );
    let _ = state.stores.set(BrokerStores {
        byokkeys: key_store,
        encrypted: enc_store,
        evaljobs: stores.evaljobs,
        jobs: stores.jobs,
    });
    // The controllers stop on SIGTERM/SIGINT; a lost lease stops everything at once, so two
    // replicas never act as leader together (the process exits and is restarted).
    let outcome = tokio::select! {
        _ = async { tokio::join!(keys_task, eval_task) } => Ok(()),
        _ = lost => Err(Error::Internal("lost the leader lease".into())),
    };
    broker_task.abort();
    outcome
}
