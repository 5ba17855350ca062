//! The `ByokKey` custom resource: one provider API key, imported and kept encrypted by the operator.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{AzureSpec, Provider};

/// Annotation that asks the controller to test the key now; any new value is a new request,
/// echoed back in `status.lastTest.requestToken`.
pub const TEST_REQUESTED_ANNOTATION: &str = "launchgate.ai/test-requested";

/// A provider API key brought into the cluster. The controller imports the key from
/// `secretRef`, keeps it only encrypted, validates it against the provider and reports
/// in status. The controller never writes this spec (GitOps tools see no drift).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "launchgate.ai",
    version = "v1alpha1",
    kind = "ByokKey",
    plural = "byokkeys",
    shortname = "byok",
    category = "launchgate",
    namespaced,
    status = "ByokKeyStatus",
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.provider"}"#,
    printcolumn = r#"{"name":"Default","type":"boolean","jsonPath":".status.effectiveDefault"}"#,
    printcolumn = r#"{"name":"Prefix","type":"string","jsonPath":".status.keyPrefix"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Model","type":"string","priority":1,"jsonPath":".status.model"}"#,
    printcolumn = r#"{"name":"Model Lifecycle","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"ModelDeprecated\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new(
    "self.provider == 'azure_openai' ? has(self.azure) : !has(self.azure)"
).message("spec.azure is required when provider is azure_openai and forbidden otherwise"))]
#[x_kube(validation = Rule::new("has(self.secretRef) != has(self.sealed)").message("set exactly one of secretRef and sealed"))]
#[serde(rename_all = "camelCase")]
pub struct ByokKeySpec {
    /// The LLM provider this key belongs to. Immutable: create a new ByokKey to change it.
    #[x_kube(validation = Rule::new("self == oldSelf").message("provider is immutable; create a new ByokKey instead"))]
    pub provider: Provider,

    /// A name for people; shown by `kubectl byok list`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub display_name: Option<String>,

    /// Ask for this key to be the default for its provider in this namespace. When several
    /// keys ask, the newest usable one is the effective default (see `status.effectiveDefault`).
    #[serde(default)]
    pub default: bool,

    /// The Secret (same namespace) holding the plaintext key to import.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,

    /// A key sealed to the operator's public sealing key (`kubectl byok seal`): safe to commit to
    /// git, and only importable into this ByokKey (same name, namespace and provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 16384))]
    pub sealed: Option<String>,

    /// What happens to the source Secret once the key is imported.
    #[serde(default)]
    pub source_policy: SourcePolicy,

    /// Model to validate and judge with; the operator's default table is used when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200))]
    pub model: Option<String>,

    /// Azure OpenAI resource and deployment; required exactly when provider is azure_openai.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureSpec>,

    /// Periodic re-validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<ValidationSpec>,

    /// A revoked key is removed from use at once: its ciphertext is deleted and the broker refuses it.
    #[serde(default)]
    pub revoked: bool,
}

impl ByokKeySpec {
    /// A spec importing the `apiKey` of Secret `secret` with every other field at its default.
    pub fn from_secret(provider: Provider, secret: &str) -> Self {
        Self {
            provider,
            display_name: None,
            default: false,
            secret_ref: Some(SecretKeyRef { name: secret.into(), key: default_secret_key() }),
            sealed: None,
            source_policy: SourcePolicy::Delete,
            model: None,
            azure: None,
            validation: None,
            revoked: false,
        }
    }
}

/// A key inside a Secret of the ByokKey's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret's data.
    #[serde(default = "default_secret_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_secret_key() -> String {
    "apiKey".to_string()
}

/// Whether the plaintext source Secret is deleted once its key is imported.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SourcePolicy {
    /// Delete the source Secret after import: the plaintext leaves etcd.
    #[default]
    Delete,
    /// Keep the source Secret (its changes are re-imported).
    Retain,
}

/// Periodic re-validation settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValidationSpec {
    /// How often to re-validate a Ready key, as a duration such as `30m` or `6h` (at least 1m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1m')").message("interval must be a duration of at least 1m, e.g. 30m or 6h"))]
    pub interval: Option<String>,
}

/// Observed state, written only by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ByokKeyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<KeyPhase>,
    /// The first 8 characters of the key: all that is ever shown again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
    /// Name of the operator-owned Secret holding the encrypted key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted_secret_ref: Option<String>,
    /// Id of the key-encryption key the ciphertext is sealed under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kek_id: Option<String>,
    /// Whether this key is the effective default for its provider in this namespace.
    #[serde(default)]
    pub effective_default: bool,
    /// When the controller first saw `spec.default: true` (cleared when it goes false). The key
    /// most recently marked default wins, as in "marking a key default unsets the previous one".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_since: Option<MicroTime>,
    /// The model validation checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The date (YYYY-MM-DD) `model` shuts down, while one is announced (with ModelDeprecated=True).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_shutdown: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_validated: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_test: Option<KeyTest>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Lifecycle phase, summarising the conditions for `kubectl get`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum KeyPhase {
    /// Waiting for the source Secret or the first validation.
    Pending,
    /// Imported and validated: usable.
    Ready,
    /// The provider rejected the key or its model: not retried until something changes.
    Invalid,
    /// Validation could not reach a verdict (network, rate limit, provider error): retried with backoff.
    Unknown,
    /// Revoked by `spec.revoked`: the ciphertext is gone.
    Revoked,
    /// The key could not be imported or decrypted; see the Imported condition.
    Error,
}

impl KeyPhase {
    /// The phase as written in status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Ready => "Ready",
            Self::Invalid => "Invalid",
            Self::Unknown => "Unknown",
            Self::Revoked => "Revoked",
            Self::Error => "Error",
        }
    }
}

/// The answer to the last on-demand test.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyTest {
    pub time: Time,
    /// Valid, Invalid, ModelUnavailable, Unknown or Error.
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    pub message: String,
    /// The `launchgate.ai/test-requested` value this result answers.
    pub request_token: String,
}
