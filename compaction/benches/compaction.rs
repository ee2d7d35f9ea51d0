//! Criterion benchmarks of `strata-compaction`:
//!
//! 1. `clean_partition/event_sourcing_*`: 10,000 keys × 100 updates of 200-byte values
//!    (1,000,000 records), each key's updates spread over the whole log, cleaned in one
//!    `clean_partition` call. Besides the time, the bench prints the bytes before and after
//!    (target: after ≤ 2% of before).
//! 2. `clean_partition/*`: cleaning throughput in bytes of partition input per second, on one
//!    core, unthrottled (target ≥ 150 MB/s). Cleaning mutates the partition, so every
//!    iteration cleans a fresh, fsynced copy of a prepared fixture; the copy is made in
//!    `iter_batched`'s untimed setup, and the cleaned copy is closed and deleted untimed too.
//! 3. `append_1KiB_x64/*`: append throughput of 1 KiB records in batches of 64 (flush
//!    `Interval(100ms)`) with no background activity, then while another thread cleans a
//!    separate dirty partition in a loop at `DEFAULT_CLEANER_THROTTLE`, then with no background
//!    activity again (target: with the cleaner ≥ 80% of without).
//!
//! Criterion only times; the figures criterion does not give (bytes before/after, ratios,
//! the cleaner's own read rate) go to stderr and to `strata-compaction-results.txt` in the
//! bench directory. Results and the exact commands are in `benches/README.md` at the
//! workspace root.
//!
//! The active segment is never compacted, so every fixture seals its last data segment: after
//! the bulk appends the log is reopened with `segment_ms = 1`, and one small record under a
//! topic of its own (`bench/end`) is appended after a short sleep. That append rolls the
//! segment first, so all the workload's records are in sealed segments and the active segment
//! holds only that record.
//!
//! Partitions live in temporary directories under `STRATA_BENCH_DIR` if it is set, else under
//! cargo's `CARGO_TARGET_TMPDIR` (`target/tmp`, on the same disk as the workspace; not a tmpfs).
//!
//! `STRATA_COMPACTION_BENCH_FIXTURES=random` (or `event_sourcing`) builds and cleans only that
//! cleaning fixture, e.g. to profile one workload.
//!
//! Under `cargo test --benches` (criterion's test mode, no `--bench` argument) every fixture
//! is scaled down so that the run stays small.

