//! What the operator, the key broker and the judge pods say to each other. Shared types only.

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::crd::{Aggregate, AzureSpec, Provider, Scorer};

/// Path of the broker's key endpoint (fetch-key, authenticated with the broker-audience token).
pub const KEY_PATH: &str = "/v1/key";
/// Path of the broker's results endpoint (the judge, authenticated with the results-audience token).
pub const RESULTS_PATH: &str = "/v1/results";
/// Audience of the token that may fetch a key.
pub const KEY_AUDIENCE: &str = "byok-broker.launchgate.ai";
/// Audience of the token that may report results (it cannot fetch keys, nor reach the Kubernetes API).
pub const RESULTS_AUDIENCE: &str = "byok-results.launchgate.ai";
/// Largest results report the broker accepts.
pub const MAX_REPORT_BYTES: usize = 4 << 20;

/// The judge's configuration, rendered by the operator into the cases ConfigMap as `config.json`.
/// Holds no secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JudgeConfig {
    pub namespace: String,
    pub eval_job: String,
    pub provider: Provider,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureSpec>,
    pub scorers: Vec<Scorer>,
    /// Provider calls in flight at once.
    pub concurrency: u32,
    /// Retries per provider call.
    pub retries: u32,
    /// Timeout of one provider call.
    pub call_timeout_seconds: u64,
    /// Number of shards; shard `i` takes the cases whose 1-based line number `n` has `(n - 1) % shards == i`.
    pub shards: u32,
    /// Provider base URLs (gateways, proxies, the mock provider).
    pub endpoints: EndpointsConfig,
    /// The panels, by scorer name: scorers with judges, resolved by the operator.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub panels: BTreeMap<String, PanelConfig>,
}

/// A panel as the judge runs it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PanelConfig {
    pub aggregate: Aggregate,
    pub judges: Vec<PanelJudgeConfig>,
}

/// One judge of a panel: its provider, model and the ByokKey whose key the broker hands out for it
/// (in [`KeyResponse::panel`], under the key's name).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PanelJudgeConfig {
    pub provider: Provider,
    pub model: String,
    pub byok_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureSpec>,
}

impl PanelJudgeConfig {
    /// How results name the judge: `provider/model`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.provider, self.model)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EndpointsConfig {
    pub openai: String,
    pub anthropic: String,
    pub google: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<String>,
    /// Hosts an Azure endpoint from the ByokKey may name (the install's allow-list).
    #[serde(default)]
    pub azure_allowed_hosts: Vec<String>,
}

impl From<crate::providers::Endpoints> for EndpointsConfig {
    fn from(e: crate::providers::Endpoints) -> Self {
        Self {
            openai: e.openai,
            anthropic: e.anthropic,
            google: e.google,
            azure: e.azure,
            azure_allowed_hosts: e.azure_allowed_hosts,
        }
    }
}

/// fetch-key's request. The pod uid comes from the downward API; the broker compares it with the
/// uid the token is bound to, so a token replayed from another pod is refused.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KeyRequest {
    pub pod_uid: String,
}

/// The broker's answer to a key request. The key is only ever in this body, over TLS.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyResponse {
    pub key: String,
    pub key_prefix: String,
    /// The panel judges' keys (the EvalJob's `status.judges`), each once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub panel: Vec<PanelKey>,
}

impl std::fmt::Debug for KeyResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyResponse")
            .field("key_prefix", &self.key_prefix)
            .field("panel", &self.panel)
            .finish_non_exhaustive()
    }
}

/// A panel judge's key, or why the broker did not hand it out (revoked, not ready): that judge's
/// verdicts error, the panel's other judges still judge.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PanelKey {
    pub byok_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_prefix: String,
    /// The refusal's reason when there is no key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

impl std::fmt::Debug for PanelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PanelKey")
            .field("byok_key", &self.byok_key)
            .field("key_prefix", &self.key_prefix)
            .field("refused", &self.refused)
            .finish_non_exhaustive()
    }
}

/// Broker refusals with HTTP 500 that asking again will not change (the stored key does not open):
/// fetch-key fails at once with the reason. Any other 5xx answer is retried.
pub const FINAL_SERVER_REFUSALS: [&str; 3] = ["KeyUnreadable", "UnsupportedEnvelopeVersion", "DecryptFailed"];

/// A refusal, with a reason a person can act on (never key material).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Refusal {
    pub reason: String,
    pub message: String,
}

/// How one scorer judged one case.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Passed,
    Failed,
    Errored,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScoreResult {
    pub scorer: String,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Why: the judge's reason, or the error (e.g. `KeyRevoked: ...`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// A panel: whether every judge that answered came to the same pass or fail (None: fewer
    /// than two answered, or not a panel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreed: Option<bool>,
}

/// One case's results.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CaseResult {
    pub id: String,
    /// 1-based line in the cases JSONL.
    pub line: u32,
    pub scores: Vec<ScoreResult>,
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
}

/// A shard's results so far (cumulative: each report replaces the previous one of that shard).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResultsReport {
    pub pod_uid: String,
    pub shard: u32,
    /// Cases in this shard.
    pub total: u32,
    /// True on the last report of the shard.
    pub done: bool,
    pub results: Vec<CaseResult>,
}

/// The broker's answer to a results report.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ResultsAck {
    /// The key was revoked: remaining llm_judge cases must error with KeyRevoked.
    pub key_revoked: bool,
    /// Panel keys (ByokKey names) no longer usable: their judges stop, the panels go on without them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked_panel_keys: Vec<String>,
}
