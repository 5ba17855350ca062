//! Durations as Kubernetes writes them. The CRDs check duration fields with CEL's `duration()`,
//! which is Go's `time.ParseDuration`; this is the same grammar, so a value the API server
//! accepted always parses here: `[-+]?([0-9]*(\.[0-9]*)?(ns|us|µs|μs|ms|s|m|h))+`, or `0`.
//! `90s`, `1h30m`, `1.5h`, `.5h` and `300ms` are durations; `10`, `1d`, `1h 30m` and `PT1H` are not.

use std::time::Duration;

/// Why a text is not a duration this parser (and CEL) accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{0:?} is not a duration; write e.g. 90s, 5m, 1h30m or 1.5h (units ns, us, ms, s, m, h)")]
    Invalid(String),
    #[error("{0:?} is negative; a duration here must not be")]
    Negative(String),
    #[error("{text:?} is shorter than the minimum {min:?}")]
    BelowMinimum { text: String, min: Duration },
}

/// Go's largest duration, in nanoseconds (`1<<63 - 1`); a negative one may reach `1<<63`.
const MAX_NANOS: u64 = i64::MAX as u64;
const LIMIT: u64 = 1 << 63;

/// Parses `text` exactly as Go's `time.ParseDuration` does. A negative duration parses there but
/// is refused here: nothing in this project takes one.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid(text.chars().take(64).collect());
    let (negative, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if body == "0" {
        return Ok(Duration::ZERO);
    }
    if body.is_empty() {
        return Err(invalid());
    }
    let (mut total, mut rest) = (0u64, body);
    while !rest.is_empty() {
        let (nanos, tail) = element(rest).ok_or_else(invalid)?;
        total = total.checked_add(nanos).filter(|t| *t <= LIMIT).ok_or_else(invalid)?;
        rest = tail;
    }
    match (negative, total) {
        (_, 0) => Ok(Duration::ZERO),
        (true, _) => Err(DurationError::Negative(text.chars().take(64).collect())),
        (false, t) if t > MAX_NANOS => Err(invalid()),
        (false, t) => Ok(Duration::from_nanos(t)),
    }
}

/// Parses `text` and refuses it below `min`: a CEL rule `duration(self) >= duration('<min>')`.
pub fn at_least(text: &str, min: Duration) -> Result<Duration, DurationError> {
    let d = parse(text)?;
    if d < min {
        return Err(DurationError::BelowMinimum { text: text.chars().take(64).collect(), min });
    }
    Ok(d)
}

/// One `[0-9]*(\.[0-9]*)?unit` element: its nanoseconds and the text after it. Overflow and
/// rounding follow Go's, so both accept and refuse the same texts.
fn element(s: &str) -> Option<(u64, &str)> {
    if !s.starts_with(|c: char| c == '.' || c.is_ascii_digit()) {
        return None;
    }
    let (whole, s, pre) = leading_int(s)?;
    let (fraction, scale, s, post) = match s.strip_prefix('.') {
        Some(after) => leading_fraction(after),
        None => (0, 1.0, s, false),
    };
    if !pre && !post {
        return None;
    }
    let end = s.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(s.len());
    let unit = unit_nanos(&s[..end])?;
    if whole > LIMIT / unit {
        return None;
    }
    let mut nanos = whole * unit;
    if fraction > 0 {
        // As Go: float64 is nanosecond-exact for fractions of an hour.
        nanos += (fraction as f64 * (unit as f64 / scale)) as u64;
        if nanos > LIMIT {
            return None;
        }
    }
    Some((nanos, &s[end..]))
}

fn unit_nanos(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => 1,
        // "µs" is U+00B5 (micro sign), "μs" U+03BC (Greek mu): Go takes both.
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// The leading digits as an integer (None past `1<<63`, as Go), the rest, and whether there were any.
fn leading_int(s: &str) -> Option<(u64, &str, bool)> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let mut x: u64 = 0;
    for b in s[..digits].bytes() {
        if x > LIMIT / 10 {
            return None;
        }
        x = x * 10 + u64::from(b - b'0');
        if x > LIMIT {
            return None;
        }
    }
    Some((x, &s[digits..], digits > 0))
}

