//! Durations on the command line: the manifests' grammar (`90s`, `5m`, `1h30m`, `1.5h`; see
//! `crate::duration`), and a bare number of seconds (`90`).

use std::time::Duration;

/// Parses `90` (seconds), or a duration as the CRDs write one: `90s`, `5m`, `2h`, `1h30m`, `1.5h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    // The one addition to the manifests' grammar: a bare number is seconds, as it always was here.
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    crate::duration::parse(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-5m").is_err_and(|e| e.contains("negative")));
    }
}
