//! Where each provider lives and which model judges by default.

use std::fmt;
use std::str::FromStr;

use crate::crd::{AzureSpec, Provider};

/// Base URLs, configurable for corporate gateways, air-gapped proxies and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    /// Includes the version segment, as the OpenAI SDK's base URL does.
    pub openai: String,
    pub anthropic: String,
    pub google: String,
    /// When set, replaces every `AzureSpec.endpoint` (gateways, tests).
    pub azure: Option<String>,
    /// Hosts an `AzureSpec.endpoint` may name (`*.suffix` or an exact host): the key is sent
    /// there, so a ByokKey's author cannot point it at a server of their own.
    pub azure_allowed_hosts: Vec<String>,
}

/// The Azure OpenAI hosts allowed when the install names none.
pub const DEFAULT_AZURE_HOSTS: [&str; 2] = ["*.openai.azure.com", "*.cognitiveservices.azure.com"];

impl Default for Endpoints {
    fn default() -> Self {
        Self {
            openai: "https://api.openai.com/v1".into(),
            anthropic: "https://api.anthropic.com".into(),
            google: "https://generativelanguage.googleapis.com".into(),
            azure: None,
            azure_allowed_hosts: DEFAULT_AZURE_HOSTS.map(String::from).to_vec(),
        }
    }
}

/// Why an Azure endpoint is refused. Never sent a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("spec.azure.endpoint {0:?} is not an https URL of a host alone (no user, path, query or fragment)")]
    NotHttpsHost(String),
    #[error("spec.azure.endpoint host {host:?} is not allowed by this install (allowed: {allowed})")]
    HostNotAllowed { host: String, allowed: String },
}

impl Endpoints {
    /// Checks that `endpoint` is `https://<host>[:port][/]` with a host the install allows.
    pub fn check_azure_endpoint(&self, endpoint: &str) -> Result<(), EndpointError> {
        let bad = || EndpointError::NotHttpsHost(endpoint.chars().take(200).collect());
        let url = reqwest::Url::parse(endpoint).map_err(|_| bad())?;
        let plain = url.scheme() == "https"
            && url.username().is_empty()
            && url.password().is_none()
            && url.query().is_none()
            && url.fragment().is_none()
            && matches!(url.path(), "" | "/");
        let host = url.host_str().filter(|_| plain).ok_or_else(bad)?.to_ascii_lowercase();
        if self.azure_allowed_hosts.iter().any(|pattern| host_matches(pattern, &host)) {
            return Ok(());
        }
        Err(EndpointError::HostNotAllowed { host, allowed: self.azure_allowed_hosts.join(", ") })
    }
}

/// `*.example.com` matches any host under example.com (not example.com itself); anything else
/// matches exactly. Case-insensitive.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim().to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
        None => !pattern.is_empty() && host == pattern,
    }
}

/// Joins a base URL and a path without doubling or dropping the slash.
pub(crate) fn join(base: &str, path: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), path.trim_start_matches('/'))
}

/// Percent-encodes a value for use as one URL path segment (model ids and deployment names come
/// from users: a `/` or `?` must not change which endpoint is called).
pub(crate) fn segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The default judge model per provider. Azure OpenAI has none: its model is the deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelTable {
    pub openai: String,
    pub anthropic: String,
    pub google: String,
}

impl Default for ModelTable {
    /// [`super::models::DEFAULT_MODELS`]: current models, checked against the lifecycle table.
    fn default() -> Self {
        let default = |provider| {
            super::models::DEFAULT_MODELS.iter().find(|(p, _)| *p == provider).map_or("", |(_, m)| m).to_string()
        };
        Self {
            openai: default(Provider::OpenAi),
            anthropic: default(Provider::Anthropic),
            google: default(Provider::Google),
        }
    }
}

/// A `--default-models` value that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelTableError {
    #[error("expected provider=model, got {0:?}")]
    MissingEquals(String),
    #[error("unknown provider {0:?} (expected openai, anthropic or google)")]
    UnknownProvider(String),
    #[error("empty model for provider {0}")]
    EmptyModel(String),
    #[error("azure_openai has no default model: it always uses the key's deployment")]
    AzureHasNoDefault,
}

impl ModelTable {
    /// The model to use for a provider: the table's entry, or the deployment for Azure OpenAI
    /// (empty when the key has no Azure spec, which validation reports as misconfigured).
    pub fn model_for(&self, provider: Provider, azure: Option<&AzureSpec>) -> String {
        match provider {
            Provider::OpenAi => self.openai.clone(),
            Provider::Anthropic => self.anthropic.clone(),
            Provider::Google => self.google.clone(),
            Provider::AzureOpenAi => azure.map(|a| a.deployment.clone()).unwrap_or_default(),
        }
    }

