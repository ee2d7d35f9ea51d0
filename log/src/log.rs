//! The partition log: one writer behind a mutex, lock-free readers over an arc-swapped
//! snapshot of the segment list, recovery on open, durability and retention.

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::Instant,
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::sync::watch;

use crate::{
    BatchHeader, Compression, FlushPolicy, HighWatermarkMode, LogConfig, LogError, Record, StoredRecord,
    error::IoContext,
    flusher,
    format::{MAX_BATCH_LEN, RecordDecoder, encode_batch, parse_header, records_section},
    index::{
        IndexEntry, LoadedIndex, SegmentIndex, TIME_ENTRY_LEN, decode_index_files, encode_offset_index,
        encode_time_index,
    },
    meta::{CleanShutdown, PartitionMeta, Vote, sync_dir},
    retention::{RetentionPlan, RetentionPolicy, SegmentSummary, plan_retention},
    segment::{
        BatchWalker, Mapping, Rebuilt, Segment, SegmentState, entry_points_at_batch, entry_points_at_valid_batch,
        map_file, parse_segment_file_name, read_small_file, rebuild_from, segment_file_name,
    },
    tail::ReservedTail,
};

const LOCK_FILE: &str = ".lock";

/// Room beyond the failed write before [`Log::disk_full`] says there is space again: the
/// append may also have to create a segment and its index files.
const DISK_FULL_HEADROOM: u64 = 64 << 10;

