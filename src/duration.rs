//! Go's duration syntax (`"5m"`, `"1h30m"`, `"-1m"`, `"300ms"`), which Ollama users write for
//! `keep_alive`, `OLLAMA_KEEP_ALIVE` and the like, parsed in one place and bounded: values
//! past what Go itself accepts (about 292 years), NaN and infinities are errors, never panics.

use std::time::Duration;

/// Go's `time.Duration` limit in seconds (`math.MaxInt64` nanoseconds).
pub const MAX_SECONDS: f64 = 9_223_372_036.854_775;

/// Seconds in a Go duration string; a bare number is seconds, as Ollama takes it. `None`
/// when it is not a duration, not finite, or beyond Go's range.
pub fn parse_go_duration(s: &str) -> Option<f64> {
    let s = s.trim();
    let secs = if s
        .bytes()
        .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
        && !s.is_empty()
    {
        s.parse::<f64>().ok()?
    } else {
        parse_units(s)?
    };
    (secs.is_finite() && secs.abs() <= MAX_SECONDS).then_some(secs)
}

fn parse_units(s: &str) -> Option<f64> {
    let (sign, mut rest) = match s.strip_prefix('-') {
        Some(r) => (-1.0, r),
        None => (1.0, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|i| *i > 0)?;
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    Some(sign * total)
}

/// A non-negative, finite number of seconds within Go's range as a `Duration`.
pub fn from_seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && (0.0..=MAX_SECONDS).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("5m"), Some(300.0));
        assert_eq!(parse_go_duration("1h30m"), Some(5400.0));
        assert_eq!(parse_go_duration("-1m"), Some(-60.0));
        assert_eq!(parse_go_duration("300ms"), Some(0.3));
        assert_eq!(parse_go_duration("1.5h"), Some(5400.0));
        assert_eq!(parse_go_duration("0"), Some(0.0));
        assert_eq!(parse_go_duration("10"), Some(10.0));
        assert_eq!(parse_go_duration("5 minutes"), None);
        assert_eq!(parse_go_duration("m"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn out_of_range_is_an_error_not_a_panic() {
        for bad in [
            "NaN",
            "inf",
            "-inf",
            "infinity",
            "1e30",
            "99999999999h",
            "1e309",
        ] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
        assert_eq!(from_seconds(f64::NAN), None);
        assert_eq!(from_seconds(1e30), None);
        assert_eq!(from_seconds(-1.0), None);
        assert_eq!(from_seconds(2.5), Some(Duration::from_millis(2500)));
    }
}
