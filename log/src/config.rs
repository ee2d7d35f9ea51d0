//! Per-partition settings, validated once at open so the hot path can trust them.

use std::time::Duration;

use crate::LogError;

/// Compression of a batch's records section.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// Records are stored as encoded.
    #[default]
    None,
    /// Records are stored as one zstd frame per batch.
    Zstd,
}

/// When an append counts as durable, and so when a QoS 1/2 acknowledgement may go out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Durable after an fsync covering the record; concurrent waiters share one fsync.
    Always,
    /// Durable once written to the operating system; fsync runs at least this often, so a
    /// power loss loses at most this much and a process crash loses nothing.
    Interval(Duration),
    /// Durable once written to the operating system; the kernel decides when to write back.
    Never,
}

impl Default for FlushPolicy {
    fn default() -> Self {
        FlushPolicy::Interval(Duration::from_millis(DEFAULT_FLUSH_INTERVAL_MS))
    }
}

/// The default fsync interval under [`FlushPolicy::Interval`].
pub const DEFAULT_FLUSH_INTERVAL_MS: u64 = 100;

/// Who moves the high watermark, the end of what readers may see.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HighWatermarkMode {
    /// A single node: every append is visible as soon as it is written.
    #[default]
    FollowsLogEnd,
    /// Replication commits: the owner calls [`crate::Log::set_high_watermark`].
    SetByCaller,
}

/// Settings of one partition log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// A segment rolls when the next batch would take it past this size: bytes as stored,
    /// after compression (as Kafka's `segment.bytes`).
    pub segment_bytes: u64,
    /// A segment rolls once its first batch is this old, if set.
    pub segment_ms: Option<u64>,
    /// Bytes written between two index entries.
    pub index_interval_bytes: u64,
    /// Durability of appends.
    pub flush: FlushPolicy,
    /// Compression of new batches.
    pub compression: Compression,
    /// Who moves the high watermark.
    pub high_watermark: HighWatermarkMode,
}

/// Smallest accepted `segment_bytes`.
pub const MIN_SEGMENT_BYTES: u64 = 1024;
/// Largest accepted `segment_bytes`: index positions are 32 bits.
pub const MAX_SEGMENT_BYTES: u64 = 1 << 30;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 128 << 20,
            segment_ms: Some(7 * 24 * 3600 * 1000),
            index_interval_bytes: 4096,
            flush: FlushPolicy::default(),
            compression: Compression::None,
            high_watermark: HighWatermarkMode::FollowsLogEnd,
        }
    }
}

impl LogConfig {
    /// Checks every value, naming the first bad one.
    pub fn validate(&self) -> Result<(), LogError> {
        let bad = |key: &'static str, value: String, reason: &'static str| {
            Err(LogError::InvalidConfig { key, value, reason })
        };
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return bad("segment_bytes", self.segment_bytes.to_string(), "must be between 1024 and 1073741824");
        }
        if self.segment_ms == Some(0) {
            return bad("segment_ms", "0".into(), "must be at least 1");
        }
        if self.index_interval_bytes == 0 || self.index_interval_bytes > self.segment_bytes {
            return bad(
                "index_interval_bytes",
                self.index_interval_bytes.to_string(),
                "must be between 1 and segment_bytes",
            );
        }
        if let FlushPolicy::Interval(every) = self.flush
            && every.is_zero()
        {
            return bad("flush_interval_ms", "0".into(), "must be at least 1");
        }
        Ok(())
    }

    /// How many index entries an active segment may need.
    pub(crate) fn index_capacity(&self) -> usize {
        (self.segment_bytes / self.index_interval_bytes + 2) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_their_key() {
        let cases: [(LogConfig, &str); 4] = [
            (LogConfig { segment_bytes: 10, ..Default::default() }, "segment_bytes"),
            (LogConfig { segment_ms: Some(0), ..Default::default() }, "segment_ms"),
            (LogConfig { index_interval_bytes: 0, ..Default::default() }, "index_interval_bytes"),
            (LogConfig { flush: FlushPolicy::Interval(Duration::ZERO), ..Default::default() }, "flush_interval_ms"),
        ];
        for (config, key) in cases {
            let message = config.validate().unwrap_err().to_string();
            assert!(message.contains(key), "{message:?} should name {key}");
        }
        LogConfig::default().validate().unwrap();
    }
}
