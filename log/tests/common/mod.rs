//! Helpers shared by the integration tests: a small deterministic RNG, record models, a log
//! builder that remembers what it wrote, and file utilities for damaging copies of a partition.
#![allow(dead_code)]

use std::{
    fs,
    path::{Path, PathBuf},
};

use bytes::Bytes;
use strata_log::{Compression, FlushPolicy, Header, Log, LogConfig, LogError, Record, StoredRecord};

/// SplitMix64: deterministic, seedable, good enough to pick cut points and payloads.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (`hi > lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(hi > lo);
        lo + self.next_u64() % (hi - lo)
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

pub const BASE_TS: i64 = 1_700_000_000_000;

/// A record whose every field is derived from `offset`, so readers can check what they get
/// without sharing state with the writer. Timestamps are deliberately not monotonic.
pub fn derived_record(offset: u64) -> Record {
    let value_len = (offset.wrapping_mul(7) % 90) as usize;
    let mut value = format!("v{offset}:").into_bytes();
    value.extend((0..value_len).map(|i| (offset as usize + i) as u8));
    let timestamp = BASE_TS + (offset as i64) * 3 - (offset % 4) as i64 * 5;
    let mut record = Record::new(timestamp, value);
    if !offset.is_multiple_of(5) {
        record = record.with_key(format!("k{}", offset % 13));
    }
    if offset.is_multiple_of(3) {
        record = record.with_header("topic", format!("t/{}", offset % 7));
    }
    if offset.is_multiple_of(11) {
        record = record.with_header("qos", vec![(offset % 3) as u8]);
    }
    record
}

/// Checks a record read back against the record derived from its offset.
pub fn check_derived(record: &StoredRecord) {
    let want = stored(record.offset, &derived_record(record.offset));
    assert_eq!(record, &want, "record at offset {} does not match what was written", record.offset);
}

/// A varied record built from the RNG: sometimes a key, sometimes headers, values from empty
/// to a few hundred bytes (compressible or not), timestamps jittered around `around`.
pub fn random_record(rng: &mut Rng, around: i64) -> Record {
    let value_len = match rng.range(0, 10) {
        0 => 0,
        1..=5 => rng.range(1, 40) as usize,
        6..=8 => rng.range(40, 200) as usize,
        _ => rng.range(200, 700) as usize,
    };
    let value =
        if rng.range(0, 2) == 0 { rng.bytes(value_len) } else { vec![b'a' + (value_len % 26) as u8; value_len] };
    let timestamp = around + rng.range(0, 2000) as i64 - 1000;
    let mut record = Record::new(timestamp, value);
    match rng.range(0, 3) {
        0 => {}
        1 => record = record.with_key(Bytes::new()),
        _ => {
            let len = rng.range(1, 24) as usize;
            record = record.with_key(rng.bytes(len));
        }
    }
    for _ in 0..rng.range(0, 4) {
        let name = format!("h{}", rng.range(0, 100));
        let len = rng.range(0, 16) as usize;
        record = record.with_header(name, rng.bytes(len));
    }
    record
}

/// The record as the log should return it at `offset`.
pub fn stored(offset: u64, record: &Record) -> StoredRecord {
    StoredRecord {
        offset,
        timestamp: record.timestamp,
        key: record.key.clone(),
        value: record.value.clone(),
        headers: record.headers.iter().map(|h| Header { name: h.name.clone(), value: h.value.clone() }).collect(),
    }
}

/// One batch written by [`build_log`].
#[derive(Clone, Debug)]
pub struct WrittenBatch {
    pub base_offset: u64,
    pub last_offset: u64,
    pub compression: Compression,
}

/// Everything a test log holds, in offset order.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub records: Vec<StoredRecord>,
    pub batches: Vec<WrittenBatch>,
}

impl Model {
    /// What `offset_for_timestamp(t)` must answer: the first record in offset order whose
    /// timestamp is at or after `t`.
    pub fn offset_for_timestamp(&self, t: i64) -> Option<u64> {
        self.records.iter().find(|r| r.timestamp >= t).map(|r| r.offset)
    }

