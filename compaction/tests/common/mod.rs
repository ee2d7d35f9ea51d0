//! Helpers shared by the compaction integration tests: a deterministic RNG, a model of every
//! record appended (by offset), full replays of a log, and checks of a replay against the model.
#![allow(dead_code)]

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use strata_log::{FlushPolicy, Log, LogConfig, Record, StoredRecord, verify_partition};

/// Timestamps of synthetic records start here (2023-11-14).
pub const BASE_TS: i64 = 1_700_000_000_000;

/// SplitMix64: deterministic and seedable.
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
}

/// Wall-clock milliseconds since the epoch (what `Maintenance` uses as "now").
pub fn wall_clock_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// A log configuration with small segments, no time-based rolling and no background fsync
/// (so a dropped log releases its directory at once).
pub fn log_config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        segment_ms: None,
        index_interval_bytes: 256.min(segment_bytes),
        flush: FlushPolicy::Never,
        ..Default::default()
    }
}

/// A record keyed by the header `key_header`; an empty `value` is a tombstone.
pub fn keyed(key_header: &str, key: &str, value: impl Into<Bytes>, timestamp: i64) -> Record {
    Record::new(timestamp, value).with_header(key_header.to_string(), key.to_string())
}

/// The value of header `name`, if the record has it.
pub fn header_value<'r>(record: &'r StoredRecord, name: &str) -> Option<&'r Bytes> {
    record.headers.iter().find(|h| h.name == name.as_bytes()).map(|h| &h.value)
}

/// Every record appended to one log, by offset, with the key compaction uses for it.
#[derive(Clone, Debug)]
pub struct Model {
    key_header: String,
    records: BTreeMap<u64, (Bytes, Record)>,
}

impl Model {
    /// A model of records keyed by header `key_header`.
    pub fn new(key_header: &str) -> Self {
        Model { key_header: key_header.to_string(), records: BTreeMap::new() }
    }

    pub fn key_header(&self) -> &str {
        &self.key_header
    }

    /// Appends `records` as one batch and remembers them at their offsets.
    pub fn append(&mut self, log: &Log, records: Vec<Record>) {
        self.append_in_term(log, records, 0);
    }

