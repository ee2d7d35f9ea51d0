//! The single writer of a partition, behind its handle (`partition/mod.rs`). Connections hand it records through a bounded channel
//! (a full channel holds the publisher back, so a fast publisher cannot grow memory); it
//! takes everything waiting, appends it as one batch, waits until the batch is durable per
//! the flush policy, and only then tells each publisher its offset.
//!
//! It runs on a dedicated thread because `Log::append` and an fsync are blocking calls. After
//! each append it raises the broker's append signal itself (`interest.rs`), so a waiting
//! subscriber is woken straight from here, with no task in between.
//!
//! A stream partition's writer ([`PartitionWriter`]) also has a fast path for a lone publish:
//! when nothing is queued ahead and the flush policy does not wait for an fsync, the caller
//! appends on its own thread ([`PartitionWriter::try_append_now`]), which saves the hand-over
//! to the writer thread and back. Order per connection holds: a connection appends inline
//! only when none of its earlier records is still queued, since every queued record counts
//! in `queued` until it is in the log. The inline path and the thread take one lock around
//! an append and its wakes, so a partition's wakes go out in offset order (`interest.rs`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use strata_log::{Log, LogError, Record};
use tokio::sync::{mpsc, oneshot};

use crate::codec::ReasonCode;
use crate::interest::AppendSignal;

/// Most records appended as one batch.
const MAX_BATCH_RECORDS: usize = 4096;
/// A batch stops growing past this many bytes of whole records ([`Record::encoded_len`]: key,
/// headers with the topic and properties, value), not only payloads.
const MAX_BATCH_BYTES: usize = 4 << 20;

/// The outcome a publisher waits for: the record's offset once durable, or why it is not.
pub type AppendResult = Result<u64, AppendError>;

/// Why a record was not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendError {
    /// The file system was full: nothing stored was harmed, and the same publish may succeed
    /// once space is freed.
    pub disk_full: bool,
    /// What went wrong, naming the partition or file.
    pub message: String,
    /// A replicated partition had fewer replicas in sync than its stream's
    /// `min_insync_replicas`: nothing was appended, and the same publish may succeed later.
    pub too_few_replicas: bool,
}

impl AppendError {
    fn from_log(error: &LogError) -> AppendError {
        AppendError { disk_full: error.is_disk_full(), message: error.to_string(), too_few_replicas: false }
    }

    /// A failure that is not a full disk (a writer that stopped, say).
    pub(crate) fn failed(message: impl Into<String>) -> AppendError {
        AppendError { disk_full: false, message: message.into(), too_few_replicas: false }
    }

    /// The MQTT 5 reason code of the PUBACK or PUBREC that refuses the publish: 0x97 Quota
    /// exceeded for a full disk or too few replicas in sync (the client may try again
    /// later), 0x80 Unspecified error otherwise.
    pub(crate) fn reason_code(&self) -> ReasonCode {
        if self.disk_full || self.too_few_replicas { ReasonCode::QuotaExceeded } else { ReasonCode::UnspecifiedError }
    }
}

impl std::fmt::Display for AppendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<AppendError> for String {
    fn from(error: AppendError) -> String {
        error.message
    }
}

/// One record to append, and where to report it durable (QoS 1/2 publishers only).
#[derive(Debug)]
pub struct AppendRequest {
    /// The record.
    pub record: Record,
    /// Completed after the record is durable; `None` for QoS 0.
    pub durable: Option<oneshot::Sender<AppendResult>>,
}

/// Appended batches not yet committed, as (base offset, records), oldest first.
type Held = VecDeque<(u64, Vec<Record>)>;

/// Where a stream partition's appends are announced, in offset order.
#[derive(Clone)]
struct Announce {
    signal: Arc<AppendSignal>,
    /// The partition's id (`PartitionHandle::id`).
    partition: u32,
    /// Held across each append and its announcement, by the writer thread and by the
    /// inline path alike (`interest.rs` relies on the order), and across each move of the
    /// committed offset. Holds the appended batches not yet committed, as (base offset,
    /// records): always empty while the high watermark follows the log end.
    order: Arc<Mutex<Held>>,
    /// Whether the log's high watermark follows its log end (every stream today): then an
    /// append is its commit, and is announced at once.
    follows_log_end: bool,
}

