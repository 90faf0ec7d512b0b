//! Human durations: `15m`, `24h`, `90d`, `10y`.

use crate::{Error, Result};
use time::Duration;

/// Parses a duration such as `30s`, `15m`, `24h`, `90d`, `2w` or `10y` (a year is 365 days).
pub fn parse_duration(s: &str) -> Result<Duration> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| Error::BadDuration(s.to_string()))?;
    let (num, unit) = t.split_at(split);
    let n: i64 = num.parse().map_err(|_| Error::BadDuration(s.to_string()))?;
    let secs_per = match unit {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "y" => 365 * 86_400,
        _ => return Err(Error::BadDuration(s.to_string())),
    };
    let secs = n
        .checked_mul(secs_per)
        .filter(|v| *v <= 200 * 365 * 86_400)
        .ok_or_else(|| Error::BadDuration(s.to_string()))?;
    Ok(Duration::seconds(secs))
}

/// Formats a duration compactly for people: `89d 23h`, `730d`, `5h 12m`, `24h`, `42s`.
pub fn format_duration(d: Duration) -> String {
    let neg = d.is_negative();
    let s = d.whole_seconds().unsigned_abs();
    let (days, hours, mins) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60);
    let body = if days > 0 && hours == 0 {
        format!("{days}d")
    } else if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 && mins == 0 {
        format!("{hours}h")
    } else if hours > 0 {
        format!("{hours}h {mins}m")
    } else if mins > 0 {
        format!("{mins}m")
    } else {
        format!("{s}s")
    };
    if neg {
        format!("-{body}")
    } else {
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_duration("90d").unwrap(), Duration::days(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::minutes(15));
        assert_eq!(parse_duration("10y").unwrap(), Duration::days(3650));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("999999999999y").is_err());
    }

    #[test]
    fn formats() {
        assert_eq!(format_duration(Duration::hours(49)), "2d 1h");
        assert_eq!(format_duration(Duration::days(730)), "730d");
        assert_eq!(format_duration(Duration::hours(24)), "1d");
        assert_eq!(format_duration(Duration::hours(5)), "5h");
        assert_eq!(format_duration(Duration::seconds(-30)), "-30s");
    }
}
