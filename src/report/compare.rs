//! Two runs over the same cases, matched by case id: which cases regressed (a scorer that passed
//! the case in the baseline does not pass it now) or improved (one that did not pass now does),
//! how each scorer's pass rate and mean score moved, and the cases only one run has.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::Serialize;

use super::{Run, ScorerStats, case_keys, case_label};
use crate::judge::wire::{CaseResult, Outcome};

/// How a case moved from the baseline to the candidate.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Change {
    /// A scorer that passed it in the baseline does not pass it now.
    Regressed,
    /// No scorer regressed, and one that did not pass it in the baseline passes it now.
    Improved,
    Unchanged,
}

/// One scorer on one case, in both runs.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScoreChange {
    pub scorer: String,
    pub baseline: Outcome,
    pub candidate: Outcome,
    pub baseline_score: Option<f64>,
    pub candidate_score: Option<f64>,
    /// The candidate's reason (why it fails now, or passes now).
    pub reason: String,
}

/// A case in both runs.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CaseChange {
    /// The case id (`id #2` for a repeated id's second case).
    pub case: String,
    pub change: Change,
    /// The scorers whose outcome moved.
    pub scorers: Vec<ScoreChange>,
}

/// One scorer over both runs (whole runs, as each run's own report shows them).
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScorerDelta {
    pub name: String,
    pub baseline: Option<ScorerStats>,
    pub candidate: Option<ScorerStats>,
    /// Candidate minus baseline, as a fraction.
    pub pass_rate_delta: Option<f64>,
    pub mean_score_delta: Option<f64>,
}

/// The comparison of a candidate run with its baseline.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Comparison {
    pub baseline: String,
    pub candidate: String,
    /// Cases in both runs.
    pub compared: usize,
    pub regressed: usize,
    pub improved: usize,
    /// The cases whose outcome moved, in the candidate's case order.
    pub changes: Vec<CaseChange>,
    pub only_in_baseline: Vec<String>,
    pub only_in_candidate: Vec<String>,
    pub scorers: Vec<ScorerDelta>,
}

/// Compares `candidate` with `baseline`.
pub fn compare(baseline: &Run, candidate: &Run) -> Comparison {
    let before: BTreeMap<(String, usize), &CaseResult> =
        case_keys(&baseline.results).into_iter().zip(&baseline.results).collect();
    let after_keys = case_keys(&candidate.results);
    let mut changes = Vec::new();
    let mut only_in_candidate = Vec::new();
    let mut compared = 0;
    let scorers = common(baseline, candidate);
    for (key, after) in after_keys.iter().zip(&candidate.results) {
        let Some(before) = before.get(key) else {
            only_in_candidate.push(case_label(&key.0, key.1));
            continue;
        };
        compared += 1;
        let change = case_change(case_label(&key.0, key.1), before, after, &scorers);
        if change.change != Change::Unchanged {
            changes.push(change);
        }
    }
    let after: std::collections::BTreeSet<&(String, usize)> = after_keys.iter().collect();
    let only_in_baseline = case_keys(&baseline.results)
        .into_iter()
        .filter(|k| !after.contains(k))
        .map(|(id, n)| case_label(&id, n))
        .collect();
    let count = |c: Change| changes.iter().filter(|x: &&CaseChange| x.change == c).count();
    Comparison {
        baseline: baseline.meta.name.clone(),
        candidate: candidate.meta.name.clone(),
        compared,
        regressed: count(Change::Regressed),
        improved: count(Change::Improved),
        changes,
        only_in_baseline,
        only_in_candidate,
        scorers: scorer_deltas(baseline, candidate),
    }
}

/// The scorers both runs have: a case is judged only on those.
fn common(baseline: &Run, candidate: &Run) -> Vec<String> {
    candidate.scorers.iter().filter(|s| baseline.scorers.contains(s)).cloned().collect()
}

