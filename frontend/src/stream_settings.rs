//! A stream's settings under their Kafka-like names (`segment_bytes`, `retention_ms`...), as
//! text: one parser for the config file (`[log]`, `[[streams]]`), the admin API and the CLI,
//! so every path accepts the same values and an error names the key. Also the encoding of a
//! stream definition as a `$streams` record value. Pure: no I/O.
//!
//! `$streams` value, version 1, integers little-endian (the record key is the stream name):
//! `u8 version=1, i64 created_at_ms, u32 partitions,
//!  u16 n, n × (u16 len, topic filter UTF-8),
//!  u16 n, n × (u16 len, key UTF-8, u16 len, value UTF-8)`
//! where the key/value pairs are [`settings_of`] the stream: every setting, as text.

use std::str::FromStr;
use std::time::Duration;

use strata_compaction::CleanupPolicy;
use strata_log::{Compression, FlushPolicy};

use crate::StreamConfig;
use crate::streams::MAX_PARTITIONS;
use crate::topic::{TopicLimits, validate_topic_filter};

/// Every setting key, in the order [`settings_of`] lists them.
pub const SETTING_KEYS: &[&str] = &[
    "segment_bytes",
    "segment_ms",
    "index_interval_bytes",
    "flush",
    "flush_interval_ms",
    "compression",
    "cleanup_policy",
    "compaction_key",
    "min_compaction_lag_ms",
    "max_compaction_lag_ms",
    "min_cleanable_dirty_ratio",
    "delete_retention_ms",
    "retention_ms",
    "retention_bytes",
    "retention_messages",
];

/// The settings a partition's open log holds: changing them on a running stream takes effect
/// when the partitions are next opened (at restart, or for partitions added later).
pub const RESTART_KEYS: &[&str] =
    &["segment_bytes", "segment_ms", "index_interval_bytes", "flush", "flush_interval_ms", "compression"];

const DEFINITION_VERSION: u8 = 1;

/// A setting that cannot be applied, naming its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}{}: {reason}", value.as_ref().map(|v| format!(" = {v}")).unwrap_or_default())]
pub struct SettingError {
    /// The key at fault (e.g. `retention_ms`, `topics[1]`).
    pub key: String,
    /// The value given, when there was one.
    pub value: Option<String>,
    /// What is wrong and what is accepted.
    pub reason: String,
}

fn bad(key: &str, value: Option<&str>, reason: impl Into<String>) -> SettingError {
    SettingError { key: key.to_owned(), value: value.map(str::to_owned), reason: reason.into() }
}

fn integer(key: &str, value: &str) -> Result<u64, SettingError> {
    value.trim().parse().map_err(|_| bad(key, Some(value), "must be a non-negative integer"))
}

/// Bytes, as an integer or with a unit (`"1GiB"`).
fn bytes(key: &str, value: &str) -> Result<u64, SettingError> {
    crate::units::parse_bytes(value).map_err(|why| bad(key, None, format!("{value:?} {why}")))
}

/// Milliseconds, as an integer or a duration with a unit (`"7d"`).
fn millis(key: &str, value: &str) -> Result<u64, SettingError> {
    crate::units::parse_millis(value).map_err(|why| bad(key, None, format!("{value:?} {why}")))
}

