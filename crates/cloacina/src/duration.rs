//! Durations as users write them: `90d`, `7d12h`, `1d2h30m45s` — days, hours, minutes and
//! seconds combined, largest first, case-insensitive, greater than zero. One grammar for the
//! CLI (`admin cleanup-events --older-than`, `execution events --since`) and the HTTP API.

use std::time::Duration;

/// Why a duration was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration '{input}': {reason} (combine days, hours, minutes and seconds, largest first, e.g. 90d, 7d12h, 1d2h30m45s)"
)]
pub struct DurationError {
    pub input: String,
    pub reason: String,
}

impl crate::error::ErrorCode for DurationError {
    fn code(&self) -> &'static str {
        "invalid_duration"
    }
}

/// Parses `text` (see the module docs).
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let err = |reason: &str| DurationError {
        input: text.to_string(),
        reason: reason.to_string(),
    };
    let lower = text.trim().to_ascii_lowercase();
    if lower.is_empty() {
        return Err(err("it is empty"));
    }
    let units = [('d', 86_400u64), ('h', 3_600), ('m', 60), ('s', 1)];
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut last_unit: Option<usize> = None;
    for c in lower.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let Some(pos) = units.iter().position(|(u, _)| *u == c) else {
            return Err(err(&format!("'{c}' is not a unit (d, h, m, s)")));
        };
        if digits.is_empty() {
            return Err(err(&format!("'{c}' has no number before it")));
        }
        if last_unit.is_some_and(|l| pos <= l) {
            return Err(err("units must appear once each, largest first"));
        }
        let n: u64 = digits.parse().map_err(|_| err("a number is too large"))?;
        total = n
            .checked_mul(units[pos].1)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| err("it is too large"))?;
        digits.clear();
        last_unit = Some(pos);
    }
    if !digits.is_empty() {
        return Err(err(&format!("'{digits}' has no unit (d, h, m, s)")));
    }
    if total == 0 {
        return Err(err("it must be greater than zero"));
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        assert_eq!(parse("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(
            parse("7d12h"),
            Ok(Duration::from_secs(7 * 86_400 + 12 * 3_600))
        );
        assert_eq!(
            parse("1D2h30M45s"),
            Ok(Duration::from_secs(86_400 + 2 * 3_600 + 30 * 60 + 45))
        );
        assert_eq!(parse("45s"), Ok(Duration::from_secs(45)));
        for bad in [
            "",
            "0s",
            "5",
            "h",
            "5x",
            "1h1d",
            "1h1h",
            "-5m",
            "99999999999999999999d",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(
            parse("5x")
                .expect_err("5x is not a duration")
                .to_string()
                .contains("'x' is not a unit")
        );
    }
}
