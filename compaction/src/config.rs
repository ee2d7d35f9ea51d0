//! Cleanup policy and cleaner settings, validated once so the passes can trust them.

use std::{str::FromStr, time::Duration};

use bytes::Bytes;

use crate::CompactionError;

/// The header the MQTT frontend stores a message's topic in; the fallback compaction key.
pub const TOPIC_HEADER: &str = "mqtt.topic";

/// What happens to old data in a stream (Kafka's `cleanup.policy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CleanupPolicy {
    /// Retention deletes whole old segments.
    #[default]
    Delete,
    /// The cleaner keeps the latest record per key; nothing is deleted by age or size.
    Compact,
    /// Both: compacted, and retention still deletes old segments.
    CompactDelete,
}

impl CleanupPolicy {
    /// Whether the cleaner compacts this stream.
    pub fn compacts(self) -> bool {
        matches!(self, CleanupPolicy::Compact | CleanupPolicy::CompactDelete)
    }

    /// Whether retention deletes segments of this stream.
    pub fn deletes(self) -> bool {
        matches!(self, CleanupPolicy::Delete | CleanupPolicy::CompactDelete)
    }
}

impl FromStr for CleanupPolicy {
    type Err = CompactionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "delete" => Ok(CleanupPolicy::Delete),
            "compact" => Ok(CleanupPolicy::Compact),
            "compact,delete" | "delete,compact" => Ok(CleanupPolicy::CompactDelete),
            other => Err(CompactionError::InvalidConfig {
                key: "cleanup_policy",
                value: other.to_string(),
                reason: "must be \"delete\", \"compact\" or \"compact,delete\"",
            }),
        }
    }
}

/// How one partition is compacted.
#[derive(Clone, Debug, PartialEq)]
pub struct CompactionConfig {
    /// Header whose value is the compaction key (an MQTT 5 user property such as `entity_id`).
    pub key_header: Option<Bytes>,
    /// Header used when `key_header` is unset or absent: the topic.
    pub topic_header: Bytes,
    /// A segment is cleanable only once its newest record is at least this old.
    pub min_compaction_lag_ms: u64,
    /// A partition whose oldest dirty segment is this old is cleaned whatever its dirty ratio.
    pub max_compaction_lag_ms: Option<u64>,
    /// Clean only when dirty bytes / cleanable bytes reach this.
    pub min_cleanable_dirty_ratio: f64,
    /// A tombstone (empty value) is dropped once its timestamp is this old.
    pub delete_retention_ms: u64,
    /// Memory for the key → latest-offset map of one pass; more keys take more passes. A
    /// partition under [`crate::Maintenance`] gets the node's
    /// [`MaintenanceConfig::cleaner_buffer_bytes`] instead.
    pub offset_map_bytes: usize,
    /// Rewritten segments are merged up to this size.
    pub segment_bytes: u64,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            key_header: None,
            topic_header: Bytes::from_static(TOPIC_HEADER.as_bytes()),
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: None,
            min_cleanable_dirty_ratio: 0.5,
            delete_retention_ms: 24 * 3600 * 1000,
            offset_map_bytes: DEFAULT_CLEANER_BUFFER_BYTES,
            segment_bytes: 128 << 20,
        }
    }
}

/// The smallest offset map accepted.
pub const MIN_OFFSET_MAP_BYTES: usize = 1024;
/// The default offset map of one cleaning pass: 32 MiB, about a million keys.
pub const DEFAULT_CLEANER_BUFFER_BYTES: usize = 32 << 20;

impl CompactionConfig {
    /// Checks every value, naming the first bad one.
    pub fn validate(&self) -> Result<(), CompactionError> {
        let bad = |key, value: String, reason| Err(CompactionError::InvalidConfig { key, value, reason });
        if !(0.0..=1.0).contains(&self.min_cleanable_dirty_ratio) {
            return bad(
                "min_cleanable_dirty_ratio",
                self.min_cleanable_dirty_ratio.to_string(),
                "must be within 0.0..=1.0",
            );
        }
        if self.offset_map_bytes < MIN_OFFSET_MAP_BYTES {
            return bad("cleaner_buffer_bytes", self.offset_map_bytes.to_string(), "must be at least 1024");
        }
        if let Some(max) = self.max_compaction_lag_ms
            && max < self.min_compaction_lag_ms
        {
            return bad("max_compaction_lag_ms", max.to_string(), "must be at least min_compaction_lag_ms");
        }
        if !(strata_log::MIN_SEGMENT_BYTES..=strata_log::MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return bad("segment_bytes", self.segment_bytes.to_string(), "must be between 1024 and 1073741824");
        }
        if self.topic_header.is_empty() {
            return bad("topic_header", String::new(), "must not be empty");
        }
        Ok(())
    }
}

