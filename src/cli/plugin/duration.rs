//! Durations on the command line: `90`, `90s`, `5m`, `1h30m`.

use std::time::Duration;

/// Parses `90` (seconds), `90s`, `5m`, `2h`, `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let span: jiff::SignedDuration =
        s.parse().map_err(|_| format!("{s:?} is not a duration; write e.g. 90s, 5m or 1h30m"))?;
    Duration::try_from(span).map_err(|_| format!("{s:?} is negative; a timeout must be positive"))
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
        assert!(parse_duration("soon").is_err());
    }
}
