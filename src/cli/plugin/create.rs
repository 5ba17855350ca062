//! `create NAME --provider P`: the key from stdin or a hidden prompt into a Secret, a ByokKey
//! importing it, then a wait for the operator's verdict.

use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, ResourceExt};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroize;

use super::args::CreateArgs;
use super::ctx::Ctx;
use super::error::{Error, api_code};
use super::keyinput::{prefix, read_key};
use super::output::{condition, structured};
use super::spec::{KeySource, check_name, key_spec};
use super::wait::{Waited, secs, wait_for};
use crate::controller::byokkey::import::SOURCE_ANNOTATION;
use crate::crd::conditions::byokkey::{IMPORTED, READY, VALIDATED};
use crate::crd::{ByokKey, KeyPhase, SecretKeyRef, SourcePolicy};

/// Data key of the Secret `create` writes.
pub const SECRET_DATA_KEY: &str = "apiKey";

pub async fn create(ctx: &Ctx, a: &CreateArgs) -> Result<(), Error> {
    let name = a.spec.name.as_str();
    let ns = ctx.namespace.as_str();
    check_name(name)?;
    let secret_name = format!("{name}-key");
    let policy = if a.retain { SourcePolicy::Retain } else { SourcePolicy::Delete };
    let source = SecretKeyRef { name: secret_name.clone(), key: SECRET_DATA_KEY.into() };
    let spec = key_spec(&a.spec, KeySource::Secret(source, policy))?;
    // Refuse before the key is read, so nothing is written for a name that is taken.
    if ctx.keys().get_opt(name).await.map_err(Error::kube(format!("reading ByokKey {name}")))?.is_some() {
        return Err(Error::Usage(format!(
            "ByokKey {name} already exists in namespace {ns}; pick another name, or delete it first \
             (`kubectl delete byokkey {name} -n {ns}`)"
        )));
    }
    let key = read_key(a.spec.provider)?;
    let shown = prefix(&key);
    create_secret(ctx, name, &secret_name, &key).await?;
    drop(key);
    if let Err(e) = ctx.keys().create(&PostParams::default(), &ByokKey::new(name, spec)).await {
        // Do not leave a plaintext Secret behind that no ByokKey imports.
        let secrets: Api<Secret> = ctx.api();
        let _ = secrets.delete(&secret_name, &DeleteParams::default()).await;
        return Err(Error::kube(format!("creating ByokKey {name} in namespace {ns}"))(e));
    }
    eprintln!("byokkey/{name} created in namespace {ns} (key prefix {shown})");
    if a.retain {
        eprintln!(
            "note: Secret {secret_name} keeps the plaintext key (--retain); delete it when you no longer need it"
        );
    }
    if a.no_wait {
        return Ok(());
    }
    eprintln!("waiting up to {} for the operator to import and validate it...", secs(a.timeout));
    let key = wait_verdict(ctx, name, a.timeout).await?;
    report(ctx, &key)
}

async fn create_secret(ctx: &Ctx, key_name: &str, secret_name: &str, key: &SecretString) -> Result<(), Error> {
    let mut secret = Secret {
        metadata: ObjectMeta {
            name: Some(secret_name.into()),
            labels: Some([("app.kubernetes.io/created-by".to_string(), "kubectl-byok".to_string())].into()),
            annotations: Some([(SOURCE_ANNOTATION.to_string(), key_name.to_string())].into()),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some([(SECRET_DATA_KEY.to_string(), ByteString(key.expose_secret().as_bytes().to_vec()))].into()),
        ..Default::default()
    };
    let secrets: Api<Secret> = ctx.api();
    let result = secrets.create(&PostParams::default(), &secret).await;
    for v in secret.data.iter_mut().flat_map(|d| d.values_mut()) {
        v.0.zeroize();
    }
    match result {
        Ok(_) => Ok(()),
        Err(e) if api_code(&e) == Some(409) => Err(Error::Usage(format!(
            "Secret {secret_name} already exists in namespace {}; it may hold another key. Delete it \
             (`kubectl delete secret {secret_name} -n {}`) or choose another ByokKey name",
            ctx.namespace, ctx.namespace
        ))),
        Err(e) => Err(Error::kube(format!("creating Secret {secret_name} in namespace {}", ctx.namespace))(e)),
    }
}

fn phase(k: &ByokKey) -> Option<KeyPhase> {
    k.status.as_ref().and_then(|s| s.phase)
}

/// Waits until the operator reached a verdict: Ready, Invalid, Error or Revoked.
pub async fn wait_verdict(ctx: &Ctx, name: &str, timeout: Duration) -> Result<ByokKey, Error> {
    let verdict = |k: &ByokKey| {
        matches!(phase(k), Some(KeyPhase::Ready | KeyPhase::Invalid | KeyPhase::Error | KeyPhase::Revoked))
    };
    match wait_for(&ctx.keys(), name, timeout, |_| {}, verdict).await? {
        Waited::Done(k) => Ok(k),
        Waited::Gone => Err(Error::Failed(format!("ByokKey {name} was deleted while waiting for it"))),
        Waited::TimedOut(last) => Err(Error::Timeout(format!(
            "ByokKey {name} is still {} after {}: {}. Is the operator running (kubectl get pods -n {})? \
             See `kubectl describe byokkey {name} -n {}`, or wait longer with --timeout",
            last.as_ref().and_then(phase).map_or("without status".to_string(), |p| format!("{p:?}")),
            secs(timeout),
            last.as_ref().map_or_else(|| "no status yet".to_string(), explain),
            ctx.operator_namespace,
            ctx.namespace
        ))),
    }
}

/// Why a key is in its phase: the first telling condition's reason and message.
pub fn explain(k: &ByokKey) -> String {
    let pick = |t: &str| condition(k, t).filter(|(_, _, m)| !m.is_empty());
    let c = match phase(k) {
        Some(KeyPhase::Error) => pick(IMPORTED).or_else(|| pick(READY)),
        _ => pick(VALIDATED).or_else(|| pick(IMPORTED)).or_else(|| pick(READY)),
    };
    c.map_or_else(|| "no condition yet".to_string(), |(_, reason, message)| format!("{reason}: {message}"))
}

/// Prints the verdict; an error for anything but Ready.
pub fn report(ctx: &Ctx, k: &ByokKey) -> Result<(), Error> {
    let name = k.name_any();
    let ns = &ctx.namespace;
    let status = k.status.clone().unwrap_or_default();
    if !structured(ctx.output, &status)? {
        let prefix = status.key_prefix.as_deref().unwrap_or("-");
        let p = phase(k).map_or("Pending".to_string(), |p| format!("{p:?}"));
        println!("byokkey/{name} {p} (prefix {prefix}): {}", explain(k));
    }
    match phase(k) {
        Some(KeyPhase::Ready) => Ok(()),
        Some(KeyPhase::Invalid) => Err(Error::Failed(format!(
            "ByokKey {name} is Invalid: {}. The provider refused the key or its model: check that the key is \
             current and meant for {}, then `kubectl delete byokkey {name} -n {ns}` and create it again",
            explain(k),
            k.spec.provider
        ))),
        Some(KeyPhase::Error) => Err(Error::Failed(format!(
            "ByokKey {name} could not be imported: {}. Fix the source and create it again \
             (`kubectl describe byokkey {name} -n {ns}` shows the Events)",
            explain(k)
        ))),
        Some(KeyPhase::Revoked) => {
            Err(Error::Failed(format!("ByokKey {name} is revoked; create a new ByokKey with a new key")))
        }
        _ => Err(Error::Failed(format!("ByokKey {name} is not Ready: {}", explain(k)))),
    }
}
