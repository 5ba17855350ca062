//! JUnit XML for CI users: one testsuite per EvalJob, one testcase per case and scorer, so CI
//! systems (GitLab, Jenkins, GitHub test reporters) show each failed or errored score by name.

use std::fmt::Write as _;

use super::wire::{CaseResult, Outcome};

/// Renders the results as a JUnit XML document with one `<testsuite name="<suite>">`.
/// Each score becomes `<testcase classname="<scorer>" name="<case id>">`, holding a `<failure>`
/// when it failed and an `<error>` when it could not be scored.
pub fn junit_xml(suite: &str, results: &[CaseResult]) -> String {
    let scores = || results.iter().flat_map(|r| r.scores.iter().map(move |s| (r, s)));
    let tests = scores().count();
    let failures = scores().filter(|(_, s)| s.outcome == Outcome::Failed).count();
    let errors = scores().filter(|(_, s)| s.outcome == Outcome::Errored).count();

    let mut xml = String::with_capacity(200 + tests * 160);
    xml.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    // Writing to a String cannot fail; the results are ignored rather than unwrapped.
    let _ = writeln!(
        xml,
        "<testsuite name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"0\">",
        escape(suite)
    );
    for (case, score) in scores() {
        let _ = write!(xml, "  <testcase classname=\"{}\" name=\"{}\"", escape(&score.scorer), escape(&case.id));
        let detail = match score.score {
            Some(value) => format!("score {value}: {}", score.reason),
            None => score.reason.clone(),
        };
        let element = match score.outcome {
            Outcome::Passed => {
                xml.push_str("/>\n");
                continue;
            }
            Outcome::Failed => "failure",
            Outcome::Errored => "error",
        };
        let _ = write!(
            xml,
            ">\n    <{element} message=\"{}\">{}</{element}>\n  </testcase>\n",
            escape(&first_line(&score.reason)),
            escape(&format!("line {}: {detail}", case.line)),
        );
    }
    xml.push_str("</testsuite>\n");
    xml
}

/// A short message attribute: the first line, at most 200 characters.
fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().chars().take(200).collect()
}

/// Escapes text for both XML attributes and element content. Characters XML 1.0 cannot carry at
/// all, not even escaped (most C0 controls, U+FFFE/U+FFFF), become U+FFFD, so the document stays
/// well-formed whatever a case id or a model's reason holds. Newlines and tabs are written as
/// character references so attribute values keep them.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::wire::ScoreResult;

    fn score(scorer: &str, outcome: Outcome, score: Option<f64>, reason: &str) -> ScoreResult {
        ScoreResult { scorer: scorer.into(), outcome, score, reason: reason.into(), agreed: None }
    }

    fn results() -> Vec<CaseResult> {
        vec![
            CaseResult {
                id: "a<&\"'>b".into(),
                line: 1,
                scores: vec![
                    score("llm_judge", Outcome::Passed, Some(0.9), "good"),
                    score("exact_match", Outcome::Failed, Some(0.0), "differs <here> & \"there\"\nsecond line"),
                ],
                input_tokens: 1,
                output_tokens: 1,
            },
            CaseResult {
                id: "ctrl\u{1}\u{ffff}".into(),
                line: 2,
                scores: vec![score("llm_judge", Outcome::Errored, None, "KeyRevoked: the ByokKey was revoked")],
                input_tokens: 0,
                output_tokens: 0,
            },
        ]
    }

    #[test]
    fn valid_xml_with_counts_and_escaping() {
        let xml = junit_xml("demo <suite>", &results());
        let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
        let suite = doc.root_element();
        assert_eq!(suite.tag_name().name(), "testsuite");
        assert_eq!(suite.attribute("name"), Some("demo <suite>"));
        assert_eq!(suite.attribute("tests"), Some("3"));
        assert_eq!(suite.attribute("failures"), Some("1"));
        assert_eq!(suite.attribute("errors"), Some("1"));
        let cases: Vec<_> = suite.children().filter(|n| n.has_tag_name("testcase")).collect();
        assert_eq!(cases.len(), 3);
        assert_eq!(cases[0].attribute("name"), Some("a<&\"'>b"));
        assert_eq!(cases[0].attribute("classname"), Some("llm_judge"));
        assert!(cases[0].children().all(|n| !n.is_element()));
        let failure = cases[1].children().find(|n| n.has_tag_name("failure")).unwrap();
        assert_eq!(failure.attribute("message"), Some("differs <here> & \"there\""));
        assert_eq!(failure.text(), Some("line 1: score 0: differs <here> & \"there\"\nsecond line"));
        assert_eq!(cases[2].attribute("name"), Some("ctrl\u{fffd}\u{fffd}"));
        let error = cases[2].children().find(|n| n.has_tag_name("error")).unwrap();
        assert_eq!(error.attribute("message"), Some("KeyRevoked: the ByokKey was revoked"));
    }

    #[test]
    fn empty_results() {
        let xml = junit_xml("empty", &[]);
        let doc = roxmltree::Document::parse(&xml).unwrap();
        assert_eq!(doc.root_element().attribute("tests"), Some("0"));
        assert_eq!(escape("a\tb"), "a&#9;b");
    }
}
