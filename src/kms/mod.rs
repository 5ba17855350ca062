//! Where the key-encryption key lives: the keyring Secret (the default), or an external KMS
//! (Vault Transit, or any Kubernetes KMS v2 plugin) that never hands its key out.
//!
//! With an external KMS, keys are sealed as KMS v2 seals Secrets: AES-256-GCM under a local data
//! encryption key (DEK), the DEK wrapped by the remote key, the wrapped DEK and the remote key id
//! stored in each envelope (`byok2`). One DEK serves many keys (a bounded number of seals, for a
//! bounded time), and unwrapped DEKs are cached in memory with a bound and a TTL, so an import or a
//! broker answer does not make one remote call each. Nothing falls back to a local key: a KMS
//! that cannot be reached is `KmsError::Unavailable`, and the import or the broker says so.

mod cache;
pub mod kmsv2;
pub mod vault;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::crypto::{self, Aad, CryptoError, Envelope, Kek, Keyring, WrappedDek};
use cache::DekCache;

/// Why an external KMS did not do what was asked. Never carries key material.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum KmsError {
    /// Not reached, timed out, or not healthy: retry later; nothing falls back to a local key.
    #[error("the KMS is unavailable: {0}")]
    Unavailable(String),
    /// Reached, and it refused (no such key or version, not allowed, a wrapped DEK it cannot open).
    #[error("the KMS refused: {0}")]
    Refused(String),
}

/// A DEK wrapped by the remote key `key_id`.
pub struct Wrapped {
    pub key_id: String,
    pub dek: WrappedDek,
}

/// An external KMS: wraps and unwraps data encryption keys under a key it never hands out.
pub trait Kms: Send + Sync {
    /// Its kind, for logs and `kek status` (`vault-transit`, `kms-v2`).
    fn kind(&self) -> &'static str;
    /// The id of the remote key new DEKs are wrapped under now (changes when the key rotates).
    fn current_key_id(&self) -> BoxFuture<'_, Result<String, KmsError>>;
    fn wrap<'a>(&'a self, dek: &'a [u8]) -> BoxFuture<'a, Result<Wrapped, KmsError>>;
    fn unwrap<'a>(
        &'a self,
        key_id: &'a str,
        dek: &'a WrappedDek,
    ) -> BoxFuture<'a, Result<Zeroizing<Vec<u8>>, KmsError>>;
}

/// Why a key could not be sealed or opened. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KekError {
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Kms(#[from] KmsError),
}

/// How long and how much one DEK serves, and how many unwrapped DEKs are kept.
#[derive(Clone, Copy, Debug)]
pub struct DekPolicy {
    /// A DEK seals new keys for at most this long, and an unwrapped DEK is cached this long.
    pub ttl: Duration,
    /// Seals under one DEK before a new one is made. Random 96-bit nonces stay far from a
    /// collision well below 2^32 messages per key (NIST SP 800-38D), as KMS v2 bounds its DEKs.
    pub max_seals: u32,
    /// Unwrapped DEKs kept in memory.
    pub max_cached: usize,
}

impl Default for DekPolicy {
    fn default() -> Self {
        Self { ttl: Duration::from_secs(3600), max_seals: 1 << 20, max_cached: 1024 }
    }
}

/// Which KMS, if any, and how it is used.
#[derive(Clone, Debug)]
pub struct KmsConfig {
    pub provider: KmsProvider,
    pub policy: DekPolicy,
    /// How often the KMS is asked for its current key (rotation, health).
    pub poll: Duration,
    /// Per remote call.
    pub timeout: Duration,
}

impl Default for KmsConfig {
    fn default() -> Self {
        Self {
            provider: KmsProvider::Keyring,
            policy: DekPolicy::default(),
            poll: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Debug)]
pub enum KmsProvider {
    /// The keyring Secret in the operator's namespace (the default).
    Keyring,
    /// Vault's Transit engine.
    Vault(vault::VaultConfig),
    /// A Kubernetes KMS v2 plugin listening on this unix socket.
    KmsV2 { socket: std::path::PathBuf },
}

impl KmsConfig {
    /// A client of the configured external KMS; `None` for the keyring Secret.
    pub fn connect(&self) -> Result<Option<Arc<dyn Kms>>, KmsError> {
        Ok(match &self.provider {
            KmsProvider::Keyring => None,
            KmsProvider::Vault(cfg) => Some(Arc::new(vault::VaultTransit::new(cfg.clone())?)),
            KmsProvider::KmsV2 { socket } => Some(Arc::new(kmsv2::KmsV2::new(socket.clone(), self.timeout)?)),
        })
    }
}

/// Remote calls made, for metrics, tests and benchmarks.
#[derive(Debug, Default)]
pub struct KmsCalls {
    pub wraps: AtomicU64,
    pub unwraps: AtomicU64,
}

/// The DEK that seals new keys now.
struct CurrentDek {
    dek: Arc<Kek>,
    wrapped: WrappedDek,
    born: Instant,
    seals: u32,
}

/// Keys sealed under DEKs an external KMS wraps; `legacy` opens keys still sealed under the keyring
/// Secret (a migration to the KMS reseals them).
pub struct RemoteKek {
    kms: Arc<dyn Kms>,
    legacy: Option<Arc<RwLock<Keyring>>>,
    policy: DekPolicy,
    current: tokio::sync::Mutex<Option<CurrentDek>>,
    cache: std::sync::Mutex<DekCache>,
    /// Serialises cache misses, so many opens of one new DEK make one remote call.
    unwrapping: tokio::sync::Mutex<()>,
    /// The remote key id new DEKs are wrapped under, as last seen.
    key_id: RwLock<Option<String>>,
    pub calls: KmsCalls,
}

/// The key-encryption side of the operator: what seals and opens every stored key.
#[derive(Clone)]
pub enum KekSource {
    Keyring(Arc<RwLock<Keyring>>),
    Remote(Arc<RemoteKek>),
}

fn poisoned() -> KekError {
    KekError::Crypto(CryptoError::Encrypt)
}

impl KekSource {
    pub fn remote(kms: Arc<dyn Kms>, legacy: Option<Arc<RwLock<Keyring>>>, policy: DekPolicy) -> Self {
        Self::Remote(Arc::new(RemoteKek {
            kms,
            legacy,
            policy,
            current: tokio::sync::Mutex::new(None),
            cache: std::sync::Mutex::new(DekCache::new(policy.max_cached, policy.ttl)),
            unwrapping: tokio::sync::Mutex::new(()),
            key_id: RwLock::new(None),
            calls: KmsCalls::default(),
        }))
    }

