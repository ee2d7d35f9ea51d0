//! The partition log: one writer behind a mutex, lock-free readers over an arc-swapped
//! snapshot of the segment list, recovery on open, durability and retention.

mod durability;
mod raft;
mod read;
mod recovery;
mod snapshot;
mod terms;
mod truncate;
mod writer;

pub use durability::FsyncObserver;
use durability::{DISK_FULL_HEADROOM, free_bytes};
pub use raft::ResetStep;
pub use read::{Batch, Fetch};
use recovery::recover;
pub use snapshot::{InstallStep, SnapshotFile, SnapshotFiles, SnapshotInfo};
use terms::TermRuns;
pub use truncate::RetentionOutcome;
use writer::{Entries, Placement};

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    path::{Path, PathBuf},
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::Instant,
};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::{
    FlushPolicy, LogConfig, LogError, Record,
    error::IoContext,
    flusher,
    meta::{PartitionMeta, Vote},
    retention::{RetentionPlan, RetentionPolicy, SegmentSummary, plan_retention},
    segment::{Segment, SegmentState, segment_file_name},
    tail::ReservedTail,
};

const LOCK_FILE: &str = ".lock";

/// A handle to an open partition log. Clones share the log; the last one dropped closes it.
#[derive(Clone)]
pub struct Log {
    shared: Arc<Shared>,
}

/// Offsets assigned to an appended batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Offset of the last record.
    pub last_offset: u64,
}

/// The offsets of a partition, which always satisfy
/// `log_start ≤ cleaned_up_to ≤ high_watermark ≤ log_end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogOffsets {
    /// First offset still stored.
    pub log_start: u64,
    /// Compaction has cleaned everything below this.
    pub cleaned_up_to: u64,
    /// Readers see offsets below this.
    pub high_watermark: u64,
    /// Next offset to be assigned.
    pub log_end: u64,
}

/// What open found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The clean-shutdown marker was valid, so no batch was scanned.
    pub clean_shutdown: bool,
    /// Bytes cut from the tail of the last segment, with the file, position and reason.
    pub truncated: Option<(PathBuf, u64, u64, &'static str)>,
    /// Index files that were missing or damaged and were rebuilt.
    pub rebuilt_indexes: Vec<PathBuf>,
    /// Damage found in closed segments; reads that reach it fail instead of skipping it.
    pub damaged_segments: Vec<(PathBuf, u64, &'static str)>,
    /// Bytes of the last segment scanned and checked.
    pub scanned_bytes: u64,
    /// Segment swaps (compaction) that a crash interrupted after their commit point and that
    /// open finished, by base offset.
    pub finished_swaps: Vec<u64>,
    /// Zeros cut from the end of the last segment after a crash: space reserved ahead of the
    /// writes (`tail.rs`), holding no batch.
    pub reserved_bytes_cut: u64,
}

/// What readers load without locks.
pub(crate) struct Snapshot {
    pub(crate) segments: Vec<Arc<Segment>>,
    pub(crate) log_start: u64,
}

pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    config: LogConfig,
    pub(crate) snapshot: ArcSwap<Snapshot>,
    pub(crate) high_watermark: AtomicU64,
    log_end: AtomicU64,
    pub(crate) cleaned_up_to: AtomicU64,
    /// Everything below this offset has been fsynced.
    synced: AtomicU64,
    high_watermark_watch: watch::Sender<u64>,
    writer: Mutex<Writer>,
    /// The term of every stored offset. Taken after the writer lock, never before it.
    terms: Mutex<TermRuns>,
    /// The persisted metadata; written outside the writer lock so appends never wait on it.
    pub(crate) meta: Mutex<PartitionMeta>,
    /// Serialises the operations that replace or delete closed segments (retention,
    /// compaction swaps, truncation), so their file work runs outside the writer lock.
    pub(crate) maintenance: Mutex<()>,
    /// Retention and compaction leave offsets at and above this alone (`u64::MAX`: no
    /// limit). See [`Log::limit_maintenance`].
    pub(crate) maintenance_limit: AtomicU64,
    /// The limit retention or compaction last needed to go on. See
    /// [`Log::watch_maintenance_wanted`].
    pub(crate) maintenance_wanted: watch::Sender<u64>,
    sync_in_progress: Mutex<bool>,
    sync_done: Condvar,
    /// Told the duration of every data fsync (see [`Log::on_fsync`]); set at most once.
    fsync_observer: std::sync::OnceLock<FsyncObserver>,
    pub(crate) last_flush_ms: AtomicI64,
    /// Set by the first append after the flusher last looked at this log (under a flush
    /// interval); cleared by the flusher just before it flushes. See `flusher.rs`.
    pub(crate) appended_since_flush: AtomicBool,
    /// Set by the first read after the flusher last released this log's mapped pages;
    /// cleared by the flusher just before it releases them. See `flusher.rs`.
    pub(crate) read_since_release: AtomicBool,
    /// Set by the flusher when a release pass followed a read: the pass after it runs too,
    /// for the pages the reader touched after its read returned. See `flusher.rs`.
    pub(crate) release_again: AtomicBool,
    closed: AtomicBool,
    /// The first failed fsync of appended data (file, OS error) since the log was opened or
    /// last recovered ([`Log::recover_failed_sync`]). See [`LogError::SyncFailed`].
    sync_failure: arc_swap::ArcSwapOption<(PathBuf, String)>,
    /// Makes the next fsync of appended data fail, for tests ([`Log::fail_next_fsync_for_tests`]).
    fail_next_fsync: AtomicBool,
    /// The last append failed for want of space and none succeeded since.
    disk_full: AtomicBool,
    /// Bytes that append tried to write.
    disk_full_needed: AtomicU64,
    recovery: RecoveryReport,
    /// Holds the directory's lock file; taken (and so unlocked) by close, so another process
    /// can open the partition as soon as close returns, even while handles linger here.
    lock: Mutex<Option<File>>,
}