    /// Timestamps worth asking about: every record's, its neighbours, and the extremes.
    pub fn interesting_timestamps(&self) -> Vec<i64> {
        let mut ts: Vec<i64> =
            self.records.iter().flat_map(|r| [r.timestamp - 1, r.timestamp, r.timestamp + 1]).collect();
        ts.extend([i64::MIN, 0, i64::MAX]);
        ts.sort_unstable();
        ts.dedup();
        ts
    }
}

/// Writes `batches` in order, closing and reopening the log whenever the compression changes
/// (compression is a per-open setting). Returns the model of what was written. The log is
/// left closed.
pub fn build_log(dir: &Path, config: &LogConfig, batches: &[(Vec<Record>, Compression)]) -> Model {
    let mut model = Model::default();
    let mut open: Option<(Log, Compression)> = None;
    for (records, compression) in batches {
        if open.as_ref().is_none_or(|(_, c)| c != compression) {
            if let Some((log, _)) = open.take() {
                log.close().unwrap();
            }
            let config = LogConfig { compression: *compression, ..config.clone() };
            open = Some((Log::open(dir, config).unwrap(), *compression));
        }
        let (log, _) = open.as_ref().unwrap();
        let info = log.append(records, 1).unwrap();
        assert_eq!(info.base_offset, model.records.len() as u64);
        assert_eq!(info.last_offset, info.base_offset + records.len() as u64 - 1);
        for (i, record) in records.iter().enumerate() {
            model.records.push(stored(info.base_offset + i as u64, record));
        }
        model.batches.push(WrittenBatch {
            base_offset: info.base_offset,
            last_offset: info.last_offset,
            compression: *compression,
        });
    }
    if let Some((log, _)) = open {
        log.close().unwrap();
    }
    model
}

/// A config for tests: small segments, an index entry every `index_interval_bytes`, and no
/// background fsyncs (closing still fsyncs).
pub fn small_config(segment_bytes: u64, index_interval_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        segment_ms: None,
        index_interval_bytes,
        flush: FlushPolicy::Never,
        ..LogConfig::default()
    }
}

/// Reads every visible record, batch after batch, from the log start.
pub fn read_all(log: &Log) -> Result<Vec<StoredRecord>, LogError> {
    read_all_with(log, 64 << 10)
}

/// Like [`read_all`], with a chosen `max_bytes` per read.
pub fn read_all_with(log: &Log, max_bytes: usize) -> Result<Vec<StoredRecord>, LogError> {
    let mut out = Vec::new();
    let mut next = log.offsets().log_start;
    loop {
        let fetch = log.read(next, max_bytes)?;
        let Some(after) = fetch.next_offset() else { break };
        out.extend(fetch.records(next)?);
        assert!(after > next, "a read from {next} did not advance");
        next = after;
    }
    Ok(out)
}

/// Asserts that the log holds exactly `expected`, reading it from the start.
pub fn assert_log_holds(log: &Log, expected: &[StoredRecord], context: &str) {
    let got = read_all(log).unwrap_or_else(|e| panic!("{context}: reading failed: {e}"));
    assert_eq!(got.len(), expected.len(), "{context}: wrong number of records");
    for (got, want) in got.iter().zip(expected) {
        assert_eq!(got, want, "{context}: record differs");
    }
    let end = expected.last().map_or(0, |r| r.offset + 1);
    assert_eq!(log.offsets().log_end, end, "{context}: wrong log end");
}

/// Reads at every offset in `expected` separately (with a tiny `max_bytes`, so exactly the
/// batch holding the offset comes back) and checks the first record is the one asked for.
pub fn assert_each_offset_reads(log: &Log, expected: &[StoredRecord], context: &str) {
    for want in expected {
        let fetch = log.read(want.offset, 1).unwrap_or_else(|e| panic!("{context}: read({}) failed: {e}", want.offset));
        let records = fetch.records(want.offset).unwrap_or_else(|e| panic!("{context}: decoding failed: {e}"));
        let first = records.first().unwrap_or_else(|| panic!("{context}: read({}) returned nothing", want.offset));
        assert_eq!(first, want, "{context}: read({}) returned the wrong record", want.offset);
    }
}

