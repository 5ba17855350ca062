//! The cluster state the leader reports in its metrics (`crate::metrics::ClusterState`), counted
//! from its caches at each scrape: nothing is kept between scrapes, so nothing goes stale.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::keystore::Ciphertext;
use kube::ResourceExt;

use crate::crd::ByokKey;
use crate::crd::conditions::byokkey::MODEL_DEPRECATED;
use crate::metrics::{ClusterState, KekLabels, KeyPhaseLabels, KeyringLabels, ModelLabels};

/// Everything the cluster gauges say, from the ByokKey and encrypted-key caches and the KEK ids
/// known (`KekSource::known_ids`: id, and whether new keys are sealed under it).
pub fn cluster_state(keys: &[Arc<ByokKey>], encrypted: &[Arc<Ciphertext>], keks: &[(String, bool)]) -> ClusterState {
    ClusterState {
        keys: keys_by_phase(keys),
        keys_by_kek: keys_by_kek(encrypted),
        keyring: keks
            .iter()
            .map(|(id, active)| KeyringLabels { kek_id: id.clone(), active: if *active { "true" } else { "false" } })
            .collect(),
        model_shutdowns: model_shutdowns(keys),
    }
}

/// ByokKeys per namespace, provider and phase; a key not reconciled yet is Pending.
fn keys_by_phase(keys: &[Arc<ByokKey>]) -> Vec<(KeyPhaseLabels, i64)> {
    let mut counts: BTreeMap<KeyPhaseLabels, i64> = BTreeMap::new();
    for key in keys {
        let phase = key.status.as_ref().and_then(|s| s.phase).map_or("Pending", |p| p.as_str());
        let labels = KeyPhaseLabels {
            namespace: key.namespace().unwrap_or_default(),
            provider: key.spec.provider.as_str(),
            phase,
        };
        *counts.entry(labels).or_default() += 1;
    }
    counts.into_iter().collect()
}

/// Encrypted key Secrets per KEK id inside their envelope (not the annotation anyone with `update
/// secrets` could edit), `unreadable` for one that does not parse.
fn keys_by_kek(encrypted: &[Arc<Ciphertext>]) -> Vec<(KekLabels, i64)> {
    let mut counts: BTreeMap<KekLabels, i64> = BTreeMap::new();
    for ciphertext in encrypted {
        *counts.entry(KekLabels { kek_id: ciphertext.kek() }).or_default() += 1;
    }
    counts.into_iter().collect()
}

/// The earliest announced shutdown (Unix seconds, midnight UTC) per namespace, provider and model,
/// of keys whose ModelDeprecated condition is True for their current spec. Only models with a date
/// appear, so `model` is bounded by the models providers and the lifecycle table announce.
fn model_shutdowns(keys: &[Arc<ByokKey>]) -> Vec<(ModelLabels, i64)> {
    let mut earliest: BTreeMap<ModelLabels, i64> = BTreeMap::new();
    for key in keys {
        let Some(status) = key.status.as_ref() else { continue };
        let current = status
            .conditions
            .iter()
            .find(|c| c.type_ == MODEL_DEPRECATED)
            .is_some_and(|c| c.status == "True" && c.observed_generation == key.metadata.generation);
        let (true, Some(model), Some(date)) = (current, &status.model, &status.model_shutdown) else { continue };
        let Some(at) = date.parse::<jiff::civil::Date>().ok().and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
        else {
            continue;
        };
        let labels = ModelLabels {
            namespace: key.namespace().unwrap_or_default(),
            provider: key.spec.provider.as_str(),
            model: model.clone(),
        };
        let seconds = at.timestamp().as_second();
        earliest.entry(labels).and_modify(|s| *s = (*s).min(seconds)).or_insert(seconds);
    }
    earliest.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ByokKeySpec, ByokKeyStatus, KeyPhase, Provider};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn key(ns: &str, name: &str, phase: Option<KeyPhase>, shutdown: Option<(&str, &str)>) -> Arc<ByokKey> {
        let mut k = ByokKey::new(name, ByokKeySpec::from_secret(Provider::OpenAi, "s"));
        k.metadata.namespace = Some(ns.into());
        k.metadata.generation = Some(2);
        let mut st = ByokKeyStatus { phase, ..Default::default() };
        if let Some((model, date)) = shutdown {
            st.conditions.push(Condition {
                type_: MODEL_DEPRECATED.into(),
                status: "True".into(),
                reason: "Deprecated".into(),
                message: "dying".into(),
                observed_generation: Some(2),
                last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
            });
            st.model = Some(model.into());
            st.model_shutdown = Some(date.into());
        }
        k.status = phase.map(|_| st);
        Arc::new(k)
    }

    #[test]
    fn keys_are_counted_by_namespace_provider_and_phase() {
        let keys = [
            key("a", "k1", Some(KeyPhase::Ready), None),
            key("a", "k2", Some(KeyPhase::Ready), None),
            key("a", "k3", Some(KeyPhase::Invalid), None),
            key("b", "k4", None, None),
        ];
        let counts = keys_by_phase(&keys);
        let n =
            |ns: &str, phase: &str| counts.iter().find(|(l, _)| l.namespace == ns && l.phase == phase).map(|(_, n)| *n);
        assert_eq!((n("a", "Ready"), n("a", "Invalid"), n("b", "Pending")), (Some(2), Some(1), Some(1)));
        assert_eq!(counts.len(), 3);
    }

    #[test]
    fn the_earliest_shutdown_per_model_of_current_deprecations_only() {
        let mut stale = (*key("a", "k4", Some(KeyPhase::Ready), Some(("gpt-4o", "2026-01-01")))).clone();
        // The condition was set for an older spec (the model has been changed since).
        stale.metadata.generation = Some(3);
        let keys = [
            key("a", "k1", Some(KeyPhase::Ready), Some(("gpt-4o", "2027-01-14"))),
            key("a", "k2", Some(KeyPhase::Ready), Some(("gpt-4o", "2027-01-10"))),
            key("a", "k3", Some(KeyPhase::Ready), Some(("gpt-4o", "not a date"))),
            Arc::new(stale),
            key("a", "k5", Some(KeyPhase::Ready), None),
        ];
        let shutdowns = model_shutdowns(&keys);
        assert_eq!(shutdowns.len(), 1, "{shutdowns:?}");
        let (labels, at) = &shutdowns[0];
        assert_eq!((labels.namespace.as_str(), labels.provider, labels.model.as_str()), ("a", "openai", "gpt-4o"));
        assert_eq!(*at, "2027-01-10T00:00:00Z".parse::<jiff::Timestamp>().unwrap().as_second());
    }

    #[test]
    fn the_keyring_says_which_kek_is_active() {
        let mut ring = crate::crypto::Keyring::generate();
        let old = ring.active().id().to_string();
        let new = ring.rotate();
        let kek = crate::kms::KekSource::Keyring(Arc::new(std::sync::RwLock::new(ring)));
        let state = cluster_state(&[], &[], &kek.known_ids());
        let active = |id: &str| state.keyring.iter().find(|k| k.kek_id == id).map(|k| k.active);
        assert_eq!((active(&old), active(&new)), (Some("false"), Some("true")));
    }
}
