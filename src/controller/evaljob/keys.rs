//! Which ByokKey a run uses: the one named, or its provider's effective default in the EvalJob's
//! namespace, Ready and not revoked. Pure; the run's own key and each panel judge's go through it.

use std::sync::Arc;

use kube::{Resource, ResourceExt};

use crate::crd::{ByokKey, EvalJob, KeyPhase, Provider};

/// The key an EvalJob would use now, or why there is none.
pub fn resolve_key(ej: &EvalJob, keys: &[Arc<ByokKey>]) -> Result<Arc<ByokKey>, String> {
    resolve(ej.namespace(), ej.spec.provider, ej.spec.key_ref.as_ref(), keys)
}

/// The Ready `provider` key of namespace `ns` named `key_ref`, or its effective default.
pub fn resolve(
    ns: Option<String>,
    provider: Provider,
    key_ref: Option<&String>,
    keys: &[Arc<ByokKey>],
) -> Result<Arc<ByokKey>, String> {
    let usable = |k: &ByokKey| {
        k.namespace() == ns
            && k.spec.provider == provider
            && !k.spec.revoked
            && k.meta().deletion_timestamp.is_none()
            && k.status.as_ref().and_then(|s| s.phase) == Some(KeyPhase::Ready)
    };
    match key_ref {
        Some(name) => keys
            .iter()
            .find(|k| k.namespace() == ns && &k.name_any() == name)
            .filter(|k| usable(k))
            .cloned()
            .ok_or_else(|| format!("ByokKey {name} is not a Ready {provider} key of this namespace")),
        None => keys
            .iter()
            .find(|k| usable(k) && k.status.as_ref().is_some_and(|s| s.effective_default))
            .cloned()
            .ok_or_else(|| format!("no Ready default {provider} ByokKey in this namespace; waiting for one")),
    }
}
