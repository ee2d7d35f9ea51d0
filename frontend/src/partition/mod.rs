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

mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_compaction::{CompactionError, Maintenance, PartitionSettings};
use strata_log::{Fetch, Log, LogConfig, LogOffsets, Record, StoredRecord};
use tokio::sync::oneshot;

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
    writer: writer::PartitionWriter,
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
        Ok(Arc::new(PartitionHandle { id, number, log, writer }))
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
        self.writer.send(request).await
    }

    /// Holds a place in the writer's queue, for a request to be sent without waiting (under
    /// a lock, say).
    pub(crate) async fn reserve(&self) -> Result<writer::Reserved<'_>, WriterStopped> {
        self.writer.reserve().await
    }

    /// Appends `record` on the caller's thread when that keeps order and cannot block
    /// (`writer.rs`); else gives it back, for [`PartitionHandle::send`].
    pub(crate) fn try_append_now(&self, record: Record) -> Result<AppendResult, Record> {
        self.writer.try_append_now(record)
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

    /// Closes the log (flushed, with its clean-shutdown marker). Blocking.
    pub(crate) fn close(&self) -> Result<(), LogError> {
        self.log.close()
    }

    /// Opens partition `number` in `dir` without a runtime, its appends announced to
    /// nobody (unit tests).
    #[cfg(test)]
    pub(crate) fn open_for_tests(dir: &Path, config: LogConfig, number: u32) -> Arc<PartitionHandle> {
        let log = Arc::new(Log::open(dir, config).expect("opening a test partition"));
        let writer = writer::PartitionWriter::start(Arc::clone(&log), 16, format!("test-writer-{number}"), None)
            .expect("starting a test writer");
        Arc::new(PartitionHandle { id: 0, number, log, writer })
    }

    /// The log itself, for unit tests that damage it or look under the handle.
    #[cfg(test)]
    pub(crate) fn log_for_tests(&self) -> &Log {
        &self.log
    }
}
