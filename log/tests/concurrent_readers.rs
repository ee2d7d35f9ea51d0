//! One writer appends (segments roll every few batches) while readers read: some re-read
//! everything from offset 0 over and over, some tail the log, woken by the high-watermark
//! watch or by polling. Every reader must see a gap-free, ordered stream whose records match
//! what was written, and never an offset at or past the high watermark its read reported,
//! also when the high watermark is set by the caller behind the writer.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use common::{Rng, check_derived, derived_record};
use strata_log::{FlushPolicy, HighWatermarkMode, Log, LogConfig, Record};

/// Hang guard: a reader that makes no progress for this long fails the test instead of
/// hanging it. Nothing asserts how long anything takes.
const STALL_LIMIT: Duration = Duration::from_secs(120);
const MAX_PASSES: u64 = 100_000;

fn config(segment_bytes: u64, high_watermark: HighWatermarkMode) -> LogConfig {
    LogConfig {
        segment_bytes,
        segment_ms: None,
        index_interval_bytes: 256,
        flush: FlushPolicy::Never,
        high_watermark,
        ..LogConfig::default()
    }
}

/// The batches the writer will append: the batch at `base` holds `1 + base % 4` records.
struct Plan {
    /// (base offset, last offset) of every batch.
    batches: Vec<(u64, u64)>,
    total: u64,
}

impl Plan {
    fn new(batch_count: usize) -> Plan {
        let mut batches = Vec::with_capacity(batch_count);
        let mut base = 0;
        for _ in 0..batch_count {
            let last = base + base % 4;
            batches.push((base, last));
            base = last + 1;
        }
        Plan { batches, total: base }
    }

    /// The last offset of the batch holding `offset`.
    fn batch_end(&self, offset: u64) -> u64 {
        let i = self.batches.partition_point(|&(base, _)| base <= offset) - 1;
        self.batches[i].1
    }
}

/// Reads forward from `*next` until a read returns nothing, checking every record. Returns the
/// high watermark of the read that returned nothing.
fn read_forward(log: &Log, plan: &Plan, next: &mut u64, rng: &mut Rng, who: &str) -> u64 {
    loop {
        let max_bytes = rng.range(1, 3000) as usize;
        let fetch = log.read(*next, max_bytes).unwrap_or_else(|e| panic!("{who}: read({next}) failed: {e}"));
        let records = fetch.records(*next).unwrap_or_else(|e| panic!("{who}: decoding failed: {e}"));
        if records.is_empty() {
            // Nothing visible: either we are at the high watermark, or the batch holding `next`
            // is not wholly below it yet (batches become visible whole).
            assert!(
                *next >= fetch.high_watermark || plan.batch_end(*next) >= fetch.high_watermark,
                "{who}: read({next}) returned nothing below the high watermark {}",
                fetch.high_watermark
            );
            return fetch.high_watermark;
        }
        for record in &records {
            assert_eq!(record.offset, *next, "{who}: offsets are not gap-free and ordered");
            assert!(
                record.offset < fetch.high_watermark,
                "{who}: offset {} at or past the high watermark {} of its read",
                record.offset,
                fetch.high_watermark
            );
            check_derived(record);
            *next += 1;
        }
        assert!(*next <= plan.total, "{who}: read past everything written");
    }
}

#[derive(Clone, Copy, Debug)]
enum Reader {
    /// Reads everything from 0, again and again.
    Rescan,
    /// Follows the log end, sleeping on the high-watermark watch.
    TailWatch,
    /// Follows the log end, polling with reads.
    TailPoll,
}

fn run_reader(log: Log, plan: Arc<Plan>, all_visible: Arc<AtomicBool>, kind: Reader, seed: u64) -> u64 {
    let who = format!("{kind:?} reader {seed}");
    let mut rng = Rng::new(seed);
    let mut rounds = 0u64;
    let mut progress_at = Instant::now();
    let mut last_next = 0;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let mut watch = log.watch_high_watermark();
    let mut next = 0;
    loop {
        rounds += 1;
        assert!(rounds < MAX_PASSES * 100, "{who}: too many rounds");
        match kind {
            Reader::Rescan => {
                let finished_before = all_visible.load(Ordering::Acquire);
                let mut from_zero = 0;
                read_forward(&log, &plan, &mut from_zero, &mut rng, &who);
                assert!(from_zero >= next, "{who}: a later pass saw less than an earlier one");
                next = from_zero;
                if finished_before {
                    assert_eq!(next, plan.total, "{who}: the last pass did not see everything");
                    return rounds;
                }
                // Rescans outpace the writer on a loaded machine; the stall check below and the
                // round cap above bound them, so give the writer the core instead of failing.
                thread::yield_now();
            }
            Reader::TailWatch | Reader::TailPoll => {
                let seen = read_forward(&log, &plan, &mut next, &mut rng, &who);
                if next == plan.total {
                    return rounds;
                }
                if matches!(kind, Reader::TailWatch) {
                    let woken = runtime
                        .block_on(async { tokio::time::timeout(STALL_LIMIT, watch.wait_for(|hw| *hw > seen)).await });
                    assert!(woken.is_ok_and(|r| r.is_ok()), "{who}: the high watermark stalled at {seen}");
                } else {
                    thread::yield_now();
                }
            }
        }
        if next != last_next {
            last_next = next;
            progress_at = Instant::now();
        }
        assert!(progress_at.elapsed() < STALL_LIMIT, "{who}: no progress past offset {next}");
    }
}

