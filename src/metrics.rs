//! Prometheus metrics of the operator, served by the broker at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub resource: &'static str,
    /// "ok", or the error kind.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub resource: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ValidationLabels {
    pub provider: &'static str,
    /// Valid, or the CamelCase reason of the answer.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BrokerLabels {
    pub endpoint: &'static str,
    /// "granted"/"accepted", or the refusal reason.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CaseLabels {
    pub provider: &'static str,
    pub scorer_type: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KekLabels {
    pub kek_id: String,
}

/// Every metric the operator exports.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_seconds: Family<ResourceLabels, Histogram>,
    pub validations: Family<ValidationLabels, Counter>,
    pub broker_requests: Family<BrokerLabels, Counter>,
    pub judge_cases: Family<CaseLabels, Counter>,
    /// ByokKeys per KEK they are sealed under (set from the cache at scrape time).
    pub keys_by_kek: Family<KekLabels, prometheus_client::metrics::gauge::Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("byok");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register("reconciles", "Reconciles by resource and result", reconciles.clone());
        let reconcile_seconds = Family::<ResourceLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        });
        registry.register("reconcile_duration_seconds", "Reconcile duration", reconcile_seconds.clone());
        let validations = Family::<ValidationLabels, Counter>::default();
        registry.register("validations", "Provider key validations by provider and outcome", validations.clone());
        let broker_requests = Family::<BrokerLabels, Counter>::default();
        registry.register("broker_requests", "Key broker requests by endpoint and outcome", broker_requests.clone());
        let judge_cases = Family::<CaseLabels, Counter>::default();
        registry.register(
            "judge_case_scores",
            "Scored cases of finished EvalJobs by provider, scorer and outcome",
            judge_cases.clone(),
        );
        let keys_by_kek = Family::<KekLabels, prometheus_client::metrics::gauge::Gauge>::default();
        registry.register(
            "byokkeys_by_kek",
            "ByokKeys by the KEK their ciphertext is sealed under",
            keys_by_kek.clone(),
        );
        Self { registry, reconciles, reconcile_seconds, validations, broker_requests, judge_cases, keys_by_kek }
    }
}

impl Metrics {
    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_show_in_the_exposition() {
        let m = Metrics::default();
        m.validations.get_or_create(&ValidationLabels { provider: "openai", outcome: "Unauthorized" }).inc();
        m.broker_requests.get_or_create(&BrokerLabels { endpoint: "key", outcome: "WrongAudience" }).inc();
        let text = m.encode();
        assert!(text.contains(r#"byok_validations_total{provider="openai",outcome="Unauthorized"} 1"#), "{text}");
        assert!(text.contains(r#"byok_broker_requests_total{endpoint="key",outcome="WrongAudience"} 1"#), "{text}");
    }
}
