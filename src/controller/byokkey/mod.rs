//! The ByokKey controller: import, encrypt, validate, default, revoke, rotate.

mod act;
pub mod desired;
pub mod import;
pub mod index;
mod plan;
mod reconcile;
pub mod revalidation;
pub use reconcile::forget;
pub mod validation;

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::{Context, Error, finalizer};
use crate::crd::ByokKey;
use crate::keystore;

/// The finalizer that 0.1 put on every ByokKey, to delete its encrypted Secret
/// first. Keys no longer get it: the ciphertext's ownerReference has the garbage collector delete
/// it, and the watch's delete event does the rest ([`forget_deleted`]), one API write per key
/// less. A key that still carries it is cleaned up as before when deleted.
pub const FINALIZER: &str = "launchgate.ai/byokkey-cleanup";

/// One reconcile of `key`, as the controller runs it (public for the fast tests, tests/fast_byokkey.rs).
pub async fn reconcile(key: Arc<ByokKey>, ctx: Arc<Context>) -> Result<Action, Error> {
    let uid = key.uid();
    super::status::measured("byokkey", uid, &ctx.metrics, &ctx.retries, reconcile_inner(key, &ctx)).await
}

async fn reconcile_inner(key: Arc<ByokKey>, ctx: &Arc<Context>) -> Result<Action, Error> {
    // The controller starts on its own cache: a source Secret or ciphertext not loaded yet would
    // read as missing (a restarted operator would call a key Ready with its source not deleted).
    // Not awaited: the controller itself drives those caches, and reconciles waiting in every
    // concurrency slot would stop it polling them.
    if !(synced(&ctx.sources) && synced(&ctx.encrypted)) {
        return Ok(Action::requeue(CACHES_SYNCING_RETRY));
    }
    let ns = key.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<ByokKey> = Api::namespaced(ctx.client.clone(), &ns);
    match (key.meta().deletion_timestamp.is_some(), finalizer::state(key.as_ref(), FINALIZER)) {
        (true, finalizer::State::Missing) => Ok(Action::await_change()),
        (true, finalizer::State::Present(index)) => {
            let action = reconcile::cleanup(key.clone(), ctx).await?;
            finalizer::patch(&api, key.as_ref(), finalizer::remove_ops(index, FINALIZER)).await?;
            Ok(action)
        }
        (false, _) => reconcile::apply(key, ctx).await,
    }
}

/// How soon a reconcile that found the Secret caches still loading is tried again.
const CACHES_SYNCING_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

/// Whether `store` has had its first full list (without waiting for it).
fn synced<K: reflector::Lookup + Clone + 'static>(store: &reflector::Store<K>) -> bool
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    futures::FutureExt::now_or_never(store.wait_until_ready()).is_some_and(|r| r.is_ok())
}

fn error_policy(key: Arc<ByokKey>, err: &Error, ctx: Arc<Context>) -> Action {
    super::status::on_error(key.as_ref(), err, &ctx.retries)
}

/// Source Secrets of interest: every Secret but our own ciphertexts and service-account tokens.
/// Watched as metadata only, so the operator never holds other Secrets' data.
fn source_fields() -> String {
    format!("type!={},type!=kubernetes.io/service-account-token", keystore::ENCRYPTED_SECRET_TYPE)
}

/// What `run` needs besides the context's shared pieces.
pub struct Wiring {
    pub byokkeys: Api<ByokKey>,
    pub secrets: Api<Secret>,
    /// The same Secrets, metadata only.
    pub secret_metadata: Api<PartialObjectMeta<Secret>>,
    /// Fires when the keyring changed: every key is reconciled (re-encryption).
    pub keyring_changed: mpsc::UnboundedReceiver<()>,
}

