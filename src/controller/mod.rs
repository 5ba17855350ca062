//! Controllers and what they share.

pub mod byokkey;
mod context;
pub mod evaljob;
pub mod finalizer;
pub mod memo;
pub mod status;

pub use context::{Context, OperatorConfig};

/// Errors a reconcile can end with. None of them carries key material.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("object has no {0}")]
    MissingField(&'static str),
    #[error("{0}")]
    Internal(String),
    #[error("encryption: {0}")]
    Crypto(#[from] crate::crypto::CryptoError),
    #[error("encryption: {0}")]
    Seal(#[from] crate::keystore::SealError),
    #[error("keyring: {0}")]
    Keyring(#[from] crate::crypto::KeyringError),
    #[error("serialization: {0}")]
    Serialization(#[from] serde_json::Error),
    #[error(
        "the KEK keyring Secret {namespace}/{name} is missing but encrypted keys exist (e.g. {example}): \
         restore the keyring from its backup (docs/operations.md); refusing to start, and generating no new keyring"
    )]
    KeyringMissing { namespace: String, name: String, example: String },
}

impl Error {
    /// Short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::MissingField(_) => "missing_field",
            Self::Internal(_) => "internal",
            Self::Crypto(_) | Self::Seal(_) => "crypto",
            Self::Keyring(_) => "keyring",
            Self::Serialization(_) => "serialization",
            Self::KeyringMissing { .. } => "keyring_missing",
        }
    }
}

/// A controller's main watch, reflected into a store, with a signal that turns true once the
/// store holds the first full list. The broker waits on this signal, not on
/// `Store::wait_until_ready`: kube-runtime's Controller waits on that itself, and its one-waiter
/// channel wakes only the last of two concurrent waiters (the controller would stall).
pub fn synced_main_stream<K>(
    api: kube::Api<K>,
    config: kube::runtime::watcher::Config,
) -> (
    kube::runtime::reflector::Store<K>,
    impl futures::Stream<Item = Result<K, kube::runtime::watcher::Error>> + Send,
    tokio::sync::watch::Receiver<bool>,
)
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    synced_main_stream_observed(api, config, |_| {})
}

/// [`synced_main_stream`], with `observe` seeing every watch event once the store has it (to keep
/// an index over the store).
pub fn synced_main_stream_observed<K>(
    api: kube::Api<K>,
    config: kube::runtime::watcher::Config,
    observe: impl Fn(&kube::runtime::watcher::Event<K>) + Send + 'static,
) -> (
    kube::runtime::reflector::Store<K>,
    impl futures::Stream<Item = Result<K, kube::runtime::watcher::Error>> + Send,
    tokio::sync::watch::Receiver<bool>,
)
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    use futures::TryStreamExt as _;
    use kube::runtime::WatchStreamExt as _;
    let (store, writer) = kube::runtime::reflector::store();
    let (synced_tx, synced_rx) = tokio::sync::watch::channel(false);
    let stream = kube::runtime::watcher(api, config)
        .default_backoff()
        .modify(slim)
        .reflect(writer)
        .inspect_ok(move |event| {
            observe(event);
            if matches!(event, kube::runtime::watcher::Event::InitDone) {
                let _ = synced_tx.send(true);
            }
        })
        .applied_objects();
    (store, stream, synced_rx)
}

/// Drops from a cached object what no reconcile reads: its managedFields (often larger than the
/// object itself) and kubectl's last-applied copy. Caches hold every object, so this is most of
/// the operator's memory at 10,000 keys.
pub fn slim<K: kube::Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}