/// Settings of the node's maintenance threads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaintenanceConfig {
    /// How often retention checks every partition.
    pub retention_check_interval: Duration,
    /// Cleaner threads; each cleans one partition at a time.
    pub cleaner_threads: usize,
    /// Cap on the bytes per second the cleaners read, shared by all of them; `None` = no cap.
    pub cleaner_throttle_bytes_per_sec: Option<u64>,
    /// How often an idle cleaner looks for a dirty partition.
    pub cleaner_backoff: Duration,
    /// Memory of each cleaner thread's key → latest-offset map (one pass); it replaces the
    /// `offset_map_bytes` of every partition registered, so the node's cleaner memory is
    /// bounded by `cleaner_threads` × this.
    pub cleaner_buffer_bytes: usize,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig {
            retention_check_interval: Duration::from_secs(30),
            cleaner_threads: 1,
            cleaner_throttle_bytes_per_sec: Some(DEFAULT_CLEANER_THROTTLE),
            cleaner_backoff: Duration::from_secs(15),
            cleaner_buffer_bytes: DEFAULT_CLEANER_BUFFER_BYTES,
        }
    }
}

/// The default cleaner I/O cap: 64 MiB/s, a fraction of what one disk sustains, so appends
/// keep their speed.
pub const DEFAULT_CLEANER_THROTTLE: u64 = 64 << 20;

impl MaintenanceConfig {
    /// Checks every value, naming the first bad one.
    pub fn validate(&self) -> Result<(), CompactionError> {
        let bad = |key, value: String, reason| Err(CompactionError::InvalidConfig { key, value, reason });
        if self.retention_check_interval.is_zero() {
            return bad("retention_check_interval_ms", "0".into(), "must be at least 1");
        }
        if !(1..=64).contains(&self.cleaner_threads) {
            return bad("cleaner_threads", self.cleaner_threads.to_string(), "must be between 1 and 64");
        }
        if self.cleaner_throttle_bytes_per_sec == Some(0) {
            return bad("cleaner_throttle_bytes_per_sec", "0".into(), "must be at least 1 (omit it for no cap)");
        }
        if self.cleaner_backoff.is_zero() {
            return bad("cleaner_backoff_ms", "0".into(), "must be at least 1");
        }
        if self.cleaner_buffer_bytes < MIN_OFFSET_MAP_BYTES {
            return bad("cleaner_buffer_bytes", self.cleaner_buffer_bytes.to_string(), "must be at least 1024");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_bad_ones_name_the_key() {
        assert_eq!("compact,delete".parse::<CleanupPolicy>().unwrap(), CleanupPolicy::CompactDelete);
        assert!("compact".parse::<CleanupPolicy>().unwrap().compacts());
        let err = "shred".parse::<CleanupPolicy>().unwrap_err().to_string();
        assert!(err.contains("cleanup_policy") && err.contains("shred"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (CompactionConfig { min_cleanable_dirty_ratio: 1.5, ..Default::default() }, "min_cleanable_dirty_ratio"),
            (CompactionConfig { offset_map_bytes: 10, ..Default::default() }, "cleaner_buffer_bytes"),
            (
                CompactionConfig { min_compaction_lag_ms: 10, max_compaction_lag_ms: Some(5), ..Default::default() },
                "max_compaction_lag_ms",
            ),
        ];
        for (config, key) in cases {
            let message = config.validate().unwrap_err().to_string();
            assert!(message.contains(key), "{message:?} should name {key}");
        }
        CompactionConfig::default().validate().unwrap();
        let threads = MaintenanceConfig { cleaner_threads: 0, ..Default::default() };
        assert!(threads.validate().unwrap_err().to_string().contains("cleaner_threads"));
        let buffer = MaintenanceConfig { cleaner_buffer_bytes: 100, ..Default::default() };
        assert!(buffer.validate().unwrap_err().to_string().contains("cleaner_buffer_bytes"));
    }
}
