//! `eval watch NAME`: a progress bar fed by a watch on the EvalJob, until it Succeeded or Failed.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use kube::{Api, ResourceExt};

use super::ctx::Ctx;
use super::error::Error;
use super::wait::{Waited, secs, wait_for};
use crate::crd::{EvalJob, EvalPhase};

pub fn phase(e: &EvalJob) -> Option<EvalPhase> {
    e.status.as_ref().and_then(|s| s.phase)
}

/// The last condition's message: why the run waits or failed.
fn message(e: &EvalJob) -> String {
    let conds = e.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let failed = conds.iter().find(|c| c.type_ == "Failed" && c.status == "True");
    let c = failed.or_else(|| {
        conds.iter().filter(|c| c.status != "True" || c.type_ != "Ready").max_by_key(|c| &c.last_transition_time.0)
    });
    c.map(|c| format!("{}: {}", c.reason, c.message)).unwrap_or_default()
}

/// Follows `name` with a progress bar until it Succeeded or Failed (then returns it), was
/// deleted, or `timeout` passed.
pub async fn follow(ctx: &Ctx, name: &str, timeout: Duration) -> Result<EvalJob, Error> {
    let api: Api<EvalJob> = ctx.api();
    if api.get_opt(name).await.map_err(Error::kube(format!("reading EvalJob {name}")))?.is_none() {
        return Err(ctx.evaljob_not_found(name));
    }
    let bar = progress_bar(name)?;
    let seen = |e: &EvalJob| {
        if let Some(p) = e.status.as_ref().and_then(|s| s.progress.as_ref()) {
            bar.set_length(u64::try_from(p.total).unwrap_or(0));
            bar.set_position(u64::try_from(p.completed).unwrap_or(0));
        }
        let what = match phase(e) {
            Some(EvalPhase::WaitingForKey) => format!("WaitingForKey ({})", message(e)),
            Some(p) => format!("{p:?}"),
            None => "Pending".into(),
        };
        bar.set_message(what);
    };
    let done = |e: &EvalJob| matches!(phase(e), Some(EvalPhase::Succeeded | EvalPhase::Failed));
    let outcome = wait_for(&api, name, timeout, seen, done).await;
    bar.finish_and_clear();
    match outcome? {
        Waited::Done(ej) => Ok(ej),
        Waited::Gone => Err(Error::Failed(format!("EvalJob {name} was deleted while watching it"))),
        Waited::TimedOut(last) => {
            let p = last.as_ref().and_then(phase).map_or("Pending".to_string(), |p| format!("{p:?}"));
            Err(Error::Timeout(format!(
                "EvalJob {name} is still {p} after {}; watch again with `kubectl byok eval watch {name} -n {}`",
                secs(timeout),
                ctx.namespace
            )))
        }
    }
}

fn progress_bar(name: &str) -> Result<ProgressBar, Error> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix} [{elapsed_precise}] [{bar:40}] {pos}/{len} {wide_msg}")
            .map_err(|e| Error::Failed(format!("progress bar: {e}")))?
            .progress_chars("=> "),
    );
    bar.set_prefix(name.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    Ok(bar)
}

/// `eval watch`: follows the run, then prints one line about how it ended.
pub async fn watch(ctx: &Ctx, name: &str, timeout: Duration) -> Result<(), Error> {
    let ns = &ctx.namespace;
    let ej = follow(ctx, name, timeout).await?;
    println!("{}", outcome_line(&ej));
    if phase(&ej) == Some(EvalPhase::Failed) {
        return Err(failed(ctx, &ej));
    }
    println!("per-case results: `kubectl byok eval results {name} -n {ns}` (--json, --junit)");
    Ok(())
}

/// "evaljob/NAME Succeeded: 4/4 cases, passed 2, failed 2, errored 0, mean score 0.55".
pub fn outcome_line(ej: &EvalJob) -> String {
    let st = ej.status.clone().unwrap_or_default();
    let s = st.summary.unwrap_or_default();
    let mean = s.mean_score.map_or_else(|| "-".to_string(), |m| format!("{m:.2}"));
    let progress = st.progress.map(|p| p.display).unwrap_or_default();
    let p = phase(ej).map_or("Pending".to_string(), |p| format!("{p:?}"));
    format!(
        "evaljob/{} {p}: {progress} cases, passed {}, failed {}, errored {}, mean score {mean}",
        ej.name_any(),
        s.passed,
        s.failed,
        s.errored
    )
}

/// The error of a Failed run: why, and where to look.
pub fn failed(ctx: &Ctx, ej: &EvalJob) -> Error {
    let (name, ns) = (ej.name_any(), &ctx.namespace);
    Error::Failed(format!(
        "EvalJob {name} Failed: {}; see `kubectl describe evaljob {name} -n {ns}` and the judge pods' logs",
        message(ej)
    ))
}
