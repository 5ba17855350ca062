//! What every reconcile shares: clients, caches, the keyring and configuration.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::events::Recorder;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::mpsc::UnboundedSender;

use crate::crd::ByokKey;
use crate::kms::KekSource;
use crate::providers::{Endpoints, ModelTable};

/// Operator settings, from flags and environment.
#[derive(Clone, Debug)]
pub struct OperatorConfig {
    /// Namespace of the operator and its keyring Secret.
    pub namespace: String,
    /// Name of the keyring Secret (the BYOK_ENCRYPTION_KEY).
    pub keyring_secret: String,
    pub endpoints: Endpoints,
    pub models: ModelTable,
    /// Reconciles in flight at once.
    pub concurrency: u16,
    /// Watch only this namespace (for teams that cannot grant cluster-wide Secret access); all when None.
    pub watch_namespace: Option<String>,
    /// Judge pod timings: provider call timeout, token lifetime, finished Job TTL.
    pub judge: crate::judge_job::JudgeLimits,
    /// Where the key-encryption key lives: the keyring Secret (default), or an external KMS.
    pub kms: crate::kms::KmsConfig,
}

/// Shared state of the ByokKey controller.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub config: OperatorConfig,
    pub http: reqwest::Client,
    /// Seals and opens every stored key: the keyring Secret, or an external KMS.
    pub kek: KekSource,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Opens `spec.sealed` keys.
    pub sealing: Arc<crate::crypto::sealing::SealingKey>,
    pub byokkeys: Store<ByokKey>,
    /// Keys by source Secret and default candidates by namespace and provider, over `byokkeys`.
    pub index: super::byokkey::index::KeyIndex,
    /// The operator's own encrypted key Secrets (label-selected watch).
    pub encrypted: Store<crate::keystore::Ciphertext>,
    /// Metadata only (never data) of Secrets that may be import sources.
    pub sources: Store<PartialObjectMeta<Secret>>,
    /// Asks the controller to reconcile other keys, e.g. when the effective default moves.
    pub requeue: UnboundedSender<ObjectRef<ByokKey>>,
    /// Ready keys' next validation: one timer for all, not a scheduler entry per key.
    pub revalidation: super::byokkey::revalidation::Revalidation,
    /// Validation backoff per ByokKey uid: attempts so far and the earliest next attempt.
    pub backoff: Mutex<HashMap<String, (u32, Instant)>>,
    /// Status last written per ByokKey uid, with the resourceVersion it was based on: a reconcile
    /// that still sees that version in the cache uses this status instead of the stale one, so a
    /// key is never imported or validated twice because the watch lags behind our own write.
    pub written: super::memo::StatusMemo<crate::crd::ByokKeyStatus>,
    /// Per-key backoff of failed reconciles.
    pub retries: super::status::Backoff,
}
