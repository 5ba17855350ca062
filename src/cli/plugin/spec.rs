//! Building a ByokKey spec from the flags `create` and `seal` share.

use super::args::KeySpecArgs;
use super::error::Error;
use crate::crd::{AzureSpec, ByokKeySpec, Provider, SecretKeyRef, SourcePolicy};

/// Where the key comes from.
pub enum KeySource {
    Secret(SecretKeyRef, SourcePolicy),
    Sealed(String),
}

/// The spec the flags describe; checks what the API server's schema would refuse, with the flag names.
pub fn key_spec(a: &KeySpecArgs, source: KeySource) -> Result<ByokKeySpec, Error> {
    let azure = match (&a.azure_endpoint, &a.azure_deployment) {
        (Some(endpoint), Some(deployment)) => Some(AzureSpec {
            endpoint: endpoint.clone(),
            deployment: deployment.clone(),
            api_version: a.azure_api_version.clone(),
        }),
        _ => None,
    };
    match (a.provider, azure.is_some()) {
        (Provider::AzureOpenAi, false) => {
            return Err(Error::Usage(
                "--provider azure_openai needs --azure-endpoint https://<resource>.openai.azure.com and --azure-deployment <name>"
                    .into(),
            ));
        }
        (p, true) if p != Provider::AzureOpenAi => {
            return Err(Error::Usage(format!(
                "--azure-endpoint/--azure-deployment are for azure_openai only, not {p}; drop them"
            )));
        }
        _ => {}
    }
    let (secret_ref, source_policy, sealed) = match source {
        KeySource::Secret(r, policy) => (Some(r), policy, None),
        KeySource::Sealed(s) => (None, SourcePolicy::default(), Some(s)),
    };
    Ok(ByokKeySpec {
        provider: a.provider,
        display_name: a.display_name.clone(),
        default: a.default,
        secret_ref,
        sealed,
        source_policy,
        model: a.model.clone(),
        azure,
        validation: None,
        revoked: false,
    })
}

/// A ByokKey name must be a DNS subdomain; the Secret `<name>-key` must fit too.
pub fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "{name:?} is not a valid name: use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(provider: Provider) -> KeySpecArgs {
        KeySpecArgs {
            name: "k".into(),
            provider,
            default: false,
            display_name: None,
            model: None,
            azure_endpoint: None,
            azure_deployment: None,
            azure_api_version: None,
        }
    }

    #[test]
    fn azure_flags_only_for_azure() {
        let src = || KeySource::Sealed("x".into());
        assert!(key_spec(&args(Provider::AzureOpenAi), src()).is_err());
        let mut a = args(Provider::OpenAi);
        a.azure_endpoint = Some("https://x".into());
        a.azure_deployment = Some("d".into());
        assert!(key_spec(&a, src()).is_err());
        a.provider = Provider::AzureOpenAi;
        let spec = key_spec(&a, src()).expect("azure spec");
        assert_eq!(spec.azure.map(|z| z.deployment), Some("d".to_string()));
        assert!(spec.secret_ref.is_none());
    }

    #[test]
    fn names() {
        assert!(check_name("openai-main").is_ok());
        assert!(check_name("OpenAI").is_err());
        assert!(check_name("-x").is_err());
    }
}
