//! Criterion benchmarks of `strata-log`: append throughput, group commit under
//! `FlushPolicy::Always`, sequential and random reads from the page cache, and the reopen
//! (recovery) time of a 1 GiB partition. Results and the exact commands are in
//! `benches/README.md` at the workspace root.
//!
//! Logs live in temporary directories under `STRATA_BENCH_DIR` if it is set, else under cargo's
//! `CARGO_TARGET_TMPDIR` (`target/tmp`, on the same disk as the workspace). Do not point them
//! at a tmpfs: the numbers would not be about the disk's page cache and write-back any more.
//!
//! Under `cargo test --benches` (criterion's test mode, no `--bench` argument) every fixture
//! is scaled down so that the run stays small. The cold-cache reopen benchmark needs GNU dd
//! (`iflag=nocache`) and is skipped without it.

use std::{
    cell::OnceCell,
    fs,
    hint::black_box,
    path::{Path, PathBuf},
    sync::Barrier,
    time::{Duration, Instant},
};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use strata_log::{FlushPolicy, Log, LogConfig, Record};
use tempfile::TempDir;

const KIB: usize = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TERM: u64 = 1;

/// Fixture sizes: full under `cargo bench`, tiny under criterion's test mode.
#[derive(Clone, Copy)]
struct Scale {
    /// Segment size of the append and read logs.
    segment_bytes: u64,
    /// A scratch log is replaced (untimed) once this much was appended to it, which bounds
    /// the disk space and dirty page cache one benchmark uses.
    recycle_bytes: u64,
    /// Size of the log the read benchmarks read.
    read_fixture_bytes: u64,
    /// Size of the partition the reopen benchmarks open.
    recovery_bytes: u64,
    /// Segment sizes of the reopen benchmarks.
    recovery_segments: [u64; 2],
}

impl Scale {
    fn detect() -> Scale {
        if std::env::args().any(|a| a == "--bench") {
            Scale {
                segment_bytes: 128 * MIB,
                recycle_bytes: 512 * MIB,
                read_fixture_bytes: 256 * MIB,
                recovery_bytes: GIB,
                recovery_segments: [128 * MIB, 256 * MIB],
            }
        } else {
            Scale {
                segment_bytes: 4 * MIB,
                recycle_bytes: 8 * MIB,
                read_fixture_bytes: 4 * MIB,
                recovery_bytes: 8 * MIB,
                recovery_segments: [2 * MIB, 4 * MIB],
            }
        }
    }
}

fn bench_root() -> PathBuf {
    let root =
        std::env::var_os("STRATA_BENCH_DIR").map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from);
    fs::create_dir_all(&root).expect("creating the bench directory");
    root
}

fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("strata-log-bench-")
        .tempdir_in(bench_root())
        .expect("creating a temporary directory")
}

fn config(flush: FlushPolicy, segment_bytes: u64) -> LogConfig {
    LogConfig { segment_bytes, flush, ..LogConfig::default() }
}

fn size_name(bytes: usize) -> String {
    if bytes.is_multiple_of(KIB) { format!("{}KiB", bytes / KIB) } else { format!("{bytes}B") }
}

fn flush_name(flush: FlushPolicy) -> String {
    match flush {
        FlushPolicy::Always => "always".into(),
        FlushPolicy::Interval(every) => format!("interval{}ms", every.as_millis()),
        FlushPolicy::Never => "never".into(),
    }
}

/// xorshift64*: enough randomness for payloads and read positions, with no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// `count` records with `size`-byte pseudo-random values, no key and no headers.
fn records(count: usize, size: usize, seed: u64) -> Vec<Record> {
    let mut rng = Rng(seed | 1);
    (0..count)
        .map(|i| {
            let value: Vec<u8> = (0..size).map(|_| rng.next() as u8).collect();
            Record::new(1_700_000_000_000 + i as i64, value)
        })
        .collect()
}

/// A log in its own temporary directory, thrown away (as by a crash: no fsync) when replaced
/// or dropped.
struct ScratchLog {
    config: LogConfig,
    log: Log,
    appended: u64,
    _dir: TempDir,
}

