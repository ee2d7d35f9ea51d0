//! Config values with units. A size key takes bytes as an integer or a string with a unit
//! (`"512MiB"`, `"10MB"`: IEC prefixes are powers of 1024, SI ones powers of 1000); a duration
//! key takes its documented unit as an integer, or a string such as `"7d"`, `"12h"`, `"250ms"`.
//! Every error names the key (`streams[1].retention_ms: "7x" is not a duration`), and a value
//! too large for the key is an error, never a wrapped number.

use toml::Value;

/// A key's full name for messages: `mqtt.listen`, `streams[1].retention_ms`, or just `data_dir`
/// at the top level.
pub fn key_name(at: &str, key: &str) -> String {
    if at.is_empty() { key.to_owned() } else { format!("{at}.{key}") }
}

/// A non-negative integer.
pub fn integer(value: &Value, at: &str, key: &str) -> anyhow::Result<u64> {
    match value {
        Value::Integer(n) if *n >= 0 => Ok(*n as u64),
        other => anyhow::bail!("{} = {other}: must be a non-negative integer", key_name(at, key)),
    }
}

/// A string.
pub fn string<'a>(value: &'a Value, at: &str, key: &str) -> anyhow::Result<&'a str> {
    match value {
        Value::String(s) => Ok(s),
        other => anyhow::bail!("{} = {other}: must be a string", key_name(at, key)),
    }
}

/// A size in bytes: a non-negative integer, or a string such as `"64KiB"` or `"10MB"`.
pub fn size(value: &Value, at: &str, key: &str) -> anyhow::Result<u64> {
    match value {
        Value::String(text) => parse_size(text).map_err(|why| anyhow::anyhow!("{}: {text:?} {why}", key_name(at, key))),
        Value::Integer(_) => integer(value, at, key),
        other => {
            anyhow::bail!("{} = {other}: must be a number of bytes or a size such as \"512MiB\"", key_name(at, key))
        }
    }
}

/// A duration in milliseconds: an integer (milliseconds) or a string such as `"7d"`.
pub fn duration_ms(value: &Value, at: &str, key: &str) -> anyhow::Result<u64> {
    duration_in(value, at, key, Unit::Millis)
}

/// A duration in seconds: an integer (seconds) or a string of whole seconds such as `"5m"`.
pub fn duration_secs(value: &Value, at: &str, key: &str) -> anyhow::Result<u64> {
    duration_in(value, at, key, Unit::Secs)
}

#[derive(Clone, Copy)]
enum Unit {
    Millis,
    Secs,
}

fn duration_in(value: &Value, at: &str, key: &str, unit: Unit) -> anyhow::Result<u64> {
    let text = match value {
        Value::Integer(_) => return integer(value, at, key),
        Value::String(text) => text,
        other => {
            let unit = match unit {
                Unit::Millis => "milliseconds",
                Unit::Secs => "seconds",
            };
            anyhow::bail!("{} = {other}: must be a number of {unit} or a duration such as \"30s\"", key_name(at, key))
        }
    };
    let duration = parse_duration(text).map_err(|why| anyhow::anyhow!("{}: {text:?} {why}", key_name(at, key)))?;
    let too_large = || anyhow::anyhow!("{}: {text:?} is too large", key_name(at, key));
    match unit {
        Unit::Millis => {
            if duration.subsec_nanos() % 1_000_000 != 0 {
                anyhow::bail!("{}: {text:?} is not a whole number of milliseconds", key_name(at, key));
            }
            u64::try_from(duration.as_millis()).map_err(|_| too_large())
        }
        Unit::Secs => {
            if duration.subsec_nanos() != 0 {
                anyhow::bail!("{}: {text:?} is not a whole number of seconds", key_name(at, key));
            }
            Ok(duration.as_secs())
        }
    }
}

pub use strata_frontend::units::{parse_duration, parse_size};

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Value {
        Value::String(text.to_owned())
    }

    #[test]
    fn sizes_take_iec_si_and_plain_bytes() {
        for (text, bytes) in [
            ("1GiB", 1u64 << 30),
            ("512MiB", 512 << 20),
            ("64KiB", 64 << 10),
            ("10MB", 10_000_000),
            ("1 kB", 1000),
            ("4096", 4096),
            ("4096B", 4096),
            ("15EiB", 15 << 60),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        assert_eq!(parse_size("16EiB"), Err("is too large (at most 2^64 - 1 bytes)".to_owned()));
        assert_eq!(size(&Value::Integer(1024), "log", "segment_bytes").unwrap(), 1024);
        assert_eq!(size(&s("128MiB"), "log", "segment_bytes").unwrap(), 128 << 20);
    }

    #[test]
    fn bad_sizes_name_the_key() {
        for (value, expected) in [
            (s("12 parsecs"), "streams[1].retention_bytes: \"12 parsecs\" is not a size"),
            (s(""), "streams[1].retention_bytes: \"\" is not a size"),
            (s("-5MB"), "streams[1].retention_bytes: \"-5MB\" is not a size"),
            (s("99999999999EiB"), "streams[1].retention_bytes: \"99999999999EiB\" is too large"),
            (Value::Integer(-1), "streams[1].retention_bytes = -1"),
            (Value::Boolean(true), "streams[1].retention_bytes = true"),
        ] {
            let error = size(&value, "streams[1]", "retention_bytes").unwrap_err().to_string();
            assert!(error.starts_with(expected), "{error:?} should start with {expected:?}");
        }
    }

    #[test]
    fn durations_take_units_and_integers_keep_theirs() {
        for (text, ms) in [
            ("7d", 7 * 86_400_000u64),
            ("12h", 12 * 3_600_000),
            ("30m", 30 * 60_000),
            ("15s", 15_000),
            ("250ms", 250),
            ("1h 30m", 90 * 60_000),
        ] {
            assert_eq!(duration_ms(&s(text), "log", "retention_ms").unwrap(), ms, "{text}");
        }
        assert_eq!(duration_ms(&Value::Integer(250), "log", "retention_ms").unwrap(), 250);
        assert_eq!(duration_secs(&Value::Integer(10), "mqtt", "sys_interval_secs").unwrap(), 10);
        assert_eq!(duration_secs(&s("5m"), "mqtt", "sys_interval_secs").unwrap(), 300);
    }

    #[test]
    fn bad_durations_name_the_key() {
        for (value, unit, expected) in [
            (s("7x"), Unit::Millis, "streams[1].retention_ms: \"7x\" is not a duration"),
            (s("7"), Unit::Millis, "streams[1].retention_ms: \"7\" is not a duration"),
            (s("1.5ms"), Unit::Millis, "streams[1].retention_ms: \"1.5ms\" is not a"),
            (s("1500ms"), Unit::Secs, "streams[1].retention_ms: \"1500ms\" is not a whole number of seconds"),
            (
                s("99999999999999999999d"),
                Unit::Millis,
                "streams[1].retention_ms: \"99999999999999999999d\" is too large",
            ),
            (s("200000000000000000s"), Unit::Millis, "streams[1].retention_ms: \"200000000000000000s\" is too large"),
            (Value::Float(1.5), Unit::Millis, "streams[1].retention_ms = 1.5"),
        ] {
            let error = duration_in(&value, "streams[1]", "retention_ms", unit).unwrap_err().to_string();
            assert!(error.starts_with(expected), "{error:?} should start with {expected:?}");
        }
    }
}
