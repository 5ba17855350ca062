//! `revoke NAME` and `set-default NAME`: the two spec changes people make from the command line.

use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::create::explain;
use super::ctx::Ctx;
use super::error::Error;
use super::output::condition;
use super::wait::{Waited, secs, wait_for};
use crate::crd::conditions::byokkey::DEFAULT;
use crate::crd::{ByokKey, KeyPhase};

pub async fn revoke(ctx: &Ctx, name: &str, no_wait: bool, timeout: Duration) -> Result<(), Error> {
    let key = ctx.get_key(name).await?;
    gitops_warning(&key, "spec.revoked: true");
    if !key.spec.revoked {
        patch_spec(ctx, name, json!({ "revoked": true })).await?;
    }
    if no_wait {
        println!("byokkey/{name} revoke requested");
        return Ok(());
    }
    let revoked = |k: &ByokKey| k.status.as_ref().and_then(|s| s.phase) == Some(KeyPhase::Revoked);
    match wait_for(&ctx.keys(), name, timeout, |_| {}, revoked).await? {
        Waited::Done(_) => {
            println!("byokkey/{name} revoked: its ciphertext is deleted and no judge pod can fetch it any more");
            Ok(())
        }
        Waited::Gone => Err(ctx.key_not_found(name)),
        Waited::TimedOut(_) => Err(Error::Timeout(format!(
            "spec.revoked is set, but the operator has not reported {name} Revoked after {}; is it running \
             (kubectl get pods -n {})?",
            secs(timeout),
            ctx.operator_namespace
        ))),
    }
}

pub async fn set_default(ctx: &Ctx, name: &str, no_wait: bool, timeout: Duration) -> Result<(), Error> {
    let key = ctx.get_key(name).await?;
    let provider = key.spec.provider;
    gitops_warning(&key, "spec.default: true");
    eprintln!(
        "note: when several {provider} keys in namespace {} ask to be the default, the one most recently marked \
         (and usable) wins; the others keep spec.default but are no longer the effective default",
        ctx.namespace
    );
    let since = |k: &ByokKey| k.status.as_ref().and_then(|s| s.default_since.clone());
    if key.spec.default && !effective(&key) && since(&key).is_some() {
        // Already marked, but another key was marked later: mark it again so it is the newest.
        patch_spec(ctx, name, json!({ "default": false })).await?;
        let cleared = |k: &ByokKey| since(k).is_none();
        if let Waited::TimedOut(_) = wait_for(&ctx.keys(), name, timeout, |_| {}, cleared).await? {
            return Err(Error::Timeout(format!(
                "the operator did not see {name} unmarked within {}; is it running (kubectl get pods -n {})?",
                secs(timeout),
                ctx.operator_namespace
            )));
        }
    }
    patch_spec(ctx, name, json!({ "default": true })).await?;
    if no_wait {
        println!("byokkey/{name} marked default");
        return Ok(());
    }
    match wait_for(&ctx.keys(), name, timeout, |_| {}, effective).await? {
        Waited::Done(_) => {
            println!("byokkey/{name} is now the effective default {provider} key in namespace {}", ctx.namespace);
            Ok(())
        }
        Waited::Gone => Err(ctx.key_not_found(name)),
        Waited::TimedOut(last) => {
            let why = last.as_ref().and_then(|k| condition(k, DEFAULT).map(|(_, r, m)| format!("{r}: {m}")));
            let ready = last.as_ref().map(explain).unwrap_or_default();
            Err(Error::Timeout(format!(
                "{name} is marked default but not the effective default after {} ({}); only a Ready key can be \
                 the default: {ready}",
                secs(timeout),
                why.unwrap_or_else(|| "no Default condition yet".into())
            )))
        }
    }
}

fn effective(k: &ByokKey) -> bool {
    k.status.as_ref().is_some_and(|s| s.effective_default)
}

async fn patch_spec(ctx: &Ctx, name: &str, spec: serde_json::Value) -> Result<(), Error> {
    let patch = json!({ "spec": spec });
    ctx.keys()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(Error::kube(format!("patching ByokKey {name} in namespace {}", ctx.namespace)))
}

/// Warns that a spec changed here is reverted by the next GitOps sync unless git changes too.
fn gitops_warning(key: &ByokKey, change: &str) {
    let markers = ["argocd.argoproj.io/", "kustomize.toolkit.fluxcd.io/", "helm.toolkit.fluxcd.io/"];
    let managers = ["argocd", "kustomize-controller", "helm-controller"];
    let by_label =
        key.labels().keys().chain(key.annotations().keys()).any(|k| markers.iter().any(|m| k.starts_with(m)));
    let by_manager = key
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.as_deref())
        .any(|m| managers.iter().any(|g| m.starts_with(g)));
    if by_label || by_manager {
        eprintln!(
            "warning: ByokKey {} is managed by GitOps: set {change} in git as well, or the next sync reverts this",
            key.name_any()
        );
    } else {
        eprintln!("warning: if this ByokKey is managed by GitOps (Argo CD, Flux), set {change} in git instead");
    }
}