impl ScratchLog {
    fn new(config: LogConfig) -> ScratchLog {
        let dir = temp_dir();
        let log = Log::open(dir.path().join("partition"), config.clone()).expect("opening a scratch log");
        ScratchLog { config, log, appended: 0, _dir: dir }
    }

    /// Replaces the log with an empty one once `limit` bytes were appended to it.
    fn recycle_if_over(&mut self, limit: u64) {
        if self.appended >= limit {
            *self = ScratchLog::new(self.config.clone());
        }
    }
}

impl Drop for ScratchLog {
    fn drop(&mut self) {
        // Skip close(): its fsync of data about to be deleted would only add wall time.
        self.log.crash_for_tests();
    }
}

/// Sum of timed iterations, to print records per second next to criterion's bytes per second.
#[derive(Default)]
struct Tally {
    records: u64,
    elapsed: Duration,
}

impl Tally {
    fn print(&self, id: &str) {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            println!(
                "{id}: {:.3} M records/s (mean over all timed iterations, warm-up included)",
                self.records as f64 / secs / 1e6
            );
        }
    }
}

/// Appends batches of `batch` records of `size` bytes until their values total `bytes`.
fn fill(log: &Log, size: usize, batch: usize, bytes: u64) {
    let batch_records = records(batch, size, 42);
    for _ in 0..bytes.div_ceil((size * batch) as u64) {
        log.append(&batch_records, TERM).expect("filling a fixture");
    }
}

/// The value bytes [`fill`] appends.
fn fill_payload(size: usize, batch: usize, bytes: u64) -> u64 {
    let batch_bytes = (size * batch) as u64;
    bytes.div_ceil(batch_bytes) * batch_bytes
}

fn append(c: &mut Criterion) {
    let scale = Scale::detect();
    let mut group = c.benchmark_group("append");
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3)).sample_size(30);
    for flush in [FlushPolicy::Never, FlushPolicy::Interval(Duration::from_millis(100))] {
        for size in [100, KIB] {
            for batch in [1usize, 16, 256] {
                let batch_records = records(batch, size, 7);
                let batch_bytes = (size * batch) as u64;
                let mut scratch = ScratchLog::new(config(flush, scale.segment_bytes));
                let mut tally = Tally::default();
                let id = format!("{}/batch{batch}/{}", size_name(size), flush_name(flush));
                // Throughput counts record values only; the format adds 7-9 bytes per record
                // and 52 per batch.
                group.throughput(Throughput::Bytes(batch_bytes));
                group.bench_function(&id, |b| {
                    b.iter_custom(|iters| {
                        let mut elapsed = Duration::ZERO;
                        let mut start = Instant::now();
                        for _ in 0..iters {
                            if scratch.appended >= scale.recycle_bytes {
                                elapsed += start.elapsed();
                                scratch.recycle_if_over(scale.recycle_bytes);
                                start = Instant::now();
                            }
                            black_box(scratch.log.append(&batch_records, TERM).expect("append"));
                            scratch.appended += batch_bytes;
                        }
                        elapsed += start.elapsed();
                        tally.records += iters * batch as u64;
                        tally.elapsed += elapsed;
                        elapsed
                    })
                });
                tally.print(&format!("append/{id}"));
            }
        }
    }
    group.finish();
}

fn group_commit(c: &mut Criterion) {
    let scale = Scale::detect();
    let mut group = c.benchmark_group("group_commit");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat);
    // One iteration is one append + wait_durable_blocking by every appender.
    for (appenders, batch) in [(1usize, 1usize), (8, 1), (8, 128)] {
        let batch_records = records(batch, KIB, 11);
        let round_bytes = (appenders * batch * KIB) as u64;
        let mut scratch = ScratchLog::new(config(FlushPolicy::Always, scale.segment_bytes));
        let mut tally = Tally::default();
        let id = format!("1KiB/{appenders}appenders/batch{batch}");
        group.throughput(Throughput::Bytes(round_bytes));
        group.bench_function(&id, |b| {
            b.iter_custom(|iters| {
                scratch.recycle_if_over(scale.recycle_bytes);
                let log = &scratch.log;
                let barrier = Barrier::new(appenders + 1);
                let elapsed = std::thread::scope(|s| {
                    let handles: Vec<_> = (0..appenders)
                        .map(|_| {
                            s.spawn(|| {
                                barrier.wait();
                                for _ in 0..iters {
                                    let info = log.append(&batch_records, TERM).expect("append");
                                    log.wait_durable_blocking(info.last_offset).expect("wait_durable_blocking");
                                }
                            })
                        })
                        .collect();
                    barrier.wait();
                    let start = Instant::now();
                    for handle in handles {
                        handle.join().expect("an appender panicked");
                    }
                    start.elapsed()
                });
                scratch.appended += iters * round_bytes;
                tally.records += iters * (appenders * batch) as u64;
                tally.elapsed += elapsed;
                elapsed
            })
        });
        tally.print(&format!("group_commit/{id}"));
    }
    group.finish();
}