/// Applies `settings` (key, value as text) to `stream`, then checks the whole log and
/// compaction configuration. The order of keys does not matter. On error `stream` may be
/// partly changed: apply to a copy.
pub fn apply_settings(stream: &mut StreamConfig, settings: &[(String, String)]) -> Result<(), SettingError> {
    let mut flush = None;
    let mut flush_interval_ms = None;
    for (key, value) in settings {
        let key = key.as_str();
        let size = || bytes(key, value);
        let ms = || millis(key, value);
        match key {
            "segment_bytes" => stream.log.segment_bytes = size()?,
            "segment_ms" => stream.log.segment_ms = Some(ms()?),
            "index_interval_bytes" => stream.log.index_interval_bytes = size()?,
            "flush" => flush = Some(value.clone()),
            "flush_interval_ms" => flush_interval_ms = Some(ms()?),
            "compression" => {
                stream.log.compression = match value.as_str() {
                    "none" => Compression::None,
                    "zstd" => Compression::Zstd,
                    _ => return Err(bad(key, Some(value), "must be \"none\" or \"zstd\"")),
                }
            }
            "cleanup_policy" => {
                stream.cleanup_policy = CleanupPolicy::from_str(value)
                    .map_err(|_| bad(key, Some(value), "must be \"delete\", \"compact\" or \"compact,delete\""))?;
            }
            "compaction_key" => {
                if value.is_empty() {
                    return Err(bad(key, None, "must not be empty (leave it out to key by topic)"));
                }
                stream.compaction_key = Some(value.clone());
            }
            "min_compaction_lag_ms" => stream.compaction.min_compaction_lag_ms = ms()?,
            "max_compaction_lag_ms" => stream.compaction.max_compaction_lag_ms = Some(ms()?),
            "min_cleanable_dirty_ratio" => {
                stream.compaction.min_cleanable_dirty_ratio =
                    value.trim().parse().map_err(|_| bad(key, Some(value), "must be a number"))?;
            }
            "delete_retention_ms" => stream.compaction.delete_retention_ms = ms()?,
            "retention_ms" => stream.retention.retention_ms = Some(ms()?),
            "retention_bytes" => stream.retention.retention_bytes = Some(size()?),
            "retention_messages" => stream.retention.retention_messages = Some(integer(key, value)?),
            _ => return Err(bad(key, None, format!("unknown key; the settings are {}", SETTING_KEYS.join(", ")))),
        }
    }
    let interval = |ms: Option<u64>, current: FlushPolicy| match (ms, current) {
        (Some(ms), _) => Duration::from_millis(ms),
        (None, FlushPolicy::Interval(every)) => every,
        (None, _) => Duration::from_millis(strata_log::DEFAULT_FLUSH_INTERVAL_MS),
    };
    match flush.as_deref() {
        Some("always") => stream.log.flush = FlushPolicy::Always,
        Some("never") => stream.log.flush = FlushPolicy::Never,
        Some("interval") => stream.log.flush = FlushPolicy::Interval(interval(flush_interval_ms, stream.log.flush)),
        Some(other) => return Err(bad("flush", Some(other), "must be \"always\", \"interval\" or \"never\"")),
        None => {
            if let Some(ms) = flush_interval_ms
                && let FlushPolicy::Interval(_) = stream.log.flush
            {
                stream.log.flush = FlushPolicy::Interval(Duration::from_millis(ms));
            }
        }
    }
    if flush_interval_ms.is_some() && !matches!(stream.log.flush, FlushPolicy::Interval(_)) {
        return Err(bad("flush_interval_ms", None, "only applies with flush = \"interval\""));
    }
    validate(stream)
}

/// Checks the log and compaction settings of `stream` together, naming the first bad key.
pub fn validate(stream: &StreamConfig) -> Result<(), SettingError> {
    stream.log.validate().map_err(|error| match error {
        strata_log::LogError::InvalidConfig { key, value, reason } => bad(key, Some(&value), reason),
        other => bad("log", None, other.to_string()),
    })?;
    let mut compaction = stream.compaction.clone();
    compaction.segment_bytes = stream.log.segment_bytes;
    compaction.validate().map_err(|error| match error {
        strata_compaction::CompactionError::InvalidConfig { key, value, reason } => bad(key, Some(&value), reason),
        other => bad("compaction", None, other.to_string()),
    })
}

/// Checks a stream's topic filters (valid MQTT filters, not `$` topics); the key named is
/// `topics[i]`.
pub fn validate_topics(topics: &[String]) -> Result<(), SettingError> {
    for (i, filter) in topics.iter().enumerate() {
        if filter.starts_with('$') || validate_topic_filter(filter, &TopicLimits::default()).is_err() {
            return Err(bad(&format!("topics[{i}]"), Some(filter), "not a valid MQTT topic filter (nor a $ topic)"));
        }
    }
    Ok(())
}

