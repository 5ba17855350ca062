//! Pure functions: the status the ByokKey controller wants, from what it observed (the encrypted
//! Secret it wants is the keystore's).

use std::time::Duration;

use kube::{Resource, ResourceExt};

use crate::crd::{ByokKey, KeyPhase};
use crate::duration::{self, DurationError};

/// Default re-validation interval of a Ready key.
pub const DEFAULT_VALIDATION_INTERVAL: Duration = Duration::from_secs(6 * 3600);
/// The shortest interval: the CRD's CEL rule on `spec.validation.interval` is
/// `duration(self) >= duration('1m')`.
pub const MIN_VALIDATION_INTERVAL: Duration = Duration::from_secs(60);

/// A key's re-validation interval, read as the CRD's CEL rule reads it; the default when unset.
/// The API server refuses every value this refuses, so an error means an object stored before
/// the rule existed.
pub fn validation_interval(key: &ByokKey) -> Result<Duration, DurationError> {
    match key.spec.validation.as_ref().and_then(|v| v.interval.as_deref()) {
        Some(text) => duration::at_least(text, MIN_VALIDATION_INTERVAL),
        None => Ok(DEFAULT_VALIDATION_INTERVAL),
    }
}

/// When a key asked to be default, if it may be the effective default: asked to be (and the
/// controller has recorded when), and usable.
fn default_since(key: &ByokKey) -> Option<jiff::Timestamp> {
    let status = key.status.as_ref()?;
    let usable = !matches!(status.phase, Some(KeyPhase::Invalid | KeyPhase::Error | KeyPhase::Revoked));
    let candidate = key.spec.default && !key.spec.revoked && key.meta().deletion_timestamp.is_none() && usable;
    candidate.then(|| status.default_since.as_ref().map(|t| t.0)).flatten()
}

/// The effective default among `keys` (all of one namespace and provider): the candidate most
/// recently marked default, ties broken by name so every replica computes the same answer.
pub fn effective_default<'a>(keys: impl IntoIterator<Item = &'a ByokKey>) -> Option<&'a ByokKey> {
    keys.into_iter()
        .filter_map(|k| default_since(k).map(|t| (t, k)))
        .max_by(|(ta, a), (tb, b)| ta.cmp(tb).then_with(|| b.name_any().cmp(&a.name_any())))
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ByokKeySpec, ByokKeyStatus, Provider, ValidationSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};

    fn key(name: &str, created: i64, default: bool, phase: Option<KeyPhase>) -> ByokKey {
        let mut k = ByokKey::new(name, ByokKeySpec { default, ..ByokKeySpec::from_secret(Provider::OpenAi, "s") });
        k.metadata.namespace = Some("ns".into());
        k.metadata.uid = Some(format!("uid-{name}"));
        let at = jiff::Timestamp::from_second(1_700_000_000 + created).expect("valid time");
        k.metadata.creation_timestamp = Some(Time(at));
        let default_since = default.then_some(MicroTime(at));
        k.status = Some(ByokKeyStatus { phase, default_since, ..Default::default() });
        k
    }

    #[test]
    fn newest_usable_default_wins() {
        let keys = [
            key("a", 1, true, Some(KeyPhase::Ready)),
            key("b", 3, true, Some(KeyPhase::Ready)),
            key("c", 2, true, Some(KeyPhase::Ready)),
            key("d", 9, false, Some(KeyPhase::Ready)),
        ];
        assert_eq!(effective_default(&keys).map(|k| k.name_any()), Some("b".into()));
    }

    #[test]
    fn invalid_revoked_or_deleting_keys_are_skipped() {
        let mut revoked = key("r", 8, true, Some(KeyPhase::Ready));
        revoked.spec.revoked = true;
        let mut deleting = key("x", 9, true, Some(KeyPhase::Ready));
        deleting.metadata.deletion_timestamp = deleting.metadata.creation_timestamp.clone();
        let mut unrecorded = key("u", 10, true, Some(KeyPhase::Ready));
        unrecorded.status.as_mut().expect("status").default_since = None;
        let keys = [key("a", 1, true, None), key("i", 7, true, Some(KeyPhase::Invalid)), revoked, deleting, unrecorded];
        assert_eq!(effective_default(&keys).map(|k| k.name_any()), Some("a".into()));
        assert!(effective_default(&keys[1..]).is_none());
    }

    #[test]
    fn ties_break_by_name() {
        let keys = [key("b", 1, true, None), key("a", 1, true, None)];
        assert_eq!(effective_default(&keys).map(|k| k.name_any()), Some("a".into()));
    }

    #[test]
    fn intervals_are_read_as_the_crd_rule_reads_them() {
        let with = |interval: Option<&str>| {
            let mut k = key("k", 1, false, None);
            k.spec.validation = interval.map(|i| ValidationSpec { interval: Some(i.into()) });
            validation_interval(&k)
        };
        assert_eq!(with(None), Ok(DEFAULT_VALIDATION_INTERVAL));
        let accepted =
            [("1m", 60), ("90s", 90), ("30m", 1800), ("1h30m", 5400), ("1.5h", 5400), ("90m", 5400), ("6h", 21600)];
        for (text, secs) in accepted {
            assert_eq!(with(Some(text)), Ok(Duration::from_secs(secs)), "{text}");
        }
        for text in ["30s", "59.9s", "0", "-5m", "10", "5x", "", "1d", "1h 30m", "99999999999999999999h"] {
            assert!(with(Some(text)).is_err(), "{text:?}");
        }
    }

    #[test]
    fn the_minimum_is_the_one_in_the_crd() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(ByokKey::crd()).expect("json");
        let interval = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["validation"]
            ["properties"]["interval"];
        let rule = interval["x-kubernetes-validations"][0]["rule"].as_str();
        assert_eq!(rule, Some("duration(self) >= duration('1m')"), "MIN_VALIDATION_INTERVAL follows this rule");
        assert_eq!(MIN_VALIDATION_INTERVAL, Duration::from_secs(60));
    }
}
