//! `[log]` (defaults for every stream) and `[[streams]]` of the config file, read key by key
//! so that an unknown key or a bad value is named exactly: `streams[1].segment_bytes`.
//! `docs/config.md` documents every key, its unit, default and range.

use std::str::FromStr;
use std::time::Duration;

use strata_compaction::CleanupPolicy;
use strata_frontend::StreamConfig;
use strata_frontend::streams::{MAX_PARTITIONS, valid_stream_name};
use strata_frontend::topic::{TopicLimits, validate_topic_filter};
use strata_log::{Compression, FlushPolicy};
use toml::{Table, Value};

use super::units::{duration_ms, integer, size, string};

/// Keys of the log settings, accepted in `[log]` and in each `[[streams]]` entry.
pub const LOG_KEYS: &[&str] = &[
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
/// Keys only a `[[streams]]` entry has.
pub const STREAM_KEYS: &[&str] = &["name", "topics", "partitions"];

/// The settings `[log]` gives every stream, and the streams (the `[log]` values under each
/// stream's own; `default` last unless configured).
#[derive(Debug, Clone, PartialEq)]
pub struct Streams {
    /// `[log]` over the built-in defaults, as a stream without name.
    pub log_defaults: StreamConfig,
    /// Every stream, in the file's order.
    pub streams: Vec<StreamConfig>,
}

/// Reads `[log]` and every `[[streams]]` entry into stream configs (the `[log]` values under
/// each stream's own). Errors name the key.
pub fn parse_streams(log: Option<&Table>, streams: &[Table]) -> anyhow::Result<Streams> {
    let mut defaults = StreamConfig::new("");
    if let Some(log) = log {
        apply_log_settings(&mut defaults, log, "log")?;
    }
    let mut out: Vec<StreamConfig> = Vec::with_capacity(streams.len());
    for (i, table) in streams.iter().enumerate() {
        let at = format!("streams[{i}]");
        for key in table.keys() {
            if !LOG_KEYS.contains(&key.as_str()) && !STREAM_KEYS.contains(&key.as_str()) {
                anyhow::bail!(
                    "{at}.{key}: unknown key; a stream has {}, {}",
                    STREAM_KEYS.join(", "),
                    LOG_KEYS.join(", ")
                );
            }
        }
        let name = match table.get("name") {
            Some(Value::String(name)) => name.clone(),
            Some(other) => anyhow::bail!("{at}.name = {other}: must be a string"),
            None => anyhow::bail!("{at}.name: missing; every [[streams]] entry needs a name"),
        };
        if !valid_stream_name(&name) {
            anyhow::bail!(
                "{at}.name = {name:?}: must be 1-255 bytes without '/', '+', '#', '\\', not starting with '$', not . or .."
            );
        }
        if out.iter().any(|s| s.name == name) {
            anyhow::bail!("{at}.name = {name:?}: a stream of that name is already defined");
        }
        let mut stream = defaults.clone();
        stream.name = name;
        if let Some(value) = table.get("topics") {
            let Value::Array(items) = value else { anyhow::bail!("{at}.topics: must be an array of topic filters") };
            for (j, item) in items.iter().enumerate() {
                let Value::String(filter) = item else { anyhow::bail!("{at}.topics[{j}]: must be a string") };
                if filter.starts_with('$') || validate_topic_filter(filter, &TopicLimits::default()).is_err() {
                    anyhow::bail!("{at}.topics[{j}] = {filter:?}: not a valid MQTT topic filter (nor a $ topic)");
                }
                stream.topics.push(filter.clone());
            }
        }
        if let Some(value) = table.get("partitions") {
            let n = integer(value, &at, "partitions")?;
            if !(1..=u64::from(MAX_PARTITIONS)).contains(&n) {
                anyhow::bail!("{at}.partitions = {n}: must be between 1 and {MAX_PARTITIONS}");
            }
            stream.partitions = n as u32;
        }
        apply_log_settings(&mut stream, table, &at)?;
        out.push(stream);
    }
    // `default` always exists, with the `[log]` settings unless configured.
    if !out.iter().any(|s| s.name == strata_frontend::DEFAULT_STREAM) {
        let mut default = defaults.clone();
        default.name = strata_frontend::DEFAULT_STREAM.to_owned();
        out.push(default);
    }
    Ok(Streams { log_defaults: defaults, streams: out })
}

/// Applies the log-setting keys of `table` (at `at`, e.g. `log` or `streams[2]`) to `stream`.
fn apply_log_settings(stream: &mut StreamConfig, table: &Table, at: &str) -> anyhow::Result<()> {
    let mut flush = None;
    let mut flush_interval_ms = None;
    for (key, value) in table {
        let bytes = || size(value, at, key);
        let ms = || duration_ms(value, at, key);
        match key.as_str() {
            "segment_bytes" => stream.log.segment_bytes = bytes()?,
            "segment_ms" => stream.log.segment_ms = Some(ms()?),
            "index_interval_bytes" => stream.log.index_interval_bytes = bytes()?,
            "flush" => flush = Some(string(value, at, key)?.to_owned()),
            "flush_interval_ms" => flush_interval_ms = Some(ms()?),
            "compression" => {
                stream.log.compression = match string(value, at, key)? {
                    "none" => Compression::None,
                    "zstd" => Compression::Zstd,
                    other => anyhow::bail!("{at}.compression = {other:?}: must be \"none\" or \"zstd\""),
                }
            }
            "cleanup_policy" => {
                let text = string(value, at, key)?;
                stream.cleanup_policy = CleanupPolicy::from_str(text).map_err(|_| {
                    anyhow::anyhow!(
                        "{at}.cleanup_policy = {text:?}: must be \"delete\", \"compact\" or \"compact,delete\""
                    )
                })?;
            }
            "compaction_key" => {
                let name = string(value, at, key)?;
                if name.is_empty() {
                    anyhow::bail!("{at}.compaction_key: must not be empty (leave it out to key by topic)");
                }
                stream.compaction_key = Some(name.to_owned());
            }
            "min_compaction_lag_ms" => stream.compaction.min_compaction_lag_ms = ms()?,
            "max_compaction_lag_ms" => stream.compaction.max_compaction_lag_ms = Some(ms()?),
            "min_cleanable_dirty_ratio" => {
                let ratio = match value {
                    Value::Float(f) => *f,
                    Value::Integer(n) => *n as f64,
                    other => anyhow::bail!("{at}.min_cleanable_dirty_ratio = {other}: must be a number"),
                };
                stream.compaction.min_cleanable_dirty_ratio = ratio;
            }
            "delete_retention_ms" => stream.compaction.delete_retention_ms = ms()?,
            "retention_ms" => stream.retention.retention_ms = Some(ms()?),
            "retention_bytes" => stream.retention.retention_bytes = Some(bytes()?),
            "retention_messages" => stream.retention.retention_messages = Some(integer(value, at, key)?),
            "name" | "topics" | "partitions" if at != "log" => {}
            other => anyhow::bail!("{at}.{other}: unknown key; [log] has {}", LOG_KEYS.join(", ")),
        }
    }
    let interval = |ms: Option<u64>, current: FlushPolicy| -> Duration {
        match (ms, current) {
            (Some(ms), _) => Duration::from_millis(ms),
            (None, FlushPolicy::Interval(every)) => every,
            (None, _) => Duration::from_millis(strata_log::DEFAULT_FLUSH_INTERVAL_MS),
        }
    };
    match flush.as_deref() {
        Some("always") => stream.log.flush = FlushPolicy::Always,
        Some("never") => stream.log.flush = FlushPolicy::Never,
        Some("interval") => stream.log.flush = FlushPolicy::Interval(interval(flush_interval_ms, stream.log.flush)),
        Some(other) => anyhow::bail!("{at}.flush = {other:?}: must be \"always\", \"interval\" or \"never\""),
        None => {
            if let Some(ms) = flush_interval_ms {
                match stream.log.flush {
                    FlushPolicy::Interval(_) => stream.log.flush = FlushPolicy::Interval(Duration::from_millis(ms)),
                    _ => anyhow::bail!("{at}.flush_interval_ms: only applies with flush = \"interval\""),
                }
            }
        }
    }
    if flush_interval_ms.is_some() && !matches!(stream.log.flush, FlushPolicy::Interval(_)) {
        anyhow::bail!("{at}.flush_interval_ms: only applies with flush = \"interval\"");
    }
    stream.log.validate().map_err(|error| match error {
        strata_log::LogError::InvalidConfig { key, value, reason } => anyhow::anyhow!("{at}.{key} = {value}: {reason}"),
        other => anyhow::anyhow!("{at}: {other}"),
    })?;
    let mut compaction = stream.compaction.clone();
    compaction.segment_bytes = stream.log.segment_bytes;
    compaction.validate().map_err(|error| match error {
        strata_compaction::CompactionError::InvalidConfig { key, value, reason } => {
            anyhow::anyhow!("{at}.{key} = {value}: {reason}")
        }
        other => anyhow::anyhow!("{at}: {other}"),
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Vec<StreamConfig>> {
        parse_with_defaults(text).map(|parsed| parsed.streams)
    }

    fn parse_with_defaults(text: &str) -> anyhow::Result<Streams> {
        #[derive(serde::Deserialize)]
        struct File {
            log: Option<Table>,
            #[serde(default)]
            streams: Vec<Table>,
        }
        let file: File = toml::from_str(text)?;
        parse_streams(file.log.as_ref(), &file.streams)
    }

    #[test]
    fn streams_take_the_log_defaults_and_default_always_exists() {
        let streams = parse(
            "[log]\nsegment_bytes = 4096\nretention_ms = 60000\n\n[[streams]]\nname = \"orders\"\ntopics = [\"orders/#\"]\npartitions = 3\ncompaction_key = \"order_id\"\ncleanup_policy = \"compact\"\nflush = \"always\"\n",
        )
        .unwrap();
        assert_eq!(streams.len(), 2);
        let orders = &streams[0];
        assert_eq!((orders.name.as_str(), orders.partitions, orders.log.segment_bytes), ("orders", 3, 4096));
        assert_eq!(orders.topics, vec!["orders/#".to_owned()]);
        assert_eq!(orders.cleanup_policy, CleanupPolicy::Compact);
        assert_eq!(orders.log.flush, FlushPolicy::Always);
        assert_eq!(orders.retention.retention_ms, Some(60_000));
        assert_eq!(streams[1].name, "default");
        assert_eq!(streams[1].log.segment_bytes, 4096);
    }

    #[test]
    fn bad_keys_and_values_are_named() {
        let cases = [
            ("[[streams]]\nname = \"a\"\n[[streams]]\nname = \"b\"\nsegment_bytes = 10\n", "streams[1].segment_bytes"),
            ("[[streams]]\nname = \"a\"\nsegment_byte = 4096\n", "streams[0].segment_byte"),
            ("[[streams]]\nname = \"a\"\npartitions = 0\n", "streams[0].partitions"),
            ("[[streams]]\nname = \"a/b\"\n", "streams[0].name"),
            ("[[streams]]\ntopics = [\"x\"]\n", "streams[0].name"),
            ("[[streams]]\nname = \"a\"\ntopics = [\"a/#/b\"]\n", "streams[0].topics[0]"),
            ("[[streams]]\nname = \"a\"\nflush = \"sometimes\"\n", "streams[0].flush"),
            ("[[streams]]\nname = \"a\"\ncompression = \"lz4\"\n", "streams[0].compression"),
            ("[[streams]]\nname = \"a\"\ncleanup_policy = \"keep\"\n", "streams[0].cleanup_policy"),
            ("[[streams]]\nname = \"a\"\nmin_cleanable_dirty_ratio = 2.0\n", "streams[0].min_cleanable_dirty_ratio"),
            ("[[streams]]\nname = \"a\"\n[[streams]]\nname = \"a\"\n", "streams[1].name"),
            ("[log]\nretention_ms = -1\n", "log.retention_ms"),
            ("[log]\npartitions = 2\n", "log.partitions"),
            ("[log]\nflush = \"never\"\nflush_interval_ms = 5\n", "log.flush_interval_ms"),
        ];
        for (text, key) in cases {
            let error = format!("{:#}", parse(text).unwrap_err());
            assert!(error.contains(key), "{text:?}: {error} should name {key}");
        }
    }
}