/// A log of 1 KiB records for the read benchmarks.
struct ReadFixture {
    scratch: ScratchLog,
    log_end: u64,
}

fn reads(c: &mut Criterion) {
    let scale = Scale::detect();
    for batch in [1usize, 16, 256] {
        // Built on first use, outside any timed region (criterion times only `iter*`), so a
        // filtered run that skips these benchmarks does not build it.
        let fixture = OnceCell::new();
        let fixture = || {
            fixture.get_or_init(|| {
                let scratch = ScratchLog::new(config(FlushPolicy::Never, scale.segment_bytes));
                fill(&scratch.log, KIB, batch, scale.read_fixture_bytes);
                let log_end = scratch.log.offsets().log_end;
                ReadFixture { scratch, log_end }
            })
        };
        let payload_bytes = fill_payload(KIB, batch, scale.read_fixture_bytes);

        let mut group = c.benchmark_group("read_seq");
        group
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .throughput(Throughput::Bytes(payload_bytes));
        // One iteration reads the whole log front to back in 1 MiB fetches. Throughput counts
        // record values, like the append benchmarks; the stored batches are 1-6% larger.
        group.bench_function(format!("1KiB/batch{batch}/1MiB_fetches"), |b| {
            let ReadFixture { scratch, log_end } = fixture();
            let (log, log_end) = (&scratch.log, *log_end);
            b.iter(|| {
                let mut offset = 0;
                let mut batches = 0;
                while offset < log_end {
                    let fetch = log.read(offset, MIB as usize).expect("read");
                    batches += fetch.batches.len();
                    match fetch.next_offset() {
                        Some(next) => offset = next,
                        None => break,
                    }
                }
                batches
            })
        });
        group.finish();

        let mut group = c.benchmark_group("read_random");
        group
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .throughput(Throughput::Elements(1));
        // One iteration reads the batch holding one uniformly random offset.
        let mut rng = Rng(0x5eed);
        group.bench_function(format!("1KiB/batch{batch}/one_offset"), |b| {
            let ReadFixture { scratch, log_end } = fixture();
            let (log, log_end) = (&scratch.log, *log_end);
            b.iter(|| {
                let offset = rng.next() % log_end;
                log.read(offset, 1).expect("read")
            })
        });
        group.finish();
    }
}

/// The active (last) segment's `.log`, `.index` and `.timeindex` files.
fn active_segment_files(dir: &Path) -> [PathBuf; 3] {
    let last = fs::read_dir(dir)
        .expect("listing the partition")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| name.strip_suffix(".log").map(str::to_owned))
        .max()
        .expect("a segment");
    ["log", "index", "timeindex"].map(|extension| dir.join(format!("{last}.{extension}")))
}

/// Evicts `path` from the page cache with GNU dd (`iflag=nocache count=0` is
/// `posix_fadvise(POSIX_FADV_DONTNEED)` over the whole file). Only clean pages go, which is
/// why the active segment qualifies: `close()` fsynced it.
fn evict_from_page_cache(path: &Path) -> bool {
    std::process::Command::new("dd")
        .arg(format!("if={}", path.display()))
        .args(["iflag=nocache", "count=0", "status=none"])
        .status()
        .is_ok_and(|status| status.success())
}

