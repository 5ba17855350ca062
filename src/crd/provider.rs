//! The LLM providers a ByokKey can hold a key for.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An LLM provider. Serialized in snake_case, as users write it in manifests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    #[serde(rename = "openai")]
    OpenAi,
    Anthropic,
    Google,
    #[serde(rename = "azure_openai")]
    AzureOpenAi,
}

impl Provider {
    pub const ALL: [Provider; 4] = [Self::OpenAi, Self::Anthropic, Self::Google, Self::AzureOpenAi];

    /// The name used in manifests, labels and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
            Self::Google => "google",
            Self::AzureOpenAi => "azure_openai",
        }
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Azure OpenAI needs to know where the resource lives and which deployment to call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureSpec {
    /// Resource endpoint, e.g. `https://my-resource.openai.azure.com`: https, a host and nothing
    /// else. The key is sent there, so the operator also checks it against the install's allow-list
    /// (default `*.openai.azure.com`, `*.cognitiveservices.azure.com`).
    #[schemars(
        length(max = 253),
        regex(pattern = r"^https://[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?/?$")
    )]
    pub endpoint: String,
    /// Deployment name to validate and call: part of the request's URL path, so letters, digits,
    /// `_`, `.` and `-` only, starting with a letter or digit, at most 64 characters (as Azure).
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"))]
    pub deployment: String,
    /// Dated API version; the v1 API is used when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub api_version: Option<String>,
}
