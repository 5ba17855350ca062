//! Evaluation reports and run-to-run comparison, from runs already read (`kubectl byok eval report`
//! and `eval compare` read them; nothing here talks to the cluster): per-scorer statistics and score
//! histograms ([`Run::scorer_stats`]), the comparison of two runs ([`compare`]), the estimated cost
//! ([`prices`]) and the self-contained HTML page ([`html`]).

pub mod compare;
pub mod html;
pub mod prices;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::crd::{EvalCase, Provider, Summary, TokenUsage};
use crate::judge::summary::{case_outcome, summarize, usage};
use crate::judge::wire::{CaseResult, Outcome};

/// What the EvalJob says about its run.
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunMeta {
    pub name: String,
    pub namespace: String,
    /// `Succeeded` or `Failed`.
    pub phase: String,
    pub provider: Option<Provider>,
    pub model: Option<String>,
    pub key_ref: Option<String>,
    pub key_prefix: Option<String>,
    /// The KEK the key is sealed under (the ByokKey's, when the report is made).
    pub kek_id: Option<String>,
    pub start_time: Option<jiff::Timestamp>,
    pub completion_time: Option<jiff::Timestamp>,
    /// The summary the operator computed from the results it verified.
    pub summary: Option<Summary>,
}

/// One finished run: its metadata, its scorers (in the EvalJob's order), its case results (in
/// case order) and the text of its cases by line, from the run's own snapshot of them.
#[derive(Clone, Debug, Default)]
pub struct Run {
    pub meta: RunMeta,
    pub scorers: Vec<String>,
    pub results: Vec<CaseResult>,
    pub cases: BTreeMap<u32, EvalCase>,
}

/// Bins of a score histogram over 0..1: `[0, 0.1)`, ..., `[0.9, 1.0]`.
pub const BINS: usize = 10;

/// One scorer over a run.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScorerStats {
    pub name: String,
    pub passed: i64,
    pub failed: i64,
    pub errored: i64,
    /// Passed over every case the scorer judged (errored ones count as not passed).
    pub pass_rate: Option<f64>,
    pub mean_score: Option<f64>,
    /// A judge panel's agreement (see [`crate::crd::ScorerSummary::agreement`]).
    pub agreement: Option<f64>,
    /// Scores per bin of [`BINS`]; errored results have no score and are in `errored` alone.
    pub histogram: [u64; BINS],
}

impl Run {
    /// Per-scorer counts and means ([`summarize`], the operator's own), pass rates and histograms.
    pub fn scorer_stats(&self) -> Vec<ScorerStats> {
        let summary = summarize(&self.results, &self.scorers);
        summary
            .scorers
            .into_iter()
            .map(|s| {
                let judged = s.passed + s.failed + s.errored;
                let mut histogram = [0; BINS];
                let scores = self.results.iter().flat_map(|r| &r.scores).filter(|x| x.scorer == s.name);
                for value in scores.filter_map(|x| x.score).filter(|v| v.is_finite()) {
                    histogram[bin(value)] += 1;
                }
                ScorerStats {
                    pass_rate: (judged > 0).then(|| s.passed as f64 / judged as f64),
                    mean_score: s.mean_score,
                    agreement: s.agreement,
                    histogram,
                    passed: s.passed,
                    failed: s.failed,
                    errored: s.errored,
                    name: s.name,
                }
            })
            .collect()
    }

    /// The cases as a whole: passed, failed, errored, and the mean of every score.
    pub fn summary(&self) -> Summary {
        summarize(&self.results, &self.scorers)
    }

    /// Tokens the judge model was billed for.
    pub fn usage(&self) -> TokenUsage {
        usage(&self.results)
    }

    /// The cases some scorer did not pass, in case order.
    pub fn failures(&self) -> impl Iterator<Item = &CaseResult> {
        self.results.iter().filter(|r| case_outcome(r, &self.scorers) != Outcome::Passed)
    }

    /// Whether the results read agree with the summary the operator wrote from the results it
    /// verified. The command line cannot check the broker's signature on the results ConfigMaps;
    /// a namespace editor could have changed them since.
    pub fn agrees_with_status(&self) -> bool {
        let Some(status) = &self.meta.summary else { return true };
        let read = self.summary();
        let counts = |s: &Summary| (s.passed, s.failed, s.errored);
        let scorers = |s: &Summary| s.scorers.iter().map(|x| (x.passed, x.failed, x.errored)).collect::<Vec<_>>();
        counts(&read) == counts(status) && scorers(&read) == scorers(status)
    }
}

/// The histogram bin of a score in 0..1 (out-of-range scores go to the nearest end).
fn bin(score: f64) -> usize {
    ((score.clamp(0.0, 1.0) * BINS as f64) as usize).min(BINS - 1)
}

/// A case's key across runs: its id, and which occurrence of that id it is (ids may repeat).
pub(crate) fn case_keys(results: &[CaseResult]) -> Vec<(String, usize)> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    results
        .iter()
        .map(|r| {
            let n = seen.entry(r.id.as_str()).or_insert(0);
            *n += 1;
            (r.id.clone(), *n)
        })
        .collect()
}

