//! Prometheus metrics of the operator, served by the broker at `/metrics` on every replica.
//!
//! Two kinds, so that dashboards never count twice: counters and histograms are each replica's own
//! (sum them over replicas); gauges of cluster state (`byok_byokkeys`, `byok_byokkeys_by_kek`,
//! `byok_keyring_kek`, `byok_model_shutdown_timestamp_seconds`) come from the caches only the leader
//! holds, so a follower exports none of their series (aggregate them with `max by` their own labels,
//! which also covers the moment of a failover). `byok_leader` says which replica leads.
//!
//! Labels are bounded: no ByokKey or EvalJob names; `namespace` is one of the watched namespaces,
//! `model` only appears for models with a shutdown date, `kek_id` is a KEK of the keyring (or
//! `unreadable`), and everything else is a fixed set of words. Counters that alerts take the
//! `increase` of start at 0 for every outcome (`count_from_zero`): a series that first appears at 1
//! would hide its first event from `increase`.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct KekLabels {
    pub kek_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct KeyringLabels {
    pub kek_id: String,
    /// "true" for the KEK new ciphertexts are sealed under.
    pub active: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct KeyPhaseLabels {
    pub namespace: String,
    pub provider: &'static str,
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ModelLabels {
    pub namespace: String,
    pub provider: &'static str,
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GateLabels {
    /// "passed" or "failed".
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// The cluster state the leader reads from its caches at each scrape.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterState {
    /// ByokKeys per namespace, provider and phase.
    pub keys: Vec<(KeyPhaseLabels, i64)>,
    /// Encrypted key Secrets per KEK id of their envelope.
    pub keys_by_kek: Vec<(KekLabels, i64)>,
    /// The KEKs of the keyring.
    pub keyring: Vec<KeyringLabels>,
    /// The earliest shutdown (Unix seconds) of a model ByokKeys use, per namespace and provider.
    pub model_shutdowns: Vec<(ModelLabels, i64)>,
}

/// Every metric the operator exports.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_seconds: Family<ResourceLabels, Histogram>,
    pub validations: Family<ValidationLabels, Counter>,
    pub broker_requests: Family<BrokerLabels, Counter>,
    pub judge_cases: Family<CaseLabels, Counter>,
    /// Finished EvalJobs by the result of their pass gate.
    pub evaljob_gates: Family<GateLabels, Counter>,
    /// 1 while this replica leads (runs the controllers and answers judge pods), else 0.
    pub leader: Gauge,
    keys: Family<KeyPhaseLabels, Gauge>,
    keys_by_kek: Family<KekLabels, Gauge>,
    keyring: Family<KeyringLabels, Gauge>,
    model_shutdowns: Family<ModelLabels, Gauge>,
    /// One scrape at a time: the cluster gauges are cleared and refilled for each.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    /// Registers every metric with its help text. Long: one registration per metric, in the order
    /// of the struct.
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
        let evaljob_gates = Family::<GateLabels, Counter>::default();
        registry.register(
            "evaljob_gate",
            "Finished EvalJobs by whether they met their pass criteria",
            evaljob_gates.clone(),
        );
        let leader = Gauge::default();
        registry.register("leader", "1 on the replica that leads, 0 on the others", leader.clone());
        let info = Info::new(BuildLabels { version: env!("CARGO_PKG_VERSION") });
        registry.register("build", "The operator's version", info);
        let keys = Family::<KeyPhaseLabels, Gauge>::default();
        registry.register("byokkeys", "ByokKeys by namespace, provider and phase (leader only)", keys.clone());
        let keys_by_kek = Family::<KekLabels, Gauge>::default();
        registry.register(
            "byokkeys_by_kek",
            "ByokKeys by the KEK their ciphertext is sealed under (leader only)",
            keys_by_kek.clone(),
        );
        let keyring = Family::<KeyringLabels, Gauge>::default();
        registry.register(
            "keyring_kek",
            "The KEKs of the keyring, active=true for the one new ciphertexts are sealed under (leader only)",
            keyring.clone(),
        );
        let model_shutdowns = Family::<ModelLabels, Gauge>::default();
        registry.register(
            "model_shutdown_timestamp_seconds",
            "Earliest announced shutdown of a model ByokKeys use, by namespace and provider (leader only)",
            model_shutdowns.clone(),
        );
        for result in ["passed", "failed"] {
            evaljob_gates.get_or_create(&GateLabels { result }).inc_by(0);
        }
        Self {
            registry,
            reconciles,
            reconcile_seconds,
            validations,
            broker_requests,
            judge_cases,
            evaljob_gates,
            leader,
            keys,
            keys_by_kek,
            keyring,
            model_shutdowns,
            scrape: Mutex::new(()),
        }
    }
}

impl Metrics {
    /// Counts a finished EvalJob's gate.
    pub fn count_gate(&self, passed: bool) {
        let result = if passed { "passed" } else { "failed" };
        self.evaljob_gates.get_or_create(&GateLabels { result }).inc();
    }

    /// Shows each of `outcomes` of a broker endpoint at 0 until it happens.
    pub fn count_from_zero(&self, endpoint: &'static str, outcomes: impl IntoIterator<Item = &'static str>) {
        for outcome in outcomes {
            self.broker_requests.get_or_create(&BrokerLabels { endpoint, outcome }).inc_by(0);
        }
    }

    /// The OpenMetrics text exposition, with the cluster gauges replaced by `state` (None on a
    /// replica that does not lead: it holds no caches, and exports none of their series).
    pub fn encode(&self, state: Option<ClusterState>) -> String {
        let _one_scrape = self.scrape.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let state = state.unwrap_or_default();
        refill(&self.keys, state.keys);
        refill(&self.keys_by_kek, state.keys_by_kek);
        refill(&self.keyring, state.keyring.into_iter().map(|k| (k, 1)));
        refill(&self.model_shutdowns, state.model_shutdowns);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Replaces every series of a gauge family: series that are gone must not linger.
fn refill<L>(family: &Family<L, Gauge>, series: impl IntoIterator<Item = (L, i64)>)
where
    L: Clone + std::hash::Hash + Eq,
{
    family.clear();
    for (labels, value) in series {
        family.get_or_create(&labels).set(value);
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
        m.count_gate(false);
        m.count_from_zero("key", ["KeyRevoked"]);
        let text = m.encode(None);
        assert!(text.contains(r#"byok_validations_total{provider="openai",outcome="Unauthorized"} 1"#), "{text}");
        assert!(text.contains(r#"byok_broker_requests_total{endpoint="key",outcome="WrongAudience"} 1"#), "{text}");
        assert!(text.contains(r#"byok_evaljob_gate_total{result="failed"} 1"#), "{text}");
        assert!(text.contains(r#"byok_evaljob_gate_total{result="passed"} 0"#), "{text}");
        assert!(text.contains(r#"byok_broker_requests_total{endpoint="key",outcome="KeyRevoked"} 0"#), "{text}");
        assert!(text.contains("byok_leader 0"), "{text}");
        assert!(text.contains(&format!(r#"byok_build_info{{version="{}"}} 1"#, env!("CARGO_PKG_VERSION"))), "{text}");
    }

    #[test]
    fn cluster_gauges_are_replaced_at_each_scrape_and_absent_without_state() {
        let m = Metrics::default();
        let phase = |phase| KeyPhaseLabels { namespace: "team-a".into(), provider: "openai", phase };
        let state = ClusterState {
            keys: vec![(phase("Ready"), 2), (phase("Invalid"), 1)],
            keys_by_kek: vec![(KekLabels { kek_id: "kek-1".into() }, 3)],
            keyring: vec![KeyringLabels { kek_id: "kek-1".into(), active: "true" }],
            model_shutdowns: vec![(
                ModelLabels { namespace: "team-a".into(), provider: "openai", model: "gpt-4o".into() },
                1_799_884_800,
            )],
        };
        let text = m.encode(Some(state));
        for want in [
            r#"byok_byokkeys{namespace="team-a",provider="openai",phase="Invalid"} 1"#,
            r#"byok_byokkeys_by_kek{kek_id="kek-1"} 3"#,
            r#"byok_keyring_kek{kek_id="kek-1",active="true"} 1"#,
            r#"byok_model_shutdown_timestamp_seconds{namespace="team-a",provider="openai",model="gpt-4o"} 1799884800"#,
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
        let mut fewer = ClusterState::default();
        fewer.keys.push((phase("Ready"), 3));
        let text = m.encode(Some(fewer));
        assert!(text.contains(r#"phase="Ready"} 3"#) && !text.contains(r#"phase="Invalid""#), "{text}");
        let follower = m.encode(None);
        assert!(!follower.contains("byok_byokkeys") && !follower.contains("byok_keyring_kek"), "{follower}");
    }
}
