//! Renderings shared by the log tools and the admin client: timestamps (and reading them
//! back), byte strings.

use std::fmt;

const MS_PER_DAY: i64 = 86_400_000;

/// A timestamp in milliseconds since the Unix epoch, shown as the number followed by its
/// ISO-8601 UTC form when that has a four-digit year: `1700000000000 (2023-11-14T22:13:20.000Z)`.
pub struct Millis(pub i64);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match iso8601(self.0) {
            Some(iso) => write!(f, "{} ({iso})", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

/// `ms` since the Unix epoch as ISO-8601 UTC with milliseconds, or `None` outside years
/// 0000-9999.
pub fn iso8601(ms: i64) -> Option<String> {
    let (year, month, day) = civil_from_days(ms.div_euclid(MS_PER_DAY));
    if !(0..=9999).contains(&year) {
        return None;
    }
    let in_day = ms.rem_euclid(MS_PER_DAY);
    let (hour, minute, second, milli) = (in_day / 3_600_000, in_day / 60_000 % 60, in_day / 1000 % 60, in_day % 1000);
    Some(format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{milli:03}Z"))
}

/// An RFC 3339 date-time (`2024-05-01T12:00:00Z`, `2024-05-01T14:00:00.250+02:00`) as
/// milliseconds since the Unix epoch; `None` if it is not one.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.trim().as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        part.iter().all(u8::is_ascii_digit).then(|| part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') || b.get(13) != Some(&b':') || b.get(16) != Some(&b':') {
        return None;
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &b[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let len = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if len == 0 {
            return None;
        }
        for (i, d) in fraction[..len.min(3)].iter().enumerate() {
            millis += i64::from(d - b'0') * [100, 10, 1][i];
        }
        rest = &fraction[len..];
    }
    let offset_minutes = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let two = |a: u8, b: u8| -> Option<i64> {
                (a.is_ascii_digit() && b.is_ascii_digit()).then(|| i64::from(a - b'0') * 10 + i64::from(b - b'0'))
            };
            let minutes = two(*h1, *h2)? * 60 + two(*m1, *m2)?;
            if *sign == b'-' { -minutes } else { minutes }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1000 + millis)
}

/// A proleptic Gregorian (year, month, day) to days since 1970-01-01; Howard Hinnant's
/// `days_from_civil`.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day); Howard Hinnant's
/// `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Bytes shown as a quoted, escaped string when they are UTF-8, otherwise as `0x` hex.
pub struct Utf8OrHex<'a>(pub &'a [u8]);

impl fmt::Display for Utf8OrHex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(self.0) {
            Ok(text) => write!(f, "{text:?}"),
            Err(_) => write_hex(f, self.0),
        }
    }
}

/// Bytes shown as a quoted string when they are UTF-8 without control characters,
/// otherwise as `0x` hex.
pub struct PrintableOrHex<'a>(pub &'a [u8]);

impl fmt::Display for PrintableOrHex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(self.0) {
            Ok(text) if !text.chars().any(char::is_control) => write!(f, "{text:?}"),
            _ => write_hex(f, self.0),
        }
    }
}

/// A header name: bare when it is plain text without spaces, `=` or quotes, otherwise like
/// [`PrintableOrHex`].
pub struct Name<'a>(pub &'a [u8]);

impl fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(self.0) {
            Ok(text) if !text.is_empty() && text.chars().all(|c| c.is_alphanumeric() || "._-/:$+#@".contains(c)) => {
                f.write_str(text)
            }
            _ => PrintableOrHex(self.0).fmt(f),
        }
    }
}

/// `n` and a noun in the right number: `1 batch`, `3 batches`.
pub fn counted(n: impl Into<u64>, one: &str, many: &str) -> String {
    match n.into() {
        1 => format!("1 {one}"),
        n => format!("{n} {many}"),
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    f.write_str("0x")?;
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_render_as_utc() {
        assert_eq!(iso8601(0).as_deref(), Some("1970-01-01T00:00:00.000Z"));
        assert_eq!(iso8601(1_700_000_000_123).as_deref(), Some("2023-11-14T22:13:20.123Z"));
        assert_eq!(iso8601(-1).as_deref(), Some("1969-12-31T23:59:59.999Z"));
        assert_eq!(iso8601(951_782_400_000).as_deref(), Some("2000-02-29T00:00:00.000Z"));
        assert_eq!(iso8601(253_402_300_799_999).as_deref(), Some("9999-12-31T23:59:59.999Z"));
        assert_eq!(iso8601(253_402_300_800_000), None);
        assert_eq!(iso8601(i64::MIN), None);
        assert_eq!(iso8601(i64::MAX), None);
        assert_eq!(Millis(i64::MAX).to_string(), i64::MAX.to_string());
    }

    #[test]
    fn rfc3339_reads_back_what_iso8601_writes() {
        for ms in [0, 1_700_000_000_123, 951_782_400_000, -1, 253_402_300_799_999] {
            assert_eq!(parse_rfc3339(&iso8601(ms).unwrap()), Some(ms), "{ms}");
        }
        assert_eq!(parse_rfc3339("2023-11-14T23:13:20+01:00"), Some(1_700_000_000_000));
        assert_eq!(parse_rfc3339("2023-11-14t22:13:20.5z"), Some(1_700_000_000_500));
        for bad in ["", "2023-11-14", "2023-11-14T22:13:20", "2023-13-14T22:13:20Z", "2023-11-14T22:13:20+1:00"] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn bytes_render_as_text_or_hex() {
        assert_eq!(Utf8OrHex(b"user-1").to_string(), "\"user-1\"");
        assert_eq!(Utf8OrHex(b"a\nb").to_string(), "\"a\\nb\"");
        assert_eq!(Utf8OrHex(&[0xff, 0x00]).to_string(), "0xff00");
        assert_eq!(PrintableOrHex(b"sensors/1").to_string(), "\"sensors/1\"");
        assert_eq!(PrintableOrHex(&[1]).to_string(), "0x01");
        assert_eq!(PrintableOrHex(b"").to_string(), "\"\"");
        assert_eq!(Name(b"mqtt.topic").to_string(), "mqtt.topic");
        assert_eq!(Name(b"a b").to_string(), "\"a b\"");
        assert_eq!(Name(b"a=b").to_string(), "\"a=b\"");
        assert_eq!(Name(b"").to_string(), "\"\"");
        assert_eq!(Name(&[0]).to_string(), "0x00");
        assert_eq!(counted(1u64, "batch", "batches"), "1 batch");
        assert_eq!(counted(0u64, "batch", "batches"), "0 batches");
    }
}