/// Checks a partition count (1 to [`MAX_PARTITIONS`]).
pub fn validate_partitions(partitions: u64) -> Result<u32, SettingError> {
    if (1..=u64::from(MAX_PARTITIONS)).contains(&partitions) {
        Ok(partitions as u32)
    } else {
        Err(bad("partitions", Some(&partitions.to_string()), format!("must be between 1 and {MAX_PARTITIONS}")))
    }
}

/// Every setting of `stream` as (key, text) in [`SETTING_KEYS`] order; unset optional ones
/// are left out. [`apply_settings`] on a new stream gives `stream`'s settings back.
pub fn settings_of(stream: &StreamConfig) -> Vec<(String, String)> {
    let mut out: Vec<(&str, String)> = vec![
        ("segment_bytes", stream.log.segment_bytes.to_string()),
        ("index_interval_bytes", stream.log.index_interval_bytes.to_string()),
    ];
    if let Some(ms) = stream.log.segment_ms {
        out.insert(1, ("segment_ms", ms.to_string()));
    }
    match stream.log.flush {
        FlushPolicy::Always => out.push(("flush", "always".into())),
        FlushPolicy::Never => out.push(("flush", "never".into())),
        FlushPolicy::Interval(every) => {
            out.push(("flush", "interval".into()));
            out.push(("flush_interval_ms", every.as_millis().to_string()));
        }
    }
    let compression = match stream.log.compression {
        Compression::None => "none",
        Compression::Zstd => "zstd",
    };
    out.push(("compression", compression.into()));
    out.push(("cleanup_policy", policy_name(stream.cleanup_policy).into()));
    if let Some(key) = &stream.compaction_key {
        out.push(("compaction_key", key.clone()));
    }
    let c = &stream.compaction;
    out.push(("min_compaction_lag_ms", c.min_compaction_lag_ms.to_string()));
    if let Some(ms) = c.max_compaction_lag_ms {
        out.push(("max_compaction_lag_ms", ms.to_string()));
    }
    out.push(("min_cleanable_dirty_ratio", c.min_cleanable_dirty_ratio.to_string()));
    out.push(("delete_retention_ms", c.delete_retention_ms.to_string()));
    let r = &stream.retention;
    for (key, value) in [
        ("retention_ms", r.retention_ms),
        ("retention_bytes", r.retention_bytes),
        ("retention_messages", r.retention_messages),
    ] {
        if let Some(value) = value {
            out.push((key, value.to_string()));
        }
    }
    out.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// `delete`, `compact` or `compact,delete`.
pub fn policy_name(policy: CleanupPolicy) -> &'static str {
    match policy {
        CleanupPolicy::Delete => "delete",
        CleanupPolicy::Compact => "compact",
        CleanupPolicy::CompactDelete => "compact,delete",
    }
}

/// A `$streams` value that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stream definition: {0}")]
pub struct BadDefinition(String);