/// Builds the caches and runs the controller until shutdown.
pub async fn run(wiring: Wiring, make_ctx: impl FnOnce(ContextParts) -> Context) {
    let Wiring { byokkeys, secrets, secret_metadata, keyring_changed } = wiring;
    let (enc_store, enc_writer) = reflector::store();
    let enc_cfg = watcher::Config::default().labels(&keystore::selector());
    let projected =
        watcher(secrets, enc_cfg).default_backoff().map_ok(|event| project(event, keystore::Ciphertext::from));
    let encrypted = reflector::reflector(enc_writer, projected)
        .touched_objects()
        .filter_map(|touched| {
            futures::future::ready(match touched {
                Ok(ciphertext) => Some(ciphertext),
                Err(e) => {
                    tracing::warn!(error = %e, "watch of the encrypted Secrets failed; retrying with backoff");
                    None
                }
            })
        })
        // Each change of a ciphertext reconciles the ByokKeys owning it.
        .flat_map(|c: keystore::Ciphertext| {
            let ns = c.namespace.unwrap_or_default();
            futures::stream::iter(
                c.owners.into_vec().into_iter().map(move |(name, _)| ObjectRef::new(&name).within(&ns)),
            )
        });

    let (src_store, src_writer) = reflector::store();
    let src_cfg = watcher::Config::default().fields(&source_fields());
    let sources =
        watcher(secret_metadata, src_cfg).default_backoff().modify(super::slim).reflect(src_writer).touched_objects();

    let (requeue_tx, requeue_rx) = mpsc::unbounded_channel();
    let index = index::KeyIndex::default();
    let observer = index.clone();
    let (gone_tx, gone_rx) = mpsc::unbounded_channel();
    let (key_store, main, byokkeys_synced) =
        super::synced_main_stream_observed(byokkeys, watcher::Config::default().any_semantic(), move |event| {
            observer.observe(event);
            if let watcher::Event::Delete(key) = event {
                // Fails only once forget_deleted is gone: the operator is shutting down.
                let _ = gone_tx.send(key.clone());
            }
        });
    let controller = Controller::for_stream(main, key_store.clone());
    let ctx = Arc::new(make_ctx(ContextParts {
        byokkeys: key_store.clone(),
        index: index.clone(),
        byokkeys_synced,
        encrypted: enc_store,
        sources: src_store,
        requeue: requeue_tx,
        revalidation: revalidation::Revalidation::default(),
    }));
    let failing = {
        let ctx = ctx.clone();
        move |key: &ByokKey| key.uid().is_some_and(|uid| ctx.retries.failing(&uid))
    };
    tokio::spawn(ctx.revalidation.clone().run(key_store.clone(), ctx.requeue.clone(), failing));
    let concurrency = ctx.config.concurrency;
    tokio::spawn(forget_deleted(gone_rx, ctx.clone()));
    controller
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .reconcile_on(encrypted)
        .watches_stream(sources, move |meta| {
            // A source Secret changed: reconcile the ByokKeys that import from it.
            index.importing(&meta.namespace().unwrap_or_default(), &meta.name_any())
        })
        .reconcile_on(UnboundedReceiverStream::new(requeue_rx))
        .reconcile_all_on(UnboundedReceiverStream::new(keyring_changed))
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}

/// A watch event with its object projected by `f` (for a cache that keeps less than the object).
fn project<K, P>(event: watcher::Event<K>, f: impl Fn(K) -> P) -> watcher::Event<P> {
    match event {
        watcher::Event::Apply(o) => watcher::Event::Apply(f(o)),
        watcher::Event::Delete(o) => watcher::Event::Delete(f(o)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(o) => watcher::Event::InitApply(f(o)),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// Follows the ByokKeys the watch saw deleted (see [`FINALIZER`]). Keys deleted while the watch
/// was down are not seen here: the relist reconciles every key, siblings included.
async fn forget_deleted(mut gone: mpsc::UnboundedReceiver<ByokKey>, ctx: Arc<Context>) {
    while let Some(key) = gone.recv().await {
        reconcile::forget(&key, &ctx);
    }
}

/// The caches `run` builds, handed to the caller to assemble the [`Context`].
pub struct ContextParts {
    pub byokkeys: reflector::Store<ByokKey>,
    pub index: index::KeyIndex,
    /// True once `byokkeys` holds the first full list.
    pub byokkeys_synced: tokio::sync::watch::Receiver<bool>,
    pub encrypted: reflector::Store<keystore::Ciphertext>,
    pub sources: reflector::Store<kube::core::PartialObjectMeta<Secret>>,
    pub requeue: mpsc::UnboundedSender<ObjectRef<ByokKey>>,
    /// When Ready keys are next due for validation (one timer for all).
    pub revalidation: revalidation::Revalidation,
}