/// A batch written but not yet below the high watermark (only with `SetByCaller`).
struct PendingBatch {
    last_offset: u64,
    /// Where the batch starts, and its offset relative to the segment's base.
    position: u32,
    relative_offset: u32,
    end_position: u64,
    state: Arc<SegmentState>,
}

pub(crate) struct Writer {
    active: Arc<Segment>,
    file: Arc<File>,
    active_len: u64,
    active_created: Instant,
    last_indexed_position: Option<u64>,
    /// Index entries of the active segment already appended to its index files.
    persisted_entries: usize,
    log_end: u64,
    last_batch: Option<(u64, u64)>,
    /// The term of the last purged entry: no batch may carry a lower one.
    min_term: u64,
    pending: VecDeque<PendingBatch>,
    /// How batches reach `file` (through a mapping, into space reserved ahead).
    tail: ReservedTail,
    buf: Vec<u8>,
    scratch: Vec<u8>,
    /// Written since the last successful fsync. Cleared only after an fsync succeeded and
    /// only if nothing was written meanwhile (`batches_written` unchanged).
    dirty: bool,
    /// Batches written since open; tells a flush whether an append raced its fsync.
    batches_written: u64,
}

impl Writer {
    /// Cuts the space reserved past the last batch off the active segment's file.
    fn cut_reserved(&mut self) -> Result<(), LogError> {
        self.tail.cut_back(&self.file, &self.active.path, self.active_len)
    }
}

/// How long [`Log::open`] retries a lock held elsewhere before it reports [`LogError::Locked`].
/// A lock can outlive its holder for a moment: when another thread of the same process
/// forks (to spawn a program), the child holds a copy of every descriptor until it execs,
/// and a lock taken with `flock` lasts as long as any copy.
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(250);

fn lock_for_a_while(lock: &File, lock_path: &Path) -> Result<(), LogError> {
    let deadline = std::time::Instant::now() + LOCK_RETRY;
    loop {
        match lock.try_lock() {
            Ok(()) => return Ok(()),
            Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(fs::TryLockError::WouldBlock) => return Err(LogError::Locked { path: lock_path.to_path_buf() }),
            Err(fs::TryLockError::Error(e)) => return Err(e).at(lock_path, "locking"),
        }
    }
}

