//! Cases JSONL: one `EvalCase` JSON object per line. A malformed line does not stop the run: it
//! becomes an entry that every scorer reports as errored, with its line number, so a person can
//! find and fix it while the other cases still get scored.

use serde_json::Value;

use crate::crd::EvalCase;

/// Longest parse message kept for a malformed line (results end up in Kubernetes objects).
const MAX_PARSE_MESSAGE_CHARS: usize = 200;

/// One non-blank line of the cases file.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedCase {
    /// 1-based line number in the JSONL file (blank lines count).
    pub line: u32,
    /// The case's `id`, or `line-<N>`.
    pub id: String,
    pub body: CaseBody,
}

/// A line's content: a case, or why it is not one.
#[derive(Clone, Debug, PartialEq)]
pub enum CaseBody {
    Case(EvalCase),
    /// A short parse message (no line number: [`ParsedCase::line`] holds it).
    Malformed(String),
}

impl ParsedCase {
    /// The reason every scorer reports for a malformed line, e.g. `MalformedCase: line 3: ...`.
    pub fn malformed_reason(&self) -> Option<String> {
        match &self.body {
            CaseBody::Case(_) => None,
            CaseBody::Malformed(message) => Some(format!("MalformedCase: line {}: {message}", self.line)),
        }
    }
}

/// Parses every case of a JSONL document.
pub fn parse_cases(jsonl: &str) -> Vec<ParsedCase> {
    parse_shard(jsonl, 0, 1)
}

/// Parses the cases of shard `shard` of `shards`: those whose 1-based line `l` has
/// `(l - 1) % shards == shard`, the rule `JudgeConfig.shards` documents (the operator counts
/// each shard's total the same way). Lines of other shards are not even parsed.
/// `shards == 0` is treated as 1.
pub fn parse_shard(jsonl: &str, shard: u32, shards: u32) -> Vec<ParsedCase> {
    let shards = u64::from(shards.max(1));
    // A UTF-8 byte order mark, as some editors write, is not part of the first case.
    let jsonl = jsonl.strip_prefix('\u{feff}').unwrap_or(jsonl);
    jsonl
        .lines()
        .enumerate()
        .filter(|(index, _)| (*index as u64) % shards == u64::from(shard))
        .filter(|(_, text)| !text.trim().is_empty())
        .map(|(index, text)| parse_line(u32::try_from(index + 1).unwrap_or(u32::MAX), text))
        .collect()
}

/// What the operator checks of the cases before a run: results are kept by case id, so two cases
/// with one id would lose a result; a malformed line is only said (the judge errors it and runs
/// the rest).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CasesCheck {
    /// Non-blank lines.
    pub total: usize,
    /// The first id given twice: (id, its first line, the line that repeats it).
    pub duplicate: Option<(String, u32, u32)>,
    /// The malformed lines' reasons, at most [`MAX_MALFORMED_NAMED`], and how many there are.
    pub malformed: Vec<String>,
    pub malformed_count: usize,
}

/// Malformed lines named in an Event (the rest counted).
pub const MAX_MALFORMED_NAMED: usize = 3;

/// Checks every case of a JSONL document (see [`CasesCheck`]).
pub fn check(jsonl: &str) -> CasesCheck {
    let mut first_line: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    let mut out = CasesCheck::default();
    for case in parse_cases(jsonl) {
        out.total += 1;
        if let Some(reason) = case.malformed_reason() {
            out.malformed_count += 1;
            if out.malformed.len() < MAX_MALFORMED_NAMED {
                out.malformed.push(reason);
            }
        }
        if let Some(&first) = first_line.get(&case.id) {
            out.duplicate.get_or_insert((case.id, first, case.line));
        } else {
            first_line.insert(case.id, case.line);
        }
    }
    out
}

