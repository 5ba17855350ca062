//! The verdict a judge model writes as text (the model's output: anything): a verdict or an
//! error, never a panic; a verdict's reason is bounded, and the scorer turns it into a score in
//! 0..1 or an errored result (a score outside 0..1 is never guessed at).
#![no_main]

use byok_operator::judge::scorers::verdict_result;
use byok_operator::judge::wire::Outcome;
use byok_operator::providers::answers::verdict_text;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(verdict) = verdict_text(text) else { return };
    assert!(verdict.score.is_finite(), "score {}", verdict.score);
    assert!(verdict.reason.chars().count() <= 4000);
    let result = verdict_result("judge", &verdict, 0.5);
    if (0.0..=1.0).contains(&verdict.score) {
        assert_eq!(result.score, Some(verdict.score));
        assert_eq!(result.outcome == Outcome::Passed, verdict.score >= 0.5);
    } else {
        assert_eq!(result.outcome, Outcome::Errored, "score {} taken", verdict.score);
    }
});
