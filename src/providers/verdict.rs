//! The structured verdict every judge call asks for, its JSON schema, and its parsing.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Longest reason we keep: verdicts end up in Kubernetes objects, which have size limits.
const MAX_REASON_CHARS: usize = 4000;

/// A judge's verdict on one case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub score: f64,
    pub pass: bool,
    pub reason: String,
}

/// Tokens billed for one call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Self) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
    }
}

/// Name of the schema (OpenAI) and of the forced tool (Anthropic).
pub(crate) const VERDICT_NAME: &str = "record_verdict";

/// JSON Schema of the verdict, strict-mode compatible (OpenAI) and usable as a tool input schema.
pub(crate) fn verdict_schema() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["score", "pass", "reason"],
        "properties": {
            "score": {"type": "number", "description": "Score from 0 to 1."},
            "pass": {"type": "boolean", "description": "Whether the output passes."},
            "reason": {"type": "string", "description": "One or two sentences explaining the score."}
        }
    })
}

/// The same schema in Gemini's OpenAPI subset (upper-case type names, property ordering).
pub(crate) fn gemini_verdict_schema() -> Value {
    json!({
        "type": "OBJECT",
        "required": ["score", "pass", "reason"],
        "propertyOrdering": ["score", "pass", "reason"],
        "properties": {
            "score": {"type": "NUMBER"},
            "pass": {"type": "BOOLEAN"},
            "reason": {"type": "STRING"}
        }
    })
}

/// Parses a verdict from model text, tolerating a Markdown code fence around the JSON.
pub(crate) fn parse_verdict_text(text: &str) -> Result<Verdict, String> {
    let trimmed = text.trim();
    let unfenced = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|rest| rest.trim_end().strip_suffix("```"))
        .unwrap_or(trimmed);
    let value: Value = serde_json::from_str(unfenced).map_err(|e| format!("verdict is not JSON ({e})"))?;
    verdict_from_value(&value)
}

/// Validates a verdict object: a finite number `score`, a boolean `pass`, a string `reason`.
pub(crate) fn verdict_from_value(value: &Value) -> Result<Verdict, String> {
    let object = value.as_object().ok_or("verdict is not a JSON object")?;
    let score = object.get("score").and_then(Value::as_f64).ok_or("verdict has no numeric score")?;
    if !score.is_finite() {
        return Err("verdict score is not finite".into());
    }
    let pass = object.get("pass").and_then(Value::as_bool).ok_or("verdict has no boolean pass")?;
    let reason = object.get("reason").and_then(Value::as_str).unwrap_or_default();
    Ok(Verdict { score, pass, reason: reason.chars().take(MAX_REASON_CHARS).collect() })
}

/// A provider's finish or stop reason as a message shows it: a short word on one line (the field
/// is the provider's, or a gateway's, and could hold any text), `missing` when there is none.
pub(crate) fn finish_word(reason: &str) -> String {
    const MAX_CHARS: usize = 32;
    let word: String = reason.chars().filter(|c| !c.is_control()).take(MAX_CHARS).collect();
    if word.trim().is_empty() { "missing".into() } else { word }
}

/// Reads a non-negative integer field, treating absent or malformed values as 0.
pub(crate) fn count(value: &Value, field: &str) -> u64 {
    value.get(field).and_then(Value::as_u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_fenced_json() {
        let v = parse_verdict_text(r#"{"score":0.9,"pass":true,"reason":"good"}"#).unwrap();
        assert_eq!(v, Verdict { score: 0.9, pass: true, reason: "good".into() });
        let v = parse_verdict_text("```json\n{\"score\":1,\"pass\":false,\"reason\":\"\"}\n```").unwrap();
        assert_eq!(v, Verdict { score: 1.0, pass: false, reason: String::new() });
    }

    #[test]
    fn rejects_malformed_verdicts() {
        for bad in [
            "",
            "not json",
            "[1,2]",
            r#"{"score":"0.9","pass":true}"#,
            r#"{"score":0.9,"pass":"yes"}"#,
            r#"{"pass":true,"reason":"x"}"#,
            r#"{"score":0.9,"pass":tr"#,
        ] {
            assert!(parse_verdict_text(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn long_reasons_are_capped() {
        let text = format!(r#"{{"score":0.5,"pass":true,"reason":"{}"}}"#, "x".repeat(10_000));
        assert_eq!(parse_verdict_text(&text).unwrap().reason.len(), MAX_REASON_CHARS);
    }
}