/// How many cases shard `shard` of `shards` holds, without keeping them.
pub fn count_shard(jsonl: &str, shard: u32, shards: u32) -> usize {
    let shards = u64::from(shards.max(1));
    jsonl
        .strip_prefix('\u{feff}')
        .unwrap_or(jsonl)
        .lines()
        .enumerate()
        .filter(|(index, text)| (*index as u64) % shards == u64::from(shard) && !text.trim().is_empty())
        .count()
}

/// Why a judge pod does not know its shard.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShardIndexError {
    #[error(
        "no shard: JOB_COMPLETION_INDEX is not set (the Job controller sets it in the pods of the operator's \
         Indexed Job) and --shard was not given"
    )]
    Missing,
    #[error("the shard index {0:?} is not a number")]
    NotANumber(String),
    #[error("shard {index} does not exist: the config has {shards} shard(s)")]
    OutOfRange { index: u32, shards: u32 },
}

/// This pod's shard from its completion index (`--shard` / `JOB_COMPLETION_INDEX`). A pod without
/// one is refused, never taken for shard 0: it would judge, and report, another pod's cases.
pub fn shard_index(value: Option<&str>, shards: u32) -> Result<u32, ShardIndexError> {
    let text = value.map(str::trim).filter(|v| !v.is_empty()).ok_or(ShardIndexError::Missing)?;
    let index = text.parse::<u32>().map_err(|_| ShardIndexError::NotANumber(text.chars().take(20).collect()))?;
    let shards = shards.max(1);
    if index >= shards {
        return Err(ShardIndexError::OutOfRange { index, shards });
    }
    Ok(index)
}

