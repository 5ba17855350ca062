//! The verdict a judge model writes as text (the model's output: anything): a verdict or an
//! error, never a panic; a verdict's score is a number in 0..1 and its reason is bounded.
#![no_main]

use byok_operator::providers::answers::verdict_text;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(v) = verdict_text(text) {
        assert!((0.0..=1.0).contains(&v.score), "score {}", v.score);
        assert!(v.reason.chars().count() <= 4000);
    }
});