    /// [`Model::append`] by a leader of `term`.
    pub fn append_in_term(&mut self, log: &Log, records: Vec<Record>, term: u64) {
        let info = log.append(&records, term).expect("append");
        assert_eq!(info.last_offset - info.base_offset + 1, records.len() as u64);
        for (i, record) in records.into_iter().enumerate() {
            let key = record
                .headers
                .iter()
                .find(|h| h.name == self.key_header.as_bytes())
                .map(|h| h.value.clone())
                .expect("every modelled record carries its key header");
            self.records.insert(info.base_offset + i as u64, (key, record));
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn end(&self) -> u64 {
        self.records.keys().next_back().map_or(0, |o| o + 1)
    }

    pub fn offsets(&self) -> BTreeSet<u64> {
        self.records.keys().copied().collect()
    }

    pub fn keys(&self) -> BTreeSet<Bytes> {
        self.records.values().map(|(k, _)| k.clone()).collect()
    }

    pub fn key_at(&self, offset: u64) -> &Bytes {
        &self.records[&offset].0
    }

    /// The record at `offset` as a read should return it.
    pub fn stored(&self, offset: u64) -> StoredRecord {
        let (_, r) = self.records.get(&offset).unwrap_or_else(|| panic!("offset {offset} was never appended"));
        StoredRecord {
            offset,
            timestamp: r.timestamp,
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r.headers.clone(),
        }
    }

    /// Key → offset of its latest record among offsets in `from..below`.
    pub fn latest_by_key(&self, from: u64, below: u64) -> BTreeMap<Bytes, u64> {
        let mut latest = BTreeMap::new();
        for (&offset, (key, _)) in self.records.range(from..below) {
            latest.insert(key.clone(), offset);
        }
        latest
    }

    /// The offsets a full cleaning of `[0, cut)` leaves: below `cut`, each key's latest record
    /// in that range unless it is a tombstone older than `horizon`; from `cut` on, everything.
    pub fn expected_after_clean(&self, cut: u64, horizon: i64) -> BTreeSet<u64> {
        let mut kept: BTreeSet<u64> = self
            .latest_by_key(0, cut)
            .into_values()
            .filter(|&o| {
                let record = &self.records[&o].1;
                !(record.value.is_empty() && record.timestamp < horizon)
            })
            .collect();
        kept.extend(self.records.range(cut..).map(|(&o, _)| o));
        kept
    }
}

/// Replays the whole visible log from `log_start`, one `read` at a time, until a read returns
/// nothing. Offsets must strictly increase (gaps are fine).
pub fn read_all(log: &Log) -> Vec<StoredRecord> {
    let mut next = log.offsets().log_start;
    let mut out: Vec<StoredRecord> = Vec::new();
    loop {
        let fetch = log.read(next, 8 << 10).unwrap_or_else(|e| panic!("read({next}) failed: {e}"));
        let Some(after) = fetch.next_offset() else {
            assert!(
                next >= fetch.high_watermark,
                "read({next}) returned nothing below the high watermark {}",
                fetch.high_watermark
            );
            break;
        };
        for record in fetch.records(next).expect("decoding") {
            if let Some(last) = out.last() {
                assert!(record.offset > last.offset, "offset {} after {}", record.offset, last.offset);
            }
            out.push(record);
        }
        assert!(after > next, "read({next}) did not move forward");
        next = after;
    }
    out
}

/// Checks that every record read equals the model's record at its offset, and that offsets
/// strictly increase.
pub fn assert_records_match_model(model: &Model, records: &[StoredRecord]) {
    for pair in records.windows(2) {
        assert!(pair[0].offset < pair[1].offset, "offsets not increasing: {} then {}", pair[0].offset, pair[1].offset);
    }
    for record in records {
        assert_eq!(record, &model.stored(record.offset), "record at offset {} differs from the model", record.offset);
    }
}

/// Checks that the records read hold exactly the offsets `expected`.
pub fn assert_offsets(records: &[StoredRecord], expected: &BTreeSet<u64>, context: &str) {
    let got: BTreeSet<u64> = records.iter().map(|r| r.offset).collect();
    let missing: Vec<u64> = expected.difference(&got).copied().take(10).collect();
    let extra: Vec<u64> = got.difference(expected).copied().take(10).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{context}: {} records read, {} expected; missing (first 10) {missing:?}, unexpected (first 10) {extra:?}",
        got.len(),
        expected.len()
    );
}

/// For every key of the model, the last record read with that key is the model's latest
/// record of the key (tombstones included).
pub fn assert_latest_per_key(model: &Model, records: &[StoredRecord]) {
    let mut last_seen: BTreeMap<Bytes, &StoredRecord> = BTreeMap::new();
    for record in records {
        let key = header_value(record, model.key_header()).expect("key header");
        last_seen.insert(key.clone(), record);
    }
    for (key, offset) in model.latest_by_key(0, u64::MAX) {
        let seen = last_seen.get(&key).unwrap_or_else(|| panic!("key {key:?} disappeared (latest at {offset})"));
        assert_eq!(**seen, model.stored(offset), "key {key:?}: the last record read is not the latest written");
    }
}

/// `.cleaned` and `.swap` files in `dir`.
pub fn swap_leftovers(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap"))
        .collect();
    names.sort();
    names
}

/// Base offsets of the segment files (`<20 digits>.log`) in `dir`.
pub fn segment_files(dir: &Path) -> Vec<u64> {
    let mut bases: Vec<u64> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(".log")?;
            (stem.len() == 20).then(|| stem.parse().ok()).flatten()
        })
        .collect();
    bases.sort_unstable();
    bases
}

/// `verify_partition` finds nothing wrong.
pub fn assert_sound(dir: &Path) {
    let report = verify_partition(dir, &mut |_| {}).expect("verify");
    assert!(report.problems.is_empty(), "verify found problems: {:#?}", report.problems);
}

/// Copies every regular file of `from` into `to` (a crash image of a partition directory).
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Polls `condition` every 10 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
