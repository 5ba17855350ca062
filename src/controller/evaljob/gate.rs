//! The gate of a finished run: `spec.passCriteria` held against `status.summary` (pure). The
//! controller turns the verdict into condition `Passed`; the plugin shows the same checks.

use std::fmt;

use crate::crd::conditions::gate as reason;
use crate::crd::{PassCriteria, ScorerCriteria, ScorerSummary, Summary};

/// Slack for rates computed by division (7/10 against a threshold written 0.7).
const EPSILON: f64 = 1e-9;

/// Which side of its threshold a criterion wants the measure on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    AtLeast,
    AtMost,
}

/// One criterion, measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// The scorer it is about; None for the whole run.
    pub scorer: Option<String>,
    /// The criterion's field: `minPassRate`, `maxErrored`, `minMeanScore`.
    pub criterion: &'static str,
    /// What it measures, in words: "pass rate", "errored", "mean score".
    pub measure: &'static str,
    /// The measured value; None when there was nothing to measure (no cases, no scores).
    pub value: Option<f64>,
    /// Counts behind a rate: "3 of 4 cases".
    pub detail: Option<String>,
    pub bound: Bound,
    pub threshold: f64,
    pub met: bool,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = &self.scorer {
            write!(f, "scorer {s}: ")?;
        }
        let value = self.value.map_or_else(|| "none (nothing was scored)".to_string(), number);
        let detail = self.detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default();
        let relation = match (self.met, self.bound) {
            (true, Bound::AtLeast) => "meets",
            (true, Bound::AtMost) => "is within",
            (false, Bound::AtLeast) => "is below",
            (false, Bound::AtMost) => "is above",
        };
        write!(f, "{} {value}{detail} {relation} {} {}", self.measure, self.criterion, number(self.threshold))
    }
}

/// The gate's answer: condition `Passed`'s status, reason and message, and every check made.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub passed: bool,
    pub reason: &'static str,
    pub message: String,
    pub checks: Vec<Check>,
}

/// Holds `criteria` against the summary of a run of `total` cases. Without criteria the gate is
/// "every case passed" (reasons AllCasesPassed / CasesNotPassed): a CI gate that nobody configured
/// should not pass a run with failures.
pub fn judge(criteria: Option<&PassCriteria>, summary: &Summary, total: i64) -> Verdict {
    let default = PassCriteria { min_pass_rate: Some(1.0), ..PassCriteria::default() };
    let checks = checks(criteria.unwrap_or(&default), summary, total);
    let passed = checks.iter().all(|c| c.met);
    let reason = match (criteria.is_some(), passed) {
        (true, true) => reason::CRITERIA_MET,
        (true, false) => reason::CRITERIA_NOT_MET,
        (false, true) => reason::ALL_CASES_PASSED,
        (false, false) => reason::CASES_NOT_PASSED,
    };
    // Failures first: the first one is what a reader needs.
    let mut said: Vec<String> = checks.iter().filter(|c| !c.met).map(Check::to_string).collect();
    said.extend(checks.iter().filter(|c| c.met).map(Check::to_string));
    let mut message = said.join("; ");
    if criteria.is_none() {
        message.push_str(" (no spec.passCriteria: every case must pass)");
    }
    Verdict { passed, reason, message, checks }
}

/// Every criterion of `criteria`, measured: the run's first, then each scorer's by name.
pub fn checks(criteria: &PassCriteria, summary: &Summary, total: i64) -> Vec<Check> {
    let cases = total.max(summary.passed + summary.failed + summary.errored);
    let mut out = Vec::new();
    if let Some(min) = criteria.min_pass_rate {
        out.push(rate(None, summary.passed, cases, min));
    }
    if let Some(max) = criteria.max_errored {
        out.push(Check {
            scorer: None,
            criterion: "maxErrored",
            measure: "errored",
            value: Some(summary.errored as f64),
            detail: None,
            bound: Bound::AtMost,
            threshold: max as f64,
            met: summary.errored <= max,
        });
    }
    if let Some(min) = criteria.min_mean_score {
        out.push(mean(None, summary.mean_score, min));
    }
    for (name, c) in criteria.scorers.iter().flatten() {
        out.extend(scorer_checks(name, c, summary, cases));
    }
    out
}

/// The cases a scorer's rate is over: every case of the run, scored or not.
pub fn scorer_cases(s: &ScorerSummary, total: i64) -> i64 {
    total.max(s.passed + s.failed + s.errored)
}

/// `passed` over `cases`; None without cases.
pub fn pass_rate(passed: i64, cases: i64) -> Option<f64> {
    (cases > 0).then(|| passed as f64 / cases as f64)
}

fn scorer_checks(name: &str, c: &ScorerCriteria, summary: &Summary, cases: i64) -> Vec<Check> {
    // A scorer with no entry in the summary scored nothing: its checks fail with "none".
    let s = summary.scorers.iter().find(|s| s.name == name);
    let mut out = Vec::new();
    if let Some(min) = c.min_pass_rate {
        out.push(rate(Some(name), s.map_or(0, |s| s.passed), s.map_or(cases, |s| scorer_cases(s, cases)), min));
    }
    if let Some(min) = c.min_mean_score {
        out.push(mean(Some(name), s.and_then(|s| s.mean_score), min));
    }
    out
}

