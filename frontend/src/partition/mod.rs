//! The partition handle: the one way the frontend touches a partition, and the only module
//! of `frontend/src` that names the log (`strata_log::Log`). Issue 19: a replicated
//! partition (Raft, issue 20) is to be another implementation of this one surface.
//!
//! What it offers:
//! - proposing records: [`PartitionHandle::propose`] (and the lower-level
//!   [`PartitionHandle::send`], [`PartitionHandle::reserve`] and the inline fast path
//!   [`PartitionHandle::try_append_now`]) resolve once the records are committed under the
//!   partition's flush policy (`writer.rs`: one writer thread per partition, batching, the
//!   durability wait, disk-full and fsync-failure errors);
//! - the committed offset, the high watermark: [`PartitionHandle::committed`];
//! - reads up to it, by offset ([`PartitionHandle::read`]) and by timestamp
//!   ([`PartitionHandle::offset_for_timestamp`]): the log never returns a record at or past
//!   its high watermark;
//! - its figures for the admin API and the metrics ([`PartitionHandle::figures`],
//!   [`PartitionHandle::storage_problem`]).
//!
//! Committed, and when readers are woken: readers are woken when the committed offset
//! passes a record, never before. Every stream opens its log with
//! `HighWatermarkMode::FollowsLogEnd`, so a record is committed (visible to readers) as soon
//! as it is appended, and durable (acknowledged to its publisher) once flushed per the flush
//! policy, as before: the writer wakes the readers an append concerns right after the
//! append. Under `SetByCaller` (a replicated partition, whose quorum moves the high
//! watermark) the writer holds each appended batch and wakes its readers when
//! `PartitionWriter::set_committed` moves the committed offset past it.

mod replicated;
mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_compaction::{CompactionError, Maintenance, PartitionSettings};
use strata_log::{Fetch, Log, LogConfig, LogOffsets, Record, StoredRecord};
use strata_replication::{Cluster, GroupId, ProposeOptions, ReplicatedPartition, ReplicationError};
use tokio::sync::oneshot;

pub(crate) use replicated::AckPolicy;
pub use strata_log::LogError;
pub use writer::{AppendError, AppendRequest, AppendResult, WriterStopped};

use crate::error::BrokerError;
use crate::interest::AppendSignal;

/// One open partition: its log, behind the writer that alone appends to it.
pub(crate) struct PartitionHandle {
    /// Unique among all partitions opened while the broker runs (never reused, also after
    /// a stream is deleted): in-flight windows key on it. 0 for the internal streams, which
    /// no reader follows.
    pub(crate) id: u32,
    /// The partition number within its stream.
    pub(crate) number: u32,
    log: Arc<Log>,
    writes: Writes,
}

/// Who appends to the partition's log.
enum Writes {
    /// This node alone: the partition's writer thread.
    Local(writer::PartitionWriter),
    /// Raft, through whichever node leads the partition's group (issue 20).
    Replicated(replicated::ReplicatedWriter),
}

/// Proposes `records` to `partition`'s group under `policy`, wherever its leader is: this
/// node's replica when it leads, else forwarded to the leader (retried on a new one within
/// the policy's timeout).
async fn propose_anywhere(
    cluster: &Cluster,
    group: &GroupId,
    records: Vec<Record>,
    policy: AckPolicy,
) -> Result<Vec<u64>, ReplicationError> {
    let options = ProposeOptions { timeout: policy.timeout, min_in_sync: policy.min_in_sync };
    cluster.propose(group, records, options).await
}

/// A partition's offsets and size, read now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PartitionFigures {
    pub(crate) offsets: LogOffsets,
    pub(crate) size_bytes: u64,
    pub(crate) segment_count: u64,
}

/// Where a partition's appends are announced to readers: the broker's append signal and
/// the partition's id.
pub(crate) type Announce = (Arc<AppendSignal>, u32);

