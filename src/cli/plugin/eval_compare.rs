//! `eval compare BASELINE CANDIDATE [--threshold X]`: two finished runs over the same case ids
//! (src/report/compare.rs). Exit 0 when the regressions are within the threshold, 1 when they
//! exceed it, 2 when the runs cannot be compared (not found, not finished, Failed).

use serde::Serialize;

use super::args::EvalCompareArgs;
use super::ctx::Ctx;
use super::error::Error;
use super::eval_report::load_run;
use super::output::{structured, table, truncate};
use crate::judge::wire::Outcome;
use crate::report::compare::{Change, Comparison, ScorerDelta, Threshold, compare as compare_runs};
use crate::report::{Run, percent};

/// What `-o json` prints.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Verdict<'a> {
    #[serde(flatten)]
    comparison: &'a Comparison,
    threshold: Threshold,
    /// Whether the regressions exceed the threshold (the exit code is 1).
    exceeded: bool,
}

pub async fn compare(ctx: &Ctx, a: &EvalCompareArgs) -> Result<(), Error> {
    let baseline = succeeded(load_run(ctx, &a.baseline).await?)?;
    let candidate = succeeded(load_run(ctx, &a.candidate).await?)?;
    let c = compare_runs(&baseline, &candidate);
    let exceeded = a.threshold.exceeded(c.regressed, c.compared);
    let verdict = Verdict { comparison: &c, threshold: a.threshold, exceeded };
    if !structured(ctx.output, &verdict)? {
        print!("{}", text(&c));
    }
    let counted = format!("{} of {} compared case(s) regressed", c.regressed, c.compared);
    if exceeded {
        return Err(Error::GateFailed(format!("{counted}: more than the threshold, {}", a.threshold)));
    }
    eprintln!("{counted}: within the threshold, {}", a.threshold);
    Ok(())
}

/// Only a run that judged every case is compared: a Failed one would hide its missing cases.
fn succeeded(run: Run) -> Result<Run, Error> {
    if run.meta.phase == "Succeeded" {
        return Ok(run);
    }
    Err(Error::Failed(format!(
        "EvalJob {} {}: its results are incomplete and cannot be compared",
        run.meta.name, run.meta.phase
    )))
}

/// The comparison for people: scorers, then moved cases, then the cases in one run only.
fn text(c: &Comparison) -> String {
    let mut out = format!(
        "{} (baseline) -> {}: {} case(s) in both, {} regressed, {} improved\n\n",
        c.baseline, c.candidate, c.compared, c.regressed, c.improved
    );
    let rows: Vec<Vec<String>> = c.scorers.iter().map(scorer_row).collect();
    out.push_str(&table(&["SCORER", "PASS RATE", "DELTA", "MEAN SCORE", "DELTA"], &rows));
    if !c.changes.is_empty() {
        let rows: Vec<Vec<String>> = c
            .changes
            .iter()
            .flat_map(|change| {
                change.scorers.iter().map(move |s| {
                    vec![
                        change.case.clone(),
                        if change.change == Change::Regressed { "regressed" } else { "improved" }.into(),
                        s.scorer.clone(),
                        outcome(s.baseline, s.baseline_score),
                        outcome(s.candidate, s.candidate_score),
                        truncate(&s.reason, 60),
                    ]
                })
            })
            .collect();
        out.push('\n');
        out.push_str(&table(&["CASE", "CHANGE", "SCORER", "BASELINE", "CANDIDATE", "REASON"], &rows));
    }
    for (list, run) in [(&c.only_in_baseline, &c.baseline), (&c.only_in_candidate, &c.candidate)] {
        if !list.is_empty() {
            out.push_str(&format!("\nonly in {run}: {}\n", list.join(", ")));
        }
    }
    out
}

fn scorer_row(d: &ScorerDelta) -> Vec<String> {
    let rate =
        |s: &Option<crate::report::ScorerStats>| s.as_ref().and_then(|s| s.pass_rate).map_or("-".into(), percent);
    let mean = |s: &Option<crate::report::ScorerStats>| {
        s.as_ref().and_then(|s| s.mean_score).map_or("-".into(), |m| format!("{m:.3}"))
    };
    vec![
        d.name.clone(),
        format!("{} -> {}", rate(&d.baseline), rate(&d.candidate)),
        d.pass_rate_delta.map_or("-".into(), |x| format!("{:+.1} pts", x * 100.0)),
        format!("{} -> {}", mean(&d.baseline), mean(&d.candidate)),
        d.mean_score_delta.map_or("-".into(), |x| format!("{x:+.3}")),
    ]
}

fn outcome(o: Outcome, score: Option<f64>) -> String {
    let word = format!("{o:?}").to_lowercase();
    score.map_or(word.clone(), |v| format!("{word} {v:.2}"))
}