impl Announce {
    fn lock_order(&self) -> std::sync::MutexGuard<'_, Held> {
        self.order.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Announces the held batches that lie wholly below `committed`, in offset order.
    fn release(&self, held: &mut Held, committed: u64) {
        while let Some((base_offset, records)) = held.front() {
            if base_offset + records.len() as u64 > committed {
                return;
            }
            self.signal.appended(self.partition, *base_offset, records);
            held.pop_front();
        }
    }
}

/// The writer of a partition: its queue, and the inline path for a lone publish.
pub(crate) struct PartitionWriter {
    tx: mpsc::Sender<AppendRequest>,
    /// Records sent to the queue and not yet in the log.
    queued: Arc<AtomicUsize>,
    log: Arc<Log>,
    /// `None` for an internal stream (`$retained`, `$sessions`...): no subscriber reads
    /// those, so their appends wake nobody, and nothing appends to them inline.
    announce: Option<Announce>,
    /// Whether an append is durable once written (any flush policy but `always`).
    durable_when_written: bool,
}

/// Takes one back from the queued count when dropped: a send that failed or was cancelled.
struct Uncount<'a>(&'a AtomicUsize);

impl Drop for Uncount<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The queue is closed: the writer thread stopped.
#[derive(Debug)]
pub struct WriterStopped;

/// A place held in a writer's queue ([`PartitionWriter::reserve`]).
pub(crate) struct Reserved<'a> {
    permit: mpsc::Permit<'a, AppendRequest>,
    queued: &'a AtomicUsize,
}

impl<'a> Reserved<'a> {
    /// The place `permit` holds, counted in `queued` once used.
    pub(super) fn new(permit: mpsc::Permit<'a, AppendRequest>, queued: &'a AtomicUsize) -> Reserved<'a> {
        Reserved { permit, queued }
    }

    /// Queues `request` in the place held.
    pub(crate) fn send(self, request: AppendRequest) {
        // Counted before it is queued: the writer thread uncounts it once it is in the log.
        self.queued.fetch_add(1, Ordering::AcqRel);
        self.permit.send(request);
    }
}

impl PartitionWriter {
    /// Starts the writer thread of `log`, fed by a queue of `capacity` requests. With
    /// `announce` (the append signal and the partition's id), each append wakes the readers it
    /// concerns. The thread ends when the writer is dropped.
    pub(crate) fn start(
        log: Arc<Log>,
        capacity: usize,
        name: String,
        announce: Option<(Arc<AppendSignal>, u32)>,
    ) -> std::io::Result<PartitionWriter> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let queued = Arc::new(AtomicUsize::new(0));
        let durable_when_written = !matches!(log.config().flush, strata_log::FlushPolicy::Always);
        let thread_log = Arc::clone(&log);
        let follows_log_end = log.config().high_watermark == strata_log::HighWatermarkMode::FollowsLogEnd;
        let announce =
            announce.map(|(signal, partition)| Announce { signal, partition, order: Arc::default(), follows_log_end });
        let (thread_announce, thread_queued) = (announce.clone(), Arc::clone(&queued));
        thread::Builder::new().name(name).spawn(move || run(&thread_log, rx, thread_announce, Some(thread_queued)))?;
        Ok(PartitionWriter { tx, queued, log, announce, durable_when_written })
    }

    /// Moves the committed offset (the high watermark) of a log whose high watermark the
    /// caller sets to `offset`, and wakes the readers of the batches it now covers. A
    /// replicated partition's quorum commit is to call it (issue 20); nothing does yet
    /// outside the tests.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn set_committed(&self, offset: u64) -> Result<(), LogError> {
        let Some(announce) = &self.announce else { return self.log.set_high_watermark(offset) };
        let mut held = announce.lock_order();
        self.log.set_high_watermark(offset)?;
        announce.release(&mut held, self.log.offsets().high_watermark);
        Ok(())
    }

    /// Waits for room in the queue and holds it: the request sent through the returned
    /// [`Reserved`] goes in that place, with no wait (so it can be sent under a lock).
    pub(crate) async fn reserve(&self) -> Result<Reserved<'_>, WriterStopped> {
        let permit = self.tx.reserve().await.map_err(|_| WriterStopped)?;
        Ok(Reserved { permit, queued: &self.queued })
    }

    /// Queues `request` for the writer thread; waits while the queue is full. Cancel-safe:
    /// dropped before it is queued, the request is not counted as queued.
    pub async fn send(&self, request: AppendRequest) -> Result<(), WriterStopped> {
        self.queued.fetch_add(1, Ordering::AcqRel);
        let not_queued = Uncount(&self.queued);
        // `reserve` then `send` rather than `Sender::send`: the wait holds no copy of the
        // request, which keeps every connection task that may wait here smaller.
        let permit = self.tx.reserve().await.map_err(|_| WriterStopped)?;
        permit.send(request);
        // Queued: the writer thread uncounts it once it is in the log.
        std::mem::forget(not_queued);
        Ok(())
    }

    /// Appends `record` now, on the caller's thread, if that keeps order and cannot block:
    /// nothing queued ahead, a flush policy other than `always`, the log's writer free and no
    /// segment roll due. Returns the outcome, or gives the record back for
    /// [`PartitionWriter::send`].
    pub fn try_append_now(&self, record: Record) -> Result<AppendResult, Record> {
        let Some(announce) = &self.announce else { return Err(record) };
        if !self.durable_when_written || !announce.follows_log_end || self.queued.load(Ordering::Acquire) != 0 {
            return Err(record);
        }
        // Never waits: a busy writer or a segment roll (which fsyncs) sends it to the queue.
        let Ok(_order) = announce.order.try_lock() else { return Err(record) };
        let outcome = match self.log.try_append_now(std::slice::from_ref(&record), 0) {
            // The writer thread tries to recover a log whose fsync failed.
            Ok(None) | Err(LogError::SyncFailed { .. }) => return Err(record),
            Ok(Some(info)) => {
                announce.signal.appended(announce.partition, info.base_offset, std::slice::from_ref(&record));
                Ok(info.base_offset)
            }
            Err(error) => {
                tracing::error!(partition = %self.log.dir().display(), %error, "append failed");
                Err(AppendError::from_log(&error))
            }
        };
        Ok(outcome)
    }
}