impl Log {
    /// Opens (or creates) the partition in `dir`, recovering from a crash if needed.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Log, LogError> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).at(&dir, "creating the partition directory")?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .at(&lock_path, "opening the lock file")?;
        lock_for_a_while(&lock, &lock_path)?;
        let shared = recover(dir, config, lock)?;
        let shared = Arc::new(shared);
        // Every log registers: besides fsyncing, the flusher releases mapped pages.
        flusher::register(&shared);
        Ok(Log { shared })
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.shared.config
    }

    /// What recovery found when the log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.shared.recovery
    }

    /// Appends `records` as one batch written by a leader of `leader_term`, at the log end.
    /// The term may not be below the last entry's ([`LogError::TermWentBack`]).
    ///
    /// Returns once the batch is written to the operating system. Under
    /// [`FlushPolicy::Always`], call [`Log::wait_durable`] before acknowledging it.
    pub fn append(&self, records: &[Record], leader_term: u64) -> Result<AppendInfo, LogError> {
        if records.is_empty() {
            return Err(LogError::EmptyBatch);
        }
        let mut writer = self.shared.lock_writer()?;
        let appended =
            self.shared.append_locked(&mut writer, Entries::Records(records), leader_term, Placement::LogEnd, true)?;
        Ok(appended.expect("an append that may roll always writes"))
    }

    /// Appends `records` only if it can be done without waiting on anything but the write
    /// itself: the writer is free (no other append or segment roll holds it) and the batch
    /// fits in the active segment (so no roll, whose fsyncs block), with no roll due by age.
    /// `Ok(None)`: nothing was appended; use [`Log::append`]. For callers on an async
    /// runtime's threads, which must not block.
    pub fn try_append_now(&self, records: &[Record], leader_term: u64) -> Result<Option<AppendInfo>, LogError> {
        if records.is_empty() {
            return Err(LogError::EmptyBatch);
        }
        let Some(mut writer) = self.shared.try_lock_writer()? else { return Ok(None) };
        self.shared.append_locked(&mut writer, Entries::Records(records), leader_term, Placement::LogEnd, false)
    }

    /// Reads whole batches from `offset` up to about `max_bytes` (at least one batch if any
    /// is visible), stopping at the high watermark. Every returned batch is CRC-checked.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Fetch, LogError> {
        self.shared.read(offset, max_bytes)
    }

    /// The first offset whose record timestamp is at or after `timestamp`, among the records
    /// readers can see.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<u64>, LogError> {
        self.shared.offset_for_timestamp(timestamp)
    }

    /// The current offsets.
    pub fn offsets(&self) -> LogOffsets {
        let high_watermark = self.shared.high_watermark.load(Ordering::Acquire);
        let log_start = self.shared.snapshot.load().log_start;
        let cleaned_up_to = self.shared.cleaned_up_to.load(Ordering::Acquire);
        let offsets = LogOffsets {
            log_start,
            cleaned_up_to: cleaned_up_to.clamp(log_start, high_watermark.max(log_start)),
            high_watermark,
            log_end: self.shared.log_end.load(Ordering::Acquire),
        };
        debug_assert!(
            offsets.log_start <= offsets.cleaned_up_to
                && offsets.cleaned_up_to <= offsets.high_watermark
                && offsets.high_watermark <= offsets.log_end,
            "offset invariant broken: {offsets:?}"
        );
        offsets
    }

    /// The term and offset of the last entry stored (a batch of records or a control batch),
    /// if any. After a reset to a snapshot the log is empty: see [`Log::last_purged`].
    pub fn last_term_and_offset(&self) -> Option<(u64, u64)> {
        self.shared.writer.lock().ok()?.last_batch
    }

    /// Everything below this offset is durable under the flush policy.
    pub fn durable_end(&self) -> u64 {
        if self.shared.has_failed() {
            return self.shared.synced.load(Ordering::Acquire);
        }
        match self.shared.config.flush {
            FlushPolicy::Always => self.shared.synced.load(Ordering::Acquire),
            _ => self.shared.log_end.load(Ordering::Acquire),
        }
    }

    /// Blocks until `offset` is durable under the flush policy. Under `Always`, waiters that
    /// arrive during an fsync share the next one (group commit).
    pub fn wait_durable_blocking(&self, offset: u64) -> Result<(), LogError> {
        self.shared.check_synced(offset)?;
        match self.shared.config.flush {
            FlushPolicy::Always => self.shared.sync_to(offset),
            _ => Ok(()),
        }
    }

    /// Async form of [`Log::wait_durable_blocking`]; the fsync runs on tokio's blocking pool.
    pub async fn wait_durable(&self, offset: u64) -> Result<(), LogError> {
        self.shared.check_synced(offset)?;
        if !matches!(self.shared.config.flush, FlushPolicy::Always)
            || self.shared.synced.load(Ordering::Acquire) > offset
        {
            return Ok(());
        }
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || shared.sync_to(offset))
            .await
            .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
    }

    /// Fsyncs everything written so far, whatever the policy.
    pub fn flush(&self) -> Result<(), LogError> {
        self.shared.flush_now(true)
    }

    /// A receiver of high-watermark changes, for readers that wait for new data.
    pub fn watch_high_watermark(&self) -> watch::Receiver<u64> {
        self.shared.high_watermark_watch.subscribe()
    }

    /// Waits until the high watermark passes `offset`, or the log closes.
    pub async fn wait_for(&self, offset: u64) {
        let mut rx = self.watch_high_watermark();
        let _ = rx.wait_for(|hw| *hw > offset || self.shared.closed.load(Ordering::Acquire)).await;
    }

    /// Moves the high watermark forward (only under [`HighWatermarkMode::SetByCaller`](crate::HighWatermarkMode::SetByCaller)).
    pub fn set_high_watermark(&self, high_watermark: u64) -> Result<(), LogError> {
        let mut writer = self.shared.lock_writer()?;
        self.shared.set_high_watermark_locked(&mut writer, high_watermark)
    }

    /// Removes every record after `offset`, for Raft conflict resolution. `offset + 1` must be
    /// a batch boundary at or above the high watermark.
    pub fn truncate_after(&self, offset: u64) -> Result<(), LogError> {
        let _maintenance = self.shared.lock_maintenance();
        let mut writer = self.shared.lock_writer()?;
        self.shared.truncate_after_locked(&mut writer, offset)
    }

    /// The persisted Raft vote.
    pub fn vote(&self) -> Vote {
        self.shared.lock_meta().vote
    }

    /// Persists a Raft vote (fsynced before returning).
    pub fn save_vote(&self, vote: Vote) -> Result<(), LogError> {
        let mut meta = self.shared.lock_meta();
        meta.vote = vote;
        meta.high_watermark = self.shared.high_watermark.load(Ordering::Acquire);
        meta.store(&self.shared.dir)
    }

    /// What the retention planner needs, one entry per segment, oldest first.
    pub fn segment_summaries(&self) -> Vec<SegmentSummary> {
        self.shared.summaries(&self.shared.snapshot.load())
    }

    /// Plans retention with [`plan_retention`] and applies it.
    pub fn enforce_retention(&self, policy: &RetentionPolicy, now_ms: i64) -> Result<RetentionOutcome, LogError> {
        let plan = plan_retention(
            &self.segment_summaries(),
            policy,
            now_ms,
            self.shared.high_watermark.load(Ordering::Acquire),
        );
        self.apply_retention(&plan)
    }

    /// Deletes the planned segments and advances `log_start`. Segments that are no longer a
    /// safe prefix (the active one, or one reaching the high watermark) are left alone.
    pub fn apply_retention(&self, plan: &RetentionPlan) -> Result<RetentionOutcome, LogError> {
        self.shared.apply_retention(plan)
    }

    /// Total size of the segment files in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.segment_summaries().iter().map(|s| s.size_bytes).sum()
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.shared.snapshot.load().segments.len()
    }

    /// Installs `observer`, told the duration of every fsync of appended data from now on
    /// (not those of rolls, index files or close). Only the first call takes effect; returns
    /// whether this one did.
    pub fn on_fsync(&self, observer: FsyncObserver) -> bool {
        self.shared.fsync_observer.set(observer).is_ok()
    }

    /// The failed fsync that makes this log refuse appends, if one failed
    /// ([`LogError::SyncFailed`]). It stays until the partition is reopened.
    pub fn sync_failure(&self) -> Option<LogError> {
        self.shared.check_sync_failure().err()
    }

    /// Brings a log whose fsync failed back into service without reopening it, when its data
    /// can be made durable again. Only the active segment holds data that no successful
    /// fsync covered (a roll fsyncs the segment it seals first). Each of its batches is
    /// checked against its CRC, then all of it is written again, which makes its pages dirty
    /// whatever the failed write-back left them as, and fsynced with the directory.
    ///
    /// `Ok(true)`: recovered, appends are accepted again. `Ok(false)`: no fsync had failed.
    /// An error leaves the log refusing appends: a batch that no longer checks out (its pages
    /// were dropped and re-read from the disk) needs the truncation of a reopen, and a disk
    /// that keeps failing fails this fsync too. It rewrites up to a segment, so callers
    /// should not retry it more often than every few seconds.
    pub fn recover_failed_sync(&self) -> Result<bool, LogError> {
        self.shared.recover_failed_sync()
    }

    /// Whether the last append failed because the file system was full (or over quota) and
    /// none succeeded since. Checked against the space free now: once there is room for
    /// what failed, this says false again before any append, so a readiness probe that
    /// asks it lets publishers back in.
    pub fn disk_full(&self) -> bool {
        let shared = &self.shared;
        if !shared.disk_full.load(Ordering::Acquire) {
            return false;
        }
        let needed = shared.disk_full_needed.load(Ordering::Acquire).saturating_add(DISK_FULL_HEADROOM);
        if free_bytes(&shared.dir).is_some_and(|free| free >= needed) {
            shared.disk_full.store(false, Ordering::Release);
            return false;
        }
        true
    }

    /// Makes the next fsync of appended data fail with `EIO`, as a failing disk would. For
    /// tests of what follows a failed fsync.
    #[doc(hidden)]
    pub fn fail_next_fsync_for_tests(&self) {
        self.shared.fail_next_fsync.store(true, Ordering::SeqCst);
    }

    /// Whether appended data is waiting for an fsync. For tests.
    #[doc(hidden)]
    pub fn is_dirty_for_tests(&self) -> bool {
        self.shared.is_dirty()
    }

    /// Stops the log as a crash would: no flush, no index files, no clean-shutdown marker.
    /// Written data stays in the OS page cache, as after `kill -9`. For crash tests.
    #[doc(hidden)]
    pub fn crash_for_tests(&self) {
        let _writer = self.shared.writer.lock();
        self.shared.closed.store(true, Ordering::Release);
        self.shared.lock.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Releases the mapped pages of the segments now, as the background flusher does about
    /// once a second. For tests.
    #[doc(hidden)]
    pub fn release_mapped_pages_for_tests(&self) {
        self.shared.release_mapped_pages();
    }

    /// Flushes everything, writes the index files and the clean-shutdown marker, and refuses
    /// further appends. Reads of already visible data keep working.
    pub fn close(&self) -> Result<(), LogError> {
        self.shared.close()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if !self.closed.load(Ordering::Acquire)
            && let Err(e) = self.close()
        {
            tracing::error!(dir = %self.dir.display(), error = %e, "closing the log on drop failed");
        }
    }
}