/// The leading digits of a fraction: value, scale (10^digits kept), the rest, whether there were
/// any. Digits past what fits are consumed but ignored, as Go does.
fn leading_fraction(s: &str) -> (u64, f64, &str, bool) {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (mut x, mut scale) = (0u64, 1.0f64);
    for b in s[..digits].bytes() {
        if x > MAX_NANOS / 10 {
            break;
        }
        let y = x * 10 + u64::from(b - b'0');
        if y > LIMIT {
            break;
        }
        x = y;
        scale *= 10.0;
    }
    (x, scale, &s[digits..], digits > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: u64 = 1;
    const US: u64 = 1_000;
    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;
    const M: u64 = 60 * S;
    const H: u64 = 60 * M;

    /// Texts and what Go's time.ParseDuration (and so CEL's duration()) makes of them, checked
    /// against Go's own output.
    #[test]
    fn accepts_what_go_accepts() {
        let table: &[(&str, u64)] = &[
            ("0", 0),
            ("+0", 0),
            ("-0", 0),
            ("0s", 0),
            ("-0s", 0),
            ("1.5h", 90 * M),
            ("90m", 90 * M),
            ("1h30m", 90 * M),
            ("1m", M),
            ("300ms", 300 * MS),
            ("5s", 5 * S),
            ("+5s", 5 * S),
            ("30m", 30 * M),
            ("6h", 6 * H),
            ("1h1m1s", H + M + S),
            ("1s1h", H + S),
            ("2h2h", 4 * H),
            (".5h", 30 * M),
            ("5.h", 5 * H),
            ("1.000000001s", S + NS),
            ("1.0000000019s", S + NS),
            ("0.1ns", 0),
            ("1.5us", 1500 * NS),
            ("1µs", US),
            ("1μs", US),
            ("1ns", NS),
            ("100000h", 100_000 * H),
            ("2562047h47m16.854775807s", MAX_NANOS),
            ("9223372036854775807ns", MAX_NANOS),
            ("1.00000000000000000000000000000001s", S),
        ];
        for (text, nanos) in table {
            assert_eq!(parse(text), Ok(Duration::from_nanos(*nanos)), "{text}");
        }
    }

    #[test]
    fn refuses_what_go_refuses() {
        let table = [
            "",
            "+",
            "-",
            "10",
            "00",
            "1",
            ".",
            ".s",
            "-.s",
            "s",
            "1d",
            "1w",
            "1H",
            "1 h",
            " 1h",
            "1h ",
            "1h 30m",
            "1hm",
            "1.5.h",
            "1..5h",
            "PT1H",
            "1 hour",
            "5x",
            "1h-30m",
            "1e3s",
            "2562047h47m16.854775808s",
            "9223372036854775808ns",
            "99999999999999999999h",
            "3000000h",
        ];
        for text in table {
            assert_eq!(parse(text), Err(DurationError::Invalid(text.into())), "{text:?}");
        }
    }

    #[test]
    fn negative_durations_parse_as_go_does_but_are_refused() {
        for text in ["-1s", "-1.5h", "-2562047h47m16.854775808s"] {
            assert_eq!(parse(text), Err(DurationError::Negative(text.into())), "{text}");
        }
    }

    #[test]
    fn a_minimum_is_a_cel_comparison() {
        assert_eq!(at_least("1m", Duration::from_secs(60)), Ok(Duration::from_secs(60)));
        assert_eq!(at_least("1.5h", Duration::from_secs(60)), Ok(Duration::from_secs(5400)));
        let short = at_least("59.9s", Duration::from_secs(60));
        assert!(matches!(short, Err(DurationError::BelowMinimum { .. })), "{short:?}");
        assert!(matches!(at_least("-5m", Duration::from_secs(60)), Err(DurationError::Negative(_))));
        assert!(matches!(at_least("1d", Duration::from_secs(60)), Err(DurationError::Invalid(_))));
    }
}