fn append(log: &Log, records: &[Record], announce: Option<&Announce>) -> Result<strata_log::AppendInfo, LogError> {
    let Some(announce) = announce else { return log.append(records, 0) };
    let mut held = announce.lock_order();
    let appended = log.append(records, 0);
    if let Ok(info) = &appended {
        if announce.follows_log_end {
            // Committed by the append: readers may read it now; publishers hear back once
            // it is durable.
            announce.signal.appended(announce.partition, info.base_offset, records);
        } else {
            // Readers are woken when the committed offset passes it
            // (`PartitionWriter::set_committed`), which may have happened already.
            held.push_back((info.base_offset, records.to_vec()));
            announce.release(&mut held, log.offsets().high_watermark);
        }
    }
    appended
}

/// How often a writer tries to bring its log back after a failed fsync: each try writes the
/// active segment again.
const RECOVERY_EVERY: Duration = Duration::from_secs(5);

/// After a failed fsync the log refuses appends (issue 18). Tries to recover it in place
/// ([`Log::recover_failed_sync`]), at most every [`RECOVERY_EVERY`]; true once it has.
fn try_recovery(log: &Log, last_try: &mut Option<Instant>) -> bool {
    if last_try.is_some_and(|at| at.elapsed() < RECOVERY_EVERY) {
        return false;
    }
    *last_try = Some(Instant::now());
    match log.recover_failed_sync() {
        Ok(recovered) => recovered,
        Err(error) => {
            let retry_in_s = RECOVERY_EVERY.as_secs();
            tracing::error!(partition = %log.dir().display(), %error, retry_in_s, "recovering from a failed fsync failed");
            false
        }
    }
}