impl PartitionHandle {
    /// Opens the partition in `dir` with `config` and starts its writer (thread `name`,
    /// queue of `queue` requests). With `announce`, its appends wake the readers they concern
    /// (a stream's partition); without, nobody (an internal stream's).
    pub(crate) async fn open(
        dir: PathBuf,
        config: LogConfig,
        number: u32,
        queue: usize,
        name: String,
        announce: Option<Announce>,
    ) -> Result<Arc<PartitionHandle>, BrokerError> {
        let opened = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || Log::open(&dir, config))
                .await
                .map_err(|e| BrokerError::Io { what: "opening the log".into(), source: std::io::Error::other(e) })?
        };
        let log = Arc::new(opened.map_err(|source| BrokerError::Log { dir, source })?);
        let id = announce.as_ref().map_or(0, |(_, id)| *id);
        let writer = writer::PartitionWriter::start(Arc::clone(&log), queue, name, announce)
            .map_err(|source| BrokerError::Io { what: "starting a partition writer".into(), source })?;
        Ok(Arc::new(PartitionHandle { id, number, log, writes: Writes::Local(writer) }))
    }

    /// Opens the partition in `dir` as this node's replica of `group` (issue 20): Raft
    /// appends to its log and moves its committed offset. A new group gets `replicas` (node
    /// id → gRPC address) as its first voters when `voters` is given (this node is one of
    /// them); every replica starts it with the same ones.
    /// With `announce`, committed records wake the readers they concern.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn open_replicated(
        cluster: &Cluster,
        group: GroupId,
        dir: PathBuf,
        config: LogConfig,
        number: u32,
        queue: usize,
        policy: AckPolicy,
        voters: Option<BTreeMap<u64, String>>,
        announce: Option<Announce>,
    ) -> Result<Arc<PartitionHandle>, BrokerError> {
        let replication = |source: ReplicationError| BrokerError::Replication { group: group.to_string(), source };
        let partition = ReplicatedPartition::open(cluster, &dir, config, group.clone()).await.map_err(replication)?;
        let pristine = partition.metrics().borrow().membership_config.membership().voter_ids().next().is_none();
        if let Some(voters) = voters.filter(|_| pristine) {
            // Safe on every replica at once: each writes the same membership at index 0.
            if let Err(error) = partition.initialize(voters).await {
                tracing::debug!(%group, %error, "the group was initialized already");
            }
        }
        let log = Arc::new(partition.log().clone());
        let id = announce.as_ref().map_or(0, |(_, id)| *id);
        let writer = replicated::ReplicatedWriter::start(
            cluster.clone(),
            Arc::new(partition),
            Arc::clone(&log),
            queue,
            policy,
            announce,
        );
        Ok(Arc::new(PartitionHandle { id, number, log, writes: Writes::Replicated(writer) }))
    }

    /// The partition's Raft replica on this node, when it is replicated.
    pub(crate) fn replica(&self) -> Option<&Arc<ReplicatedPartition>> {
        match &self.writes {
            Writes::Local(_) => None,
            Writes::Replicated(writer) => Some(writer.partition()),
        }
    }

    /// Changes how a replicated partition's publishes are acknowledged (no effect on a
    /// local one).
    pub(crate) fn set_ack_policy(&self, policy: AckPolicy) {
        if let Writes::Replicated(writer) = &self.writes {
            writer.set_policy(policy);
        }
    }

    /// Appends `record` and waits until it is committed: its offset, or why it was not
    /// stored.
    pub(crate) async fn propose(&self, record: Record) -> AppendResult {
        let (durable, done) = oneshot::channel();
        let stopped = || AppendError::failed(format!("the writer of {} stopped", self.log.dir().display()));
        self.send(AppendRequest { record, durable: Some(durable) }).await.map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }

    /// Queues `request` for the writer; waits while the queue is full. Cancel-safe. The
    /// request's `durable` hears the outcome once committed.
    pub(crate) async fn send(&self, request: AppendRequest) -> Result<(), WriterStopped> {
        match &self.writes {
            Writes::Local(writer) => writer.send(request).await,
            Writes::Replicated(writer) => writer.send(request).await,
        }
    }

    /// Holds a place in the writer's queue, for a request to be sent without waiting (under
    /// a lock, say).
    pub(crate) async fn reserve(&self) -> Result<writer::Reserved<'_>, WriterStopped> {
        match &self.writes {
            Writes::Local(writer) => writer.reserve().await,
            Writes::Replicated(writer) => writer.reserve().await,
        }
    }

    /// Appends `record` on the caller's thread when that keeps order and cannot block
    /// (`writer.rs`); else gives it back, for [`PartitionHandle::send`].
    pub(crate) fn try_append_now(&self, record: Record) -> Result<AppendResult, Record> {
        match &self.writes {
            Writes::Local(writer) => writer.try_append_now(record),
            // Raft appends: there is no inline path.
            Writes::Replicated(_) => Err(record),
        }
    }

    /// The committed offset (the high watermark): readers see the offsets below it.
    pub(crate) fn committed(&self) -> u64 {
        self.log.offsets().high_watermark
    }

    /// The partition's offsets now.
    pub(crate) fn offsets(&self) -> LogOffsets {
        self.log.offsets()
    }

    /// Committed records from `offset`, about `max_bytes` of them (at least one batch).
    pub(crate) fn read(&self, offset: u64, max_bytes: usize) -> Result<Fetch, LogError> {
        self.log.read(offset, max_bytes)
    }

    /// The first offset whose record is at or after `timestamp_ms`, if any.
    pub(crate) fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<u64>, LogError> {
        self.log.offset_for_timestamp(timestamp_ms)
    }

    /// Calls `apply` on every committed record from `from` (or the log start, if that is
    /// later) to the committed offset, in offset order. Returns the offset it stopped at:
    /// where the next call continues. Reads the segments: from the log start, call it off
    /// the async workers.
    pub(crate) fn replay_from(&self, from: u64, mut apply: impl FnMut(StoredRecord)) -> Result<u64, LogError> {
        let mut offset = from.max(self.log.offsets().log_start);
        loop {
            let fetch = self.log.read(offset, 1 << 20)?;
            let Some(next) = fetch.next_offset() else { return Ok(offset) };
            for stored in fetch.records(offset)? {
                apply(stored);
            }
            offset = next;
        }
    }

    /// Calls `apply` on every committed record, from the log start on (see
    /// [`PartitionHandle::replay_from`]).
    pub(crate) fn replay(&self, apply: impl FnMut(StoredRecord)) -> Result<u64, LogError> {
        self.replay_from(0, apply)
    }

    /// A receiver of the committed offset, told each time it advances.
    pub(crate) fn watch_committed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.log.watch_high_watermark()
    }

    /// Offsets, size and segments, read now. Lists the segment files: call it off the async
    /// workers when it matters.
    pub(crate) fn figures(&self) -> PartitionFigures {
        PartitionFigures {
            offsets: self.log.offsets(),
            size_bytes: self.log.size_bytes(),
            segment_count: self.log.segment_count() as u64,
        }
    }

    /// The partition's segments, oldest first, as retention plans over them (the dashboard's
    /// segment map).
    pub(crate) fn segment_summaries(&self) -> Vec<strata_log::SegmentSummary> {
        self.log.segment_summaries()
    }

    /// Why the partition cannot take appends now, if it cannot: an fsync that failed (until
    /// the writer recovers it) or a full disk (until space is freed).
    pub(crate) fn storage_problem(&self) -> Option<String> {
        if let Some(error) = self.log.sync_failure() {
            return Some(error.to_string());
        }
        self.log.disk_full().then(|| format!("{}: the disk is full", self.log.dir().display()))
    }

    /// Whether an fsync failed and was not recovered yet.
    pub(crate) fn sync_failed(&self) -> bool {
        self.log.sync_failure().is_some()
    }

    /// Whether the last append found the disk full.
    pub(crate) fn disk_full(&self) -> bool {
        self.log.disk_full()
    }

    /// Calls `observe` with the time each fsync of this partition takes.
    pub(crate) fn on_fsync(&self, observe: strata_log::FsyncObserver) {
        self.log.on_fsync(observe);
    }

    /// Has `maintenance` apply `settings` to this partition under `name` (`<stream>/<n>`).
    pub(crate) fn register_maintenance(
        &self,
        maintenance: &Maintenance,
        name: String,
        settings: PartitionSettings,
    ) -> Result<(), CompactionError> {
        maintenance.register(name, Log::clone(&self.log), settings)
    }

    /// The partition's directory.
    pub(crate) fn dir(&self) -> &Path {
        self.log.dir()
    }

    /// Closes the log (flushed, with its clean-shutdown marker). Blocking. A replicated
    /// partition's Raft must be stopped first ([`PartitionHandle::stop_replication`]).
    pub(crate) fn close(&self) -> Result<(), LogError> {
        self.log.close()
    }

    /// Stops a replicated partition's Raft replica (peers no longer reach it here) and
    /// closes its log; nothing for a local partition.
    pub(crate) async fn stop_replication(&self) {
        if let Some(replica) = self.replica()
            && let Err(error) = replica.shutdown().await
        {
            tracing::warn!(group = %replica.group(), %error, "stopping a replica");
        }
    }

    /// Opens partition `number` in `dir` without a runtime, its appends announced to
    /// nobody (unit tests).
    #[cfg(test)]
    pub(crate) fn open_for_tests(dir: &Path, config: LogConfig, number: u32) -> Arc<PartitionHandle> {
        let log = Arc::new(Log::open(dir, config).expect("opening a test partition"));
        let writer = writer::PartitionWriter::start(Arc::clone(&log), 16, format!("test-writer-{number}"), None)
            .expect("starting a test writer");
        Arc::new(PartitionHandle { id: 0, number, log, writes: Writes::Local(writer) })
    }

    /// The log itself, for unit tests that damage it or look under the handle.
    #[cfg(test)]
    pub(crate) fn log_for_tests(&self) -> &Log {
        &self.log
    }
}