/// A case key as people read it: the id, with `#2` for its second occurrence.
pub fn case_label(id: &str, occurrence: usize) -> String {
    if occurrence > 1 { format!("{id} #{occurrence}") } else { id.to_string() }
}

/// A fraction as a percentage with one decimal.
pub fn percent(fraction: f64) -> String {
    format!("{:.1}%", fraction * 100.0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crd::ScorerSummary;
    use crate::judge::wire::ScoreResult;

    pub fn score(scorer: &str, outcome: Outcome, score: Option<f64>, reason: &str) -> ScoreResult {
        ScoreResult { scorer: scorer.into(), outcome, score, reason: reason.into(), agreed: None }
    }

    /// A case scored by `llm_judge` (`judge`) and `contains` (pass or fail).
    pub fn case(id: &str, line: u32, judge: Option<f64>, contains: bool) -> CaseResult {
        let judged = match judge {
            Some(v) if v >= 0.5 => score("llm_judge", Outcome::Passed, Some(v), "fine"),
            Some(v) => score("llm_judge", Outcome::Failed, Some(v), "not correct"),
            None => score("llm_judge", Outcome::Errored, None, "ProviderError: 500"),
        };
        let contained = if contains {
            score("contains", Outcome::Passed, Some(1.0), "output contains the expected text")
        } else {
            score("contains", Outcome::Failed, Some(0.0), "output does not contain the expected text")
        };
        CaseResult { id: id.into(), line, scores: vec![judged, contained], input_tokens: 100, output_tokens: 20 }
    }

    pub fn run(name: &str, results: Vec<CaseResult>) -> Run {
        let cases = results
            .iter()
            .map(|r| {
                let c = EvalCase {
                    id: Some(r.id.clone()),
                    input: format!("question {}", r.id),
                    output: format!("answer {}", r.id),
                    expected: Some("answer".into()),
                };
                (r.line, c)
            })
            .collect();
        let meta = RunMeta {
            name: name.into(),
            namespace: "team-a".into(),
            phase: "Succeeded".into(),
            provider: Some(Provider::OpenAi),
            model: Some("gpt-5.1".into()),
            ..RunMeta::default()
        };
        Run { meta, scorers: vec!["llm_judge".into(), "contains".into()], results, cases }
    }

    #[test]
    fn scorer_stats_count_rate_mean_and_bin() {
        let r =
            run("a", vec![case("c1", 1, Some(0.95), true), case("c2", 2, Some(0.2), false), case("c3", 3, None, true)]);
        let stats = r.scorer_stats();
        let judge = &stats[0];
        assert_eq!((judge.name.as_str(), judge.passed, judge.failed, judge.errored), ("llm_judge", 1, 1, 1));
        assert!((judge.pass_rate.expect("rate") - 1.0 / 3.0).abs() < 1e-9);
        assert!((judge.mean_score.expect("mean") - 0.575).abs() < 1e-9);
        let mut want = [0; BINS];
        (want[2], want[9]) = (1, 1);
        assert_eq!(judge.histogram, want, "0.2 in [0.2, 0.3), 0.95 in the last bin, errored in none");
        assert_eq!(stats[1].histogram[0] + stats[1].histogram[9], 3);
        assert_eq!((bin(1.0), bin(0.0), bin(-3.0), bin(7.0), bin(0.1)), (9, 0, 0, 9, 1));
        assert_eq!(r.failures().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["c2", "c3"]);
        assert_eq!(r.usage(), TokenUsage { input_tokens: 300, output_tokens: 60 });
        let empty = run("e", vec![]).scorer_stats();
        assert_eq!((empty[0].pass_rate, empty[0].mean_score), (None, None));
    }

    #[test]
    fn results_that_disagree_with_status_are_noticed() {
        let mut r = run("a", vec![case("c1", 1, Some(0.9), true), case("c2", 2, Some(0.1), true)]);
        assert!(r.agrees_with_status(), "no summary in status: nothing to disagree with");
        r.meta.summary = Some(r.summary());
        assert!(r.agrees_with_status());
        let mut edited = r.summary();
        edited.passed = 2;
        edited.failed = 0;
        edited.scorers[0] = ScorerSummary { passed: 2, failed: 0, ..edited.scorers[0].clone() };
        r.meta.summary = Some(edited);
        assert!(!r.agrees_with_status(), "a results ConfigMap edited after the run");
    }

    #[test]
    fn repeated_ids_are_told_apart() {
        let keys = case_keys(&[case("a", 1, None, true), case("b", 2, None, true), case("a", 3, None, true)]);
        assert_eq!(keys, [("a".to_string(), 1), ("b".to_string(), 1), ("a".to_string(), 2)]);
        assert_eq!((case_label("a", 1), case_label("a", 2)), ("a".to_string(), "a #2".to_string()));
        assert_eq!(percent(0.4567), "45.7%");
    }
}
