//! The `EvalJob` custom resource: LLM-as-judge evaluation in isolated judge pods.

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::Provider;

/// An evaluation: cases scored by deterministic scorers and by an LLM judge that uses a
/// ByokKey of the namespace. The controller never writes this spec.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "launchgate.ai",
    version = "v1alpha1",
    kind = "EvalJob",
    plural = "evaljobs",
    shortname = "ej",
    category = "launchgate",
    namespaced,
    status = "EvalJobStatus",
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.provider"}"#,
    printcolumn = r#"{"name":"Key","type":"string","jsonPath":".status.keyRef"}"#,
    printcolumn = r#"{"name":"Progress","type":"string","jsonPath":".status.progress.display"}"#,
    printcolumn = r#"{"name":"Passed","type":"integer","jsonPath":".status.summary.passed"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Gate","type":"string","description":"Passed: the run met spec.passCriteria","jsonPath":".status.conditions[?(@.type==\"Passed\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("has(self.cases) != has(self.casesFrom)").message("set exactly one of cases and casesFrom"))]
#[x_kube(validation = Rule::new("self == oldSelf").message("an EvalJob is immutable once created; create a new one"))]
#[x_kube(validation = Rule::new(
    "!has(self.passCriteria) || !has(self.passCriteria.scorers) || self.passCriteria.scorers.all(k, self.scorers.exists(s, has(s.name) ? s.name == k : s.type == k))"
).message(
    "passCriteria.scorers must name scorers of spec.scorers: a scorer's name, or its type when it has no name (name a scorer whose type is used twice)"
))]
#[serde(rename_all = "camelCase")]
pub struct EvalJobSpec {
    /// Provider of the judge model.
    pub provider: Provider,
    /// ByokKey to judge with; the provider's effective default key in this namespace when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ref: Option<String>,
    /// Judge model; the key's model, then the operator's default table, when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200))]
    pub model: Option<String>,
    /// How each case is scored. Every scorer runs on every case.
    #[schemars(length(min = 1, max = 16))]
    pub scorers: Vec<Scorer>,
    /// Cases inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 5000))]
    pub cases: Option<Vec<EvalCase>>,
    /// Cases as JSON Lines in a ConfigMap key of this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cases_from: Option<CasesFrom>,
    /// Shards: judge pods running at once, each taking every N-th case (an Indexed Job).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 64))]
    pub parallelism: i32,
    /// Provider calls in flight per pod.
    #[serde(default = "eight")]
    #[schemars(range(min = 1, max = 256))]
    pub concurrency: i32,
    /// Deadline of the whole run (the Job's activeDeadlineSeconds).
    #[serde(default = "hour")]
    #[schemars(range(min = 10, max = 86400))]
    pub timeout_seconds: i64,
    /// Retries of a failed provider call (rate limits, 5xx), honouring Retry-After.
    #[serde(default = "two")]
    #[schemars(range(min = 0, max = 10))]
    pub retries: i32,
    /// Judge pod overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<PodOverrides>,
    /// What a finished run must reach to pass (condition `Passed`). Omitted: every case must pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_criteria: Option<PassCriteria>,
}

fn one() -> i32 {
    1
}
fn two() -> i32 {
    2
}
fn eight() -> i32 {
    8
}
fn hour() -> i64 {
    3600
}

/// The kinds of scorer.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScorerType {
    /// An LLM judges the output against a rubric; needs a ByokKey.
    LlmJudge,
    /// Output equals the expected value.
    ExactMatch,
    /// Output contains the expected value (or `value`).
    Contains,
    /// Output matches `pattern`.
    Regex,
    /// Output is valid JSON.
    JsonValid,
}

/// One scorer. Fields beyond `type` depend on it (CEL-checked).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("self.type != 'llm_judge' || has(self.rubric)").message("llm_judge needs a rubric"))]
#[x_kube(validation = Rule::new("self.type != 'regex' || has(self.pattern)").message("regex needs a pattern"))]
#[x_kube(validation = Rule::new("!has(self.judges) || self.type == 'llm_judge'").message("judges are for llm_judge scorers only"))]
#[x_kube(validation = Rule::new("!has(self.aggregate) || has(self.judges)").message("aggregate needs judges (a panel)"))]
#[x_kube(validation = Rule::new("!has(self.judges) || self.judges.all(j, self.judges.exists_one(k, k == j))").message("the judges of a panel must differ (provider, keyRef, model)"))]
#[serde(rename_all = "camelCase")]
pub struct Scorer {
    #[serde(rename = "type")]
    pub type_: ScorerType,
    /// Name in results; defaults to the type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub name: Option<String>,
    /// llm_judge: what a good answer is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 8192))]
    pub rubric: Option<String>,
    /// llm_judge: score (0..1) at or above which a case passes. Default 0.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub pass_threshold: Option<f64>,
    /// regex: the pattern (Rust regex syntax).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub pattern: Option<String>,
    /// contains: the text to look for, instead of the case's expected value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// exact_match and contains: compare case-insensitively.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_case: bool,
    /// llm_judge: a panel of judges instead of the EvalJob's one. Each case is judged by each
    /// judge, with a key of this namespace for the judge's provider; `aggregate` makes one verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 5))]
    pub judges: Option<Vec<PanelJudge>>,
    /// llm_judge with judges: how their verdicts make one. Default mean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<Aggregate>,
}