fn case_change(case: String, before: &CaseResult, after: &CaseResult, scorers: &[String]) -> CaseChange {
    let find = |r: &CaseResult, name: &str| r.scores.iter().find(|s| s.scorer == name).cloned();
    let mut moved = Vec::new();
    for name in scorers {
        // A scorer without a result for the case counts as errored, as in the run's summary.
        let (b, a) = (find(before, name), find(after, name));
        let outcome = |s: &Option<crate::judge::wire::ScoreResult>| s.as_ref().map_or(Outcome::Errored, |s| s.outcome);
        let (bo, ao) = (outcome(&b), outcome(&a));
        if (bo == Outcome::Passed) != (ao == Outcome::Passed) {
            moved.push(ScoreChange {
                scorer: name.clone(),
                baseline: bo,
                candidate: ao,
                baseline_score: b.as_ref().and_then(|s| s.score),
                candidate_score: a.as_ref().and_then(|s| s.score),
                reason: a.map(|s| s.reason).unwrap_or_default(),
            });
        }
    }
    let change = if moved.iter().any(|m| m.baseline == Outcome::Passed) {
        Change::Regressed
    } else if moved.is_empty() {
        Change::Unchanged
    } else {
        Change::Improved
    };
    CaseChange { case, change, scorers: moved }
}

fn scorer_deltas(baseline: &Run, candidate: &Run) -> Vec<ScorerDelta> {
    let (before, after) = (baseline.scorer_stats(), candidate.scorer_stats());
    let mut names: Vec<&String> = after.iter().map(|s| &s.name).collect();
    names.extend(before.iter().map(|s| &s.name).filter(|n| !after.iter().any(|a| &a.name == *n)));
    names
        .into_iter()
        .map(|name| {
            let b = before.iter().find(|s| &s.name == name).cloned();
            let a = after.iter().find(|s| &s.name == name).cloned();
            let delta = |f: fn(&ScorerStats) -> Option<f64>| Some(f(a.as_ref()?)? - f(b.as_ref()?)?);
            ScorerDelta {
                name: name.clone(),
                pass_rate_delta: delta(|s| s.pass_rate),
                mean_score_delta: delta(|s| s.mean_score),
                baseline: b,
                candidate: a,
            }
        })
        .collect()
}

/// How many regressed cases are tolerated: a number of cases (`3`), or a share of the compared
/// cases (`5%`, or a fraction with a decimal point, `0.05`).
#[derive(Serialize, Clone, Copy, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum Threshold {
    Cases(usize),
    Fraction(f64),
}

impl Default for Threshold {
    fn default() -> Self {
        Self::Cases(0)
    }
}

impl FromStr for Threshold {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let fraction = |v: &str, scale: f64| match v.trim().parse::<f64>() {
            Ok(f) if f.is_finite() && (0.0..=1.0).contains(&(f / scale)) => Ok(Self::Fraction(f / scale)),
            _ => Err(format!("{s:?} is not a share of the cases: use 0 to 100% or 0.0 to 1.0")),
        };
        if let Some(p) = text.strip_suffix('%') {
            fraction(p, 100.0)
        } else if text.contains('.') {
            fraction(text, 1.0)
        } else {
            text.parse::<usize>().map(Self::Cases).map_err(|_| {
                format!("{s:?} is not a threshold: give a number of cases (3), a percentage (5%) or a fraction (0.05)")
            })
        }
    }
}

impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cases(n) => write!(f, "{n} case(s)"),
            Self::Fraction(x) => write!(f, "{} of the compared cases", super::percent(*x)),
        }
    }
}