/// Times reopens of the partition at `path` in the state a crash under `FlushPolicy::Never`
/// leaves: no clean-shutdown marker and no index entries persisted for the active segment
/// (the writer persists them only when it rolls or closes a segment), so open scans and
/// CRC-checks the whole active segment. With `cold`, the active segment is also evicted from
/// the page cache first, as after a power loss.
fn reopen_after_crash(path: &Path, config: &LogConfig, iters: u64, cold: bool, reported: &mut bool) -> Duration {
    let mut elapsed = Duration::ZERO;
    for _ in 0..iters {
        // Untimed: recreate the crashed state.
        let [segment, index, timeindex] = active_segment_files(path);
        for file in [index, timeindex] {
            fs::File::create(&file).expect("emptying an index file");
        }
        let _ = fs::remove_file(path.join("clean_shutdown"));
        if cold {
            evict_from_page_cache(&segment);
        }
        let start = Instant::now();
        let log = Log::open(path, config.clone()).expect("reopening after a crash");
        elapsed += start.elapsed();
        let report = log.recovery_report();
        debug_assert!(!report.clean_shutdown && report.truncated.is_none());
        if !*reported {
            println!("reopen after a crash scanned {} bytes of the active segment", report.scanned_bytes);
            *reported = true;
        }
        log.crash_for_tests();
    }
    elapsed
}

/// Builds a closed partition of about `bytes`: 1 KiB records in batches of 256, stopping
/// before the segment that would take it past `bytes`, so the active segment is nearly full.
fn build_partition(path: &Path, config: &LogConfig, bytes: u64) {
    let log = Log::open(path, config.clone()).expect("opening the fixture");
    let batch_records = records(256, KIB, 3);
    let target_segments = (bytes / config.segment_bytes).max(1) as usize;
    log.append(&batch_records, TERM).expect("filling the fixture");
    let batch_len = log.size_bytes();
    loop {
        let summaries = log.segment_summaries();
        let active = summaries.last().expect("an active segment").size_bytes;
        if summaries.len() >= target_segments && active + batch_len > config.segment_bytes {
            break;
        }
        log.append(&batch_records, TERM).expect("filling the fixture");
    }
    println!(
        "reopen fixture: {} bytes in {} segments of at most {} MiB",
        log.size_bytes(),
        log.segment_count(),
        config.segment_bytes >> 20
    );
    log.close().expect("closing the fixture");
}

fn recovery(c: &mut Criterion) {
    let scale = Scale::detect();
    let mut group = c.benchmark_group("reopen");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat);
    for segment_bytes in scale.recovery_segments {
        let dir = temp_dir();
        let path = dir.path().join("partition");
        let config = config(FlushPolicy::Never, segment_bytes);
        // Built on first use, outside any timed region.
        let built = OnceCell::new();
        let fixture = || built.get_or_init(|| build_partition(&path, &config, scale.recovery_bytes));
        let name = format!("{}MiB_partition/{}MiB_segments", scale.recovery_bytes >> 20, segment_bytes >> 20);

        group.bench_function(format!("{name}/after_clean_close"), |b| {
            fixture();
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let log = Log::open(&path, config.clone()).expect("reopening");
                    elapsed += start.elapsed();
                    debug_assert!(log.recovery_report().clean_shutdown);
                    log.close().expect("closing");
                }
                elapsed
            })
        });

        let mut reported = false;
        group.bench_function(format!("{name}/after_crash"), |b| {
            fixture();
            b.iter_custom(|iters| reopen_after_crash(&path, &config, iters, false, &mut reported))
        });
        // The same with the active segment read from disk rather than the page cache.
        let probe = dir.path().join("probe");
        fs::write(&probe, b"probe").expect("writing a probe file");
        if evict_from_page_cache(&probe) {
            group.bench_function(format!("{name}/after_crash_cold_cache"), |b| {
                fixture();
                b.iter_custom(|iters| reopen_after_crash(&path, &config, iters, true, &mut true))
            });
        } else {
            println!("reopen/{name}/after_crash_cold_cache skipped: `dd iflag=nocache` is not available");
        }
    }
    group.finish();
}

criterion_group!(benches, group_commit, append, reads, recovery);
criterion_main!(benches);
