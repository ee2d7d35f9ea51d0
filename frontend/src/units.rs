//! Sizes and durations written with units, as operators write them in the config file and on
//! the command line: `"512MiB"`, `"10MB"` (IEC prefixes are powers of 1024, SI ones powers of
//! 1000), `"7d"`, `"250ms"`. Pure parsing; the callers name the key in their errors.

use std::time::Duration;

/// Parses `"1GiB"`, `"512 MiB"`, `"10MB"`, `"4096"` into bytes. The error completes the
/// sentence "`"<text>"` ...".
pub fn parse_size(text: &str) -> Result<u64, String> {
    if text.trim().is_empty() {
        return Err("is not a size (give bytes, or a number and a unit such as 64KiB or 10MB)".into());
    }
    // parse-size also takes fractions ("1.5GiB"), which it rounds to whole bytes, and a bare
    // "K"/"M"/"G" as SI prefixes.
    parse_size::parse_size(text).map_err(|error| match error {
        parse_size::Error::PosOverflow => "is too large (at most 2^64 - 1 bytes)".to_owned(),
        _ => "is not a size (give bytes, or a number and a unit such as 64KiB or 10MB)".to_owned(),
    })
}

/// Parses `"7d"`, `"12h"`, `"30m"`, `"15s"`, `"250ms"` (or sums such as `"1h 30m"`). The
/// error completes the sentence "`"<text>"` ...".
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|error| match error {
        humantime::DurationError::NumberOverflow => "is too large".to_owned(),
        _ => "is not a duration (a number and a unit: 7d, 12h, 30m, 15s, 250ms)".to_owned(),
    })
}

/// A duration in whole milliseconds: a plain integer is milliseconds already.
pub fn parse_millis(text: &str) -> Result<u64, String> {
    if let Ok(ms) = text.trim().parse::<u64>() {
        return Ok(ms);
    }
    let duration = parse_duration(text.trim())?;
    if duration.subsec_nanos() % 1_000_000 != 0 {
        return Err("is not a whole number of milliseconds".into());
    }
    u64::try_from(duration.as_millis()).map_err(|_| "is too large".into())
}

/// A size in bytes: a plain integer is bytes already.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(bytes) => Ok(bytes),
        Err(_) => parse_size(text.trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_settings_take_units_or_the_keys_own_unit() {
        assert_eq!(parse_millis("250"), Ok(250));
        assert_eq!(parse_millis("7d"), Ok(7 * 86_400_000));
        assert_eq!(parse_millis("1h 30m"), Ok(5_400_000));
        assert!(parse_millis("1500us").is_err());
        assert!(parse_millis("7x").is_err());
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("10MB"), Ok(10_000_000));
        assert!(parse_bytes("-1").is_err());
        assert!(parse_bytes("20EiB").is_err());
    }
}