/// Encodes `stream` as a `$streams` record value (never empty; see the module docs).
pub fn encode_definition(stream: &StreamConfig, created_at_ms: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(DEFINITION_VERSION);
    out.extend_from_slice(&created_at_ms.to_le_bytes());
    out.extend_from_slice(&stream.partitions.to_le_bytes());
    let put = |out: &mut Vec<u8>, s: &str| {
        // Filters, keys and values are far below 64 KiB; longer is cut rather than wrapped.
        let bytes = &s.as_bytes()[..s.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        out.extend_from_slice(bytes);
    };
    out.extend_from_slice(&(stream.topics.len().min(usize::from(u16::MAX)) as u16).to_le_bytes());
    for topic in stream.topics.iter().take(usize::from(u16::MAX)) {
        put(&mut out, topic);
    }
    let settings = settings_of(stream);
    out.extend_from_slice(&(settings.len() as u16).to_le_bytes());
    for (key, value) in &settings {
        put(&mut out, key);
        put(&mut out, value);
    }
    out
}

/// Decodes the `$streams` value of stream `name` and checks it like any stream definition.
/// Returns the stream and when it was created (unix ms).
pub fn decode_definition(name: &str, bytes: &[u8]) -> Result<(StreamConfig, i64), BadDefinition> {
    let mut reader = Reader(bytes);
    let version = reader.take(1)?[0];
    if version != DEFINITION_VERSION {
        return Err(BadDefinition(format!("unknown version {version}")));
    }
    let created_at_ms = i64::from_le_bytes(reader.array()?);
    let partitions = u32::from_le_bytes(reader.array()?);
    let mut stream = StreamConfig::new(name);
    stream.partitions = validate_partitions(u64::from(partitions)).map_err(|e| BadDefinition(e.to_string()))?;
    for _ in 0..reader.u16()? {
        stream.topics.push(reader.string()?);
    }
    let mut settings = Vec::new();
    for _ in 0..reader.u16()? {
        settings.push((reader.string()?, reader.string()?));
    }
    if !reader.0.is_empty() {
        return Err(BadDefinition("trailing bytes".into()));
    }
    validate_topics(&stream.topics).map_err(|e| BadDefinition(e.to_string()))?;
    apply_settings(&mut stream, &settings).map_err(|e| BadDefinition(e.to_string()))?;
    Ok((stream, created_at_ms))
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], BadDefinition> {
        if self.0.len() < n {
            return Err(BadDefinition("truncated".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], BadDefinition> {
        self.take(N)?.try_into().map_err(|_| BadDefinition("truncated".into()))
    }
    fn u16(&mut self) -> Result<u16, BadDefinition> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn string(&mut self) -> Result<String, BadDefinition> {
        let len = usize::from(self.u16()?);
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| BadDefinition("not UTF-8".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn settings_apply_and_errors_name_the_key() {
        let mut stream = StreamConfig::new("s");
        apply_settings(&mut stream, &pairs(&[("retention_ms", "60000"), ("cleanup_policy", "compact,delete")]))
            .unwrap();
        assert_eq!(stream.retention.retention_ms, Some(60_000));
        assert_eq!(stream.cleanup_policy, CleanupPolicy::CompactDelete);
        for (key, value) in [
            ("retention_msx", "1"),
            ("retention_ms", "-1"),
            ("segment_bytes", "10"),
            ("flush", "sometimes"),
            ("min_cleanable_dirty_ratio", "2"),
            ("compression", "lz4"),
        ] {
            let error = apply_settings(&mut StreamConfig::new("s"), &pairs(&[(key, value)])).unwrap_err();
            assert_eq!(error.key, key, "{error}");
            assert!(error.to_string().starts_with(key), "{error}");
        }
        let error =
            apply_settings(&mut StreamConfig::new("s"), &pairs(&[("flush", "never"), ("flush_interval_ms", "5")]))
                .unwrap_err();
        assert_eq!(error.key, "flush_interval_ms");
        assert_eq!(validate_topics(&["a/#".into(), "a/#/b".into()]).unwrap_err().key, "topics[1]");
        assert_eq!(validate_partitions(0).unwrap_err().key, "partitions");
    }

    #[test]
    fn definitions_round_trip_and_damage_is_refused() {
        let mut stream = StreamConfig::new("orders");
        stream.partitions = 3;
        stream.topics = vec!["orders/#".into(), "shop/+/order".into()];
        apply_settings(
            &mut stream,
            &pairs(&[
                ("flush", "always"),
                ("compaction_key", "order_id"),
                ("cleanup_policy", "compact"),
                ("max_compaction_lag_ms", "9000"),
                ("retention_bytes", "1048576"),
                ("min_cleanable_dirty_ratio", "0.25"),
                ("compression", "zstd"),
            ]),
        )
        .unwrap();
        let bytes = encode_definition(&stream, 1_700_000_000_000);
        assert_eq!(decode_definition("orders", &bytes), Ok((stream.clone(), 1_700_000_000_000)));
        for cut in 0..bytes.len() {
            assert!(decode_definition("orders", &bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut versioned = bytes.clone();
        versioned[0] = 2;
        assert!(decode_definition("orders", &versioned).is_err());
        let plain = StreamConfig::new("plain");
        assert_eq!(decode_definition("plain", &encode_definition(&plain, 5)), Ok((plain, 5)));
    }
}
