//! The EvalJob status summary and token usage, computed from case results. Pure: the judge logs
//! it and the operator writes it into status from all shards' results.

use super::wire::{CaseResult, Outcome};
use crate::crd::{ScorerSummary, Summary, TokenUsage};

/// How the case as a whole came out: errored if any scorer errored (or a scorer of the run has no
/// result for it), passed if every scorer passed, failed otherwise.
pub fn case_outcome(result: &CaseResult, scorer_names: &[String]) -> Outcome {
    let missing = scorer_names.iter().any(|name| !result.scores.iter().any(|s| &s.scorer == name));
    if missing || result.scores.iter().any(|s| s.outcome == Outcome::Errored) {
        Outcome::Errored
    } else if result.scores.iter().all(|s| s.outcome == Outcome::Passed) {
        Outcome::Passed
    } else {
        Outcome::Failed
    }
}

/// Summary over cases (passed/failed/errored), the mean of every score given, and per scorer.
pub fn summarize(results: &[CaseResult], scorer_names: &[String]) -> Summary {
    let mut summary = Summary::default();
    let mut all = Mean::default();
    let mut per_scorer: Vec<(ScorerSummary, Mean, Vec<bool>)> = scorer_names
        .iter()
        .map(|name| (ScorerSummary { name: name.clone(), ..ScorerSummary::default() }, Mean::default(), Vec::new()))
        .collect();
    for result in results {
        match case_outcome(result, scorer_names) {
            Outcome::Passed => summary.passed += 1,
            Outcome::Failed => summary.failed += 1,
            Outcome::Errored => summary.errored += 1,
        }
        for score in &result.scores {
            if let Some(value) = score.score {
                all.add(value);
            }
            if let Some((entry, mean, agreed)) = per_scorer.iter_mut().find(|(entry, ..)| entry.name == score.scorer) {
                agreed.extend(score.agreed);
                match score.outcome {
                    Outcome::Passed => entry.passed += 1,
                    Outcome::Failed => entry.failed += 1,
                    Outcome::Errored => entry.errored += 1,
                }
                if let Some(value) = score.score {
                    mean.add(value);
                }
            }
        }
    }
    summary.mean_score = all.value();
    summary.scorers = per_scorer
        .into_iter()
        .map(|(entry, mean, agreed)| ScorerSummary {
            mean_score: mean.value(),
            agreement: super::panel::agreement(agreed.into_iter().map(Some)),
            ..entry
        })
        .collect();
    summary
}

/// Tokens billed over all cases.
pub fn usage(results: &[CaseResult]) -> TokenUsage {
    let to_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    results.iter().fold(TokenUsage::default(), |total, r| TokenUsage {
        input_tokens: total.input_tokens.saturating_add(to_i64(r.input_tokens)),
        output_tokens: total.output_tokens.saturating_add(to_i64(r.output_tokens)),
    })
}

#[derive(Default)]
struct Mean {
    sum: f64,
    count: u64,
}

impl Mean {
    fn add(&mut self, value: f64) {
        if value.is_finite() {
            self.sum += value;
            self.count += 1;
        }
    }

    fn value(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::wire::ScoreResult;

    fn score(scorer: &str, outcome: Outcome, score: Option<f64>) -> ScoreResult {
        ScoreResult { scorer: scorer.into(), outcome, score, reason: String::new(), agreed: None }
    }

    fn case(id: &str, scores: Vec<ScoreResult>, tokens: (u64, u64)) -> CaseResult {
        CaseResult { id: id.into(), line: 1, scores, input_tokens: tokens.0, output_tokens: tokens.1 }
    }

    fn names() -> Vec<String> {
        vec!["llm_judge".into(), "exact_match".into()]
    }

    #[test]
    fn a_panels_agreement_is_the_share_of_cases_its_judges_agreed_on() {
        let agreed = |a: Option<bool>| ScoreResult { agreed: a, ..score("llm_judge", Outcome::Passed, Some(0.9)) };
        let results: Vec<CaseResult> = [Some(true), Some(false), None, Some(true)]
            .into_iter()
            .map(|a| case("c", vec![agreed(a), score("exact_match", Outcome::Passed, Some(1.0))], (0, 0)))
            .collect();
        let summary = summarize(&results, &names());
        let agreement: Vec<Option<f64>> = summary.scorers.iter().map(|s| s.agreement).collect();
        assert_eq!(agreement, [Some(2.0 / 3.0), None], "the judge scorer's, and none for a scorer that is not a panel");
    }

    #[test]
    fn counts_cases_and_scorers() {
        let results = vec![
            case(
                "pass",
                vec![score("llm_judge", Outcome::Passed, Some(0.9)), score("exact_match", Outcome::Passed, Some(1.0))],
                (10, 5),
            ),
            case(
                "fail",
                vec![score("llm_judge", Outcome::Failed, Some(0.2)), score("exact_match", Outcome::Passed, Some(1.0))],
                (20, 6),
            ),
            case(
                "error",
                vec![score("llm_judge", Outcome::Errored, None), score("exact_match", Outcome::Failed, Some(0.0))],
                (0, 0),
            ),
        ];
        let s = summarize(&results, &names());
        assert_eq!((s.passed, s.failed, s.errored), (1, 1, 1));
        let mean = s.mean_score.unwrap();
        assert!((mean - (0.9 + 1.0 + 0.2 + 1.0 + 0.0) / 5.0).abs() < 1e-9, "{mean}");
        let llm = &s.scorers[0];
        assert_eq!((llm.name.as_str(), llm.passed, llm.failed, llm.errored), ("llm_judge", 1, 1, 1));
        assert!((llm.mean_score.unwrap() - 0.55).abs() < 1e-9);
        let exact = &s.scorers[1];
        assert_eq!((exact.passed, exact.failed, exact.errored), (2, 1, 0));
        assert_eq!(usage(&results), TokenUsage { input_tokens: 30, output_tokens: 11 });
    }

    #[test]
    fn empty_and_missing() {
        let s = summarize(&[], &names());
        assert_eq!((s.passed, s.failed, s.errored, s.mean_score), (0, 0, 0, None));
        assert_eq!(s.scorers.len(), 2);
        assert_eq!(s.scorers[0].mean_score, None);
        // A case without a result for a scorer of the run is errored, never passed.
        let partial = case("p", vec![score("llm_judge", Outcome::Passed, Some(1.0))], (0, 0));
        assert_eq!(case_outcome(&partial, &names()), Outcome::Errored);
        assert_eq!(case_outcome(&partial, &[]), Outcome::Passed);
        assert_eq!(usage(&[case("big", vec![], (u64::MAX, 1))]).input_tokens, i64::MAX);
    }
}
