//! `eval results NAME [--json|--junit]`: the per-case results from the results ConfigMaps.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

use super::args::Output;
use super::ctx::Ctx;
use super::error::Error;
use super::output::{table, truncate};
use crate::judge::junit::junit_xml;
use crate::judge::wire::CaseResult;

pub async fn results(ctx: &Ctx, name: &str, json: bool, junit: bool) -> Result<(), Error> {
    let ej = ctx.get_evaljob(name).await?;
    let st = ej.status.clone().unwrap_or_default();
    let refs = st.results_ref.map(|r| r.config_maps).unwrap_or_default();
    if refs.is_empty() {
        let phase = st.phase.map_or("Pending".to_string(), |p| format!("{p:?}"));
        return Err(Error::NotFound(format!(
            "EvalJob {name} has no results yet (it is {phase}); follow it with `kubectl byok eval watch {name} -n {}`",
            ctx.namespace
        )));
    }
    let all = read_results(ctx, &refs).await?;
    if junit {
        print!("{}", junit_xml(name, &all));
        return Ok(());
    }
    if json || ctx.output == Output::Json {
        let text = serde_json::to_string_pretty(&all).map_err(|e| Error::Failed(format!("JSON: {e}")))?;
        println!("{text}");
        return Ok(());
    }
    if super::output::structured(ctx.output, &all)? {
        return Ok(());
    }
    print!("{}", results_table(&all));
    if let Some(s) = st.summary {
        println!("\npassed {}, failed {}, errored {} (cases)", s.passed, s.failed, s.errored);
    }
    Ok(())
}

/// Every case result of the results ConfigMaps `refs`, in case order.
pub async fn read_results(ctx: &Ctx, refs: &[String]) -> Result<Vec<CaseResult>, Error> {
    let cms: Api<ConfigMap> = ctx.api();
    let mut all: Vec<CaseResult> = Vec::new();
    for cm_name in refs {
        let cm = cms.get(cm_name).await.map_err(Error::kube(format!("reading results ConfigMap {cm_name}")))?;
        let Some(jsonl) = cm.data.and_then(|mut d| d.remove("results.jsonl")) else { continue };
        for (i, line) in jsonl.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let r = serde_json::from_str::<CaseResult>(line).map_err(|e| {
                Error::Failed(format!("ConfigMap {cm_name} results.jsonl line {}: not a case result ({e})", i + 1))
            })?;
            all.push(r);
        }
    }
    all.sort_by(|a, b| (a.line, &a.id).cmp(&(b.line, &b.id)));
    Ok(all)
}

/// One row per case and scorer.
fn results_table(all: &[CaseResult]) -> String {
    let rows: Vec<Vec<String>> = all
        .iter()
        .flat_map(|c| {
            c.scores.iter().map(move |s| {
                vec![
                    c.id.clone(),
                    s.scorer.clone(),
                    format!("{:?}", s.outcome),
                    s.score.map_or_else(|| "-".to_string(), |v| format!("{v:.2}")),
                    truncate(&s.reason, 60),
                ]
            })
        })
        .collect();
    table(&["CASE", "SCORER", "OUTCOME", "SCORE", "REASON"], &rows)
}