use std::{
    cell::RefCell,
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    hint::black_box,
    io::Write,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use bytes::Bytes;
use criterion::{
    BatchSize, Bencher, BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
    measurement::WallTime,
};
use strata_compaction::{
    CleanOutcome, CompactionConfig, DEFAULT_CLEANER_THROTTLE, TOPIC_HEADER, Throttle, clean_partition,
};
use strata_log::{FlushPolicy, Log, LogConfig, Record};
use tempfile::TempDir;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const MB: f64 = 1e6;
const TERM: u64 = 1;
/// Timestamp of the first record of every fixture.
const T0: i64 = 1_700_000_000_000;
/// Records per appended batch in the cleaning fixtures.
const FIXTURE_BATCH: usize = 100;

/// Fixture sizes: full under `cargo bench`, tiny under criterion's test mode.
#[derive(Clone, Copy)]
struct Scale {
    /// Keys and updates per key of the event-sourcing partition.
    es_keys: usize,
    es_updates: usize,
    /// Value size of the cleaning fixtures.
    value_bytes: usize,
    /// Keys and records of the random-key partition (every record picks a key at random).
    random_keys: usize,
    random_records: usize,
    /// Segment size of the cleaning fixtures, and of the cleaner's merged output.
    segment_bytes: u64,
    /// Payload appended to partition A per iteration.
    append_bytes: u64,
    /// Keys, updates per key and value size of the cleaner's partition B.
    b_keys: usize,
    b_updates: usize,
    b_value_bytes: usize,
    /// Copies of B made (and fsynced) before the cleaner starts.
    b_copies: usize,
    measurement: Duration,
    /// Full size: only then are the targets judged.
    full: bool,
}

impl Scale {
    fn detect() -> Scale {
        if std::env::args().any(|a| a == "--bench") {
            Scale {
                es_keys: 10_000,
                es_updates: 100,
                value_bytes: 200,
                random_keys: 100_000,
                random_records: 300_000,
                segment_bytes: 16 * MIB,
                append_bytes: 256 * MIB,
                b_keys: 1_000,
                b_updates: 64,
                b_value_bytes: 1024,
                b_copies: 10,
                measurement: Duration::from_secs(10),
                full: true,
            }
        } else {
            Scale {
                es_keys: 500,
                es_updates: 10,
                value_bytes: 200,
                random_keys: 1_000,
                random_records: 5_000,
                segment_bytes: 256 * KIB,
                append_bytes: 2 * MIB,
                b_keys: 100,
                b_updates: 4,
                b_value_bytes: 1024,
                b_copies: 1,
                measurement: Duration::from_millis(100),
                full: false,
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

fn temp_dir(prefix: &str) -> TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir_in(bench_root()).expect("creating a temporary directory")
}

/// Figures criterion does not report: printed to stderr and appended to a results file.
struct Report {
    file: File,
    path: PathBuf,
}

impl Report {
    fn open() -> Report {
        let path = bench_root().join("strata-compaction-results.txt");
        let file = OpenOptions::new().create(true).append(true).open(&path).expect("opening the results file");
        Report { file, path }
    }

    fn line(&mut self, line: impl AsRef<str>) {
        let line = line.as_ref();
        eprintln!("{line}");
        writeln!(self.file, "{line}").expect("writing the results file");
    }
}

/// A prepared partition, closed, fsynced, with every workload record in sealed segments.
struct Fixture {
    name: String,
    dir: TempDir,
    records: u64,
    sealed_bytes: u64,
    sealed_segments: usize,
}

/// Appends `batches` to a new partition, seals its last data segment and fsyncs every file.
fn build_fixture(name: String, segment_bytes: u64, batches: impl Iterator<Item = Vec<Record>>) -> Fixture {
    let dir = temp_dir("strata-compaction-fixture-");
    // `Never`: the fixture is fsynced file by file at the end; no flusher thread holds it.
    let config = LogConfig { segment_bytes, segment_ms: None, flush: FlushPolicy::Never, ..LogConfig::default() };
    let log = Log::open(dir.path(), config.clone()).expect("opening a fixture");
    let mut records = 0u64;
    for batch in batches {
        records += batch.len() as u64;
        log.append(&batch, TERM).expect("appending to a fixture");
    }
    log.close().expect("closing a fixture");
    drop(log);
    // Seal the last data segment: a 1 ms segment age makes the next append roll it.
    let log = Log::open(dir.path(), LogConfig { segment_ms: Some(1), ..config }).expect("reopening a fixture");
    thread::sleep(Duration::from_millis(5));
    let end = Record::new(T0 + records as i64, "end").with_header(TOPIC_HEADER, "bench/end");
    log.append(&[end], TERM).expect("appending the sealing record");
    let sealed = log.sealed_segments();
    assert_eq!(sealed.last().map(|s| s.next_offset()), Some(records), "every workload record is sealed");
    let sealed_bytes = sealed.iter().map(|s| s.size_bytes()).sum();
    let sealed_segments = sealed.len();
    drop(sealed);
    log.close().expect("closing a fixture");
    drop(log);
    sync_files(dir.path());
    Fixture { name, dir, records, sealed_bytes, sealed_segments }
}

fn sync_files(dir: &Path) {
    for entry in fs::read_dir(dir).expect("listing a partition") {
        let path = entry.expect("listing a partition").path();
        File::open(&path).and_then(|f| f.sync_all()).expect("syncing a partition file");
    }
    File::open(dir).and_then(|f| f.sync_all()).expect("syncing a partition directory");
}

/// A fresh, fsynced copy of a fixture's files (the lock file aside).
fn copy_fixture(fixture: &Fixture) -> TempDir {
    let copy = temp_dir("strata-compaction-copy-");
    for entry in fs::read_dir(fixture.dir.path()).expect("listing a fixture") {
        let entry = entry.expect("listing a fixture");
        if entry.file_name() == ".lock" {
            continue;
        }
        fs::copy(entry.path(), copy.path().join(entry.file_name())).expect("copying a fixture file");
    }
    sync_files(copy.path());
    copy
}

/// An open partition in its own directory; closed, then deleted, when dropped.
struct Scratch {
    log: Log,
    _dir: TempDir,
}

impl Scratch {
    fn open(dir: TempDir, config: LogConfig) -> Scratch {
        let log = Log::open(dir.path(), config).expect("opening a scratch partition");
        Scratch { log, _dir: dir }
    }

    /// A copy of `fixture`, opened as the cleaner would find it.
    fn copy_of(fixture: &Fixture, segment_bytes: u64) -> Scratch {
        let config = LogConfig { segment_bytes, flush: FlushPolicy::Never, ..LogConfig::default() };
        Scratch::open(copy_fixture(fixture), config)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.log.close();
    }
}

/// Cleans everything sealed, now (no lag, no dirty-ratio gate).
fn compaction_config(segment_bytes: u64) -> CompactionConfig {
    CompactionConfig { min_cleanable_dirty_ratio: 0.0, min_compaction_lag_ms: 0, segment_bytes, ..Default::default() }
}

fn clean(log: &Log, config: &CompactionConfig, throttle: &Throttle) -> CleanOutcome {
    let now = T0 + 1_000_000_000;
    clean_partition(log, config, now, throttle, &mut |read| {
        black_box(read);
    })
    .expect("cleaning")
}

/// `keys` × `updates` records: round `u` writes update `u` of every key, `FIXTURE_BATCH` keys
/// per batch, so each key's updates are spread over the whole log.
fn event_sourcing_batches(keys: usize, updates: usize, value_bytes: usize) -> impl Iterator<Item = Vec<Record>> {
    let topics: Vec<Bytes> = (0..keys).map(|k| Bytes::from(format!("devices/{k:05}/state"))).collect();
    (0..updates).flat_map(move |update| {
        let value = Bytes::from(vec![b'a' + (update % 26) as u8; value_bytes]);
        let topics = topics.clone();
        (0..keys.div_ceil(FIXTURE_BATCH)).map(move |b| {
            (b * FIXTURE_BATCH..((b + 1) * FIXTURE_BATCH).min(keys))
                .map(|k| {
                    let ts = T0 + (update * keys + k) as i64;
                    Record::new(ts, value.clone()).with_header(TOPIC_HEADER, topics[k].clone())
                })
                .collect()
        })
    })
}

/// `records` records whose keys are drawn uniformly from `keys`: most batches keep some of
/// their records and lose others, so the cleaner re-encodes them.
fn random_key_batches(keys: usize, records: usize, value_bytes: usize) -> impl Iterator<Item = Vec<Record>> {
    let topics: Vec<Bytes> = (0..keys).map(|k| Bytes::from(format!("devices/{k:06}/state"))).collect();
    let value = Bytes::from(vec![b'v'; value_bytes]);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..records.div_ceil(FIXTURE_BATCH)).map(move |b| {
        (b * FIXTURE_BATCH..((b + 1) * FIXTURE_BATCH).min(records))
            .map(|i| {
                let key = (rng.next() % keys as u64) as usize;
                Record::new(T0 + i as i64, value.clone()).with_header(TOPIC_HEADER, topics[key].clone())
            })
            .collect()
    })
}

/// xorshift64*: enough randomness for key choice, with no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// CPU time of the calling thread, from `/proc/thread-self/schedstat`: on a busy machine
/// this separates the cleaner's own cost from time spent waiting for a CPU.
#[derive(Clone, Copy)]
struct ThreadTime {
    on_cpu: Duration,
    waiting: Duration,
}

impl ThreadTime {
    fn now() -> Option<ThreadTime> {
        let stat = fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        let mut fields = stat.split_whitespace().map(|f| f.parse::<u64>().ok());
        let on_cpu = Duration::from_nanos(fields.next()??);
        let waiting = Duration::from_nanos(fields.next()??);
        Some(ThreadTime { on_cpu, waiting })
    }
}

trait Since {
    fn since(self, before: Self) -> Self;
}

impl Since for Option<ThreadTime> {
    fn since(self, before: Option<ThreadTime>) -> Option<ThreadTime> {
        let (after, before) = (self?, before?);
        Some(ThreadTime { on_cpu: after.on_cpu - before.on_cpu, waiting: after.waiting - before.waiting })
    }
}

fn verdict(scale: &Scale, met: bool) -> &'static str {
    match (scale.full, met) {
        (false, _) => "not judged, scaled-down test mode",
        (true, true) => "MET",
        (true, false) => "MISSED",
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / MB
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn describe_outcome(outcome: &CleanOutcome) -> String {
    format!(
        "passes {}, segments {} -> {}, bytes {} -> {} ({:.3}% of before), bytes read {}, superseded {}, took {:.3} s",
        outcome.passes,
        outcome.segments_before,
        outcome.segments_after,
        outcome.bytes_before,
        outcome.bytes_after,
        100.0 * outcome.bytes_after as f64 / outcome.bytes_before as f64,
        outcome.bytes_read,
        outcome.records_superseded,
        outcome.duration.as_secs_f64(),
    )
}

/// Figure 1: what one unthrottled pass leaves of the event-sourcing partition.
fn event_sourcing_figures(fixture: &Fixture, scale: &Scale, config: &CompactionConfig, report: &mut Report) {
    let scratch = Scratch::copy_of(fixture, scale.segment_bytes);
    let size_before = scratch.log.size_bytes();
    let outcome = clean(&scratch.log, config, &Throttle::new(None));
    let size_after = scratch.log.size_bytes();
    report.line(format!(
        "[1] {}: {} records of {} B values in {} sealed segments of {} KiB max (+ active segment with 1 record)",
        fixture.name,
        fixture.records,
        scale.value_bytes,
        fixture.sealed_segments,
        scale.segment_bytes / KIB
    ));
    report.line(format!("[1] clean_partition: {}", describe_outcome(&outcome)));
    let ratio = outcome.bytes_after as f64 / outcome.bytes_before as f64;
    report.line(format!(
        "[1] bytes_before {} ({:.1} MB), bytes_after {} ({:.2} MB), after/before {:.3}% (target <= 2%: {})",
        outcome.bytes_before,
        mb(outcome.bytes_before),
        outcome.bytes_after,
        mb(outcome.bytes_after),
        100.0 * ratio,
        verdict(scale, ratio <= 0.02)
    ));
    report.line(format!(
        "[1] whole partition (Log::size_bytes, incl. active segment): {size_before} -> {size_after} bytes"
    ));
}

fn bench_cleaning(c: &mut Criterion) {
    let scale = Scale::detect();
    let mut report = Report::open();
    report.line(format!("# strata-compaction bench run, results also in {}", report.path.display()));

    // For profiling one workload: STRATA_COMPACTION_BENCH_FIXTURES=random (or event_sourcing).
    let only = std::env::var("STRATA_COMPACTION_BENCH_FIXTURES").ok();
    let wanted = |name: &str| only.as_deref().is_none_or(|list| list.split(',').any(|w| w.trim() == name));
    let config = compaction_config(scale.segment_bytes);
    let unthrottled = Throttle::new(None);
    let mut fixtures = Vec::new();
    if wanted("event_sourcing") {
        let started = Instant::now();
        let event_sourcing = build_fixture(
            format!("event_sourcing_{}keys_x{}", scale.es_keys, scale.es_updates),
            scale.segment_bytes,
            event_sourcing_batches(scale.es_keys, scale.es_updates, scale.value_bytes),
        );
        report.line(format!("event-sourcing fixture built in {:.1} s", started.elapsed().as_secs_f64()));
        event_sourcing_figures(&event_sourcing, &scale, &config, &mut report);
        fixtures.push(event_sourcing);
    }
    if wanted("random") {
        let started = Instant::now();
        fixtures.push(build_fixture(
            format!("random_keys_{}keys_{}records", scale.random_keys, scale.random_records),
            scale.segment_bytes,
            random_key_batches(scale.random_keys, scale.random_records, scale.value_bytes),
        ));
        report.line(format!("random-key fixture built in {:.1} s", started.elapsed().as_secs_f64()));
    }

    // Figure 2: cleaning throughput, one fresh copy per iteration.
    let mut group = c.benchmark_group("clean_partition");
    group.sampling_mode(SamplingMode::Flat).sample_size(10).warm_up_time(Duration::from_secs(1));
    group.measurement_time(scale.measurement);
    for fixture in &fixtures {
        group.throughput(Throughput::Bytes(fixture.sealed_bytes));
        let runs = RefCell::new(Vec::new());
        group.bench_function(&fixture.name, |b| {
            b.iter_batched(
                || Scratch::copy_of(fixture, scale.segment_bytes),
                |scratch| {
                    let before = ThreadTime::now();
                    let outcome = clean(&scratch.log, &config, &unthrottled);
                    runs.borrow_mut().push((outcome, ThreadTime::now().since(before)));
                    scratch
                },
                BatchSize::PerIteration,
            )
        });
        let runs = runs.into_inner();
        // None: criterion's filter skipped this benchmark.
        let Some((last, _)) = runs.last() else { continue };
        let input = mb(fixture.sealed_bytes);
        let wall = median(runs.iter().map(|(o, _)| input / o.duration.as_secs_f64()).collect());
        let read = median(runs.iter().map(|(o, _)| mb(o.bytes_read) / o.duration.as_secs_f64()).collect());
        let on_cpu = median(runs.iter().filter_map(|(_, t)| Some(input / t.as_ref()?.on_cpu.as_secs_f64())).collect());
        let waiting = median(runs.iter().filter_map(|(_, t)| Some(t.as_ref()?.waiting.as_secs_f64() * 1e3)).collect());
        report.line(format!(
            "[2] {}: partition input {} bytes ({input:.1} MB); {} iterations; medians: {wall:.1} MB/s of partition \
             input per wall second (CleanOutcome::duration), {read:.1} MB/s of bytes_read (map and rewrite each \
             read every batch), {on_cpu:.1} MB/s of input per second on CPU of the cleaning thread, {waiting:.0} ms \
             waiting for a CPU per clean; last: {}",
            fixture.name,
            fixture.sealed_bytes,
            runs.len(),
            describe_outcome(last)
        ));
    }
    group.finish();
}

/// Statistics of the background cleaner.
#[derive(Default)]
struct CleanerStats {
    cleans: u64,
    bytes_read: u64,
    cleaning: Duration,
    elapsed: Duration,
    copies_made_while_running: u64,
}

/// A thread that cleans fresh copies of partition B, one after another, at the default throttle
/// (one `Throttle` shared by all its passes, as `Maintenance` shares one).
struct BackgroundCleaner {
    fixture: Arc<Fixture>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<CleanerStats>,
}

impl BackgroundCleaner {
    fn start(fixture: Arc<Fixture>, copies: usize, segment_bytes: u64) -> BackgroundCleaner {
        // Copies made beforehand, so that the loop runs the cleaner rather than copying.
        let mut ready: VecDeque<TempDir> = (0..copies).map(|_| copy_fixture(&fixture)).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let partition = Arc::clone(&fixture);
        let thread = thread::Builder::new()
            .name("bench-cleaner".into())
            .spawn(move || {
                let throttle = Throttle::new(Some(DEFAULT_CLEANER_THROTTLE));
                let config = compaction_config(segment_bytes);
                let log_config = LogConfig { segment_bytes, flush: FlushPolicy::Never, ..LogConfig::default() };
                let mut stats = CleanerStats::default();
                let started = Instant::now();
                while !stopping.load(Ordering::Acquire) {
                    let dir = ready.pop_front().unwrap_or_else(|| {
                        stats.copies_made_while_running += 1;
                        copy_fixture(&partition)
                    });
                    let scratch = Scratch::open(dir, log_config.clone());
                    let outcome = clean(&scratch.log, &config, &throttle);
                    stats.cleans += 1;
                    stats.bytes_read += outcome.bytes_read;
                    stats.cleaning += outcome.duration;
                }
                stats.elapsed = started.elapsed();
                stats
            })
            .expect("spawning the cleaner thread");
        BackgroundCleaner { fixture, stop, thread }
    }

    fn stop(self) -> CleanerStats {
        self.stop.store(true, Ordering::Release);
        self.thread.join().expect("the cleaner thread panicked")
    }
}

fn bench_append_while_cleaning(c: &mut Criterion) {
    let scale = Scale::detect();
    let mut report = Report::open();
    let value = Bytes::from(vec![b'x'; KIB as usize]);
    let batch: Vec<Record> =
        (0..64).map(|i| Record::new(T0, value.clone()).with_header(TOPIC_HEADER, format!("bench/a/{i:02}"))).collect();
    let batch_payload = 64 * KIB;
    let batches = scale.append_bytes / batch_payload;
    let a_config = LogConfig { flush: FlushPolicy::Interval(Duration::from_millis(100)), ..LogConfig::default() };

    let mut group = c.benchmark_group("append_1KiB_x64");
    group.sampling_mode(SamplingMode::Flat).sample_size(10).warm_up_time(Duration::from_secs(1));
    group.measurement_time(scale.measurement);
    group.throughput(Throughput::Bytes(batches * batch_payload));
    // Runs one benchmark; `before` runs once, untimed, if criterion's filter selects it.
    // Returns the iterations and their median payload rate in MB/s.
    let run = |group: &mut BenchmarkGroup<'_, WallTime>, id: &str, before: &mut dyn FnMut()| {
        let times = RefCell::new(Vec::new());
        let mut before = Some(before);
        group.bench_function(id, |bencher: &mut Bencher<'_>| {
            if let Some(before) = before.take() {
                before();
            }
            bencher.iter_batched(
                || Scratch::open(temp_dir("strata-compaction-append-"), a_config.clone()),
                |scratch| {
                    let started = Instant::now();
                    for _ in 0..batches {
                        scratch.log.append(&batch, TERM).expect("appending");
                    }
                    times.borrow_mut().push(started.elapsed());
                    scratch
                },
                BatchSize::PerIteration,
            )
        });
        let times = times.into_inner();
        let iterations = times.len();
        let rate = median(times.into_iter().map(|t| mb(batches * batch_payload) / t.as_secs_f64()).collect());
        (iterations, rate)
    };

    let (n, alone) = run(&mut group, "no_cleaner", &mut || {});
    if n > 0 {
        report.line(format!(
            "[3] append {} MiB per iteration of 1 KiB records in batches of 64 to A, Interval(100ms): no cleaner: \
             median {alone:.1} MB/s of payload ({n} iterations)",
            scale.append_bytes / MIB
        ));
    }
    let mut cleaner = None;
    let (n, with_cleaner) = run(&mut group, "cleaner_at_default_throttle", &mut || {
        let b = build_fixture(
            format!("b_{}keys_x{}_{}B", scale.b_keys, scale.b_updates, scale.b_value_bytes),
            scale.segment_bytes,
            event_sourcing_batches(scale.b_keys, scale.b_updates, scale.b_value_bytes),
        );
        cleaner = Some(BackgroundCleaner::start(Arc::new(b), scale.b_copies, scale.segment_bytes));
    });
    if let Some(cleaner) = cleaner {
        let b = Arc::clone(&cleaner.fixture);
        let stats = cleaner.stop();
        report.line(format!(
            "[3] while a thread cleans B ({}: {} bytes sealed) at {} MiB/s: median {with_cleaner:.1} MB/s \
             ({n} iterations)",
            b.name,
            b.sealed_bytes,
            DEFAULT_CLEANER_THROTTLE / MIB
        ));
        report.line(format!(
            "[3] cleaner: {} cleans, {:.1} MB read in {:.1} s running ({:.1} MB/s = {:.1} MiB/s average read rate), \
             {:.1} s inside clean_partition, {} copies of B made while running",
            stats.cleans,
            mb(stats.bytes_read),
            stats.elapsed.as_secs_f64(),
            mb(stats.bytes_read) / stats.elapsed.as_secs_f64(),
            stats.bytes_read as f64 / MIB as f64 / stats.elapsed.as_secs_f64(),
            stats.cleaning.as_secs_f64(),
            stats.copies_made_while_running
        ));
    }
    let (n, again) = run(&mut group, "no_cleaner_again", &mut || {});
    group.finish();
    if n > 0 {
        report.line(format!("[3] no cleaner again: median {again:.1} MB/s ({n} iterations)"));
    }
    if alone.is_finite() && with_cleaner.is_finite() {
        let ratio = with_cleaner / alone;
        report.line(format!(
            "[3] with/without cleaner (medians): {:.1}% of the first no-cleaner run, {:.1}% of the second \
             (target >= 80%: {})",
            100.0 * ratio,
            100.0 * with_cleaner / again,
            verdict(&scale, ratio >= 0.8)
        ));
    }
}

criterion_group!(benches, bench_cleaning, bench_append_while_cleaning);
criterion_main!(benches);