/// One judge of a panel.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PanelJudge {
    pub provider: Provider,
    /// ByokKey to judge with; the provider's effective default key in this namespace when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub key_ref: Option<String>,
    /// Judge model; the key's model, then the operator's default table, when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200))]
    pub model: Option<String>,
}

/// How a panel's verdicts make one.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Aggregate {
    /// The mean score passes the threshold.
    #[default]
    Mean,
    /// More than half of the judges that answered pass the case; the score is the share that did.
    Majority,
    /// Every judge passes the case (the lowest score passes the threshold); a judge without a
    /// verdict makes the case errored unless another one failed it.
    Minimum,
}

impl Scorer {
    /// A scorer of `type_` with every option at its default.
    pub fn of(type_: ScorerType) -> Self {
        Self {
            type_,
            name: None,
            rubric: None,
            pass_threshold: None,
            pattern: None,
            value: None,
            ignore_case: false,
            judges: None,
            aggregate: None,
        }
    }

    /// The name results use.
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            serde_json::to_value(self.type_).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
        })
    }
}

/// One evaluation case.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EvalCase {
    /// Case id in results; the line number when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The prompt the evaluated system answered.
    #[serde(default)]
    pub input: String,
    /// The evaluated system's answer: what the scorers score.
    pub output: String,
    /// The reference answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
}

/// The gate of a run: every criterion given must hold for condition `Passed` to be True. Rates
/// count a case as passed when every scorer passed it; errored cases count as not passed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.minPassRate) || has(self.maxErrored) || has(self.minMeanScore) || has(self.scorers)").message(
    "passCriteria needs at least one criterion (minPassRate, maxErrored, minMeanScore, scorers); omit it for the default: every case passes"
))]
#[serde(rename_all = "camelCase")]
pub struct PassCriteria {
    /// Least fraction of the cases, 0..1, that every scorer passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_pass_rate: Option<f64>,
    /// Most cases that may be errored (some scorer could not score them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_errored: Option<i64>,
    /// Least mean score, 0..1, over all scores of all scorers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_mean_score: Option<f64>,
    /// Criteria per scorer, keyed by the scorer's name in results (its `name`, else its type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 16))]
    pub scorers: Option<BTreeMap<String, ScorerCriteria>>,
}

/// The gate of one scorer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.minPassRate) || has(self.minMeanScore)").message(
    "a scorer's criteria need minPassRate or minMeanScore"
))]
#[serde(rename_all = "camelCase")]
pub struct ScorerCriteria {
    /// Least fraction of the cases, 0..1, this scorer passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_pass_rate: Option<f64>,
    /// Least mean score, 0..1, of this scorer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_mean_score: Option<f64>,
}

/// Cases from a ConfigMap key, one JSON object per line.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CasesFrom {
    pub config_map_key_ref: ConfigMapKeyRef,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct ConfigMapKeyRef {
    pub name: String,
    pub key: String,
}

/// What users may change in the judge pod. Not the image: the image that receives the key is
/// the install's (chart value `judge.image`), never an EvalJob's.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("!has(self.image)").message(
    "spec.template.image is not allowed: the judge image receives the key, so only the operator's install chooses it (chart value judge.image)"
))]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Refused by the API server (kept in the schema so the refusal says why instead of the
    /// field being silently pruned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
}

/// Observed state, written only by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EvalJobStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<EvalPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// The uid of the judge Job the operator created: the key broker serves only its pods (a Job
    /// deleted and re-created under the same name by someone else has another uid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_uid: Option<String>,
    /// The ByokKey this run uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ref: Option<String>,
    /// The judges of the panels (scorers with `judges`), resolved when the run starts: the key
    /// broker hands the judge pods these keys and no others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub judges: Vec<JudgeStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TokenUsage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results_ref: Option<ResultsRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A panel judge as the run uses it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JudgeStatus {
    /// The scorer's name in results.
    pub scorer: String,
    pub provider: Provider,
    pub model: String,
    pub key_ref: String,
    pub key_prefix: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum EvalPhase {
    Pending,
    WaitingForKey,
    Running,
    Succeeded,
    Failed,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub total: i64,
    pub completed: i64,
    /// `completed/total`, for the printer column.
    pub display: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Cases every scorer passed.
    pub passed: i64,
    /// Cases some scorer failed (and none errored).
    pub failed: i64,
    /// Cases some scorer could not score (provider error, revoked key, bad case).
    pub errored: i64,
    /// Mean score over all scored results, 0..1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_score: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scorers: Vec<ScorerSummary>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScorerSummary {
    pub name: String,
    pub passed: i64,
    pub failed: i64,
    pub errored: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_score: Option<f64>,
    /// A panel: the share of cases, 0..1, on which every judge that answered came to the same pass
    /// or fail (cases with two or more verdicts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<f64>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsage {
    pub input_tokens: i64,
    pub output_tokens: i64,
}

/// Where per-case results are.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResultsRef {
    /// ConfigMaps holding `results.jsonl` (one per shard) and `junit.xml` (the first).
    pub config_maps: Vec<String>,
}