    /// The keyring Secret's keyring, when it is the KEK source.
    pub fn keyring(&self) -> Option<&Arc<RwLock<Keyring>>> {
        match self {
            Self::Keyring(ring) => Some(ring),
            Self::Remote(_) => None,
        }
    }

    /// `keyring` or the KMS's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Keyring(_) => "keyring",
            Self::Remote(r) => r.kms.kind(),
        }
    }

    /// Seals `plaintext` for the object `aad` names, under the active KEK or the current DEK.
    pub async fn seal(&self, aad: &Aad, plaintext: &SecretString) -> Result<Envelope, KekError> {
        match self {
            Self::Keyring(ring) => Ok(crypto::seal(&*ring.read().map_err(|_| poisoned())?, aad, plaintext)?),
            Self::Remote(r) => r.seal(aad, plaintext).await,
        }
    }

    /// Opens an envelope sealed for `aad`.
    pub async fn open(&self, aad: &Aad, envelope: &Envelope) -> Result<SecretString, KekError> {
        match self {
            Self::Keyring(ring) => Ok(crypto::open(&*ring.read().map_err(|_| poisoned())?, aad, envelope)?),
            Self::Remote(r) => r.open(aad, envelope).await,
        }
    }

    /// Whether a key stored in `envelope` should be sealed anew: under an older keyring KEK, under
    /// the keyring while a KMS is in use (a migration), or under an older remote key version.
    pub fn needs_reseal(&self, envelope: &Envelope) -> bool {
        match self {
            Self::Keyring(ring) => ring.read().is_ok_and(|r| envelope.kek_id() != r.active().id()),
            Self::Remote(r) => {
                envelope.wrapped().is_none() || r.latest_key_id().is_some_and(|id| id != envelope.kek_id())
            }
        }
    }

    /// The id new keys are sealed under (a keyring KEK id, or the remote key id), if known yet.
    pub fn active_id(&self) -> Option<String> {
        match self {
            Self::Keyring(ring) => ring.read().ok().map(|r| r.active().id().to_string()),
            Self::Remote(r) => r.latest_key_id(),
        }
    }

    /// Every KEK id known here, and whether it is the active one (metrics, `kek status`).
    pub fn known_ids(&self) -> Vec<(String, bool)> {
        let ring_ids = |ring: &RwLock<Keyring>, with_active: bool| {
            ring.read().map_or_else(
                |_| Vec::new(),
                |r| r.ids().map(|id| (id.to_string(), with_active && id == r.active().id())).collect(),
            )
        };
        match self {
            Self::Keyring(ring) => ring_ids(ring, true),
            Self::Remote(r) => {
                let mut ids = r.legacy.as_deref().map_or_else(Vec::new, |l| ring_ids(l, false));
                ids.extend(r.latest_key_id().map(|id| (id, true)));
                ids
            }
        }
    }
}

