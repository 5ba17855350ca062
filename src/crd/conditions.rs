//! Conditions of both kinds: their types and reasons (shared by the controllers and the CLI), and
//! the one way a condition is set.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// ByokKey condition types.
pub mod byokkey {
    pub const READY: &str = "Ready";
    pub const IMPORTED: &str = "Imported";
    pub const VALIDATED: &str = "Validated";
    pub const DEFAULT: &str = "Default";
    /// True while the key's model is deprecated or shut down (a warning: the key still works).
    pub const MODEL_DEPRECATED: &str = super::MODEL_DEPRECATED;
}

/// EvalJob condition types.
pub mod evaljob {
    pub const KEY_RESOLVED: &str = "KeyResolved";
    pub const CASES_READY: &str = "CasesReady";
    pub const COMPLETE: &str = "Complete";
    pub const RESULTS_TRUSTED: &str = "ResultsTrusted";
    /// True when the judge model is deprecated or shut down, with the date.
    pub const MODEL_DEPRECATED: &str = super::MODEL_DEPRECATED;
    /// kstatus' Ready: True once the run has ended (Succeeded); the gate is `Passed`.
    pub const READY: &str = "Ready";
    /// The gate, set when the run ends: True when it met `spec.passCriteria` (reasons in [`gate`](super::gate)).
    pub const PASSED: &str = "Passed";
}

/// Reasons of an EvalJob's `Passed` condition (and the Event of a failed gate).
pub mod gate {
    /// Every criterion of `spec.passCriteria` held.
    pub const CRITERIA_MET: &str = "CriteriaMet";
    /// Some criterion did not hold; the message names each, measured against its threshold.
    pub const CRITERIA_NOT_MET: &str = "CriteriaNotMet";
    /// No `spec.passCriteria`, and every case passed.
    pub const ALL_CASES_PASSED: &str = "AllCasesPassed";
    /// No `spec.passCriteria`, and some case failed or errored.
    pub const CASES_NOT_PASSED: &str = "CasesNotPassed";
    /// The run did not complete (phase Failed): nothing to judge.
    pub const RUN_FAILED: &str = "RunFailed";
}

/// Shared by both kinds: a model's lifecycle, and its reasons.
pub const MODEL_DEPRECATED: &str = "ModelDeprecated";
/// ModelDeprecated reasons (and, for Retired, the Validated reason of a key whose model is gone).
pub mod lifecycle {
    pub const DEPRECATED: &str = "Deprecated";
    pub const RETIRED: &str = "ModelRetired";
    pub const CURRENT: &str = "Current";
}

/// kstatus (sigs.k8s.io/cli-utils) conventions, on both kinds: with `Ready` and
/// `status.observedGeneration`, Argo CD, Flux and `kubectl wait` read an object's health without
/// custom code. Reconciling True = still converging; Stalled True = stuck until a person acts.
pub mod kstatus {
    pub const RECONCILING: &str = "Reconciling";
    pub const STALLED: &str = "Stalled";
}

/// Where an object stands, in kstatus' words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Converged: neither Reconciling nor Stalled.
    Current,
    /// Still converging (waiting for something that will come by itself): reason and message.
    Reconciling(String, String),
    /// Stuck until someone changes something: reason and message.
    Stalled(String, String),
}

/// Sets Reconciling and Stalled from `progress`; the one that does not hold is removed, as Flux's
/// controllers do (kstatus reads an absent condition as False).
pub fn set_progress(conditions: &mut Vec<Condition>, progress: &Progress, generation: Option<i64>, now: &Time) {
    let (reconciling, stalled) = match progress {
        Progress::Current => (None, None),
        Progress::Reconciling(reason, message) => (Some((reason, message)), None),
        Progress::Stalled(reason, message) => (None, Some((reason, message))),
    };
    for (type_, on) in [(kstatus::RECONCILING, reconciling), (kstatus::STALLED, stalled)] {
        match on {
            Some((reason, message)) => {
                set_condition(conditions, type_, "True", reason, message.as_str(), generation, now)
            }
            None => conditions.retain(|c| c.type_ != type_),
        }
    }
}

/// Sets a condition, keeping its transition time when its status did not change.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: &Time,
) {
    let status = status.to_string();
    let message = truncate(message.into(), 1024);
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now.clone();
            }
            c.status = status;
            c.reason = reason.into();
            c.message = message;
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message,
            observed_generation: generation,
            last_transition_time: now.clone(),
        }),
    }
}

pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_transition_time_moves_only_on_status_change() {
        let t1 = Time(jiff::Timestamp::from_second(1).expect("time"));
        let t2 = Time(jiff::Timestamp::from_second(2).expect("time"));
        let mut cs = vec![];
        set_condition(&mut cs, "Ready", "True", "Validated", "ok", Some(1), &t1);
        set_condition(&mut cs, "Ready", "True", "Validated", "still ok", Some(2), &t2);
        assert_eq!(cs[0].last_transition_time, t1);
        set_condition(&mut cs, "Ready", "False", "Invalid", "no", Some(2), &t2);
        assert_eq!(cs[0].last_transition_time, t2);
        assert_eq!(cs.len(), 1);
    }
}