    /// Parses `openai=gpt-4.1,anthropic=claude-sonnet-4-6`; providers not named keep their default.
    pub fn parse(spec: &str) -> Result<Self, ModelTableError> {
        let mut table = Self::default();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (provider, model) =
                entry.split_once('=').ok_or_else(|| ModelTableError::MissingEquals(entry.to_string()))?;
            let (provider, model) = (provider.trim(), model.trim());
            let slot = match provider {
                "openai" => &mut table.openai,
                "anthropic" => &mut table.anthropic,
                "google" => &mut table.google,
                "azure_openai" => return Err(ModelTableError::AzureHasNoDefault),
                other => return Err(ModelTableError::UnknownProvider(other.to_string())),
            };
            if model.is_empty() {
                return Err(ModelTableError::EmptyModel(provider.to_string()));
            }
            *slot = model.to_string();
        }
        Ok(table)
    }
}

impl FromStr for ModelTable {
    type Err = ModelTableError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for ModelTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "openai={},anthropic={},google={}", self.openai, self.anthropic, self.google)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_come_from_the_dated_table() {
        let t = ModelTable::default();
        for (provider, model) in super::super::models::DEFAULT_MODELS {
            assert_eq!(t.model_for(provider, None), model);
        }
        let azure = AzureSpec { endpoint: "https://x".into(), deployment: "judge".into(), api_version: None };
        assert_eq!(t.model_for(Provider::AzureOpenAi, Some(&azure)), "judge");
        assert_eq!(t.model_for(Provider::AzureOpenAi, None), "");
    }

    #[test]
    fn parse_overrides_and_round_trips() {
        let t = ModelTable::parse(" anthropic = claude-opus-4-8 ,google=gemini-2.5-flash,").unwrap();
        assert_eq!(t.openai, ModelTable::default().openai);
        assert_eq!(t.anthropic, "claude-opus-4-8");
        assert_eq!(t.google, "gemini-2.5-flash");
        assert_eq!(t.to_string().parse::<ModelTable>().unwrap(), t);
        assert_eq!(ModelTable::parse("").unwrap(), ModelTable::default());
    }

    #[test]
    fn parse_errors() {
        assert_eq!(ModelTable::parse("openai"), Err(ModelTableError::MissingEquals("openai".into())));
        assert_eq!(ModelTable::parse("cohere=x"), Err(ModelTableError::UnknownProvider("cohere".into())));
        assert_eq!(ModelTable::parse("openai="), Err(ModelTableError::EmptyModel("openai".into())));
        assert_eq!(ModelTable::parse("azure_openai=x"), Err(ModelTableError::AzureHasNoDefault));
    }

    #[test]
    fn azure_endpoints_must_be_https_hosts_the_install_allows() {
        let e = Endpoints::default();
        assert_eq!(e.check_azure_endpoint("https://team.openai.azure.com"), Ok(()));
        assert_eq!(e.check_azure_endpoint("https://Team.cognitiveservices.azure.com/"), Ok(()));
        for bad in [
            "http://team.openai.azure.com",
            "https://user@team.openai.azure.com",
            "https://team.openai.azure.com/x",
            "https://team.openai.azure.com?q=1",
            "team.openai.azure.com",
        ] {
            assert!(matches!(e.check_azure_endpoint(bad), Err(EndpointError::NotHttpsHost(_))), "{bad}");
        }
        for bad in [
            "https://openai.azure.com",
            "https://evil.com",
            "https://team.openai.azure.com.evil.com",
            "https://127.0.0.1",
        ] {
            assert!(matches!(e.check_azure_endpoint(bad), Err(EndpointError::HostNotAllowed { .. })), "{bad}");
        }
        let narrow = Endpoints { azure_allowed_hosts: vec!["team.openai.azure.com".into()], ..Endpoints::default() };
        assert!(narrow.check_azure_endpoint("https://other.openai.azure.com").is_err());
        assert!(narrow.check_azure_endpoint("https://team.openai.azure.com").is_ok());
    }

    #[test]
    fn join_handles_slashes() {
        assert_eq!(join("http://a/v1/", "/models"), "http://a/v1/models");
        assert_eq!(join("http://a/v1", "models"), "http://a/v1/models");
        assert_eq!(segment("gemini-2.5-pro"), "gemini-2.5-pro");
        assert_eq!(segment("a/b?c d"), "a%2Fb%3Fc%20d");
    }
}