fn rate(scorer: Option<&str>, passed: i64, cases: i64, min: f64) -> Check {
    let value = pass_rate(passed, cases);
    Check {
        scorer: scorer.map(str::to_string),
        criterion: "minPassRate",
        measure: "pass rate",
        value,
        detail: Some(format!("{passed} of {cases} cases")),
        bound: Bound::AtLeast,
        threshold: min,
        met: value.is_some_and(|v| v + EPSILON >= min),
    }
}

fn mean(scorer: Option<&str>, value: Option<f64>, min: f64) -> Check {
    Check {
        scorer: scorer.map(str::to_string),
        criterion: "minMeanScore",
        measure: "mean score",
        value,
        detail: None,
        bound: Bound::AtLeast,
        threshold: min,
        met: value.is_some_and(|v| v + EPSILON >= min),
    }
}

/// A rate or count for people: at most three decimals, no trailing zeros (0.5, 0.667, 3).
pub fn number(x: f64) -> String {
    let s = format!("{x:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" { "0".into() } else { s.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(passed: i64, failed: i64, errored: i64, mean: Option<f64>) -> Summary {
        let judge =
            ScorerSummary { name: "llm_judge".into(), passed, failed, errored, mean_score: mean, agreement: None };
        Summary { passed, failed, errored, mean_score: mean, scorers: vec![judge] }
    }

    fn criteria(json: serde_json::Value) -> PassCriteria {
        serde_json::from_value(json).expect("criteria")
    }

    #[test]
    fn without_criteria_every_case_must_pass() {
        let v = judge(None, &summary(4, 0, 0, Some(0.9)), 4);
        assert!(v.passed);
        assert_eq!(v.reason, reason::ALL_CASES_PASSED);
        let v = judge(None, &summary(3, 0, 1, Some(0.9)), 4);
        assert!(!v.passed, "an errored case is not a passed one");
        assert_eq!(v.reason, reason::CASES_NOT_PASSED);
        assert!(v.message.starts_with("pass rate 0.75 (3 of 4 cases) is below minPassRate 1"), "{}", v.message);
        assert!(v.message.ends_with("(no spec.passCriteria: every case must pass)"), "{}", v.message);
    }

    #[test]
    fn each_criterion_is_measured_and_failures_come_first() {
        let c = criteria(serde_json::json!({ "minPassRate": 0.5, "maxErrored": 0, "minMeanScore": 0.6 }));
        let v = judge(Some(&c), &summary(2, 1, 1, Some(0.55)), 4);
        assert!(!v.passed);
        assert_eq!(v.reason, reason::CRITERIA_NOT_MET);
        let met: Vec<_> = v.checks.iter().map(|c| (c.criterion, c.met)).collect();
        assert_eq!(met, [("minPassRate", true), ("maxErrored", false), ("minMeanScore", false)]);
        assert_eq!(
            v.message,
            "errored 1 is above maxErrored 0; mean score 0.55 is below minMeanScore 0.6; \
             pass rate 0.5 (2 of 4 cases) meets minPassRate 0.5"
        );
        let v = judge(Some(&c), &summary(3, 1, 0, Some(0.7)), 4);
        assert!(v.passed);
        assert_eq!(v.reason, reason::CRITERIA_MET);
    }

    #[test]
    fn rates_are_exact_at_the_threshold_and_count_missing_cases_as_not_passed() {
        let c = criteria(serde_json::json!({ "minPassRate": 0.7 }));
        assert!(judge(Some(&c), &summary(7, 3, 0, None), 10).passed, "7/10 meets 0.7");
        assert!(!judge(Some(&c), &summary(7, 3, 0, None), 11).passed, "a case without a result did not pass");
        let none = judge(Some(&c), &summary(0, 0, 0, None), 0);
        assert!(!none.passed, "no cases show nothing");
        assert!(none.message.contains("pass rate none (nothing was scored) (0 of 0 cases)"), "{}", none.message);
    }

    #[test]
    fn scorer_criteria_use_the_scorer_summary() {
        let c = criteria(serde_json::json!({
            "scorers": { "llm_judge": { "minPassRate": 0.9, "minMeanScore": 0.5 }, "contains": { "minPassRate": 0.1 } }
        }));
        let v = judge(Some(&c), &summary(3, 1, 0, Some(0.8)), 4);
        assert!(!v.passed);
        let said: Vec<String> = v.checks.iter().filter(|c| !c.met).map(Check::to_string).collect();
        assert_eq!(
            said,
            [
                "scorer contains: pass rate 0 (0 of 4 cases) is below minPassRate 0.1",
                "scorer llm_judge: pass rate 0.75 (3 of 4 cases) is below minPassRate 0.9",
            ]
        );
        let mean = v.checks.iter().find(|c| c.criterion == "minMeanScore").expect("mean");
        assert!(mean.met && mean.scorer.as_deref() == Some("llm_judge"));
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(number(0.5), "0.5");
        assert_eq!(number(2.0 / 3.0), "0.667");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(1.0), "1");
    }
}