fn run(log: &Log, mut rx: mpsc::Receiver<AppendRequest>, announce: Option<Announce>, queued: Option<Arc<AtomicUsize>>) {
    let mut records = Vec::new();
    let mut waiting = Vec::new();
    let mut last_recovery = None;
    // Blocks only while nothing is waiting: a lone publish is appended at once.
    while let Some(first) = rx.blocking_recv() {
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(request) = next {
            bytes += request.record.encoded_len();
            records.push(request.record);
            waiting.push(request.durable);
            next = if records.len() < MAX_BATCH_RECORDS && bytes < MAX_BATCH_BYTES { rx.try_recv().ok() } else { None };
        }
        let mut appended = append(log, &records, announce.as_ref());
        if matches!(appended, Err(LogError::SyncFailed { .. })) && try_recovery(log, &mut last_recovery) {
            appended = append(log, &records, announce.as_ref());
        }
        let outcome = appended.and_then(|info| log.wait_durable_blocking(info.last_offset).map(|()| info.base_offset));
        match outcome {
            Ok(base_offset) => {
                for (i, durable) in waiting.drain(..).enumerate() {
                    if let Some(durable) = durable {
                        let _ = durable.send(Ok(base_offset + i as u64));
                    }
                }
            }
            Err(error) => {
                tracing::error!(partition = %log.dir().display(), %error, "append failed");
                let error = AppendError::from_log(&error);
                for durable in waiting.drain(..).flatten() {
                    let _ = durable.send(Err(error.clone()));
                }
            }
        }
        // Only now are they in the log: a publisher may append inline again.
        if let Some(queued) = &queued {
            queued.fetch_sub(records.len(), Ordering::AcqRel);
        }
        records.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_log::LogConfig;

    #[test]
    fn requests_waiting_together_share_one_batch_and_get_their_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(dir.path(), LogConfig::default()).unwrap());
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let tx = PartitionWriter::start(Arc::clone(&log), 16, "test-writer".into(), None).unwrap();
        let offsets = runtime.block_on(async {
            let mut receivers = Vec::new();
            for i in 0..11 {
                let (done, rx) = oneshot::channel();
                let durable = if i % 2 == 0 { Some(done) } else { None };
                tx.send(AppendRequest { record: Record::new(1, format!("v{i}")), durable }).await.unwrap();
                receivers.push(rx);
            }
            let mut offsets = Vec::new();
            for rx in receivers.into_iter().step_by(2) {
                offsets.push(rx.await.unwrap().unwrap());
            }
            offsets
        });
        assert_eq!(offsets, vec![0, 2, 4, 6, 8, 10]);
        drop(tx);
        let records = log.read(0, 1 << 20).unwrap().records(0).unwrap();
        assert_eq!(records.len(), 11);
        assert_eq!(&records[3].value[..], b"v3");
    }

    // Issue 18: the cap counted only values, so records with small values and large headers
    // (a long topic, many user properties) grew one batch far past it.
    #[test]
    fn issue18_the_batch_cap_counts_whole_records() {
        const RECORDS: usize = 100;
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        // All queued before the writer runs, so that it can take them all into one batch.
        let (tx, rx) = mpsc::channel(RECORDS);
        let record =
            Record::new(1, "v").with_key(vec![b'k'; 1 << 10]).with_header(crate::record::TOPIC, vec![b't'; 64 << 10]);
        let record_bytes = record.encoded_len();
        assert!(record_bytes > (64 << 10) + (1 << 10), "the key and headers count");
        for _ in 0..RECORDS {
            tx.try_send(AppendRequest { record: record.clone(), durable: None }).unwrap();
        }
        drop(tx);
        run(&log, rx, None, None);
        let mut batches = Vec::new();
        strata_log::dump_partition(dir.path(), 0, &mut |batch| {
            batches.push(batch.records.len());
            true
        })
        .unwrap();
        assert_eq!(batches.iter().sum::<usize>(), RECORDS, "every record appended");
        // A batch stops growing once it reaches the cap: at most one record past it.
        let most = MAX_BATCH_BYTES.div_ceil(record_bytes);
        assert!(batches.iter().all(|&records| records <= most), "batches of {batches:?} records, cap {most}");
    }

    /// Issue 18: the publishers waiting on a failed fsync hear an error (0x80 for MQTT 5, not
    /// 0x97: the disk is not full) naming the partition; the writer then recovers the log in
    /// place, so the next publish is stored. A lone publish on a failed log is not refused
    /// inline but handed to the writer thread, which recovers it.
    #[test]
    fn issue18_a_failed_fsync_fails_its_waiters_then_the_writer_recovers() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig { flush: strata_log::FlushPolicy::Always, ..LogConfig::default() };
        let log = Arc::new(Log::open(dir.path(), config).unwrap());
        let writer =
            PartitionWriter::start(Arc::clone(&log), 16, "test-fsync".into(), Some((Arc::new(AppendSignal::new()), 0)))
                .unwrap();
        let send = |writer: &PartitionWriter, value: &'static str| {
            runtime.block_on(async {
                let (done, rx) = oneshot::channel();
                writer.send(AppendRequest { record: Record::new(1, value), durable: Some(done) }).await.unwrap();
                rx.await.unwrap()
            })
        };
        assert_eq!(send(&writer, "stored"), Ok(0));
        log.fail_next_fsync_for_tests();
        let error = send(&writer, "waits for the failed fsync").unwrap_err();
        assert!(!error.disk_full, "{error}");
        assert_eq!(error.reason_code(), ReasonCode::UnspecifiedError);
        assert!(error.message.contains(&dir.path().display().to_string()), "{error}");
        assert!(log.sync_failure().is_some());
        assert_eq!(send(&writer, "comes after it"), Ok(2), "the writer recovered the log");
        assert!(log.sync_failure().is_none());

        let interval = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(interval.path(), LogConfig::default()).unwrap());
        let writer = PartitionWriter::start(
            Arc::clone(&log),
            16,
            "test-fsync-inline".into(),
            Some((Arc::new(AppendSignal::new()), 0)),
        )
        .unwrap();
        log.fail_next_fsync_for_tests();
        assert!(log.flush().is_err());
        let Err(record) = writer.try_append_now(Record::new(1, "x")) else {
            panic!("a failed log is left to the writer thread, not refused inline");
        };
        runtime.block_on(async {
            let (done, rx) = oneshot::channel();
            writer.send(AppendRequest { record, durable: Some(done) }).await.unwrap();
            assert_eq!(rx.await.unwrap(), Ok(0));
        });
    }

    #[test]
    fn a_lone_append_goes_inline_only_when_nothing_is_queued_and_no_fsync_is_awaited() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(dir.path(), LogConfig::default()).unwrap());
        let appended = Arc::new(AppendSignal::new());
        let mut woken = appended.subscribe_everything();
        let writer = PartitionWriter::start(Arc::clone(&log), 16, "test-inline".into(), Some((appended, 0))).unwrap();
        assert_eq!(writer.try_append_now(Record::new(1, "a")).ok(), Some(Ok(0)));
        assert!(woken.has_changed().unwrap(), "an inline append wakes readers");
        woken.borrow_and_update();
        runtime.block_on(async {
            let (done, rx) = oneshot::channel();
            writer.send(AppendRequest { record: Record::new(1, "b"), durable: Some(done) }).await.unwrap();
            assert_eq!(rx.await.unwrap(), Ok(1));
        });
        // The queued record is in the log before `queued` drops; poll briefly for that.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let outcome = loop {
            match writer.try_append_now(Record::new(1, "c")) {
                Ok(outcome) => break outcome,
                Err(_) if std::time::Instant::now() < deadline => std::thread::yield_now(),
                Err(_) => panic!("the queue never drained"),
            }
        };
        assert_eq!(outcome, Ok(2), "after the queued record, in order");

        let always = tempfile::tempdir().unwrap();
        let config = LogConfig { flush: strata_log::FlushPolicy::Always, ..LogConfig::default() };
        let log = Arc::new(Log::open(always.path(), config).unwrap());
        let writer =
            PartitionWriter::start(log, 16, "test-always".into(), Some((Arc::new(AppendSignal::new()), 0))).unwrap();
        assert!(writer.try_append_now(Record::new(1, "x")).is_err(), "an fsync wait never runs inline");
    }

    /// Under a caller-set high watermark an append is not committed: readers are not woken
    /// and read nothing until the committed offset passes it; then they are woken once.
    #[test]
    fn issue19_readers_are_woken_when_the_committed_offset_passes_an_append_not_before() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig { high_watermark: strata_log::HighWatermarkMode::SetByCaller, ..LogConfig::default() };
        let log = Arc::new(Log::open(dir.path(), config).unwrap());
        let appended = Arc::new(AppendSignal::new());
        let mut woken = appended.subscribe_everything();
        let writer = PartitionWriter::start(Arc::clone(&log), 16, "test-commit".into(), Some((appended, 0))).unwrap();
        assert!(writer.try_append_now(Record::new(1, "a")).is_err(), "no inline append before a commit");
        let send = |value: &'static str| {
            runtime.block_on(async {
                let (done, rx) = oneshot::channel();
                writer.send(AppendRequest { record: Record::new(1, value), durable: Some(done) }).await.unwrap();
                rx.await.unwrap()
            })
        };
        assert_eq!(send("a"), Ok(0));
        assert_eq!(send("b"), Ok(1));
        assert!(!woken.has_changed().unwrap(), "appended, not committed: nobody is woken");
        assert!(log.read(0, 1 << 20).unwrap().next_offset().is_none(), "and nothing is visible");
        writer.set_committed(1).unwrap();
        assert!(woken.has_changed().unwrap(), "the commit of the first append wakes readers");
        woken.borrow_and_update();
        assert_eq!(log.read(0, 1 << 20).unwrap().records(0).unwrap().len(), 1);
        writer.set_committed(2).unwrap();
        assert!(woken.has_changed().unwrap(), "and the second's");
        assert_eq!(log.read(0, 1 << 20).unwrap().records(0).unwrap().len(), 2);
    }
}
