//! `eval run --wait`: the one-screen summary of a finished run and its exit by the gate
//! (condition `Passed`): 0 passed, 1 criteria not met, 2 the run did not complete.

use kube::ResourceExt;

use super::ctx::Ctx;
use super::error::Error;
use super::eval_watch::{failed, follow, outcome_line, phase};
use super::output::table;
use crate::controller::evaljob::gate::{self, number};
use crate::crd::conditions::evaljob::PASSED;
use crate::crd::{EvalJob, EvalPhase, Summary};

/// Follows the run to its end, prints the summary, and answers by the `Passed` condition.
pub async fn wait(ctx: &Ctx, name: &str, timeout: std::time::Duration) -> Result<(), Error> {
    let ej = follow(ctx, name, timeout).await?;
    print!("{}", summary_screen(ctx, &ej));
    if phase(&ej) == Some(EvalPhase::Failed) {
        return Err(failed(ctx, &ej));
    }
    let passed = ej.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == PASSED));
    match passed {
        Some(c) if c.status == "True" => Ok(()),
        Some(c) => Err(Error::GateFailed(format!("EvalJob {name} did not pass ({}): {}", c.reason, c.message))),
        None => Err(Error::Failed(format!(
            "EvalJob {name} Succeeded but has no Passed condition: the operator predates pass criteria; upgrade it"
        ))),
    }
}

/// What the run did, per scorer and per criterion, and where the details are.
fn summary_screen(ctx: &Ctx, ej: &EvalJob) -> String {
    let (name, ns) = (ej.name_any(), &ctx.namespace);
    let st = ej.status.clone().unwrap_or_default();
    let summary = st.summary.clone().unwrap_or_default();
    let total = st.progress.as_ref().map_or(0, |p| p.total);
    let mut out = format!("{}\n\n", outcome_line(ej));
    out.push_str(&scorer_table(&summary, total));
    if phase(ej) == Some(EvalPhase::Succeeded) {
        let verdict = gate::judge(ej.spec.pass_criteria.as_ref(), &summary, total);
        let rows: Vec<Vec<String>> = verdict
            .checks
            .iter()
            .map(|c| {
                let scope = c.scorer.as_ref().map_or_else(|| "run".to_string(), |s| format!("scorer {s}"));
                let value = c.value.map_or_else(|| "-".to_string(), number);
                let result = if c.met { "met" } else { "NOT MET" };
                vec![scope, format!("{} {}", c.criterion, number(c.threshold)), value, result.into()]
            })
            .collect();
        let default =
            if ej.spec.pass_criteria.is_none() { " (no spec.passCriteria: every case must pass)" } else { "" };
        out.push_str(&format!("\ncriteria{default}:\n"));
        out.push_str(&table(&["OF", "CRITERION", "MEASURED", "RESULT"], &rows));
    }
    if let Some(c) = st.conditions.iter().find(|c| c.type_ == PASSED) {
        out.push_str(&format!("\nPassed={} ({}): {}\n", c.status, c.reason, c.message));
    }
    out.push_str(&format!(
        "\nper-case results: kubectl byok eval results {name} -n {ns} [--json | --junit]\n\
         conditions and events: kubectl describe evaljob {name} -n {ns}\n"
    ));
    out
}

/// Passed, failed, errored, pass rate and mean score per scorer.
fn scorer_table(summary: &Summary, total: i64) -> String {
    let panels = summary.scorers.iter().any(|s| s.agreement.is_some());
    let rows: Vec<Vec<String>> = summary
        .scorers
        .iter()
        .map(|s| {
            let rate = gate::pass_rate(s.passed, gate::scorer_cases(s, total)).map_or_else(|| "-".into(), number);
            let mean = s.mean_score.map_or_else(|| "-".to_string(), number);
            let mut row =
                vec![s.name.clone(), s.passed.to_string(), s.failed.to_string(), s.errored.to_string(), rate, mean];
            if panels {
                row.push(s.agreement.map_or_else(|| "-".to_string(), number));
            }
            row
        })
        .collect();
    let mut headers = vec!["SCORER", "PASSED", "FAILED", "ERRORED", "PASS RATE", "MEAN SCORE"];
    if panels {
        // A judge panel: the share of cases its judges agreed on.
        headers.push("AGREEMENT");
    }
    table(&headers, &rows)
}
