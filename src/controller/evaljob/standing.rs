//! Where a run stands, said the way tools read it (pure): the gate (`Passed`) once the run has
//! ended, and kstatus' `Ready` / `Reconciling` / `Stalled`, so `kubectl wait`, Flux and kstatus
//! readers need no code of ours. The phase stays about the run; the gate is only in `Passed`.

use crate::events::EventType;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::gate;
use crate::controller::status::Note;
use crate::crd::conditions::evaljob::{CASES_READY, COMPLETE, KEY_RESOLVED, PASSED, READY};
use crate::crd::conditions::{Progress, condition, gate as reason, set_condition, set_progress};
use crate::crd::{EvalJob, EvalJobStatus, EvalPhase};

/// Sets `Passed` once the run has ended, with a Warning Event when the gate fails. Set once: the
/// spec is immutable and a finished run's summary does not change. Returns the gate's answer when
/// it judged a Succeeded run now (for the metrics; a Failed run is not judged).
pub fn conclude(ej: &EvalJob, st: &mut EvalJobStatus, notes: &mut Vec<Note>, now: &Time) -> Option<bool> {
    if condition(&st.conditions, PASSED).is_some() {
        return None;
    }
    let generation = ej.metadata.generation;
    match st.phase {
        Some(EvalPhase::Succeeded) => {
            let total = st.progress.as_ref().map_or(0, |p| p.total);
            let v = gate::judge(ej.spec.pass_criteria.as_ref(), &st.summary.clone().unwrap_or_default(), total);
            let status = if v.passed { "True" } else { "False" };
            if !v.passed {
                notes.push((EventType::Warning, v.reason, v.message.clone()));
            }
            set_condition(&mut st.conditions, PASSED, status, v.reason, v.message, generation, now);
            Some(v.passed)
        }
        Some(EvalPhase::Failed) => {
            let why = condition(&st.conditions, COMPLETE).map_or_else(String::new, |c| c.message.clone());
            let msg = format!("the run did not complete, so it was not judged: {why}");
            set_condition(&mut st.conditions, PASSED, "False", reason::RUN_FAILED, msg, generation, now);
            None
        }
        _ => None,
    }
}

/// kstatus: Ready once the run Succeeded; Reconciling while it has not ended; Stalled when it
/// Failed (nothing more will happen until someone creates a new EvalJob).
pub fn set_kstatus(ej: &EvalJob, st: &mut EvalJobStatus, now: &Time) {
    let progress = standing(st);
    let (status, reason, message) = match &progress {
        Progress::Current => {
            let said = condition(&st.conditions, COMPLETE).map(|c| c.message.clone());
            ("True", "Succeeded".to_string(), said.unwrap_or_else(|| "the run ended".into()))
        }
        Progress::Reconciling(reason, message) | Progress::Stalled(reason, message) => {
            ("False", reason.clone(), message.clone())
        }
    };
    let generation = ej.metadata.generation;
    set_condition(&mut st.conditions, READY, status, &reason, message, generation, now);
    set_progress(&mut st.conditions, &progress, generation, now);
}

