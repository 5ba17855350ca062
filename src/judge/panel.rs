//! A judge panel: several judges score the same case, and their verdicts make one. Pure, so each
//! way of aggregating, and what a missing judge does to it, is unit-tested.
//!
//! A judge that could not answer (its key revoked, its provider down) errors only its own verdict:
//! the case is judged by the judges that answered, and errors only when none did.

use serde::{Deserialize, Serialize};

use super::wire::Outcome;

pub use crate::crd::Aggregate;

/// One judge's verdict on one case: a score in 0..1, or why there is none.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JudgeVerdict {
    /// Which judge: `provider/model`.
    pub judge: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// The judge's reason, or the error.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// The panel's verdict on a case.
#[derive(Clone, Debug, PartialEq)]
pub struct PanelVerdict {
    pub outcome: Outcome,
    pub score: Option<f64>,
    pub reason: String,
    /// Whether every judge that answered came to the same pass or fail (None: fewer than two answered).
    pub agreed: Option<bool>,
}

/// Aggregates `verdicts` at `threshold` (a case passes at or above it).
pub fn aggregate(verdicts: &[JudgeVerdict], how: Aggregate, threshold: f64) -> PanelVerdict {
    let answered: Vec<f64> = verdicts.iter().filter_map(|v| v.score).collect();
    let missing: Vec<&str> = verdicts.iter().filter(|v| v.score.is_none()).map(|v| v.judge.as_str()).collect();
    if answered.is_empty() {
        let why = verdicts.iter().map(|v| format!("{}: {}", v.judge, v.reason)).collect::<Vec<_>>().join("; ");
        return PanelVerdict { outcome: Outcome::Errored, score: None, reason: why, agreed: None };
    }
    let passes = answered.iter().filter(|s| **s >= threshold).count();
    let score = match how {
        Aggregate::Mean => answered.iter().sum::<f64>() / answered.len() as f64,
        Aggregate::Majority => passes as f64 / answered.len() as f64,
        Aggregate::Minimum => answered.iter().copied().fold(f64::INFINITY, f64::min),
    };
    let passed = match how {
        Aggregate::Mean | Aggregate::Minimum => score >= threshold,
        Aggregate::Majority => passes * 2 > answered.len(),
    };
    let agreed = (answered.len() >= 2).then_some(passes == 0 || passes == answered.len());
    if passed && how == Aggregate::Minimum && !missing.is_empty() {
        // Every judge must pass it: one that did not answer cannot be taken to have passed it.
        let reason = format!(
            "{passes} of {} judges passed it; minimum needs every judge, and {} gave no verdict",
            verdicts.len(),
            missing.join(", ")
        );
        return PanelVerdict { outcome: Outcome::Errored, score: None, reason, agreed };
    }
    let mut reason = format!("{passes} of {} judges passed it ({how:?} {score:.2})", answered.len());
    if !missing.is_empty() {
        reason.push_str(&format!("; no verdict from {}", missing.join(", ")));
    }
    PanelVerdict { outcome: if passed { Outcome::Passed } else { Outcome::Failed }, score: Some(score), reason, agreed }
}

/// Agreement of a panel over many cases: the share of cases (with two or more verdicts) on which
/// every judge came to the same pass or fail. None when no case had two verdicts.
pub fn agreement(verdicts: impl IntoIterator<Item = Option<bool>>) -> Option<f64> {
    let (mut cases, mut agreed) = (0u32, 0u32);
    for v in verdicts.into_iter().flatten() {
        cases += 1;
        agreed += u32::from(v);
    }
    (cases > 0).then(|| f64::from(agreed) / f64::from(cases))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(judge: &str, score: Option<f64>) -> JudgeVerdict {
        let reason = if score.is_some() { "fine".into() } else { "KeyRevoked: the key was revoked".into() };
        JudgeVerdict { judge: judge.into(), score, reason }
    }

    #[test]
    fn each_aggregate_reads_the_same_verdicts_its_own_way() {
        let panel = [v("openai/gpt-5.1", Some(0.9)), v("anthropic/claude", Some(0.6)), v("google/gemini", Some(0.2))];
        let mean = aggregate(&panel, Aggregate::Mean, 0.5);
        assert_eq!((mean.outcome, mean.agreed), (Outcome::Passed, Some(false)));
        assert!((mean.score.expect("score") - 0.5667).abs() < 1e-3);
        let majority = aggregate(&panel, Aggregate::Majority, 0.5);
        assert_eq!(majority.outcome, Outcome::Passed, "2 of 3");
        let minimum = aggregate(&panel, Aggregate::Minimum, 0.5);
        assert_eq!((minimum.outcome, minimum.score), (Outcome::Failed, Some(0.2)));
        assert!(minimum.reason.starts_with("2 of 3 judges passed it"), "{}", minimum.reason);
    }

    #[test]
    fn a_tie_is_no_majority() {
        let panel = [v("a", Some(0.9)), v("b", Some(0.1))];
        assert_eq!(aggregate(&panel, Aggregate::Majority, 0.5).outcome, Outcome::Failed);
    }

    #[test]
    fn a_judge_without_a_verdict_errors_only_its_own() {
        let panel = [v("openai/gpt-5.1", Some(0.8)), v("anthropic/claude", None)];
        let verdict = aggregate(&panel, Aggregate::Mean, 0.5);
        assert_eq!((verdict.outcome, verdict.agreed), (Outcome::Passed, None));
        assert!(verdict.reason.ends_with("no verdict from anthropic/claude"), "{}", verdict.reason);
        // Minimum needs every judge's pass: a missing verdict is no pass (the gate fails closed)...
        let strict = aggregate(&panel, Aggregate::Minimum, 0.5);
        assert_eq!((strict.outcome, strict.score), (Outcome::Errored, None), "{}", strict.reason);
        assert!(strict.reason.contains("anthropic/claude gave no verdict"), "{}", strict.reason);
        // ...but a fail of one that answered is a fail whatever the others would say.
        let failed = aggregate(&[v("a", Some(0.1)), v("b", None)], Aggregate::Minimum, 0.5);
        assert_eq!(failed.outcome, Outcome::Failed);
        let none = aggregate(&[v("a", None), v("b", None)], Aggregate::Mean, 0.5);
        assert_eq!((none.outcome, none.score), (Outcome::Errored, None));
        assert!(none.reason.contains("a: KeyRevoked") && none.reason.contains("b: KeyRevoked"), "{}", none.reason);
    }

    #[test]
    fn agreement_counts_only_cases_with_two_verdicts() {
        assert_eq!(agreement([Some(true), Some(false), None, Some(true), Some(true)]), Some(0.75));
        assert_eq!(agreement([None, None]), None);
    }
}
