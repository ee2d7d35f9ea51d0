//! A stream's settings under their Kafka-like names (`segment_bytes`, `retention_ms`...), as
//! text: one parser for the config file (`[log]`, `[[streams]]`), the admin API and the CLI,
//! so every path accepts the same values and an error names the key. Also the encoding of a
//! stream definition as a `$streams` record value. Pure: no I/O.
//!
//! `$streams` value, integers little-endian (the record key is the stream name). Version 1:
//! `u8 version=1, i64 created_at_ms, u32 partitions,
//!  u16 n, n × (u16 len, topic filter UTF-8),
//!  u16 n, n × (u16 len, key UTF-8, u16 len, value UTF-8)`
//! where the key/value pairs are [`settings_of`] the stream, as text, except the replication
//! settings ([`REPLICATION_KEYS`]), which are never in that list. Version 2 is version 1
//! followed by the replication settings:
//! `u8 replication_factor (0: unset), u8 acks (0 quorum, 1 leader),
//!  u8 min_insync_replicas (0: unset), u32 ack_timeout in ms,
//!  u16 n (0: placed by the cluster, else one per partition),
//!  n × (u8 m, m × u64 node id)` (the replicas of partitions 0..n, preferred leader first).
//! A definition whose replication settings are all at their defaults is written as version
//! 1, which the brokers before version 2 read too; version 1 decodes with the defaults.

use std::str::FromStr;
use std::time::Duration;

use strata_compaction::CleanupPolicy;
use strata_log::{Compression, FlushPolicy};

use crate::StreamConfig;
use crate::streams::{ACK_TIMEOUT_RANGE, Acks, MAX_PARTITIONS, MAX_REPLICATION_FACTOR, ReplicationSettings};
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
    "replication_factor",
    "acks",
    "min_insync_replicas",
    "ack_timeout",
    "replica_assignment",
];

/// The replication settings, among [`SETTING_KEYS`] (`$streams` keeps them apart from the
/// others: see the module docs).
pub const REPLICATION_KEYS: &[&str] =
    &["replication_factor", "acks", "min_insync_replicas", "ack_timeout", "replica_assignment"];

/// Settings of one stream only, never a default for every stream (`[log]`): a manual
/// placement lists the replicas of each partition of one stream.
pub const PER_STREAM_KEYS: &[&str] = &["replica_assignment"];

/// Why `alter` refuses to change the replica set of a stream.
const MEMBERSHIP_CHANGE: &str = "changing the replica set is a membership change, not supported by alter yet";

/// The settings a partition's open log holds: changing them on a running stream takes effect
/// when the partitions are next opened (at restart, or for partitions added later).
pub const RESTART_KEYS: &[&str] =
    &["segment_bytes", "segment_ms", "index_interval_bytes", "flush", "flush_interval_ms", "compression"];

/// The version written when any replication setting differs from its default.
const DEFINITION_VERSION: u8 = 2;
/// The version written otherwise, and the only one before replication settings existed.
const DEFINITION_VERSION_1: u8 = 1;

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
            "replication_factor" => stream.replication.factor = Some(count(key, value)?),
            "acks" => {
                stream.replication.acks = match value.trim() {
                    "quorum" => Acks::Quorum,
                    "leader" => Acks::Leader,
                    _ => return Err(bad(key, Some(value), "must be \"quorum\" or \"leader\"")),
                }
            }
            "min_insync_replicas" => stream.replication.min_insync_replicas = Some(count(key, value)?),
            "ack_timeout" => stream.replication.ack_timeout = Duration::from_millis(ms()?),
            "replica_assignment" => stream.replication.assignment = parse_assignment(value)?,
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

/// A replica count: an integer that fits a `u32` (its range is checked by [`validate`]).
fn count(key: &str, value: &str) -> Result<u32, SettingError> {
    u32::try_from(integer(key, value)?)
        .map_err(|_| bad(key, Some(value), format!("must be between 1 and {MAX_REPLICATION_FACTOR}")))
}

