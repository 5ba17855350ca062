//! Deterministic verdicts and token counts, so tests can predict every answer.
//!
//! - Score: `mock-score=<float>` anywhere in the system or user prompt, else [`mock_score`] of the
//!   user message (FNV-1a mod 101, divided by 100: 0.00 to 1.00).
//! - Pass: `mock-pass=true|false` in the prompt, else `score >= 0.5`.
//! - `mock-refuse` in the prompt makes the model refuse, in each provider's refusal shape.
//! - Tokens: [`mock_tokens`] = words * 4 / 3, rounded; output = reason tokens + 6.

use crate::providers::{Usage, Verdict};

use super::state::fnv1a64;

/// The score for a user message that names none: FNV-1a 64 of its bytes, mod 101, / 100.
pub fn mock_score(user: &str) -> f64 {
    (fnv1a64(user.as_bytes()) % 101) as f64 / 100.0
}

/// Token count of a text: whitespace-separated words * 4 / 3, rounded to nearest.
pub fn mock_tokens(text: &str) -> u64 {
    let words = text.split_whitespace().count() as u64;
    (words * 4 + 1) / 3
}

/// The value after `name=` in the prompt, up to the next whitespace or punctuation that ends it.
fn directive<'a>(prompt: &'a str, name: &str) -> Option<&'a str> {
    let start = prompt.find(name)? + name.len();
    let rest = prompt[start..].strip_prefix('=')?;
    let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))).unwrap_or(rest.len());
    // A sentence may end right after the value: "mock-pass=false."
    Some(rest[..end].trim_end_matches('.'))
}

/// The verdict the mock returns for a prompt.
pub fn mock_verdict(system: &str, user: &str) -> Verdict {
    let prompt = format!("{system}\n{user}");
    let explicit = directive(&prompt, "mock-score").and_then(|v| v.parse::<f64>().ok());
    let score = explicit.filter(|s| s.is_finite()).unwrap_or_else(|| mock_score(user));
    let pass = match directive(&prompt, "mock-pass") {
        Some("true") => true,
        Some("false") => false,
        _ => score >= 0.5,
    };
    let source = if explicit.is_some() { "set by the prompt" } else { "from the prompt hash" };
    Verdict { score, pass, reason: format!("mock verdict: score {score} {source}") }
}

/// Whether the prompt asks the mock model to refuse.
pub fn mock_refuses(system: &str, user: &str) -> bool {
    system.contains("mock-refuse") || user.contains("mock-refuse")
}

/// Output tokens of a verdict: the reason's tokens plus 6 for the JSON structure.
pub fn mock_output_tokens(verdict: &Verdict) -> u64 {
    mock_tokens(&verdict.reason) + 6
}

/// The usage the mock reports for a prompt answered in full.
pub fn mock_usage(system: &str, user: &str) -> Usage {
    Usage {
        input_tokens: mock_tokens(system) + mock_tokens(user),
        output_tokens: mock_output_tokens(&mock_verdict(system, user)),
    }
}

/// How a model spends its output-token limit on a verdict. Thinking comes first and counts
/// against the same limit as the answer (`max_completion_tokens`, `maxOutputTokens`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Spend {
    /// Thought `thinking` tokens, then wrote the whole verdict in `verdict` tokens.
    Complete { thinking: u64, verdict: u64 },
    /// Ran out at the limit (`total`): `thinking` of those tokens went to thoughts (all of them
    /// when the limit fell inside the thinking), and the verdict was not finished.
    Truncated { thinking: u64, total: u64 },
}

/// What a model spends when it thinks `thinking` tokens before a verdict of `verdict` tokens,
/// under an optional output limit.
pub(crate) fn spend(thinking: u64, verdict: u64, limit: Option<u64>) -> Spend {
    match limit {
        Some(limit) if thinking.checked_add(verdict).is_none_or(|needed| limit < needed) => {
            Spend::Truncated { thinking: thinking.min(limit), total: limit }
        }
        _ => Spend::Complete { thinking, verdict },
    }
}

/// The verdict as the JSON text a model would write.
pub(crate) fn verdict_json(verdict: &Verdict) -> String {
    serde_json::json!({"score": verdict.score, "pass": verdict.pass, "reason": verdict.reason}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_directives() {
        let v = mock_verdict("Judge strictly. mock-score=0.83", "the answer");
        assert_eq!(v.score, 0.83);
        assert!(v.pass);
        assert_eq!(v.reason, "mock verdict: score 0.83 set by the prompt");
        let v = mock_verdict("", "mock-score=0.9, mock-pass=false.");
        assert_eq!((v.score, v.pass), (0.9, false));
        let v = mock_verdict("", "mock-score=0.2 mock-pass=true");
        assert_eq!((v.score, v.pass), (0.2, true));
    }

    #[test]
    fn hashed_score_is_stable_and_in_range() {
        let a = mock_verdict("sys", "What is 2+2? 4");
        assert_eq!(a, mock_verdict("other sys", "What is 2+2? 4"));
        assert!((0.0..=1.0).contains(&a.score));
        assert_eq!(a.score, mock_score("What is 2+2? 4"));
        // FNV-1a of "" is the offset basis.
        assert_eq!(mock_score(""), (0xcbf2_9ce4_8422_2325u64 % 101) as f64 / 100.0);
        assert_eq!(
            mock_verdict("", "mock-score=abc").reason,
            format!("mock verdict: score {} from the prompt hash", mock_score("mock-score=abc"))
        );
    }

    #[test]
    fn token_counts() {
        assert_eq!(mock_tokens(""), 0);
        assert_eq!(mock_tokens("one"), 1);
        assert_eq!(mock_tokens("one two"), 3);
        assert_eq!(mock_tokens("a b c"), 4);
        let usage = mock_usage("Judge strictly. mock-score=0.83", "the answer");
        // 3 words -> 4, 2 words -> 3; the reason has 8 words -> 11, + 6.
        assert_eq!(usage, Usage { input_tokens: 7, output_tokens: 17 });
    }

    #[test]
    fn thinking_counts_against_the_limit() {
        assert_eq!(spend(0, 17, None), Spend::Complete { thinking: 0, verdict: 17 });
        assert_eq!(spend(512, 17, None), Spend::Complete { thinking: 512, verdict: 17 });
        assert_eq!(spend(512, 17, Some(529)), Spend::Complete { thinking: 512, verdict: 17 });
        // One token short of thinking + verdict: the verdict is lost.
        assert_eq!(spend(512, 17, Some(528)), Spend::Truncated { thinking: 512, total: 528 });
        // The limit falls inside the thinking: every token went to thoughts.
        assert_eq!(spend(512, 17, Some(100)), Spend::Truncated { thinking: 100, total: 100 });
        assert_eq!(spend(0, 17, Some(10)), Spend::Truncated { thinking: 0, total: 10 });
        assert_eq!(spend(u64::MAX, 17, Some(u64::MAX)), Spend::Truncated { thinking: u64::MAX, total: u64::MAX });
    }
}
