//! `eval report NAME [-o FILE] [--baseline OTHER] [--prices FILE]`: a finished run as one
//! self-contained HTML page (src/report). This file only reads: the EvalJob, its results, its
//! cases snapshot and its key's KEK id.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, ResourceExt};

use super::args::EvalReportArgs;
use super::ctx::Ctx;
use super::error::Error;
use super::eval_results::read_results;
use crate::crd::{EvalCase, EvalJob, EvalPhase};
use crate::judge::cases::{CaseBody, parse_cases};
use crate::judge::scorers::scorer_names;
use crate::judge_job::{CASES_FILE, cases_config_map_name};
use crate::report::html::{Context, render};
use crate::report::prices::{PriceTable, Prices};
use crate::report::{Run, RunMeta};

/// Writes the report to `file`, or to stdout without one.
pub async fn report(ctx: &Ctx, a: &EvalReportArgs, file: Option<&Path>) -> Result<(), Error> {
    let prices = Prices { file: a.prices.as_deref().map(read_prices).transpose()?, ..Prices::default() };
    let run = load_run(ctx, &a.name).await?;
    let baseline = match &a.baseline {
        Some(name) => Some(load_run(ctx, name).await?),
        None => None,
    };
    if !run.agrees_with_status() {
        eprintln!(
            "warning: the results ConfigMaps of EvalJob {} do not match its status summary; the report says so",
            a.name
        );
    }
    let page_ctx = Context {
        baseline: baseline.as_ref(),
        prices: &prices,
        generated_at: jiff::Timestamp::now(),
        version: VERSION,
    };
    let page = render(&run, &page_ctx);
    match file {
        Some(path) => {
            std::fs::write(path, page).map_err(Error::io(format!("writing {}", path.display())))?;
            eprintln!("report of EvalJob {} written to {}", a.name, path.display());
        }
        None => print!("{page}"),
    }
    Ok(())
}

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn read_prices(path: &Path) -> Result<PriceTable, Error> {
    let text = std::fs::read_to_string(path).map_err(Error::io(format!("reading {}", path.display())))?;
    PriceTable::parse(&text).map_err(|e| Error::Usage(format!("--prices {}: {e}", path.display())))
}

/// A finished EvalJob (Succeeded or Failed) as the report and `eval compare` see it.
pub async fn load_run(ctx: &Ctx, name: &str) -> Result<Run, Error> {
    let ej = ctx.get_evaljob(name).await?;
    let st = ej.status.clone().unwrap_or_default();
    let phase = match st.phase {
        Some(p @ (EvalPhase::Succeeded | EvalPhase::Failed)) => p,
        other => {
            let now = other.map_or("Pending".to_string(), |p| format!("{p:?}"));
            return Err(Error::Failed(format!(
                "EvalJob {name} has not finished (it is {now}); wait for it with `kubectl byok eval watch {name} -n {}`",
                ctx.namespace
            )));
        }
    };
    let refs = st.results_ref.clone().map(|r| r.config_maps).unwrap_or_default();
    let results = read_results(ctx, &refs).await?;
    let meta = RunMeta {
        name: name.to_string(),
        namespace: ctx.namespace.clone(),
        phase: format!("{phase:?}"),
        provider: Some(ej.spec.provider),
        model: st.model,
        kek_id: kek_id(ctx, st.key_ref.as_deref()).await,
        key_ref: st.key_ref,
        key_prefix: st.key_prefix,
        start_time: st.start_time.map(|t| t.0),
        completion_time: st.completion_time.map(|t| t.0),
        summary: st.summary,
    };
    Ok(Run { meta, scorers: scorer_names(&ej.spec.scorers), results, cases: cases_text(ctx, &ej).await })
}

/// The run's own snapshot of its cases, by line. Without it (deleted, unreadable) the report
/// shows the results without the cases' text, and says so.
async fn cases_text(ctx: &Ctx, ej: &EvalJob) -> BTreeMap<u32, EvalCase> {
    let name = cases_config_map_name(&ej.name_any());
    let cms: Api<ConfigMap> = ctx.api();
    let text = match cms.get_opt(&name).await {
        Ok(cm) => cm.and_then(|c| c.data?.remove(CASES_FILE)),
        Err(e) => {
            eprintln!("warning: cannot read the cases ConfigMap {name}: {e}; the report shows no case text");
            None
        }
    };
    let cases = parse_cases(text.as_deref().unwrap_or_default());
    cases
        .into_iter()
        .filter_map(|c| match c.body {
            CaseBody::Case(case) => Some((c.line, case)),
            CaseBody::Malformed(_) => None,
        })
        .collect()
}

/// The KEK the run's key is sealed under now (status.kekId of its ByokKey), if it can be read.
async fn kek_id(ctx: &Ctx, key: Option<&str>) -> Option<String> {
    let key = key?;
    match ctx.keys().get_opt(key).await {
        Ok(k) => k?.status?.kek_id,
        Err(e) => {
            eprintln!("warning: cannot read ByokKey {key} for its KEK id: {e}");
            None
        }
    }
}