impl Shared {
    pub(crate) fn lock_writer(&self) -> Result<MutexGuard<'_, Writer>, LogError> {
        self.ensure_open()?;
        // A panic while holding the lock leaves the writer's state unknown; refuse to go on.
        let writer = self.writer.lock().map_err(|_| LogError::Closed { path: self.dir.clone() })?;
        self.ensure_open()?;
        Ok(writer)
    }

    /// As [`Shared::lock_writer`], but `None` instead of waiting when the lock is taken.
    pub(crate) fn try_lock_writer(&self) -> Result<Option<MutexGuard<'_, Writer>>, LogError> {
        self.ensure_open()?;
        let writer = match self.writer.try_lock() {
            Ok(writer) => writer,
            Err(std::sync::TryLockError::WouldBlock) => return Ok(None),
            Err(std::sync::TryLockError::Poisoned(_)) => return Err(LogError::Closed { path: self.dir.clone() }),
        };
        self.ensure_open()?;
        Ok(Some(writer))
    }

    pub(super) fn ensure_open(&self) -> Result<(), LogError> {
        match self.closed.load(Ordering::Acquire) {
            true => Err(LogError::Closed { path: self.dir.clone() }),
            false => Ok(()),
        }
    }

    pub(super) fn segment_path(&self, base: u64, extension: &str) -> PathBuf {
        self.dir.join(segment_file_name(base, extension))
    }

    pub(super) fn summaries(&self, snapshot: &Snapshot) -> Vec<SegmentSummary> {
        let log_end = self.log_end.load(Ordering::Acquire);
        let segments = &snapshot.segments;
        segments
            .iter()
            .enumerate()
            .map(|(i, s)| SegmentSummary {
                base_offset: s.base_offset,
                next_offset: segments.get(i + 1).map_or(log_end, |next| next.base_offset),
                size_bytes: s.state.written_len.load(Ordering::Acquire),
                max_timestamp: s.state.max_timestamp.load(Ordering::Acquire),
            })
            .collect()
    }

    pub(crate) fn lock_meta(&self) -> MutexGuard<'_, PartitionMeta> {
        self.meta.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn lock_terms(&self) -> MutexGuard<'_, TermRuns> {
        self.terms.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn lock_maintenance(&self) -> MutexGuard<'_, ()> {
        self.maintenance.lock().unwrap_or_else(|p| p.into_inner())
    }
}