/// A fresh temporary directory for a partition, on tmpfs (`/dev/shm`) when there is one: the
/// damage tests open and close thousands of copies, and what they check is byte-level
/// recovery, not how fast the disk fsyncs. Falls back to the default temporary directory.
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::Builder::new().prefix("strata-log-test").tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().unwrap()
}

/// Copies every file of `src` into `dst` (which must exist).
pub fn copy_dir(src: &Path, dst: &Path) {
    for entry in fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
        }
    }
}

/// The files of `dir` whose name ends with `.{extension}`, sorted by name (that is by base
/// offset for segment files).
pub fn files_with_extension(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let suffix = format!(".{extension}");
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(&suffix)))
        .collect();
    files.sort();
    files
}

/// The base offset a segment file is named after.
pub fn base_of(path: &Path) -> u64 {
    path.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

/// Cuts a file to `len` bytes.
pub fn truncate_file(path: &Path, len: u64) {
    let file = fs::OpenOptions::new().write(true).open(path).unwrap();
    file.set_len(len).unwrap();
}

/// Appends bytes to a file.
pub fn append_to_file(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut file = fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(bytes).unwrap();
}

/// `verify_partition` with no progress callback.
pub fn verify(dir: &Path) -> strata_log::VerifyReport {
    strata_log::verify_partition(dir, &mut |_| {}).unwrap()
}

/// Which of the pages under `ranges` this process has mapped right now, read from its page
/// table (`/proc/self/pagemap`, bit 63: "page present"), as `(present, pages)`. The kernel's
/// RSS counters are not used: some kernels keep them per CPU and report them approximately,
/// so a test built on them depends on the machine (issue 18).
pub fn pages_present<'a>(ranges: impl IntoIterator<Item = &'a [u8]>) -> (u64, u64) {
    use std::collections::BTreeSet;
    use std::os::unix::fs::FileExt;

    // SAFETY: sysconf has no preconditions; _SC_PAGESIZE is always supported on Linux.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let mut pages = BTreeSet::new();
    for range in ranges {
        if range.is_empty() {
            continue;
        }
        let start = range.as_ptr() as usize / page;
        let end = (range.as_ptr() as usize + range.len() - 1) / page;
        pages.extend(start..=end);
    }
    let pagemap = fs::File::open("/proc/self/pagemap").expect("opening /proc/self/pagemap");
    let mut present = 0;
    for &number in &pages {
        let mut entry = [0u8; 8];
        pagemap.read_exact_at(&mut entry, number as u64 * 8).expect("reading /proc/self/pagemap");
        if u64::from_le_bytes(entry) & (1 << 63) != 0 {
            present += 1;
        }
    }
    (present, pages.len() as u64)
}

/// The 1000-byte value of record `offset` in the page-release tests: its offset in hex,
/// repeated, so a record read back can be checked against its place.
pub fn stamped_value(offset: u64) -> Vec<u8> {
    format!("{offset:016x}").bytes().cycle().take(STAMPED_VALUE_LEN).collect()
}

/// Length of a [`stamped_value`].
pub const STAMPED_VALUE_LEN: usize = 1000;

/// Appends `batches` batches of `per_batch` records holding [`stamped_value`]s, from offset
/// 0 on; returns how many records that is.
pub fn append_stamped(log: &Log, batches: u64, per_batch: u64) -> u64 {
    for batch in 0..batches {
        let records: Vec<Record> =
            (0..per_batch).map(|i| Record::new(1_700_000_000_000, stamped_value(batch * per_batch + i))).collect();
        log.append(&records, 0).unwrap();
    }
    batches * per_batch
}