/// Reads `replica_assignment`: the replica node ids of partitions 0, 1, ... as
/// comma-separated lists separated by `;` (`"1,2,3;2,3,1"`), the first of each list its
/// preferred leader. Blanks around ids are ignored; the empty text is no assignment (the
/// cluster places the replicas). Only the syntax is checked here; [`validate`] checks the
/// lists against the stream.
pub fn parse_assignment(text: &str) -> Result<Vec<Vec<u64>>, SettingError> {
    const KEY: &str = "replica_assignment";
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    text.split(';')
        .enumerate()
        .map(|(partition, list)| {
            list.split(',')
                .map(|id| {
                    id.trim().parse::<u64>().map_err(|_| {
                        bad(
                            KEY,
                            Some(text),
                            format!(
                                "partition {partition}: {:?} is not a node id; give each partition's replica ids \
                                 separated by ',', the partitions separated by ';' (\"1,2,3;2,3,1\")",
                                id.trim()
                            ),
                        )
                    })
                })
                .collect()
        })
        .collect()
}

/// The text form of a replica assignment ([`parse_assignment`] reads it back).
pub fn assignment_text(assignment: &[Vec<u64>]) -> String {
    let lists: Vec<String> =
        assignment.iter().map(|ids| ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")).collect();
    lists.join(";")
}

/// Checks the replication settings of `stream`: their ranges, `min_insync_replicas` against
/// the factor, and a manual assignment against the partitions and the factor. Whether the
/// cluster has that many nodes is the cluster's check, not this one.
fn validate_replication(stream: &StreamConfig) -> Result<(), SettingError> {
    let r = &stream.replication;
    let replicas = 1..=MAX_REPLICATION_FACTOR;
    if let Some(factor) = r.factor
        && !replicas.contains(&factor)
    {
        let reason = format!("must be between 1 and {MAX_REPLICATION_FACTOR}");
        return Err(bad("replication_factor", Some(&factor.to_string()), reason));
    }
    let shown = || assignment_text(&r.assignment);
    let implied = r.assignment.first().map(|replicas| replicas.len() as u32);
    if !r.assignment.is_empty() {
        let key = "replica_assignment";
        if r.assignment.len() != stream.partitions as usize {
            let reason = format!(
                "has {} replica lists for {} partitions: give one list per partition, separated by ';'",
                r.assignment.len(),
                stream.partitions
            );
            return Err(bad(key, Some(&shown()), reason));
        }
        for (partition, ids) in r.assignment.iter().enumerate() {
            let reason = if ids.is_empty() || ids.len() > MAX_REPLICATION_FACTOR as usize {
                Some(format!("partition {partition} has {} replicas; 1 to {MAX_REPLICATION_FACTOR}", ids.len()))
            } else if ids.contains(&0) {
                Some(format!("partition {partition}: node ids are > 0"))
            } else if (1..ids.len()).any(|i| ids[..i].contains(&ids[i])) {
                Some(format!("partition {partition} names a node twice"))
            } else if let Some(factor) = r.factor
                && ids.len() != factor as usize
            {
                Some(format!("partition {partition} has {} replicas, replication_factor is {factor}", ids.len()))
            } else if Some(ids.len() as u32) != implied {
                Some(format!(
                    "partition {partition} has {} replicas, partition 0 has {}",
                    ids.len(),
                    implied.unwrap_or(0)
                ))
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(bad(key, Some(&shown()), reason));
            }
        }
    }
    if let Some(min) = r.min_insync_replicas {
        let key = "min_insync_replicas";
        if !replicas.contains(&min) {
            return Err(bad(key, Some(&min.to_string()), format!("must be between 1 and {MAX_REPLICATION_FACTOR}")));
        }
        if let Some(factor) = r.factor.or(implied)
            && min > factor
        {
            let reason = format!("must be at most the replication factor ({factor}): a partition has no more replicas");
            return Err(bad(key, Some(&min.to_string()), reason));
        }
    }
    if !ACK_TIMEOUT_RANGE.contains(&r.ack_timeout) {
        let reason = format!(
            "must be between {} ms and {} ms",
            ACK_TIMEOUT_RANGE.start().as_millis(),
            ACK_TIMEOUT_RANGE.end().as_millis()
        );
        return Err(bad("ack_timeout", Some(&r.ack_timeout.as_millis().to_string()), reason));
    }
    Ok(())
}

/// Checks that `after`, an altered `before`, keeps its replica set: the replication factor
/// and the replicas of the existing partitions cannot change in `alter` (that is a Raft
/// membership change). Partitions added get their lists when the stream has a manual
/// assignment. `acks`, `min_insync_replicas` and `ack_timeout` may change.
pub fn check_alter(before: &StreamConfig, after: &StreamConfig) -> Result<(), SettingError> {
    let (was, is) = (&before.replication, &after.replication);
    if was.factor != is.factor {
        let now = was.factor.map_or_else(|| "unset".to_owned(), |factor| factor.to_string());
        let value = is.factor.map(|factor| factor.to_string());
        return Err(bad("replication_factor", value.as_deref(), format!("{MEMBERSHIP_CHANGE} (it is {now})")));
    }
    let kept = was.assignment == is.assignment
        || (!was.assignment.is_empty()
            && after.partitions > before.partitions
            && is.assignment.starts_with(&was.assignment));
    if !kept {
        let now = if was.assignment.is_empty() {
            "placed by the cluster".to_owned()
        } else {
            format!("{:?}", assignment_text(&was.assignment))
        };
        let reason = format!("{MEMBERSHIP_CHANGE} (it is {now}; added partitions may get their lists)");
        return Err(bad("replica_assignment", Some(&assignment_text(&is.assignment)), reason));
    }
    Ok(())
}

/// Checks the log, compaction and replication settings of `stream` together, naming the
/// first bad key.
pub fn validate(stream: &StreamConfig) -> Result<(), SettingError> {
    validate_replication(stream)?;
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
    let replication = &stream.replication;
    if let Some(factor) = replication.factor {
        out.push(("replication_factor", factor.to_string()));
    }
    out.push(("acks", acks_name(replication.acks).into()));
    if let Some(min) = replication.min_insync_replicas {
        out.push(("min_insync_replicas", min.to_string()));
    }
    out.push(("ack_timeout", replication.ack_timeout.as_millis().to_string()));
    if !replication.assignment.is_empty() {
        out.push(("replica_assignment", assignment_text(&replication.assignment)));
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

/// `quorum` or `leader`.
pub fn acks_name(acks: Acks) -> &'static str {
    match acks {
        Acks::Quorum => "quorum",
        Acks::Leader => "leader",
    }
}

/// A `$streams` value that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stream definition: {0}")]
pub struct BadDefinition(String);

/// Encodes `stream` as a `$streams` record value (never empty; see the module docs).
pub fn encode_definition(stream: &StreamConfig, created_at_ms: i64) -> Vec<u8> {
    let replicated = stream.replication != ReplicationSettings::default();
    let mut out = Vec::with_capacity(256);
    out.push(if replicated { DEFINITION_VERSION } else { DEFINITION_VERSION_1 });
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
    let mut settings = settings_of(stream);
    settings.retain(|(key, _)| !REPLICATION_KEYS.contains(&key.as_str()));
    out.extend_from_slice(&(settings.len() as u16).to_le_bytes());
    for (key, value) in &settings {
        put(&mut out, key);
        put(&mut out, value);
    }
    if replicated {
        // validate() bounds every count here: factors to 7, partitions to 1024, timeouts to
        // 10 min; the casts cannot cut a valid definition.
        let r = &stream.replication;
        out.push(r.factor.map_or(0, |factor| factor.min(u32::from(u8::MAX)) as u8));
        out.push(match r.acks {
            Acks::Quorum => 0,
            Acks::Leader => 1,
        });
        out.push(r.min_insync_replicas.map_or(0, |min| min.min(u32::from(u8::MAX)) as u8));
        out.extend_from_slice(&(r.ack_timeout.as_millis().min(u128::from(u32::MAX)) as u32).to_le_bytes());
        out.extend_from_slice(&(r.assignment.len().min(usize::from(u16::MAX)) as u16).to_le_bytes());
        for ids in r.assignment.iter().take(usize::from(u16::MAX)) {
            out.push(ids.len().min(usize::from(u8::MAX)) as u8);
            for id in ids.iter().take(usize::from(u8::MAX)) {
                out.extend_from_slice(&id.to_le_bytes());
            }
        }
    }
    out
}

/// Decodes the `$streams` value of stream `name` and checks it like any stream definition.
/// Returns the stream and when it was created (unix ms).
pub fn decode_definition(name: &str, bytes: &[u8]) -> Result<(StreamConfig, i64), BadDefinition> {
    let mut reader = Reader(bytes);
    let version = reader.take(1)?[0];
    if version != DEFINITION_VERSION && version != DEFINITION_VERSION_1 {
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
        let (key, value) = (reader.string()?, reader.string()?);
        if REPLICATION_KEYS.contains(&key.as_str()) {
            return Err(BadDefinition(format!("{key} among the text settings (it has its own fields)")));
        }
        settings.push((key, value));
    }
    let mut replication = ReplicationSettings::default();
    if version == DEFINITION_VERSION {
        let [factor, acks, min_insync] = reader.array()?;
        replication.factor = (factor != 0).then_some(u32::from(factor));
        replication.acks = match acks {
            0 => Acks::Quorum,
            1 => Acks::Leader,
            other => return Err(BadDefinition(format!("unknown acks {other}"))),
        };
        replication.min_insync_replicas = (min_insync != 0).then_some(u32::from(min_insync));
        replication.ack_timeout = Duration::from_millis(u64::from(u32::from_le_bytes(reader.array()?)));
        for _ in 0..reader.u16()? {
            let replicas = reader.take(1)?[0];
            let ids = (0..replicas).map(|_| reader.array().map(u64::from_le_bytes)).collect::<Result<_, _>>()?;
            replication.assignment.push(ids);
        }
    }
    if !reader.0.is_empty() {
        return Err(BadDefinition("trailing bytes".into()));
    }
    validate_topics(&stream.topics).map_err(|e| BadDefinition(e.to_string()))?;
    apply_settings(&mut stream, &settings).map_err(|e| BadDefinition(e.to_string()))?;
    stream.replication = replication;
    validate(&stream).map_err(|e| BadDefinition(e.to_string()))?;
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
        versioned[0] = 3;
        assert!(decode_definition("orders", &versioned).is_err());
        let plain = StreamConfig::new("plain");
        assert_eq!(decode_definition("plain", &encode_definition(&plain, 5)), Ok((plain, 5)));
    }

    fn replicated(partitions: u32, settings: &[(&str, &str)]) -> Result<StreamConfig, SettingError> {
        let mut stream = StreamConfig::new("r");
        stream.partitions = partitions;
        apply_settings(&mut stream, &pairs(settings)).map(|()| stream)
    }

    #[test]
    fn replication_settings_apply_and_list_back() {
        let stream = replicated(
            3,
            &[
                ("replication_factor", "3"),
                ("acks", "leader"),
                ("min_insync_replicas", "2"),
                ("ack_timeout", "1500ms"),
                ("replica_assignment", " 1,2,3; 2, 3,1;3,1,2 "),
            ],
        )
        .unwrap();
        let r = &stream.replication;
        assert_eq!((r.factor, r.acks, r.min_insync_replicas), (Some(3), Acks::Leader, Some(2)));
        assert_eq!(r.ack_timeout, Duration::from_millis(1500));
        assert_eq!(r.assignment, vec![vec![1, 2, 3], vec![2, 3, 1], vec![3, 1, 2]]);
        let listed = settings_of(&stream);
        let tail: Vec<(&str, &str)> =
            listed[listed.len() - 5..].iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            tail,
            [
                ("replication_factor", "3"),
                ("acks", "leader"),
                ("min_insync_replicas", "2"),
                ("ack_timeout", "1500"),
                ("replica_assignment", "1,2,3;2,3,1;3,1,2"),
            ]
        );
        let mut again = StreamConfig::new("r");
        again.partitions = 3;
        apply_settings(&mut again, &listed).unwrap();
        assert_eq!(again, stream);
        // Unset ones are left out; acks and ack_timeout always have a value.
        let plain: Vec<String> = settings_of(&StreamConfig::new("p")).into_iter().map(|(k, _)| k).collect();
        let present: Vec<&str> = REPLICATION_KEYS.iter().copied().filter(|k| plain.iter().any(|p| p == k)).collect();
        assert_eq!(present, ["acks", "ack_timeout"]);
        // Without a factor the lists only need one length; "" is no assignment.
        assert!(replicated(2, &[("replica_assignment", "4,5;5,4"), ("min_insync_replicas", "2")]).is_ok());
        assert_eq!(
            replicated(1, &[("replica_assignment", "")]).unwrap().replication.assignment,
            Vec::<Vec<u64>>::new()
        );
        assert_eq!(parse_assignment("7").unwrap(), vec![vec![7]]);
        assert_eq!(assignment_text(&[vec![1, 2], vec![2, 1]]), "1,2;2,1");
    }

    #[test]
    fn bad_replication_settings_name_their_key() {
        // (partitions, settings, the key named, part of the reason)
        type Case = (u32, &'static [(&'static str, &'static str)], &'static str, &'static str);
        let cases: &[Case] = &[
            (1, &[("replication_factor", "0")], "replication_factor", "between 1 and 7"),
            (1, &[("replication_factor", "8")], "replication_factor", "between 1 and 7"),
            (1, &[("replication_factor", "99999999999")], "replication_factor", "between 1 and 7"),
            (1, &[("replication_factor", "three")], "replication_factor", "integer"),
            (1, &[("acks", "all")], "acks", "\"quorum\" or \"leader\""),
            (1, &[("min_insync_replicas", "0")], "min_insync_replicas", "between 1 and 7"),
            (1, &[("replication_factor", "3"), ("min_insync_replicas", "4")], "min_insync_replicas", "at most"),
            (1, &[("replica_assignment", "1,2"), ("min_insync_replicas", "3")], "min_insync_replicas", "at most"),
            (1, &[("ack_timeout", "0")], "ack_timeout", "between 1 ms and 600000 ms"),
            (1, &[("ack_timeout", "11m")], "ack_timeout", "between 1 ms"),
            (1, &[("ack_timeout", "soon")], "ack_timeout", "not a duration"),
            (1, &[("replica_assignment", "1,x")], "replica_assignment", "\"x\" is not a node id"),
            (2, &[("replica_assignment", "1,2;")], "replica_assignment", "partition 1: \"\" is not a node id"),
            (1, &[("replica_assignment", "1,2,1")], "replica_assignment", "names a node twice"),
            (1, &[("replica_assignment", "0,1")], "replica_assignment", "ids are > 0"),
            (3, &[("replica_assignment", "1;2")], "replica_assignment", "2 replica lists for 3 partitions"),
            (
                2,
                &[("replica_assignment", "1,2;2")],
                "replica_assignment",
                "partition 1 has 1 replicas, partition 0 has 2",
            ),
            (1, &[("replica_assignment", "1,2,3,4,5,6,7,8")], "replica_assignment", "1 to 7"),
            (
                1,
                &[("replica_assignment", "1,2"), ("replication_factor", "3")],
                "replica_assignment",
                "replication_factor is 3",
            ),
        ];
        for (partitions, settings, key, reason) in cases {
            let error = replicated(*partitions, settings).unwrap_err();
            assert_eq!(error.key, *key, "{settings:?}: {error}");
            assert!(error.to_string().starts_with(key) && error.to_string().contains(reason), "{settings:?}: {error}");
        }
    }

    #[test]
    fn alter_keeps_the_replica_set() {
        let before = replicated(2, &[("replication_factor", "2"), ("replica_assignment", "1,2;2,1")]).unwrap();
        let altered = |partitions: u32, settings: &[(&str, &str)]| {
            let mut after = before.clone();
            after.partitions = partitions;
            apply_settings(&mut after, &pairs(settings)).and_then(|()| check_alter(&before, &after))
        };
        assert_eq!(altered(2, &[("acks", "leader"), ("min_insync_replicas", "1"), ("ack_timeout", "9s")]), Ok(()));
        assert_eq!(altered(2, &[("replication_factor", "2"), ("replica_assignment", "1,2;2,1")]), Ok(()));
        // Added partitions get their lists; the existing ones keep theirs.
        assert_eq!(altered(3, &[("replica_assignment", "1,2;2,1;1,2")]), Ok(()));
        for (partitions, settings, key) in [
            (2, &[("replication_factor", "3"), ("replica_assignment", "1,2,3;2,3,1")][..], "replication_factor"),
            (2, &[("replica_assignment", "2,1;2,1")][..], "replica_assignment"),
            (3, &[("replica_assignment", "2,1;2,1;1,2")][..], "replica_assignment"),
        ] {
            let error = altered(partitions, settings).unwrap_err();
            assert_eq!(error.key, key, "{error}");
            assert!(error.to_string().contains(MEMBERSHIP_CHANGE), "{error}");
        }
        // Adding partitions to a manually placed stream without their lists is refused too.
        assert_eq!(altered(3, &[]).unwrap_err().key, "replica_assignment");
        let plain = StreamConfig::new("p");
        let mut placed = plain.clone();
        placed.replication.assignment = vec![vec![1]];
        assert_eq!(check_alter(&plain, &placed).unwrap_err().key, "replica_assignment");
    }

    #[test]
    fn version_2_definitions_carry_the_replication_settings() {
        let stream = replicated(
            3,
            &[
                ("retention_ms", "60000"),
                ("replication_factor", "3"),
                ("acks", "leader"),
                ("min_insync_replicas", "2"),
                ("ack_timeout", "250"),
                ("replica_assignment", "1,2,3;2,3,1;3,1,2"),
            ],
        )
        .unwrap();
        let bytes = encode_definition(&stream, -4);
        assert_eq!(bytes[0], 2);
        assert_eq!(decode_definition("r", &bytes), Ok((stream.clone(), -4)));
        for cut in 0..bytes.len() {
            assert!(decode_definition("r", &bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_definition("r", &longer).is_err());
        // Each replication setting alone is carried, even with the others at their defaults.
        for setting in [
            ("replication_factor", "1"),
            ("acks", "leader"),
            ("min_insync_replicas", "1"),
            ("ack_timeout", "5001"),
            ("replica_assignment", "9"),
        ] {
            let one = replicated(1, &[setting]).unwrap();
            let bytes = encode_definition(&one, 1);
            assert_eq!((bytes[0], decode_definition("r", &bytes)), (2, Ok((one, 1))), "{setting:?}");
        }
        // acks is 0 or 1; a stored definition is checked like a new one.
        let acks_at = bytes.len() - 2 - 3 * (1 + 3 * 8) - 4 - 2;
        assert_eq!(bytes[acks_at], 1);
        let mut unknown = bytes.clone();
        unknown[acks_at] = 2;
        assert_eq!(decode_definition("r", &unknown), Err(BadDefinition("unknown acks 2".into())));
        let mut duplicate = bytes.clone();
        let last_id = duplicate.len() - 8;
        duplicate[last_id..].copy_from_slice(&1u64.to_le_bytes());
        assert!(decode_definition("r", &duplicate).unwrap_err().to_string().contains("replica_assignment"));
    }

    #[test]
    fn version_1_definitions_still_decode_with_replication_defaults() {
        // A version 1 value as brokers before replication wrote it, built by hand.
        let mut v1 = vec![1u8];
        v1.extend_from_slice(&1_600_000_000_000i64.to_le_bytes());
        v1.extend_from_slice(&2u32.to_le_bytes());
        v1.extend_from_slice(&1u16.to_le_bytes());
        let put = |out: &mut Vec<u8>, text: &str| {
            out.extend_from_slice(&(text.len() as u16).to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        };
        put(&mut v1, "a/#");
        v1.extend_from_slice(&1u16.to_le_bytes());
        put(&mut v1, "retention_ms");
        put(&mut v1, "60000");
        let (stream, created_at_ms) = decode_definition("old", &v1).unwrap();
        assert_eq!(created_at_ms, 1_600_000_000_000);
        assert_eq!((stream.partitions, stream.topics.clone()), (2, vec!["a/#".to_owned()]));
        assert_eq!(stream.retention.retention_ms, Some(60_000));
        assert_eq!(stream.replication, ReplicationSettings::default());
        // Default replication is still written as version 1, so older brokers read it.
        assert_eq!(encode_definition(&stream, created_at_ms)[0], 1);
        assert_eq!(decode_definition("old", &encode_definition(&stream, created_at_ms)), Ok((stream, created_at_ms)));
        // Replication settings never travel as text.
        let mut texted = v1[..v1.len() - 2 - (2 + 12) - (2 + 5)].to_vec();
        texted.extend_from_slice(&1u16.to_le_bytes());
        put(&mut texted, "acks");
        put(&mut texted, "leader");
        assert!(decode_definition("old", &texted).unwrap_err().to_string().contains("acks among the text settings"));
    }
}
