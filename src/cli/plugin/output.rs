//! Printing: tables for people, JSON/YAML for scripts, ages like kubectl.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;

use super::args::Output;
use super::error::Error;
use crate::crd::ByokKey;

/// Prints `value` as JSON or YAML. Returns false for `Output::Text` (the caller prints text).
pub fn structured<T: Serialize>(output: Output, value: &T) -> Result<bool, Error> {
    let text = match output {
        Output::Text => return Ok(false),
        Output::Json => {
            serde_json::to_string_pretty(value).map_err(|e| Error::Usage(format!("rendering JSON: {e}")))?
        }
        Output::Yaml => serde_yaml::to_string(value).map_err(|e| Error::Usage(format!("rendering YAML: {e}")))?,
    };
    println!("{}", text.trim_end());
    Ok(true)
}

/// A left-aligned table with two spaces between columns.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Age since `t`, as kubectl prints it: 42s, 5m, 3h, 12d.
pub fn age(t: Option<&Time>) -> String {
    let Some(t) = t else { return "<unknown>".into() };
    let secs = (jiff::Timestamp::now().as_second() - t.0.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Cuts `text` to at most `max` characters (one line), marking the cut.
pub fn truncate(text: &str, max: usize) -> String {
    let one_line = text.replace(['\n', '\r', '\t'], " ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    one_line.chars().take(max.saturating_sub(1)).collect::<String>() + "…"
}

/// A ByokKey condition's (status, reason, message), if present.
pub fn condition<'a>(key: &'a ByokKey, type_: &str) -> Option<(&'a str, &'a str, &'a str)> {
    let c = key.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.as_str(), c.reason.as_str(), c.message.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(&["NAME", "X"], &[vec!["a-long-name".into(), "1".into()], vec!["b".into(), "22".into()]]);
        assert_eq!(t, "NAME         X\na-long-name  1\nb            22\n");
    }

    #[test]
    fn truncates_on_characters() {
        assert_eq!(truncate("héllo wörld", 6), "héllo…");
        assert_eq!(truncate("a\nb", 10), "a b");
    }
}