fn parse_line(line: u32, text: &str) -> ParsedCase {
    let fallback_id = || format!("line-{line}");
    match serde_json::from_str::<EvalCase>(text) {
        Ok(case) => {
            let id = case.id.clone().filter(|id| !id.is_empty()).unwrap_or_else(fallback_id);
            ParsedCase { line, id, body: CaseBody::Case(case) }
        }
        Err(error) => {
            // Valid JSON that is not a case (say, `output` missing) may still name its id: keep it,
            // so the error shows up under the name the author knows.
            let id = serde_json::from_str::<Value>(text)
                .ok()
                .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_string))
                .filter(|id| !id.is_empty())
                .unwrap_or_else(fallback_id);
            let message: String = error.to_string().chars().take(MAX_PARSE_MESSAGE_CHARS).collect();
            ParsedCase { line, id, body: CaseBody::Malformed(message) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CASES: &str = concat!(
        r#"{"id":"a","input":"q1","output":"o1","expected":"e1"}"#,
        "\n",
        "\n",
        r#"{"output":"o3"}"#,
        "\n",
        r#"{"id":"bad","input":"q"}"#,
        "\n",
        "not json\r\n",
        r#"{"id":"","output":"o6"}"#,
        "\n",
    );

    #[test]
    fn check_finds_the_first_repeated_id_and_names_malformed_lines() {
        let checked = check(CASES);
        assert_eq!((checked.total, checked.duplicate, checked.malformed_count), (5, None, 2));
        assert!(checked.malformed[0].starts_with("MalformedCase: line 4: "), "{:?}", checked.malformed);
        let repeated = concat!(
            r#"{"id":"a","output":"1"}"#,
            "\n",
            r#"{"id":"b","output":"2"}"#,
            "\n",
            r#"{"id":"a","output":"3"}"#
        );
        assert_eq!(check(repeated).duplicate, Some(("a".into(), 1, 3)));
        // A case without an id is known by its line: it cannot repeat another.
        let no_ids = concat!(r#"{"output":"1"}"#, "\n", r#"{"output":"2"}"#);
        assert_eq!(check(no_ids).duplicate, None);
        let many_bad = "x\n".repeat(10);
        let checked = check(&many_bad);
        assert_eq!((checked.malformed.len(), checked.malformed_count), (MAX_MALFORMED_NAMED, 10));
    }

    #[test]
    fn parses_cases_and_keeps_malformed_lines() {
        let cases = parse_cases(CASES);
        let lines: Vec<u32> = cases.iter().map(|c| c.line).collect();
        assert_eq!(lines, [1, 3, 4, 5, 6]);
        assert_eq!(cases[0].id, "a");
        assert!(matches!(&cases[0].body, CaseBody::Case(c) if c.expected.as_deref() == Some("e1")));
        assert_eq!(cases[1].id, "line-3");
        assert!(matches!(&cases[1].body, CaseBody::Case(c) if c.input.is_empty() && c.output == "o3"));
        // Valid JSON without `output`: malformed, but keeps its id.
        assert_eq!(cases[2].id, "bad");
        let reason = cases[2].malformed_reason().unwrap();
        assert!(reason.starts_with("MalformedCase: line 4: missing field `output`"), "{reason}");
        assert_eq!(cases[3].id, "line-5");
        assert!(cases[3].malformed_reason().unwrap().starts_with("MalformedCase: line 5: "));
        // An empty id falls back to the line.
        assert_eq!(cases[4].id, "line-6");
        assert_eq!(cases[0].malformed_reason(), None);
    }

    #[test]
    fn shards_take_every_nth_line() {
        let jsonl: String = (1..=7).map(|i| format!("{{\"output\":\"o{i}\"}}\n")).collect();
        let lines = |shard, shards| parse_shard(&jsonl, shard, shards).iter().map(|c| c.line).collect::<Vec<_>>();
        assert_eq!(lines(0, 3), [1, 4, 7]);
        assert_eq!(lines(1, 3), [2, 5]);
        assert_eq!(lines(2, 3), [3, 6]);
        assert_eq!(lines(3, 3), Vec::<u32>::new());
        assert_eq!(lines(0, 0), (1..=7).collect::<Vec<_>>());
        assert_eq!(count_shard(&jsonl, 1, 3), 2);
        // Blank lines count as lines but are no case.
        assert_eq!(parse_shard("{\"output\":\"x\"}\n\n{\"output\":\"y\"}\n", 1, 2).len(), 0);
        assert_eq!(count_shard("{\"output\":\"x\"}\n\n{\"output\":\"y\"}\n", 0, 2), 2);
    }

    #[test]
    fn a_pod_without_a_completion_index_is_no_shard() {
        assert_eq!(shard_index(Some("2"), 3), Ok(2));
        assert_eq!(shard_index(Some(" 0\n"), 1), Ok(0));
        // Not set, or set but blank (outside an Indexed Job): an error, not shard 0.
        assert_eq!(shard_index(None, 3), Err(ShardIndexError::Missing));
        assert_eq!(shard_index(Some(""), 3), Err(ShardIndexError::Missing));
        assert_eq!(shard_index(Some("  "), 3), Err(ShardIndexError::Missing));
        assert_eq!(shard_index(Some("-1"), 3), Err(ShardIndexError::NotANumber("-1".into())));
        assert_eq!(shard_index(Some("one"), 3), Err(ShardIndexError::NotANumber("one".into())));
        assert_eq!(shard_index(Some("3"), 3), Err(ShardIndexError::OutOfRange { index: 3, shards: 3 }));
        assert_eq!(shard_index(Some("0"), 0), Ok(0), "no shards configured means one");
        let long = "9".repeat(100);
        let ShardIndexError::NotANumber(shown) = shard_index(Some(&long), 3).expect_err("too big") else {
            panic!("expected NotANumber")
        };
        assert_eq!(shown.len(), 20, "a long value is cut in the message");
    }

    #[test]
    fn byte_order_mark_and_long_messages() {
        let cases = parse_cases("\u{feff}{\"output\":\"x\"}\n");
        assert!(matches!(cases[0].body, CaseBody::Case(_)));
        let long = format!("{{\"output\": {}", "[".repeat(1000));
        let cases = parse_cases(&long);
        let CaseBody::Malformed(message) = &cases[0].body else { panic!("expected malformed") };
        assert!(message.chars().count() <= MAX_PARSE_MESSAGE_CHARS);
    }
}
