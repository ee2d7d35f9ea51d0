//! What the admin API (`strata serve --grpc`) reads and runs on a live broker: streams and
//! their partitions' offsets and sizes, consumer groups with their committed offsets and lag,
//! and compaction or retention on demand. Plain Rust types; the gRPC mapping lives in the
//! binary, so this crate needs no tonic.

use std::sync::Arc;

use strata_compaction::{CleanupPolicy, Maintenance};

use crate::broker::Shared;
use crate::streams::Stream;

/// A handle to a running broker's admin operations ([`crate::Broker::admin`]).
#[derive(Clone)]
pub struct Admin {
    pub(crate) shared: Arc<Shared>,
}

/// Why an admin operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No stream of that name.
    #[error("unknown stream {0:?}")]
    UnknownStream(String),
    /// No consumer group of that name (groups exist once a `$share/<group>/...` subscription
    /// created them since the broker started).
    #[error("unknown group {0:?}")]
    UnknownGroup(String),
    /// Compaction asked of a stream whose cleanup policy does not compact.
    #[error("stream {0:?} has cleanup_policy \"delete\"; only a compacted stream can be compacted")]
    NotCompacted(String),
    /// The broker is shutting down.
    #[error("the broker is shutting down")]
    ShuttingDown,
    /// The operation itself failed.
    #[error("{0}")]
    Failed(String),
}

/// One stream as the admin API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamInfo {
    /// The stream's name.
    pub name: String,
    /// The topic filters it captures.
    pub topics: Vec<String>,
    /// `delete`, `compact` or `compact,delete`.
    pub cleanup_policy: &'static str,
    /// Its partitions, in order.
    pub partitions: Vec<PartitionInfo>,
}

/// One partition's offsets and size, read now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionInfo {
    /// The partition number.
    pub partition: u32,
    /// First offset still stored.
    pub log_start: u64,
    /// Next offset to be assigned.
    pub log_end: u64,
    /// Readers see offsets below this.
    pub high_watermark: u64,
    /// Compaction has cleaned everything below this.
    pub cleaned_up_to: u64,
    /// Bytes of the segment files.
    pub size_bytes: u64,
    /// Segments.
    pub segment_count: u64,
}

/// What one compaction on demand did to one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionCompaction {
    /// The partition number.
    pub partition: u32,
    /// Cleaning passes run (0: nothing was dirty enough).
    pub passes: u32,
    /// Bytes read.
    pub bytes_read: u64,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// Everything below this offset is now cleaned.
    pub cleaned_up_to: u64,
}

/// One consumer group, read now.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupInfo {
    /// The group's name.
    pub name: String,
    /// The topic filter it consumes.
    pub filter: String,
    /// Connected members.
    pub members: u32,
    /// Per stream partition: committed offset and lag.
    pub partitions: Vec<GroupPartitionInfo>,
}

/// A group's position in one partition.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupPartitionInfo {
    /// The stream.
    pub stream: String,
    /// The partition number.
    pub partition: u32,
    /// The lowest offset not yet acknowledged.
    pub committed: u64,
    /// The partition's log end.
    pub log_end: u64,
    /// `log_end - committed`.
    pub lag: u64,
}

impl GroupInfo {
    /// Sum of the partitions' lag.
    pub fn lag(&self) -> u64 {
        self.partitions.iter().map(|p| p.lag).sum()
    }
}

fn policy_name(policy: CleanupPolicy) -> &'static str {
    match policy {
        CleanupPolicy::Delete => "delete",
        CleanupPolicy::Compact => "compact",
        CleanupPolicy::CompactDelete => "compact,delete",
    }
}

fn stream_info(stream: &Stream) -> StreamInfo {
    let partitions = stream
        .partitions
        .iter()
        .map(|p| {
            let offsets = p.log.offsets();
            PartitionInfo {
                partition: p.number,
                log_start: offsets.log_start,
                log_end: offsets.log_end,
                high_watermark: offsets.high_watermark,
                cleaned_up_to: offsets.cleaned_up_to,
                size_bytes: p.log.size_bytes(),
                segment_count: p.log.segment_count() as u64,
            }
        })
        .collect();
    StreamInfo {
        name: stream.name.clone(),
        topics: stream.topics.clone(),
        cleanup_policy: policy_name(stream.cleanup_policy),
        partitions,
    }
}

