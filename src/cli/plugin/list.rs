//! `list [-A]`: the keys, with what the operator reports about them.

use kube::api::ListParams;
use kube::{Api, ResourceExt};

use super::ctx::Ctx;
use super::error::Error;
use super::output::{age, condition, structured, table};
use crate::crd::ByokKey;
use crate::crd::conditions::{MODEL_DEPRECATED, lifecycle};

pub async fn list(ctx: &Ctx, all_namespaces: bool) -> Result<(), Error> {
    let api: Api<ByokKey> = if all_namespaces { Api::all(ctx.client.clone()) } else { ctx.keys() };
    let where_ = if all_namespaces { "any namespace".to_string() } else { format!("namespace {}", ctx.namespace) };
    let mut keys =
        api.list(&ListParams::default()).await.map_err(Error::kube(format!("listing ByokKeys in {where_}")))?.items;
    keys.sort_by_key(|k| (k.namespace(), k.name_any()));
    if structured(ctx.output, &keys)? {
        return Ok(());
    }
    if keys.is_empty() {
        eprintln!("No ByokKeys found in {where_}; create one with `kubectl byok create NAME --provider P`");
        return Ok(());
    }
    let mut header = vec!["NAME", "PROVIDER", "DEFAULT", "PREFIX", "STATUS", "MODEL", "KEK", "AGE"];
    if all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    let rows: Vec<Vec<String>> = keys.iter().map(|k| row(k, all_namespaces)).collect();
    print!("{}", table(&header, &rows));
    Ok(())
}

fn row(k: &ByokKey, with_namespace: bool) -> Vec<String> {
    let st = k.status.clone().unwrap_or_default();
    let dash = || "-".to_string();
    let mut row = vec![
        k.name_any(),
        k.spec.provider.to_string(),
        st.effective_default.to_string(),
        st.key_prefix.unwrap_or_else(dash),
        st.phase.map_or_else(|| "Pending".to_string(), |p| format!("{p:?}")),
        model(k),
        st.kek_id.unwrap_or_else(dash),
        age(k.metadata.creation_timestamp.as_ref()),
    ];
    if with_namespace {
        row.insert(0, k.namespace().unwrap_or_default());
    }
    row
}

/// The validated model, marked when the provider or the lifecycle table says it is dying.
fn model(k: &ByokKey) -> String {
    let Some(model) = k.status.as_ref().and_then(|s| s.model.clone()) else { return "-".into() };
    match condition(k, MODEL_DEPRECATED) {
        Some(("True", lifecycle::RETIRED, _)) => format!("{model} (retired)"),
        Some(("True", _, _)) => format!("{model} (deprecated)"),
        _ => model,
    }
}