/// Bytes an unprivileged process may still write on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a valid C string and `stat` is written by the call before it is read.
    if unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs succeeded, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Called with the wall time of each fsync of appended data (group commit or the
/// background flush), for metrics. It runs on the thread that fsyncs: keep it cheap.
pub type FsyncObserver = Arc<dyn Fn(std::time::Duration) + Send + Sync>;

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

/// Batches returned by [`Log::read`].
#[derive(Clone, Debug)]
pub struct Fetch {
    /// Whole, CRC-checked batches in offset order. The first may start before the requested
    /// offset; [`Fetch::records`] skips those records.
    pub batches: Vec<Batch>,
    /// The high watermark when the read started.
    pub high_watermark: u64,
    /// The log start when the read started.
    pub log_start: u64,
}

impl Fetch {
    /// The records at or after `from`, decoded.
    pub fn records(&self, from: u64) -> Result<Vec<StoredRecord>, LogError> {
        let mut out = Vec::new();
        for batch in &self.batches {
            for record in batch.records()? {
                let record = record?;
                if record.offset >= from {
                    out.push(record);
                }
            }
        }
        Ok(out)
    }

    /// The offset after the last batch returned, or `None` if nothing was returned.
    pub fn next_offset(&self) -> Option<u64> {
        self.batches.last().map(|b| b.header.last_offset() + 1)
    }
}

/// One stored batch: its header and its bytes, shared with the mmap where uncompressed.
#[derive(Clone, Debug)]
pub struct Batch {
    header: BatchHeader,
    bytes: Bytes,
    path: Arc<PathBuf>,
    position: u64,
}

impl Batch {
    pub(crate) fn new(header: BatchHeader, bytes: Bytes, path: Arc<PathBuf>, position: u64) -> Self {
        Batch { header, bytes, path, position }
    }

    /// The batch header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The batch exactly as stored (header included), e.g. to replicate it.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Decodes the records. Keys and values are slices of the mmap when uncompressed.
    pub fn records(&self) -> Result<impl Iterator<Item = Result<StoredRecord, LogError>> + use<>, LogError> {
        let corrupt = |reason| LogError::Corrupt { path: self.path.to_path_buf(), position: self.position, reason };
        let section = records_section(&self.bytes, &self.header).map_err(corrupt)?;
        let path = Arc::clone(&self.path);
        let position = self.position;
        Ok(RecordDecoder::new(section, self.header)
            .map(move |r| r.map_err(|reason| LogError::Corrupt { path: path.to_path_buf(), position, reason })))
    }
}

/// Segments and retention totals deleted by [`Log::apply_retention`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    /// Segments deleted.
    pub segments_deleted: u64,
    /// Bytes of `.log` files deleted.
    pub bytes_deleted: u64,
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
    /// The persisted metadata; written outside the writer lock so appends never wait on it.
    pub(crate) meta: Mutex<PartitionMeta>,
    /// Serialises the operations that replace or delete closed segments (retention,
    /// compaction swaps, truncation), so their file work runs outside the writer lock.
    pub(crate) maintenance: Mutex<()>,
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

    /// Appends `records` as one batch written by a leader of `leader_term`.
    ///
    /// Returns once the batch is written to the operating system. Under
    /// [`FlushPolicy::Always`], call [`Log::wait_durable`] before acknowledging it.
    pub fn append(&self, records: &[Record], leader_term: u64) -> Result<AppendInfo, LogError> {
        if records.is_empty() {
            return Err(LogError::EmptyBatch);
        }
        let mut writer = self.shared.lock_writer()?;
        let appended = self.shared.append_locked(&mut writer, records, leader_term, true)?;
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
        self.shared.append_locked(&mut writer, records, leader_term, false)
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

    /// The term and offset of the last record, if any.
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

    /// Moves the high watermark forward (only under [`HighWatermarkMode::SetByCaller`]).
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

    /// `Err` once an fsync of appended data has failed (see [`LogError::SyncFailed`]).
    pub(crate) fn check_sync_failure(&self) -> Result<(), LogError> {
        match self.sync_failure.load().as_deref() {
            None => Ok(()),
            Some((path, reason)) => {
                Err(LogError::SyncFailed { path: path.clone(), partition: self.dir.clone(), reason: reason.clone() })
            }
        }
    }

    /// After a failed fsync, only what an earlier fsync covered is durable.
    fn check_synced(&self, offset: u64) -> Result<(), LogError> {
        if self.has_failed() && self.synced.load(Ordering::Acquire) <= offset {
            return self.check_sync_failure();
        }
        Ok(())
    }

    /// Fsyncs appended data in `file`. A failure is remembered: from then on the log refuses
    /// appends, and never fsyncs that data again, since a second fsync may succeed without
    /// writing what the first one lost.
    fn sync_appended(&self, file: &File, path: &Path) -> Result<(), LogError> {
        self.check_sync_failure()?;
        self.fsync(file).map_err(|error| self.record_sync_failure(path, &error))
    }

    /// As [`Shared::sync_appended`], for the directory entry of a new segment.
    fn sync_dir_of_appends(&self) -> Result<(), LogError> {
        match sync_dir(&self.dir) {
            Err(LogError::Io { path, source, .. }) => Err(self.record_sync_failure(&path, &source)),
            other => other,
        }
    }

    fn recover_failed_sync(&self) -> Result<bool, LogError> {
        if !self.has_failed() {
            return Ok(false);
        }
        let _maintenance = self.lock_maintenance();
        let mut w = self.lock_writer()?;
        let Err(failed) = self.check_sync_failure() else { return Ok(false) };
        let (active, file, len) = (Arc::clone(&w.active), Arc::clone(&w.file), w.active_len as usize);
        let data = &active.data[..len];
        let mut walker = BatchWalker::new(data, 0, active.base_offset);
        for item in &mut walker {
            if let Err(defect) = item {
                tracing::error!(
                    file = %active.path.display(),
                    position = defect.position,
                    reason = defect.reason,
                    "cannot recover from the failed fsync in place: a batch no longer checks out; reopen the partition"
                );
                return Err(failed);
            }
        }
        if walker.position() != len {
            return Err(failed);
        }
        // Written from a copy, not from the mapping of the very pages being written.
        const CHUNK: usize = 1 << 20;
        let mut copy = Vec::with_capacity(CHUNK.min(len));
        for (i, chunk) in data.chunks(CHUNK).enumerate() {
            copy.clear();
            copy.extend_from_slice(chunk);
            std::os::unix::fs::FileExt::write_all_at(file.as_ref(), &copy, (i * CHUNK) as u64)
                .at(&active.path, "writing a segment again after a failed fsync")?;
        }
        if let Err(error) = self.fsync(&file) {
            self.sync_failure.store(Some(Arc::new((active.path.to_path_buf(), error.to_string()))));
            return Err(self.check_sync_failure().expect_err("just stored"));
        }
        sync_dir(&self.dir)?;
        self.synced.fetch_max(w.log_end, Ordering::AcqRel);
        w.dirty = false;
        self.sync_failure.store(None);
        tracing::warn!(
            partition = %self.dir.display(),
            file = %active.path.display(),
            bytes = len,
            "recovered from a failed fsync: the active segment was written again and fsynced; appends are accepted again"
        );
        Ok(true)
    }

    /// `fdatasync`, or the failure [`Log::fail_next_fsync_for_tests`] asked for.
    fn fsync(&self, file: &File) -> std::io::Result<()> {
        match self.fail_next_fsync.swap(false, Ordering::SeqCst) {
            true => Err(std::io::Error::from_raw_os_error(libc::EIO)),
            false => file.sync_data(),
        }
    }

    fn record_sync_failure(&self, path: &Path, error: &std::io::Error) -> LogError {
        let failure = Some(Arc::new((path.to_path_buf(), error.to_string())));
        let previous = self.sync_failure.compare_and_swap(&None::<Arc<(PathBuf, String)>>, failure);
        if previous.is_none() {
            tracing::error!(
                partition = %self.dir.display(),
                file = %path.display(),
                %error,
                "fsync failed: the partition refuses appends until it is recovered"
            );
        }
        self.check_sync_failure().expect_err("just set")
    }

    pub(crate) fn has_failed(&self) -> bool {
        self.sync_failure.load().is_some()
    }

    fn ensure_open(&self) -> Result<(), LogError> {
        match self.closed.load(Ordering::Acquire) {
            true => Err(LogError::Closed { path: self.dir.clone() }),
            false => Ok(()),
        }
    }

    pub(crate) fn flush_interval(&self) -> Option<std::time::Duration> {
        match self.config.flush {
            FlushPolicy::Interval(every) => Some(every),
            // Under `Always` the tick only writes the active index tail (plus a cheap fsync),
            // so recovery after a crash scans little.
            FlushPolicy::Always => Some(std::time::Duration::from_secs(1)),
            FlushPolicy::Never => None,
        }
    }

    fn segment_path(&self, base: u64, extension: &str) -> PathBuf {
        self.dir.join(segment_file_name(base, extension))
    }

    /// Encodes and writes one batch. Without `may_roll`, a batch that would roll the segment
    /// first is not written: `Ok(None)`.
    fn append_locked(
        &self,
        w: &mut Writer,
        records: &[Record],
        leader_term: u64,
        may_roll: bool,
    ) -> Result<Option<AppendInfo>, LogError> {
        self.check_sync_failure()?;
        let base_offset = w.log_end;
        let mut buf = std::mem::take(&mut w.buf);
        let mut scratch = std::mem::take(&mut w.scratch);
        let header = encode_batch(&mut buf, &mut scratch, records, base_offset, leader_term, self.config.compression);
        // Reads refuse a zstd frame that decodes to more than a batch may hold (format.rs).
        let uncompressed = if self.config.compression == Compression::Zstd { scratch.len() } else { 0 };
        w.scratch = scratch;
        let result = if uncompressed > MAX_BATCH_LEN {
            Err(LogError::BatchTooLarge { bytes: uncompressed, limit: MAX_BATCH_LEN })
        } else if !may_roll && self.roll_due(w, buf.len() as u64) {
            Ok(None)
        } else {
            self.write_batch(w, &buf, &header).map(Some)
        };
        match &result {
            Err(error) if error.is_disk_full() => {
                self.disk_full_needed.store(buf.len() as u64, Ordering::Release);
                self.disk_full.store(true, Ordering::Release);
            }
            Ok(Some(())) if self.disk_full.load(Ordering::Relaxed) => self.disk_full.store(false, Ordering::Release),
            _ => {}
        }
        // Keep the buffer for the next append unless one huge batch blew it up.
        if buf.capacity() <= 4 << 20 {
            w.buf = buf;
        }
        Ok(result?.map(|()| AppendInfo { base_offset, last_offset: header.last_offset() }))
    }

    /// Whether a batch of `len` bytes would roll the active segment first.
    fn roll_due(&self, w: &Writer, len: u64) -> bool {
        let too_old = self.config.segment_ms.is_some_and(|ms| w.active_created.elapsed().as_millis() >= u128::from(ms));
        w.active_len > 0 && (w.active_len + len > self.config.segment_bytes || too_old)
    }

    fn write_batch(&self, w: &mut Writer, bytes: &[u8], header: &BatchHeader) -> Result<(), LogError> {
        if bytes.len() > MAX_BATCH_LEN {
            return Err(LogError::BatchTooLarge { bytes: bytes.len(), limit: MAX_BATCH_LEN });
        }
        let len = bytes.len() as u64;
        if self.roll_due(w, len) {
            self.roll(w)?;
        }
        if w.active_len + len > w.active.data.len() as u64 {
            self.remap_active(w, w.active_len + len)?;
        }
        if w.active_len == 0 {
            w.active_created = Instant::now();
        }
        let position = w.active_len;
        let capacity = w.active.data.len() as u64;
        w.tail.write(&w.file, &w.active.path, bytes, position, capacity)?;
        let state = &w.active.state;
        let max_timestamp = state.max_timestamp.load(Ordering::Relaxed).max(header.max_timestamp);
        let due = w.last_indexed_position.is_none_or(|last| position - last >= self.config.index_interval_bytes);
        if due {
            let pushed = w.active.index.push(IndexEntry {
                relative_offset: (header.base_offset - w.active.base_offset) as u32,
                position: position as u32,
                max_timestamp,
            });
            if pushed {
                w.last_indexed_position = Some(position);
            }
        }
        let end = position + len;
        w.active_len = end;
        w.log_end = header.last_offset() + 1;
        w.last_batch = Some((header.leader_term, header.last_offset()));
        w.dirty = true;
        w.batches_written += 1;
        if self.flush_interval().is_some() {
            flusher::mark(&self.appended_since_flush);
        }
        state.max_timestamp.store(max_timestamp, Ordering::Relaxed);
        state.written_len.store(end, Ordering::Release);
        self.log_end.store(w.log_end, Ordering::Release);
        let relative_offset = (header.base_offset - w.active.base_offset) as u32;
        match self.config.high_watermark {
            HighWatermarkMode::FollowsLogEnd => {
                state.set_tail_batch(relative_offset, position as u32);
                state.visible_len.store(end, Ordering::Release);
                self.publish_high_watermark(w.log_end);
            }
            HighWatermarkMode::SetByCaller => w.pending.push_back(PendingBatch {
                last_offset: header.last_offset(),
                position: position as u32,
                relative_offset,
                end_position: end,
                state: Arc::clone(state),
            }),
        }
        Ok(())
    }

    fn publish_high_watermark(&self, high_watermark: u64) {
        debug_assert!(
            high_watermark >= self.high_watermark.load(Ordering::Relaxed),
            "the high watermark never moves back"
        );
        debug_assert!(high_watermark <= self.log_end.load(Ordering::Relaxed), "high watermark past the log end");
        self.high_watermark.store(high_watermark, Ordering::Release);
        // Notifying costs a lock per shard of tokio's notifier on every append, so it is
        // skipped while nobody watches. A receiver that subscribes meanwhile still sees the
        // value: it counts itself before it reads under the lock taken here.
        self.high_watermark_watch.send_if_modified(|watched| {
            *watched = high_watermark;
            self.high_watermark_watch.receiver_count() > 0
        });
    }

    fn set_high_watermark_locked(&self, w: &mut Writer, high_watermark: u64) -> Result<(), LogError> {
        let current = self.high_watermark.load(Ordering::Acquire);
        if high_watermark < current || high_watermark > w.log_end {
            return Err(LogError::InvalidHighWatermark { requested: high_watermark, current, log_end: w.log_end });
        }
        if self.config.high_watermark == HighWatermarkMode::FollowsLogEnd {
            return Ok(());
        }
        while w.pending.front().is_some_and(|p| p.last_offset < high_watermark) {
            let batch = w.pending.pop_front().expect("checked above");
            batch.state.set_tail_batch(batch.relative_offset, batch.position);
            batch.state.visible_len.store(batch.end_position, Ordering::Release);
        }
        self.publish_high_watermark(high_watermark);
        Ok(())
    }

    fn remap_active(&self, w: &mut Writer, needed: u64) -> Result<(), LogError> {
        let capacity = needed.max(self.config.segment_bytes).max(w.active.data.len() as u64 * 2);
        let Mapping { data, mmap } = map_file(&w.file, &w.active.path, capacity)?;
        let remapped = Arc::new(Segment {
            base_offset: w.active.base_offset,
            path: Arc::clone(&w.active.path),
            data,
            mmap,
            state: Arc::clone(&w.active.state),
            index: Arc::clone(&w.active.index),
        });
        self.replace_active(w, remapped);
        Ok(())
    }

    fn replace_active(&self, w: &mut Writer, segment: Arc<Segment>) {
        let snapshot = self.snapshot.load();
        let mut segments = snapshot.segments.clone();
        let last = segments.last_mut().expect("a log always has an active segment");
        debug_assert_eq!(last.base_offset, segment.base_offset);
        *last = Arc::clone(&segment);
        self.snapshot.store(Arc::new(Snapshot { segments, log_start: snapshot.log_start }));
        w.active = segment;
    }

    /// Seals the active segment (index files written whole, fsynced unless `Never`) and
    /// starts a new one at the log end.
    fn roll(&self, w: &mut Writer) -> Result<(), LogError> {
        let durable = !matches!(self.config.flush, FlushPolicy::Never);
        w.cut_reserved()?;
        self.write_index_files(w, true, durable)?;
        if durable {
            self.sync_appended(&w.file, &w.active.path)?;
            w.dirty = false;
            self.synced.fetch_max(w.log_end, Ordering::AcqRel);
        }
        let base = w.log_end;
        let (segment, file) = self.create_segment(base)?;
        if durable {
            self.sync_dir_of_appends()?;
        }
        let snapshot = self.snapshot.load();
        let mut segments = snapshot.segments.clone();
        segments.push(Arc::clone(&segment));
        self.snapshot.store(Arc::new(Snapshot { segments, log_start: snapshot.log_start }));
        w.active = segment;
        w.file = Arc::new(file);
        w.tail = ReservedTail::new(0);
        w.active_len = 0;
        w.active_created = Instant::now();
        w.last_indexed_position = None;
        w.persisted_entries = 0;
        Ok(())
    }

    fn create_segment(&self, base: u64) -> Result<(Arc<Segment>, File), LogError> {
        let path = self.segment_path(base, "log");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .at(&path, "creating a segment")?;
        for extension in ["index", "timeindex"] {
            let index_path = self.segment_path(base, extension);
            File::create(&index_path).at(&index_path, "creating an index")?;
        }
        let Mapping { data, mmap } = map_file(&file, &path, self.config.segment_bytes)?;
        let segment = Arc::new(Segment {
            base_offset: base,
            path: Arc::new(path),
            data,
            mmap,
            state: Arc::new(SegmentState::new(0, 0, i64::MIN)),
            index: Arc::new(SegmentIndex::with_capacity(self.config.index_capacity())),
        });
        Ok((segment, file))
    }

    /// Writes the active segment's index entries to its files: whole (with the final time
    /// entry) when sealing, or only the entries not yet persisted.
    fn write_index_files(&self, w: &mut Writer, seal: bool, durable: bool) -> Result<(), LogError> {
        let entries = w.active.index.entries();
        let base = w.active.base_offset;
        let (index_path, time_path) = (self.segment_path(base, "index"), self.segment_path(base, "timeindex"));
        if seal {
            let final_entry = w.last_batch.filter(|_| w.active_len > 0).map(|(_, last_offset)| {
                let last_base = self.last_batch_base(w).unwrap_or(last_offset);
                (w.active.state.max_timestamp.load(Ordering::Relaxed), (last_base - base) as u32)
            });
            for (path, bytes) in
                [(&index_path, encode_offset_index(&entries)), (&time_path, encode_time_index(&entries, final_entry))]
            {
                let mut file = File::create(path).at(path, "writing an index")?;
                file.write_all(&bytes).at(path, "writing an index")?;
                if durable {
                    file.sync_data().at(path, "syncing an index")?;
                }
            }
        } else if w.persisted_entries < entries.len() {
            let new = &entries[w.persisted_entries..];
            for (path, bytes) in [(&index_path, encode_offset_index(new)), (&time_path, encode_time_index(new, None))] {
                let mut file = OpenOptions::new().append(true).open(path).at(path, "appending to an index")?;
                file.write_all(&bytes).at(path, "appending to an index")?;
            }
        }
        w.persisted_entries = entries.len();
        Ok(())
    }

    /// Base offset of the active segment's last batch.
    fn last_batch_base(&self, w: &Writer) -> Option<u64> {
        let data = &w.active.data[..w.active_len as usize];
        let start = w.active.index.floor_offset(u64::MAX).map(|e| e.position as usize).unwrap_or(0);
        BatchWalker::new(data, start, w.active.base_offset).filter_map(Result::ok).last().map(|(_, h)| h.base_offset)
    }

    fn read(&self, offset: u64, max_bytes: usize) -> Result<Fetch, LogError> {
        // The high watermark first: the writer stores a rolled segment's snapshot and the
        // visible lengths before it publishes the high watermark, so the snapshot loaded after
        // it holds every batch below it. Visible bytes may already reach past it.
        let high_watermark = self.high_watermark.load(Ordering::Acquire);
        let snapshot = self.snapshot.load();
        let log_end = self.log_end.load(Ordering::Acquire);
        let mut fetch = Fetch { batches: Vec::new(), high_watermark, log_start: snapshot.log_start };
        if offset < snapshot.log_start || offset > log_end {
            return Err(LogError::OffsetOutOfRange { requested: offset, log_start: snapshot.log_start, log_end });
        }
        if offset >= high_watermark {
            return Ok(fetch);
        }
        // The caller touches the pages of this fetch; the flusher will release them.
        flusher::mark(&self.read_since_release);
        let segments = &snapshot.segments;
        let first = segments.partition_point(|s| s.base_offset <= offset).saturating_sub(1);
        let mut total = 0usize;
        for segment in &segments[first..] {
            let visible = segment.visible();
            let start = segment.read_start(offset, &visible);
            if start > visible.len() {
                break;
            }
            let mut walker = BatchWalker::new(&visible, start, segment.base_offset);
            loop {
                // A batch that would not fit is not returned, so stop before the walker
                // CRC-checks it: with large batches that check costs as much as the fetch.
                if !fetch.batches.is_empty()
                    && let Ok(next) = parse_header(&visible[walker.position()..])
                    && total + next.batch_length as usize > max_bytes
                {
                    return Ok(fetch);
                }
                let Some(item) = walker.next() else { break };
                let (position, header) = item.map_err(|d| segment.corrupt(d.position, d.reason))?;
                if header.last_offset() < offset {
                    continue;
                }
                let len = header.batch_length as usize;
                // Published after this read loaded the high watermark: not part of this fetch.
                if header.last_offset() >= high_watermark || (!fetch.batches.is_empty() && total + len > max_bytes) {
                    return Ok(fetch);
                }
                total += len;
                fetch.batches.push(Batch {
                    header,
                    bytes: visible.slice(position..position + len),
                    path: Arc::clone(&segment.path),
                    position: position as u64,
                });
            }
            // A segment whose visible part ends before its written part is where the high
            // watermark lies; nothing after it is visible.
            if visible.len() as u64 != segment.state.written_len.load(Ordering::Acquire) || total >= max_bytes {
                break;
            }
        }
        Ok(fetch)
    }

    fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<u64>, LogError> {
        let snapshot = self.snapshot.load();
        for segment in &snapshot.segments {
            if segment.state.max_timestamp.load(Ordering::Acquire) < timestamp {
                continue;
            }
            let visible = segment.visible();
            let start = segment
                .index
                .search_start_for(timestamp)
                .filter(|e| segment.entry_is_sound(e))
                .map_or(0, |e| e.position as usize);
            for item in BatchWalker::new(&visible, start.min(visible.len()), segment.base_offset) {
                let (position, header) = item.map_err(|d| segment.corrupt(d.position, d.reason))?;
                if header.max_timestamp < timestamp {
                    continue;
                }
                let batch = Batch {
                    header,
                    bytes: visible.slice(position..position + header.batch_length as usize),
                    path: Arc::clone(&segment.path),
                    position: position as u64,
                };
                for record in batch.records()? {
                    let record = record?;
                    if record.timestamp >= timestamp && record.offset >= snapshot.log_start {
                        return Ok(Some(record.offset));
                    }
                }
            }
            if visible.len() as u64 != segment.state.written_len.load(Ordering::Acquire) {
                break;
            }
        }
        Ok(None)
    }

    fn summaries(&self, snapshot: &Snapshot) -> Vec<SegmentSummary> {
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

    pub(crate) fn lock_maintenance(&self) -> MutexGuard<'_, ()> {
        self.maintenance.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn apply_retention(&self, plan: &RetentionPlan) -> Result<RetentionOutcome, LogError> {
        let _maintenance = self.lock_maintenance();
        let (removed, new_log_start, high_watermark) = {
            // Only the snapshot swap happens under the writer lock.
            let _writer = self.lock_writer()?;
            let snapshot = self.snapshot.load();
            let high_watermark = self.high_watermark.load(Ordering::Acquire);
            let segments = &snapshot.segments;
            let mut keep_from = 0;
            for planned in &plan.delete {
                let (Some(segment), Some(next)) = (segments.get(keep_from), segments.get(keep_from + 1)) else { break };
                if segment.base_offset != planned.base_offset || next.base_offset > high_watermark {
                    break;
                }
                keep_from += 1;
            }
            if keep_from == 0 {
                return Ok(RetentionOutcome::default());
            }
            let new_log_start = segments[keep_from].base_offset;
            self.snapshot
                .store(Arc::new(Snapshot { segments: segments[keep_from..].to_vec(), log_start: new_log_start }));
            self.cleaned_up_to.fetch_max(new_log_start, Ordering::AcqRel);
            (segments[..keep_from].to_vec(), new_log_start, high_watermark)
        };
        {
            let mut meta = self.lock_meta();
            meta.log_start = new_log_start;
            meta.cleaned_up_to = meta.cleaned_up_to.max(new_log_start);
            meta.high_watermark = meta.high_watermark.max(high_watermark);
            // Record the new start before unlinking: recovery deletes segments below it.
            meta.store(&self.dir)?;
        }
        let mut outcome = RetentionOutcome::default();
        for segment in &removed {
            outcome.segments_deleted += 1;
            outcome.bytes_deleted += segment.state.written_len.load(Ordering::Acquire);
            for extension in ["log", "index", "timeindex"] {
                let path = self.segment_path(segment.base_offset, extension);
                if let Err(e) = fs::remove_file(&path)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    return Err(e).at(&path, "deleting a segment");
                }
            }
        }
        Ok(outcome)
    }

    fn truncate_after_locked(&self, w: &mut Writer, offset: u64) -> Result<(), LogError> {
        let cut_offset =
            offset.checked_add(1).ok_or(LogError::InvalidTruncation { offset, reason: "offset overflows" })?;
        if cut_offset >= w.log_end {
            return Ok(());
        }
        if cut_offset < self.high_watermark.load(Ordering::Acquire) {
            return Err(LogError::InvalidTruncation { offset, reason: "it is below the high watermark" });
        }
        let snapshot = self.snapshot.load();
        let keep_count = snapshot.segments.partition_point(|s| s.base_offset <= cut_offset);
        let target = Arc::clone(&snapshot.segments[keep_count - 1]);
        let written = &target.data[..target.state.written_len.load(Ordering::Acquire) as usize];
        // Find the first batch past `offset`; refuse to cut through a batch.
        let start = target.start_position(offset);
        let mut cut_position = written.len();
        for item in BatchWalker::new(written, start, target.base_offset) {
            let (position, header) = item.map_err(|d| target.corrupt(d.position, d.reason))?;
            if header.base_offset > offset {
                cut_position = position;
                break;
            }
            if header.last_offset() > offset {
                return Err(LogError::InvalidTruncation { offset, reason: "it is inside a batch" });
            }
        }
        let entries: Vec<IndexEntry> =
            target.index.entries().into_iter().filter(|e| (e.position as usize) < cut_position).collect();
        let rebuilt = rebuild_from(
            &written[..cut_position],
            target.base_offset,
            self.config.index_interval_bytes,
            entries.last().copied(),
        );
        // Drop the later segments from the snapshot first, then from disk.
        let path = Arc::clone(&target.path);
        let file =
            OpenOptions::new().read(true).write(true).open(path.as_path()).at(&path, "opening for truncation")?;
        file.set_len(cut_position as u64).at(&path, "truncating")?;
        self.sync_appended(&file, &path)?;
        let Mapping { data, mmap } = map_file(&file, &path, self.config.segment_bytes.max(cut_position as u64))?;
        // Keep the segment's shared counters: batches waiting for the high watermark point at
        // them. Lowering them first is safe for readers of older snapshots, since nothing
        // visible lies past the cut.
        let state = Arc::clone(&target.state);
        state.clear_tail_batch();
        let visible = state.visible_len.load(Ordering::Acquire).min(cut_position as u64);
        state.visible_len.store(visible, Ordering::Release);
        state.written_len.store(cut_position as u64, Ordering::Release);
        state.max_timestamp.store(rebuilt.max_timestamp, Ordering::Release);
        let segment = Arc::new(Segment {
            base_offset: target.base_offset,
            path,
            data,
            mmap,
            state,
            index: Arc::new(SegmentIndex::from_entries(&entries, self.config.index_capacity())),
        });
        let removed: Vec<u64> = snapshot.segments[keep_count..].iter().map(|s| s.base_offset).collect();
        let mut segments = snapshot.segments[..keep_count].to_vec();
        *segments.last_mut().expect("kept at least the target") = Arc::clone(&segment);
        self.snapshot.store(Arc::new(Snapshot { segments, log_start: snapshot.log_start }));
        for base in removed {
            for extension in ["log", "index", "timeindex"] {
                let path = self.segment_path(base, extension);
                let _ = fs::remove_file(&path);
            }
        }
        w.active = segment;
        w.file = Arc::new(file);
        w.tail = ReservedTail::new(cut_position as u64);
        w.active_len = cut_position as u64;
        w.last_indexed_position = entries.last().map(|e| u64::from(e.position));
        w.persisted_entries = 0;
        w.log_end = cut_offset;
        w.pending.retain(|p| p.last_offset <= offset);
        // The term of the last record kept: in this segment, or in the one before it.
        w.last_batch = match rebuilt.last_batch {
            Some(h) => Some((h.leader_term, h.last_offset())),
            None => last_batch_of(&self.snapshot.load().segments),
        };
        let mut index_files_rewritten = Ok(());
        for (extension, bytes) in
            [("index", encode_offset_index(&entries)), ("timeindex", encode_time_index(&entries, None))]
        {
            let path = self.segment_path(target.base_offset, extension);
            if let Err(e) = fs::write(&path, bytes) {
                index_files_rewritten = Err(e).at(&path, "rewriting an index");
            }
        }
        w.persisted_entries = entries.len();
        self.log_end.store(cut_offset, Ordering::Release);
        self.synced.fetch_min(cut_offset, Ordering::AcqRel);
        sync_dir(&self.dir)?;
        index_files_rewritten
    }

    /// Group commit: the first waiter fsyncs for everyone who appended before it started.
    fn sync_to(&self, offset: u64) -> Result<(), LogError> {
        loop {
            if self.synced.load(Ordering::Acquire) > offset {
                return Ok(());
            }
            let mut in_progress = self.sync_in_progress.lock().unwrap_or_else(|p| p.into_inner());
            if self.synced.load(Ordering::Acquire) > offset {
                return Ok(());
            }
            if *in_progress {
                let _guard = self.sync_done.wait(in_progress).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            *in_progress = true;
            drop(in_progress);
            let result = self.flush_now(false);
            *self.sync_in_progress.lock().unwrap_or_else(|p| p.into_inner()) = false;
            self.sync_done.notify_all();
            result?;
            let log_end = self.log_end.load(Ordering::Acquire);
            if log_end <= offset {
                return Err(LogError::NotWritten { offset, log_end });
            }
        }
    }

    /// Fsyncs the active segment up to the current log end. With `with_index`, also appends
    /// pending index entries to the index files first.
    pub(crate) fn flush_now(&self, with_index: bool) -> Result<(), LogError> {
        self.check_sync_failure()?;
        let (file, path, target, written) = {
            let mut w = self.lock_writer()?;
            // The index files are caches (recovery rebuilds them): failing to extend one, on a
            // full disk say, must not hold back the fsync of the data.
            if with_index && let Err(error) = self.write_index_files(&mut w, false, false) {
                tracing::debug!(dir = %self.dir.display(), %error, "appending index entries failed; retried at the next flush");
            }
            (Arc::clone(&w.file), Arc::clone(&w.active.path), w.log_end, w.batches_written)
        };
        let started = Instant::now();
        self.sync_appended(&file, &path)?;
        // Clean only if no batch was written during the fsync, and only now that it
        // succeeded: a failed fsync leaves the data dirty.
        if let Ok(mut w) = self.writer.lock()
            && w.batches_written == written
            && Arc::ptr_eq(&w.file, &file)
        {
            w.dirty = false;
        }
        let elapsed = started.elapsed();
        tracing::trace!(elapsed_us = elapsed.as_micros() as u64, "fsync");
        if let Some(observer) = self.fsync_observer.get() {
            observer(elapsed);
        }
        self.synced.fetch_max(target, Ordering::AcqRel);
        Ok(())
    }

    /// Tells the kernel that this process no longer needs the pages readers touched through
    /// the segment mappings: the whole written part of closed segments, and the visible part
    /// (below the high watermark) of the active one. Without this, every page ever read stays
    /// mapped, and the process's RSS grows with the volume read. The pages stay in the page
    /// cache, so a reader that comes back faults them in again without disk I/O (while memory
    /// allows). Takes no lock: it works on the current snapshot, like a reader.
    pub(crate) fn release_mapped_pages(&self) {
        let snapshot = self.snapshot.load_full();
        let Some((active, closed)) = snapshot.segments.split_last() else { return };
        for segment in closed {
            segment.release_pages(segment.state.written_len.load(Ordering::Acquire));
        }
        active.release_pages(active.state.visible_len.load(Ordering::Acquire));
    }

    pub(crate) fn is_dirty(&self) -> bool {
        self.writer.lock().is_ok_and(|w| w.dirty)
    }

    fn close(&self) -> Result<(), LogError> {
        let mut w = match self.writer.lock() {
            Ok(w) => w,
            Err(_) => return Err(LogError::Closed { path: self.dir.clone() }),
        };
        if self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        if let Err(failed) = self.check_sync_failure() {
            // Closed as a crash would leave it (no fsync, no clean-shutdown marker), so the
            // next open scans the tail and keeps only whole batches that are on disk.
            self.closed.store(true, Ordering::Release);
            self.lock.lock().unwrap_or_else(|p| p.into_inner()).take();
            self.high_watermark_watch.send_modify(|_| {});
            return Err(failed);
        }
        w.cut_reserved()?;
        self.write_index_files(&mut w, true, true)?;
        self.sync_appended(&w.file, &w.active.path)?;
        self.synced.fetch_max(w.log_end, Ordering::AcqRel);
        {
            let mut meta = self.lock_meta();
            meta.high_watermark = self.high_watermark.load(Ordering::Acquire);
            meta.store(&self.dir)?;
        }
        CleanShutdown {
            active_base: w.active.base_offset,
            active_len: w.active_len,
            log_end: w.log_end,
            last_term: w.last_batch.map_or(0, |(term, _)| term),
            active_max_timestamp: w.active.state.max_timestamp.load(Ordering::Relaxed),
        }
        .store(&self.dir)?;
        w.dirty = false;
        self.closed.store(true, Ordering::Release);
        self.lock.lock().unwrap_or_else(|p| p.into_inner()).take();
        // Wake readers waiting for data that will not come.
        self.high_watermark_watch.send_modify(|_| {});
        Ok(())
    }
}

/// The (term, last offset) of the newest batch in `segments`.
fn last_batch_of(segments: &[Arc<Segment>]) -> Option<(u64, u64)> {
    segments.iter().rev().find_map(|segment| {
        let written = &segment.data[..segment.state.written_len.load(Ordering::Acquire) as usize];
        let start = segment.index.floor_offset(u64::MAX).map_or(0, |e| e.position as usize);
        BatchWalker::new(written, start, segment.base_offset)
            .map_while(Result::ok)
            .last()
            .map(|(_, h)| (h.leader_term, h.last_offset()))
    })
}

/// Opens the directory's segments, repairing what a crash left behind (docs/format.md,
/// "Recovery on open").
fn recover(dir: PathBuf, config: LogConfig, lock: File) -> Result<Shared, LogError> {
    let mut report = RecoveryReport { finished_swaps: crate::rewrite::recover_swaps(&dir)?, ..Default::default() };
    let mut bases = Vec::new();
    for entry in fs::read_dir(&dir).at(&dir, "listing")? {
        let entry = entry.at(&dir, "listing")?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".tmp") {
            let path = entry.path();
            fs::remove_file(&path).at(&path, "removing a leftover temporary file")?;
        } else if let Some(base) = parse_segment_file_name(name) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    let mut meta = PartitionMeta::load(&dir)?;
    // Segments wholly below a recorded log start were condemned by retention before a crash.
    while bases.len() > 1 && bases[1] <= meta.log_start {
        let base = bases.remove(0);
        for extension in ["log", "index", "timeindex"] {
            let path = dir.join(segment_file_name(base, extension));
            let _ = fs::remove_file(&path);
        }
    }
    let marker = CleanShutdown::load(&dir);
    if bases.is_empty() {
        bases.push(meta.log_start);
        let path = dir.join(segment_file_name(meta.log_start, "log"));
        File::create(&path).at(&path, "creating the first segment")?;
    }
    let index_capacity = config.index_capacity();
    let mut segments = Vec::with_capacity(bases.len());
    let last_base = *bases.last().expect("at least one segment");
    for &base in &bases[..bases.len() - 1] {
        segments.push(Arc::new(open_closed_segment(&dir, base, &config, &mut report)?));
    }
    // The active segment.
    let path = dir.join(segment_file_name(last_base, "log"));
    let file = OpenOptions::new().read(true).write(true).open(&path).at(&path, "opening")?;
    let file_len = file.metadata().at(&path, "reading metadata")?.len();
    if !marker.as_ref().is_some_and(|m| m.active_base == last_base && m.active_len == file_len) {
        // A crash start, perhaps after a failed fsync: drop the cached clean pages of the
        // tail (pages whose write-back failed may be cached as clean), so the scan below
        // checks what the disk holds. Dirty pages stay cached and are written back as usual.
        drop_cached_pages(&file);
    }
    let Mapping { data, mmap } = map_file(&file, &path, config.segment_bytes.max(file_len))?;
    let written = &data[..file_len as usize];
    let index_path = dir.join(segment_file_name(last_base, "index"));
    let time_path = dir.join(segment_file_name(last_base, "timeindex"));
    let loaded = decode_index_files(
        &read_small_file(&index_path).unwrap_or_default(),
        &read_small_file(&time_path).unwrap_or_default(),
        file_len,
    );
    let clean = marker.filter(|m| m.active_base == last_base && m.active_len == file_len);
    let loaded = match loaded {
        None if file_len == 0 => Some(LoadedIndex { entries: Vec::new(), segment_max_timestamp: None }),
        other => other,
    };
    let index_matches = |l: &LoadedIndex| match l.entries.last() {
        None => file_len == 0,
        Some(e) => entry_points_at_batch(written, last_base, e) && timestamps_plausible(written, last_base, &l.entries),
    };
    let (entries, active_len, log_end, last_batch, max_timestamp) = match (clean, loaded) {
        (Some(marker), Some(loaded)) if index_matches(&loaded) => {
            report.clean_shutdown = true;
            let last_batch = (file_len > 0).then(|| (marker.last_term, marker.log_end - 1));
            (loaded.entries, file_len, marker.log_end, last_batch, marker.active_max_timestamp)
        }
        (_, loaded) => {
            // Crash start: trust the index only up to its last entry that points at a valid
            // batch, then scan and check everything after it.
            let loaded_count = loaded.as_ref().map_or(0, |l| l.entries.len());
            let mut entries = salvage_entries(loaded, written, last_base);
            if entries.len() < loaded_count || (entries.is_empty() && file_len > 0) {
                report.rebuilt_indexes.push(index_path.clone());
            }
            let start = entries.last().copied();
            let rebuilt: Rebuilt = rebuild_from(written, last_base, config.index_interval_bytes, start);
            report.scanned_bytes = (rebuilt.valid_len - start.map_or(0, |e| e.position as usize)) as u64;
            entries.extend(rebuilt.entries);
            if let Some(defect) = rebuilt.defect {
                let cut = rebuilt.valid_len as u64;
                if crate::tail::is_reserved(&written[rebuilt.valid_len..]) {
                    tracing::debug!(file = %path.display(), position = cut, bytes = file_len - cut, "cutting reserved space");
                    report.reserved_bytes_cut = file_len - cut;
                } else {
                    tracing::warn!(file = %path.display(), position = cut, reason = defect.reason, dropped_bytes = file_len - cut, "truncating a torn or damaged tail");
                    report.truncated = Some((path.clone(), cut, file_len - cut, defect.reason));
                }
                file.set_len(cut).at(&path, "truncating a damaged tail")?;
                file.sync_data().at(&path, "syncing a truncated tail")?;
            }
            let last_batch = rebuilt.last_batch.map(|h| (h.leader_term, h.last_offset()));
            let log_end = last_batch.map_or(last_base, |(_, last)| last + 1);
            (entries, rebuilt.valid_len as u64, log_end, last_batch, rebuilt.max_timestamp)
        }
    };
    let active = Arc::new(Segment {
        base_offset: last_base,
        path: Arc::new(path.clone()),
        data,
        mmap,
        state: Arc::new(SegmentState::new(active_len, active_len, max_timestamp)),
        index: Arc::new(SegmentIndex::from_entries(&entries, index_capacity)),
    });
    // Rewrite the active segment's index files so they hold exactly the in-memory entries.
    for (p, bytes) in [(&index_path, encode_offset_index(&entries)), (&time_path, encode_time_index(&entries, None))] {
        fs::write(p, bytes).at(p, "rewriting an index")?;
    }
    segments.push(Arc::clone(&active));
    let last_batch = last_batch.or_else(|| last_batch_of(&segments));
    CleanShutdown::remove(&dir)?;

    let log_start = meta.log_start.max(bases[0]).min(log_end);
    let mut pending = VecDeque::new();
    let high_watermark = match config.high_watermark {
        HighWatermarkMode::FollowsLogEnd => log_end,
        HighWatermarkMode::SetByCaller => {
            let high_watermark = meta.high_watermark.clamp(log_start, log_end);
            hide_past_high_watermark(&segments, high_watermark, &mut pending);
            high_watermark
        }
    };
    meta.log_start = log_start;
    meta.cleaned_up_to = meta.cleaned_up_to.clamp(log_start, high_watermark);
    let (high_watermark_watch, _) = watch::channel(high_watermark);
    let cleaned_up_to = meta.cleaned_up_to;
    let writer = Writer {
        active: Arc::clone(&active),
        file: Arc::new(file),
        active_len,
        active_created: Instant::now(),
        last_indexed_position: active.index.floor_offset(u64::MAX).map(|e| u64::from(e.position)),
        persisted_entries: entries.len(),
        log_end,
        last_batch,
        pending,
        tail: ReservedTail::new(active_len),
        buf: Vec::new(),
        scratch: Vec::new(),
        dirty: false,
        batches_written: 0,
    };
    Ok(Shared {
        dir,
        config,
        snapshot: ArcSwap::from_pointee(Snapshot { segments, log_start }),
        high_watermark: AtomicU64::new(high_watermark),
        log_end: AtomicU64::new(log_end),
        cleaned_up_to: AtomicU64::new(cleaned_up_to),
        synced: AtomicU64::new(log_end),
        high_watermark_watch,
        writer: Mutex::new(writer),
        meta: Mutex::new(meta),
        maintenance: Mutex::new(()),
        sync_in_progress: Mutex::new(false),
        sync_done: Condvar::new(),
        fsync_observer: std::sync::OnceLock::new(),
        last_flush_ms: AtomicI64::new(0),
        appended_since_flush: AtomicBool::new(false),
        // Recovery read the segments through their mappings.
        read_since_release: AtomicBool::new(true),
        release_again: AtomicBool::new(false),
        closed: AtomicBool::new(false),
        sync_failure: arc_swap::ArcSwapOption::empty(),
        fail_next_fsync: AtomicBool::new(false),
        disk_full: AtomicBool::new(false),
        disk_full_needed: AtomicU64::new(0),
        recovery: report,
        lock: Mutex::new(Some(lock)),
    })
}

fn drop_cached_pages(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain system call on a descriptor `file` keeps open; only advice.
        let _ = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// Keeps the prefix of loaded entries that are ordered, in the file, and whose last entry
/// points at a whole, CRC-valid batch.
fn salvage_entries(loaded: Option<LoadedIndex>, written: &[u8], base: u64) -> Vec<IndexEntry> {
    let mut entries = loaded.map(|l| l.entries).unwrap_or_default();
    while let Some(last) = entries.last() {
        if entry_points_at_valid_batch(written, base, last) {
            break;
        }
        entries.pop();
    }
    if !timestamps_plausible(written, base, &entries) {
        entries.clear();
    }
    entries
}

/// The scan after the last kept entry continues its running maximum timestamp, so check what
/// is cheap to check: the first entry's is exactly the first batch's maximum, and the last
/// entry's is not below its own batch's. (A time index from elsewhere fails this.)
fn timestamps_plausible(written: &[u8], base: u64, entries: &[IndexEntry]) -> bool {
    let batch_max = |e: &IndexEntry| {
        BatchWalker::new(written, e.position as usize, base).next().and_then(Result::ok).map(|(_, h)| h.max_timestamp)
    };
    entries.first().is_none_or(|first| batch_max(first) == Some(first.max_timestamp))
        && entries.last().is_none_or(|last| batch_max(last).is_some_and(|max| max <= last.max_timestamp))
}

/// With an externally set high watermark, readers must not see batches at or past it: set
/// each segment's visible length accordingly and queue the hidden batches.
fn hide_past_high_watermark(segments: &[Arc<Segment>], high_watermark: u64, pending: &mut VecDeque<PendingBatch>) {
    for segment in segments {
        let written_len = segment.state.written_len.load(Ordering::Acquire);
        let written = &segment.data[..written_len as usize];
        let mut visible = None;
        let start = segment.start_position(high_watermark);
        for (position, header) in BatchWalker::new(written, start, segment.base_offset).map_while(Result::ok) {
            if header.last_offset() >= high_watermark {
                visible.get_or_insert(position as u64);
                pending.push_back(PendingBatch {
                    last_offset: header.last_offset(),
                    position: position as u32,
                    relative_offset: (header.base_offset - segment.base_offset) as u32,
                    end_position: (position + header.batch_length as usize) as u64,
                    state: Arc::clone(&segment.state),
                });
            }
        }
        let visible = if segment.base_offset >= high_watermark { 0 } else { visible.unwrap_or(written_len) };
        segment.state.visible_len.store(visible, Ordering::Release);
    }
}

/// A closed segment's time index ends with the segment's largest timestamp and its last
/// batch's relative offset. Check both against the batches from the last offset-index entry to
/// the end of the file (at most an index interval and one batch): a stale or damaged final
/// entry would make `offset_for_timestamp` skip the segment and retention misjudge its age.
fn final_time_entry_matches(data: &[u8], base: u64, loaded: &LoadedIndex, time_bytes: &[u8]) -> bool {
    let (Some(last), Some(segment_max)) = (loaded.entries.last(), loaded.segment_max_timestamp) else {
        return false;
    };
    let Some(final_entry) = time_bytes.len().checked_sub(TIME_ENTRY_LEN).map(|at| &time_bytes[at..]) else {
        return false;
    };
    let final_relative = u32::from_le_bytes(final_entry[8..12].try_into().expect("4 bytes"));
    let mut max_timestamp = last.max_timestamp;
    let mut last_relative = None;
    let mut walker = BatchWalker::new(data, last.position as usize, base);
    for item in &mut walker {
        let Ok((_, header)) = item else { return false };
        max_timestamp = max_timestamp.max(header.max_timestamp);
        last_relative = Some(header.base_offset - base);
    }
    walker.position() == data.len() && max_timestamp == segment_max && last_relative == Some(u64::from(final_relative))
}

/// Opens a rolled segment: its mapping and its index, rebuilt when missing or damaged. It is
/// never truncated; damage is reported and left for reads to refuse.
fn open_closed_segment(
    dir: &Path,
    base: u64,
    config: &LogConfig,
    report: &mut RecoveryReport,
) -> Result<Segment, LogError> {
    let path = dir.join(segment_file_name(base, "log"));
    let file = File::open(&path).at(&path, "opening")?;
    let len = file.metadata().at(&path, "reading metadata")?.len();
    let Mapping { data, mmap } = map_file(&file, &path, len)?;
    let index_path = dir.join(segment_file_name(base, "index"));
    let time_path = dir.join(segment_file_name(base, "timeindex"));
    let time_bytes = read_small_file(&time_path).unwrap_or_default();
    let loaded = decode_index_files(&read_small_file(&index_path).unwrap_or_default(), &time_bytes, len)
        .filter(|l| l.segment_max_timestamp.is_some())
        .filter(|l| l.entries.last().is_some_and(|e| entry_points_at_batch(&data, base, e)))
        .filter(|l| final_time_entry_matches(&data, base, l, &time_bytes));
    let (entries, max_timestamp) = match loaded {
        Some(loaded) => (loaded.entries, loaded.segment_max_timestamp.expect("filtered above")),
        None if len == 0 => (Vec::new(), i64::MIN),
        None => {
            let rebuilt = rebuild_from(&data, base, config.index_interval_bytes, None);
            if let Some(defect) = rebuilt.defect {
                tracing::error!(file = %path.display(), position = defect.position, reason = defect.reason, "damaged batch in a closed segment");
                report.damaged_segments.push((path.clone(), defect.position as u64, defect.reason));
            }
            let final_entry = rebuilt.last_batch.map(|h| (rebuilt.max_timestamp, (h.base_offset - base) as u32));
            for (p, bytes) in [
                (&index_path, encode_offset_index(&rebuilt.entries)),
                (&time_path, encode_time_index(&rebuilt.entries, final_entry)),
            ] {
                fs::write(p, bytes).at(p, "rewriting an index")?;
            }
            report.rebuilt_indexes.push(index_path);
            (rebuilt.entries, rebuilt.max_timestamp)
        }
    };
    Ok(Segment {
        base_offset: base,
        path: Arc::new(path),
        data,
        mmap,
        state: Arc::new(SegmentState::new(len, len, max_timestamp)),
        index: Arc::new(SegmentIndex::from_entries(&entries, entries.len())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append_one(log: &Log, i: u64) -> u64 {
        let value = vec![i as u8; 200];
        log.append(&[Record::new(1_700_000_000_000 + i as i64, value)], 1).unwrap().base_offset
    }

    /// Where a read of `offset` in the active segment starts walking, and where the batch
    /// holding `offset` is.
    fn starts(log: &Log, offset: u64) -> (usize, usize, u64) {
        let snapshot = log.shared.snapshot.load();
        let active = snapshot.segments.last().unwrap();
        let visible = active.visible();
        let indexed = active.start_position(offset);
        let start = active.read_start(offset, &visible);
        let fetch = log.read(offset, 1).unwrap();
        let batch = fetch.batches.first().map_or(u64::MAX, |b| b.position);
        (indexed, start, batch)
    }

    #[test]
    fn a_read_at_the_tail_starts_at_the_newest_visible_batch() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig { high_watermark: HighWatermarkMode::SetByCaller, ..LogConfig::default() };
        let log = Log::open(dir.path(), config).unwrap();
        for i in 0..40 {
            append_one(&log, i);
        }
        log.set_high_watermark(40).unwrap();
        // 40 batches of about 250 bytes span more than two index intervals.
        let (indexed, start, batch) = starts(&log, 39);
        assert!(indexed < start, "the index entry ({indexed}) lies before the tail batch ({start})");
        assert_eq!(start as u64, batch, "the read starts at the batch it returns");
        // Earlier offsets fall back to the index.
        let (indexed, start, _) = starts(&log, 38);
        assert_eq!(indexed, start);

        // Batches written but not yet visible do not move the start.
        for i in 40..45 {
            append_one(&log, i);
        }
        assert_eq!(starts(&log, 39).1 as u64, starts(&log, 39).2);
        log.set_high_watermark(43).unwrap();
        let (_, start, batch) = starts(&log, 42);
        assert_eq!(start as u64, batch);

        // Truncation forgets the tail batch; new batches at the cut set it again.
        log.truncate_after(42).unwrap();
        let (indexed, start, _) = starts(&log, 42);
        assert_eq!(indexed, start, "a truncated log starts from the index");
        let replaced = append_one(&log, 99);
        assert_eq!(replaced, 43);
        log.set_high_watermark(44).unwrap();
        let (_, start, batch) = starts(&log, 43);
        assert_eq!(start as u64, batch);
        let fetch = log.read(43, 1 << 20).unwrap();
        assert_eq!(fetch.records(43).unwrap()[0].value[0], 99);
    }
}
