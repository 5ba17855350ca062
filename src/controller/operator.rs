//! Starting the operator: keyring, caches, controllers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use kube::runtime::events::{Recorder, Reporter};
use kube::{Api, Client};
use tokio::sync::mpsc;

use super::byokkey::{self, Wiring};
use super::{Context, Error, OperatorConfig, keyring};

/// Runs every controller until SIGTERM/SIGINT.
pub async fn run(client: Client, config: OperatorConfig) -> Result<(), Error> {
    let reporter = Reporter { controller: "byok-operator".into(), instance: std::env::var("POD_NAME").ok() };
    let recorder = Recorder::new(client.clone(), reporter);
    let ring = keyring::load_or_create(&client, &config.namespace, &config.keyring_secret, &recorder).await?;
    tracing::info!(active_kek = ring.active().id(), keks = ring.ids().count(), "keyring loaded");
    let ring = Arc::new(RwLock::new(ring));

    let (changed_tx, changed_rx) = mpsc::unbounded_channel();
    tokio::spawn(keyring::follow(
        client.clone(),
        config.namespace.clone(),
        config.keyring_secret.clone(),
        ring.clone(),
        changed_tx,
    ));

    // Provider calls get their own timeout per request; this bounds connection setup.
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("byok-operator/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Internal(format!("http client: {e}")))?;

    let c = || client.clone();
    let (byokkeys, secrets, secret_metadata) = match &config.watch_namespace {
        Some(ns) => (Api::namespaced(c(), ns), Api::namespaced(c(), ns), Api::namespaced(c(), ns)),
        None => (Api::all(c()), Api::all(c()), Api::all(c())),
    };
    let wiring = Wiring { byokkeys, secrets, secret_metadata, keyring_changed: changed_rx };
    byokkey::run(wiring, |parts| Context {
        client,
        recorder,
        config,
        http,
        keyring: ring,
        byokkeys: parts.byokkeys,
        encrypted: parts.encrypted,
        sources: parts.sources,
        requeue: parts.requeue,
        backoff: Mutex::new(HashMap::new()),
    })
    .await;
    Ok(())
}