impl Threshold {
    /// Whether the regressions are more than the threshold tolerates.
    pub fn exceeded(&self, regressed: usize, compared: usize) -> bool {
        match *self {
            Self::Cases(n) => regressed > n,
            Self::Fraction(x) => regressed as f64 > x * compared as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{case, run, score};
    use super::*;

    #[test]
    fn regressions_improvements_and_cases_in_one_run() {
        let baseline = run(
            "base",
            vec![
                case("same", 1, Some(0.9), true),
                case("worse", 2, Some(0.9), true),
                case("better", 3, Some(0.1), true),
                case("gone", 4, Some(0.9), true),
                case("both", 5, Some(0.9), false),
            ],
        );
        let candidate = run(
            "cand",
            vec![
                case("same", 1, Some(0.8), true),
                case("worse", 2, None, true),
                case("better", 3, Some(0.7), true),
                case("both", 4, Some(0.2), true),
                case("new", 5, Some(0.9), true),
            ],
        );
        let c = compare(&baseline, &candidate);
        assert_eq!((c.compared, c.regressed, c.improved), (4, 2, 1));
        let moved: Vec<(&str, Change)> = c.changes.iter().map(|x| (x.case.as_str(), x.change)).collect();
        assert_eq!(moved, [("worse", Change::Regressed), ("better", Change::Improved), ("both", Change::Regressed)]);
        let worse = &c.changes[0].scorers[0];
        assert_eq!((worse.baseline, worse.candidate, worse.candidate_score), (Outcome::Passed, Outcome::Errored, None));
        assert_eq!(worse.reason, "ProviderError: 500");
        assert_eq!(c.changes[2].scorers.len(), 2, "one scorer regressed, the other improved: both shown");
        assert_eq!((c.only_in_baseline, c.only_in_candidate), (vec!["gone".to_string()], vec!["new".to_string()]));
        let judge = &c.scorers[0];
        assert_eq!(judge.name, "llm_judge");
        assert!((judge.pass_rate_delta.expect("delta") - (3.0 / 5.0 - 4.0 / 5.0)).abs() < 1e-9, "{judge:?}");
        assert!(judge.mean_score_delta.is_some());
    }

    #[test]
    fn identical_runs_do_not_move_and_scorer_sets_may_differ() {
        let results = vec![case("a", 1, Some(0.9), true), case("b", 2, Some(0.1), false)];
        let c = compare(&run("x", results.clone()), &run("y", results.clone()));
        assert_eq!((c.compared, c.regressed, c.improved, c.changes.len()), (2, 0, 0, 0));
        assert!(c.scorers.iter().all(|s| s.pass_rate_delta == Some(0.0)));
        // A scorer only in the candidate is listed without a delta, and judges no case.
        let mut extra = run("z", results);
        extra.scorers.push("regex".into());
        extra.results[0].scores.push(score("regex", Outcome::Failed, Some(0.0), "no match"));
        let c = compare(&run("x", vec![case("a", 1, Some(0.9), true)]), &extra);
        assert_eq!(c.regressed, 0);
        let regex = c.scorers.iter().find(|s| s.name == "regex").expect("listed");
        assert_eq!((regex.baseline.is_none(), regex.pass_rate_delta), (true, None));
    }

    #[test]
    fn repeated_ids_pair_in_order() {
        let baseline = run("b", vec![case("dup", 1, Some(0.9), true), case("dup", 2, Some(0.9), true)]);
        let candidate = run("c", vec![case("dup", 1, Some(0.9), true), case("dup", 2, Some(0.1), true)]);
        let c = compare(&baseline, &candidate);
        assert_eq!(c.changes.iter().map(|x| x.case.as_str()).collect::<Vec<_>>(), ["dup #2"]);
    }

    #[test]
    fn thresholds_parse_and_decide() {
        assert_eq!("0".parse(), Ok(Threshold::Cases(0)));
        assert_eq!("3".parse(), Ok(Threshold::Cases(3)));
        assert_eq!("5%".parse(), Ok(Threshold::Fraction(0.05)));
        assert_eq!("0.1".parse(), Ok(Threshold::Fraction(0.1)));
        assert_eq!(" 100% ".parse(), Ok(Threshold::Fraction(1.0)));
        for bad in ["-1", "x", "150%", "1.5", "", "NaN%"] {
            assert!(bad.parse::<Threshold>().is_err(), "{bad}");
        }
        assert!(!Threshold::default().exceeded(0, 10));
        assert!(Threshold::default().exceeded(1, 10));
        assert!(!Threshold::Cases(2).exceeded(2, 10));
        assert!(Threshold::Fraction(0.1).exceeded(2, 10));
        assert!(!Threshold::Fraction(0.1).exceeded(1, 10));
        assert!(!Threshold::Fraction(0.0).exceeded(0, 0));
        assert_eq!(Threshold::Fraction(0.05).to_string(), "5.0% of the compared cases");
    }
}