impl Admin {
    /// Every stream (not the internal `$` ones), in configuration order. Reading sizes lists
    /// segment files: call it off the async workers.
    pub fn list_streams(&self) -> Vec<StreamInfo> {
        self.shared.streams.all().iter().map(stream_info).collect()
    }

    /// The stream `name`.
    pub fn describe_stream(&self, name: &str) -> Result<StreamInfo, AdminError> {
        self.shared.streams.get(name).map(stream_info).ok_or_else(|| AdminError::UnknownStream(name.to_owned()))
    }

    fn maintenance(&self) -> Result<Arc<Maintenance>, AdminError> {
        let guard = self.shared.maintenance.lock().unwrap_or_else(|p| p.into_inner());
        guard.clone().ok_or(AdminError::ShuttingDown)
    }

    /// Runs one compaction on every partition of `name` now (each only if the cleaner's
    /// planner finds it dirty enough). Blocks while it runs: call it off the async workers.
    pub fn compact_stream(&self, name: &str) -> Result<Vec<PartitionCompaction>, AdminError> {
        let stream = self.shared.streams.get(name).ok_or_else(|| AdminError::UnknownStream(name.to_owned()))?;
        if !stream.cleanup_policy.compacts() {
            return Err(AdminError::NotCompacted(name.to_owned()));
        }
        let maintenance = self.maintenance()?;
        let mut out = Vec::with_capacity(stream.partitions.len());
        for partition in &stream.partitions {
            let outcome = maintenance
                .compact_now(&format!("{}/{}", stream.name, partition.number))
                .map_err(|e| AdminError::Failed(format!("compacting {}/{}: {e}", stream.name, partition.number)))?;
            out.push(PartitionCompaction {
                partition: partition.number,
                passes: outcome.passes,
                bytes_read: outcome.bytes_read,
                bytes_freed: outcome.bytes_freed(),
                cleaned_up_to: outcome.cleaned_up_to,
            });
        }
        Ok(out)
    }

    /// Applies retention now. `name` must be a stream, but retention runs over every
    /// partition of the node whose policy deletes (that is what the maintenance service
    /// offers). Returns segments and bytes deleted. Blocks: call it off the async workers.
    pub fn enforce_retention(&self, name: &str) -> Result<(u64, u64), AdminError> {
        if self.shared.streams.get(name).is_none() {
            return Err(AdminError::UnknownStream(name.to_owned()));
        }
        Ok(self.maintenance()?.enforce_retention_now())
    }

    /// Every consumer group created since the broker started, by name.
    pub fn list_groups(&self) -> Vec<GroupInfo> {
        let groups: Vec<_> =
            self.shared.groups.lock().unwrap_or_else(|p| p.into_inner()).values().map(Arc::clone).collect();
        let mut out: Vec<GroupInfo> = groups.iter().map(|g| group_info(g)).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The group `name`.
    pub fn describe_group(&self, name: &str) -> Result<GroupInfo, AdminError> {
        let group = self.shared.groups.lock().unwrap_or_else(|p| p.into_inner()).get(name).map(Arc::clone);
        group.map(|g| group_info(&g)).ok_or_else(|| AdminError::UnknownGroup(name.to_owned()))
    }
}

fn group_info(group: &crate::groups::Group) -> GroupInfo {
    let (members, partitions) = group.snapshot();
    GroupInfo {
        name: group.name.clone(),
        filter: group.filter.clone(),
        members: members as u32,
        partitions: partitions
            .into_iter()
            .map(|(stream, partition, committed, log_end)| GroupPartitionInfo {
                stream: stream.to_string(),
                partition,
                committed,
                log_end,
                lag: log_end.saturating_sub(committed),
            })
            .collect(),
    }
}