/// The run in kstatus' words, with the reason and message of the condition that explains it.
fn standing(st: &EvalJobStatus) -> Progress {
    let said = |type_: &str| condition(&st.conditions, type_).map(|c| (c.reason.clone(), c.message.clone()));
    match st.phase {
        Some(EvalPhase::Succeeded) => Progress::Current,
        Some(EvalPhase::Failed) => {
            let (reason, message) = said(COMPLETE).unwrap_or_else(|| ("Failed".into(), "the run failed".into()));
            Progress::Stalled(reason, message)
        }
        Some(EvalPhase::Running) => {
            let done = st.progress.as_ref().map_or_else(String::new, |p| format!(": {} cases", p.display));
            Progress::Reconciling("Running".into(), format!("the judge is running{done}"))
        }
        Some(EvalPhase::WaitingForKey) => {
            let msg = said(KEY_RESOLVED).map_or_else(|| "waiting for a usable key".into(), |(_, m)| m);
            Progress::Reconciling("WaitingForKey".into(), msg)
        }
        // Pending with a reason: the cases are not there yet (CasesReady says why).
        Some(EvalPhase::Pending) => {
            let msg = said(CASES_READY).map_or_else(|| "starting the run".into(), |(_, m)| m);
            Progress::Reconciling("Pending".into(), msg)
        }
        None => Progress::Reconciling("Pending".into(), "starting the run".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::conditions::kstatus::{RECONCILING, STALLED};
    use crate::crd::{Progress as Cases, Summary};

    fn eval_job(criteria: serde_json::Value) -> EvalJob {
        let mut spec = serde_json::json!({
            "provider": "openai", "scorers": [{"type": "contains"}], "cases": [{"output": "x"}]
        });
        if !criteria.is_null() {
            spec["passCriteria"] = criteria;
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "launchgate.ai/v1alpha1", "kind": "EvalJob",
            "metadata": {"name": "ej", "namespace": "ns", "uid": "u1", "generation": 1}, "spec": spec
        }))
        .expect("evaljob")
    }

    fn ended(phase: EvalPhase, passed: i64, failed: i64) -> EvalJobStatus {
        let total = passed + failed;
        EvalJobStatus {
            phase: Some(phase),
            progress: Some(Cases { total, completed: total, display: format!("{total}/{total}") }),
            summary: Some(Summary { passed, failed, ..Summary::default() }),
            ..EvalJobStatus::default()
        }
    }

    /// (status, reason) of condition `type_`.
    fn said(st: &EvalJobStatus, type_: &str) -> Option<(String, String)> {
        condition(&st.conditions, type_).map(|c| (c.status.clone(), c.reason.clone()))
    }

    fn pair(status: &str, reason: &str) -> Option<(String, String)> {
        Some((status.into(), reason.into()))
    }

    #[test]
    fn the_gate_is_judged_once_when_the_run_succeeded_and_a_failure_is_an_event() {
        let now = Time(jiff::Timestamp::now());
        let ej = eval_job(serde_json::json!({ "minPassRate": 0.75 }));
        let (mut st, mut notes) = (ended(EvalPhase::Succeeded, 2, 2), Vec::new());
        assert_eq!(conclude(&ej, &mut st, &mut notes, &now), Some(false));
        assert_eq!(said(&st, PASSED), pair("False", reason::CRITERIA_NOT_MET));
        let c = condition(&st.conditions, PASSED).expect("Passed");
        assert_eq!(c.message, "pass rate 0.5 (2 of 4 cases) is below minPassRate 0.75");
        assert_eq!(c.observed_generation, Some(1));
        assert_eq!(notes.len(), 1);
        assert_eq!((notes[0].0, notes[0].1), (EventType::Warning, reason::CRITERIA_NOT_MET));
        assert_eq!(conclude(&ej, &mut st, &mut notes, &now), None);
        assert_eq!(notes.len(), 1, "judged once: no second Event");

        let (mut st, mut notes) = (ended(EvalPhase::Succeeded, 3, 1), Vec::new());
        conclude(&ej, &mut st, &mut notes, &now);
        assert_eq!(said(&st, PASSED), pair("True", reason::CRITERIA_MET));
        assert!(notes.is_empty(), "no Event when the gate passes");
    }

    #[test]
    fn a_failed_run_does_not_pass_and_a_running_one_is_not_judged() {
        let now = Time(jiff::Timestamp::now());
        let ej = eval_job(serde_json::Value::Null);
        let mut st = ended(EvalPhase::Failed, 0, 0);
        set_condition(&mut st.conditions, COMPLETE, "True", "Failed", "BackoffLimitExceeded: x", Some(1), &now);
        assert_eq!(conclude(&ej, &mut st, &mut Vec::new(), &now), None, "not counted as a gate");
        assert_eq!(said(&st, PASSED), pair("False", reason::RUN_FAILED));
        let mut running = ended(EvalPhase::Running, 0, 0);
        conclude(&ej, &mut running, &mut Vec::new(), &now);
        assert_eq!(said(&running, PASSED), None);
    }

    #[test]
    fn kstatus_follows_the_run_not_the_gate() {
        let now = Time(jiff::Timestamp::now());
        let ej = eval_job(serde_json::Value::Null);
        let mut st = EvalJobStatus { phase: Some(EvalPhase::WaitingForKey), ..EvalJobStatus::default() };
        set_condition(&mut st.conditions, KEY_RESOLVED, "False", "NoUsableKey", "no Ready default", Some(1), &now);
        set_kstatus(&ej, &mut st, &now);
        assert_eq!(said(&st, READY), pair("False", "WaitingForKey"));
        assert_eq!(said(&st, RECONCILING), pair("True", "WaitingForKey"));
        assert_eq!(condition(&st.conditions, RECONCILING).map(|c| c.message.as_str()), Some("no Ready default"));
        assert_eq!(said(&st, STALLED), None);

        st.phase = Some(EvalPhase::Running);
        st.progress = Some(Cases { total: 4, completed: 1, display: "1/4".into() });
        set_kstatus(&ej, &mut st, &now);
        assert_eq!(said(&st, RECONCILING), pair("True", "Running"));

        // Succeeded with a failed gate: still Ready (the run did what was asked); Passed says the rest.
        let mut done = ended(EvalPhase::Succeeded, 1, 3);
        conclude(&ej, &mut done, &mut Vec::new(), &now);
        set_kstatus(&ej, &mut done, &now);
        assert_eq!(said(&done, READY), pair("True", "Succeeded"));
        assert_eq!(said(&done, PASSED), pair("False", reason::CASES_NOT_PASSED));
        assert_eq!((said(&done, RECONCILING), said(&done, STALLED)), (None, None));

        let mut failed = ended(EvalPhase::Failed, 0, 0);
        set_condition(&mut failed.conditions, COMPLETE, "True", "JobNameTaken", "a Job named x", Some(1), &now);
        set_kstatus(&ej, &mut failed, &now);
        assert_eq!(said(&failed, READY), pair("False", "JobNameTaken"));
        assert_eq!(said(&failed, STALLED), pair("True", "JobNameTaken"));
        assert_eq!(said(&failed, RECONCILING), None);
    }
}