/// Appends every planned batch, checking the offsets it gets.
fn write_all(log: &Log, plan: &Plan) {
    for &(base, last) in &plan.batches {
        let records: Vec<Record> = (base..=last).map(derived_record).collect();
        let info = log.append(&records, 1).unwrap();
        assert_eq!((info.base_offset, info.last_offset), (base, last), "the writer got unexpected offsets");
    }
}

fn spawn_readers(log: &Log, plan: &Arc<Plan>, all_visible: &Arc<AtomicBool>) -> Vec<thread::JoinHandle<u64>> {
    [Reader::Rescan, Reader::Rescan, Reader::TailWatch, Reader::TailPoll]
        .into_iter()
        .enumerate()
        .map(|(i, kind)| {
            let (log, plan, all_visible) = (log.clone(), Arc::clone(plan), Arc::clone(all_visible));
            thread::spawn(move || run_reader(log, plan, all_visible, kind, i as u64 + 1))
        })
        .collect()
}

#[test]
fn readers_follow_a_writer_that_rolls_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(2048, HighWatermarkMode::FollowsLogEnd)).unwrap();
    let plan = Arc::new(Plan::new(2500));
    let all_visible = Arc::new(AtomicBool::new(false));
    let readers = spawn_readers(&log, &plan, &all_visible);
    write_all(&log, &plan);
    all_visible.store(true, Ordering::Release);
    for reader in readers {
        let rounds = reader.join().expect("a reader failed");
        eprintln!("reader rounds: {rounds}");
    }
    assert!(log.segment_count() > 50, "segments should have rolled often, got {}", log.segment_count());
    assert_eq!(log.offsets().log_end, plan.total);
    log.close().unwrap();
    assert!(common::verify(dir.path()).problems.is_empty());
}

#[test]
fn readers_never_see_past_a_high_watermark_set_by_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(4096, HighWatermarkMode::SetByCaller)).unwrap();
    let plan = Arc::new(Plan::new(2000));
    let all_visible = Arc::new(AtomicBool::new(false));
    let writer_done = Arc::new(AtomicBool::new(false));
    let readers = spawn_readers(&log, &plan, &all_visible);
    // Moves the high watermark forward behind the writer, often to the middle of a batch.
    let committer = {
        let (log, plan, writer_done) = (log.clone(), Arc::clone(&plan), Arc::clone(&writer_done));
        thread::spawn(move || {
            let mut rng = Rng::new(77);
            let mut moves = 0u64;
            loop {
                let done = writer_done.load(Ordering::Acquire);
                let offsets = log.offsets();
                if offsets.log_end > offsets.high_watermark {
                    let target = rng.range(offsets.high_watermark + 1, offsets.log_end + 1);
                    log.set_high_watermark(target).unwrap();
                    assert!(log.offsets().high_watermark >= target);
                    moves += 1;
                } else if done {
                    assert_eq!(offsets.high_watermark, plan.total);
                    return moves;
                } else {
                    thread::yield_now();
                }
                assert!(moves < 10_000_000);
            }
        })
    };
    write_all(&log, &plan);
    writer_done.store(true, Ordering::Release);
    let moves = committer.join().expect("the committer failed");
    all_visible.store(true, Ordering::Release);
    for reader in readers {
        let rounds = reader.join().expect("a reader failed");
        eprintln!("reader rounds: {rounds}");
    }
    eprintln!("high watermark moves: {moves}");
    assert!(moves > 10, "the high watermark moved only {moves} times");
    // The high watermark can only move forward, and never past the log end.
    assert!(log.set_high_watermark(plan.total - 1).is_err());
    assert!(log.set_high_watermark(plan.total + 1).is_err());
    log.close().unwrap();
    assert!(common::verify(dir.path()).problems.is_empty());
}
