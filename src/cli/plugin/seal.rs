//! `seal` and `fetch-cert`: keys for GitOps, sealed to the operator's public key and bound to one
//! ByokKey (namespace, name, provider), so the manifest is safe to commit.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use serde_json::Value;

use super::args::{GlobalArgs, Output, SealArgs};
use super::ctx::Ctx;
use super::error::{Error, api_code};
use super::keyinput::read_key;
use super::spec::{KeySource, check_name, key_spec};
use crate::crd::ByokKey;
use crate::crypto::sealing::{self, SealError};
use crate::operator::sealing::{PUBLIC_KEY, SEALING_KEY_NAME};

pub async fn seal(ctx: Option<&Ctx>, g: &GlobalArgs, a: &SealArgs) -> Result<(), Error> {
    let name = a.spec.name.as_str();
    check_name(name)?;
    let ns = match (ctx, &g.namespace) {
        (Some(c), _) => c.namespace.clone(),
        (None, Some(n)) => n.clone(),
        (None, None) => Ctx::new(g).await.map(|c| c.namespace).map_err(|_| {
            Error::Usage("pass -n NAMESPACE: a sealed key only imports into the namespace it was sealed for".into())
        })?,
    };
    // Check the flags before the key is asked for.
    let probe_spec = key_spec(&a.spec, KeySource::Sealed(String::new()))?;
    // An Azure key is sealed for its endpoint and deployment too: editing spec.azure cannot redirect it.
    let azure = probe_spec.azure.as_ref().map(|z| sealing::AzureTarget::new(&z.endpoint, &z.deployment));
    let public = match (&a.cert, ctx) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).map_err(Error::io(format!("reading {}", path.display())))?;
            text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).unwrap_or_default().to_string()
        }
        (None, Some(c)) => public_key(c).await?,
        (None, None) => return Err(Error::Usage("pass --cert FILE or --fetch-cert".into())),
    };
    // Refuse a bad public key before the key is asked for.
    let probe = sealing::seal(&public, "", "", "", None, &"probe".into());
    if matches!(probe, Err(SealError::PublicKey)) {
        return Err(bad_public_key(a));
    }
    let key = read_key(a.spec.provider)?;
    let sealed =
        sealing::seal(&public, &ns, name, a.spec.provider.as_str(), azure.as_ref(), &key).map_err(|e| match e {
            SealError::PublicKey => bad_public_key(a),
            other => Error::Failed(format!("sealing failed: {other}")),
        })?;
    drop(key);
    let manifest = manifest(&ns, key_spec(&a.spec, KeySource::Sealed(sealed)).map(|s| ByokKey::new(name, s))?)?;
    match g.output.format() {
        Output::Json => {
            let text = serde_json::to_string_pretty(&manifest).map_err(|e| Error::Failed(format!("JSON: {e}")))?;
            println!("{text}");
        }
        Output::Text | Output::Yaml => {
            let yaml = serde_yaml::to_string(&manifest).map_err(|e| Error::Failed(format!("YAML: {e}")))?;
            println!(
                "# Sealed with the byok-operator sealing key: safe to commit. It only imports into\n\
                 # ByokKey {ns}/{name} ({}); re-seal to use the key under another name or namespace.\n{}",
                a.spec.provider,
                yaml.trim_end()
            );
        }
    }
    Ok(())
}

fn bad_public_key(a: &SealArgs) -> Error {
    let from = a.cert.as_ref().map_or_else(|| format!("ConfigMap {SEALING_KEY_NAME}"), |p| p.display().to_string());
    Error::Usage(format!(
        "{from} does not hold a sealing public key (32 bytes of base64, as printed by `kubectl byok fetch-cert`)"
    ))
}

/// The manifest without status or fields that only repeat defaults.
fn manifest(ns: &str, mut key: ByokKey) -> Result<Value, Error> {
    key.metadata.namespace = Some(ns.into());
    let mut v = serde_json::to_value(&key).map_err(|e| Error::Failed(format!("rendering the manifest: {e}")))?;
    if let Some(obj) = v.as_object_mut() {
        obj.remove("status");
    }
    if let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("sourcePolicy");
        for flag in ["default", "revoked"] {
            if spec.get(flag) == Some(&Value::Bool(false)) {
                spec.remove(flag);
            }
        }
    }
    Ok(v)
}

/// The operator's public sealing key, from the ConfigMap it publishes.
async fn public_key(ctx: &Ctx) -> Result<String, Error> {
    let op = &ctx.operator_namespace;
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), op);
    let cm = match cms.get(SEALING_KEY_NAME).await {
        Ok(cm) => cm,
        Err(e) if api_code(&e) == Some(404) => {
            return Err(Error::NotFound(format!(
                "ConfigMap {SEALING_KEY_NAME} not found in namespace {op}: is the operator running there? Pass \
                 --operator-namespace if it runs elsewhere, or seal offline with --cert FILE"
            )));
        }
        Err(e) => return Err(Error::kube(format!("reading ConfigMap {SEALING_KEY_NAME} in namespace {op}"))(e)),
    };
    cm.data.and_then(|mut d| d.remove(PUBLIC_KEY)).map(|k| k.trim().to_string()).filter(|k| !k.is_empty()).ok_or_else(
        || {
            Error::Failed(format!(
                "ConfigMap {SEALING_KEY_NAME} in namespace {op} has no {PUBLIC_KEY}; restart the operator to republish it"
            ))
        },
    )
}

/// `fetch-cert`: prints the public key, to keep in git and seal offline with `seal --cert`.
pub async fn fetch_cert(ctx: &Ctx) -> Result<(), Error> {
    let key = public_key(ctx).await?;
    match ctx.output {
        Output::Text => println!("{key}"),
        Output::Json | Output::Yaml => {
            let v = serde_json::json!({ "namespace": ctx.operator_namespace, PUBLIC_KEY: key });
            super::output::structured(ctx.output, &v)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ByokKeySpec, Provider, SourcePolicy};

    #[test]
    fn manifest_has_sealed_and_no_secret_ref_or_status() {
        let spec = ByokKeySpec {
            provider: Provider::OpenAi,
            display_name: None,
            default: false,
            secret_ref: None,
            sealed: Some("byoksealed1.abc".into()),
            source_policy: SourcePolicy::Delete,
            model: None,
            azure: None,
            validation: None,
            revoked: false,
        };
        let v = manifest("team-a", ByokKey::new("openai", spec)).expect("manifest");
        assert_eq!(v["metadata"]["namespace"], "team-a");
        assert_eq!(v["spec"]["sealed"], "byoksealed1.abc");
        assert_eq!(v["kind"], "ByokKey");
        assert!(v.get("status").is_none() && v["spec"].get("secretRef").is_none());
        assert!(v["spec"].get("default").is_none() && v["spec"].get("sourcePolicy").is_none());
    }
}
