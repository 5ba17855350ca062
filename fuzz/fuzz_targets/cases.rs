//! The JSON Lines cases of an EvalJob (the evaluator's ConfigMap): every non-blank line is one
//! case or one malformed line with a reason, never a panic; the shards split the lines exactly.
#![no_main]

use byok_operator::judge::cases::{parse_cases, parse_shard};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let all = parse_cases(text);
    let body = text.strip_prefix('\u{feff}').unwrap_or(text);
    assert_eq!(all.len(), body.lines().filter(|l| !l.trim().is_empty()).count(), "one entry per non-blank line");
    for case in &all {
        if let Some(reason) = case.malformed_reason() {
            assert!(reason.starts_with("MalformedCase: line "), "{reason}");
        }
    }
    let shards: usize = (0..3).map(|s| parse_shard(text, s, 3).len()).sum();
    assert_eq!(shards, all.len(), "three shards hold every case once");
});