impl RemoteKek {
    /// The KMS's kind (`vault-transit`, `kms-v2`).
    pub fn kind(&self) -> &'static str {
        self.kms.kind()
    }

    pub fn latest_key_id(&self) -> Option<String> {
        self.key_id.read().ok().and_then(|id| id.clone())
    }

    fn note_key_id(&self, id: &str) {
        if let Ok(mut known) = self.key_id.write()
            && known.as_deref() != Some(id)
        {
            *known = Some(id.to_string());
        }
    }

    /// Asks the KMS which remote key wraps new DEKs now. `Ok(true)` when that changed (a rotation:
    /// the next seal makes a new DEK, and stored keys are to be resealed).
    pub async fn refresh(&self) -> Result<bool, KmsError> {
        let id = self.kms.current_key_id().await?;
        let changed = self.latest_key_id().as_deref() != Some(id.as_str());
        self.note_key_id(&id);
        Ok(changed)
    }

    async fn seal(&self, aad: &Aad, plaintext: &SecretString) -> Result<Envelope, KekError> {
        let mut current = self.current.lock().await;
        let latest = self.latest_key_id();
        let stale = current.as_ref().is_none_or(|c| {
            c.born.elapsed() >= self.policy.ttl
                || c.seals >= self.policy.max_seals
                || latest.as_deref().is_some_and(|id| id != c.dek.id())
        });
        if stale {
            *current = Some(self.new_dek().await?);
        }
        // Just set when it was stale.
        let Some(dek) = current.as_mut() else { return Err(poisoned()) };
        dek.seals += 1;
        Ok(crypto::seal_wrapped(&dek.dek, &dek.wrapped, aad, plaintext)?)
    }

    /// A fresh DEK, wrapped by the KMS (one remote call), and cached for opening.
    async fn new_dek(&self) -> Result<CurrentDek, KekError> {
        let bytes = Kek::fresh_dek();
        let wrapped = self.kms.wrap(bytes.as_slice()).await?;
        self.calls.wraps.fetch_add(1, Ordering::Relaxed);
        let dek = Arc::new(Kek::from_dek(wrapped.key_id.clone(), bytes.as_slice()).map_err(|_| poisoned())?);
        // What the KMS answered must make an envelope that reads back (ids and annotations within
        // the parser's bounds): a key is never stored where it cannot be opened again.
        let probe = crypto::seal_wrapped(&dek, &wrapped.dek, &Aad::new("", "", "", "probe"), &SecretString::from("x"))?;
        if Envelope::parse(&probe.encode()).ok().as_ref() != Some(&probe) {
            return Err(KmsError::Refused("the KMS's key id or annotations do not fit an envelope".into()).into());
        }
        self.note_key_id(&wrapped.key_id);
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(&wrapped.key_id, &wrapped.dek, dek.clone());
        }
        tracing::info!(kms = self.kms.kind(), key_id = %wrapped.key_id, "new data encryption key wrapped by the KMS");
        Ok(CurrentDek { dek, wrapped: wrapped.dek, born: Instant::now(), seals: 0 })
    }

    async fn open(&self, aad: &Aad, envelope: &Envelope) -> Result<SecretString, KekError> {
        let Some(wrapped) = envelope.wrapped() else {
            // Sealed under the keyring Secret before the move to this KMS.
            let Some(legacy) = &self.legacy else {
                return Err(CryptoError::UnknownKek(envelope.kek_id().to_string()).into());
            };
            return Ok(crypto::open(&*legacy.read().map_err(|_| poisoned())?, aad, envelope)?);
        };
        let key_id = envelope.kek_id();
        let cached = || self.cache.lock().ok().and_then(|mut c| c.get(key_id, wrapped));
        if let Some(dek) = cached() {
            return Ok(crypto::open_with(&dek, aad, envelope)?);
        }
        let _one_at_a_time = self.unwrapping.lock().await;
        if let Some(dek) = cached() {
            return Ok(crypto::open_with(&dek, aad, envelope)?);
        }
        let dek = self.unwrap(key_id, wrapped).await?;
        let key = crypto::open_with(&dek, aad, envelope)?;
        // Cached only once it opened a key: a rewritten envelope never takes a cache entry.
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(key_id, wrapped, dek);
        }
        Ok(key)
    }

    /// The DEK, as the KMS unwraps it (one remote call).
    async fn unwrap(&self, key_id: &str, wrapped: &WrappedDek) -> Result<Arc<Kek>, KekError> {
        let bytes = self.kms.unwrap(key_id, wrapped).await?;
        self.calls.unwraps.fetch_add(1, Ordering::Relaxed);
        let dek = Kek::from_dek(key_id.to_string(), &bytes)
            .map_err(|_| KmsError::Refused("the KMS unwrapped something that is not a 32-byte data key".into()))?;
        Ok(Arc::new(dek))
    }
}

/// Follows the remote key: asks the KMS for its current key id every `every`, and signals
/// `changed` when it rotated, so that every ByokKey is reconciled and resealed under it.
pub async fn follow(kek: Arc<RemoteKek>, every: Duration, changed: tokio::sync::mpsc::UnboundedSender<()>) {
    let mut healthy = true;
    // What was last signalled: the first answer is always news (a seal may have learnt the id first).
    let mut told: Option<String> = None;
    loop {
        match kek.refresh().await {
            Ok(rotated) => {
                if !healthy {
                    tracing::info!(kms = kek.kms.kind(), "the KMS answers again");
                }
                healthy = true;
                let now = kek.latest_key_id();
                if rotated || now != told {
                    tracing::info!(kms = kek.kms.kind(), key_id = ?now, "the KMS key is now this one");
                    told = now;
                    let _ = changed.send(());
                }
            }
            Err(e) => {
                if healthy {
                    tracing::error!(kms = kek.kms.kind(), error = %e, "the KMS does not answer; imports wait");
                }
                healthy = false;
            }
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests;
