//! Oracle test: random keyed appends, tombstones, keyless records, cleaning passes with random
//! lags and tombstone horizons, and reopens. After every pass a replay from the log start must
//! give, per key, the last value the model holds, and keep everything the rules protect.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use proptest::prelude::*;
use strata_compaction::{CompactionConfig, TOPIC_HEADER, Throttle, clean_partition};
use strata_log::{FlushPolicy, Log, LogConfig, Record, StoredRecord};

#[derive(Clone, Debug)]
enum Op {
    /// (key: None = keyless, tombstone, value length, clock step)
    Append(Vec<(Option<u8>, bool, u8, u8)>),
    Clean {
        ahead: u8,
        lag: u16,
        delete_retention: u16,
        map_bytes: Option<u16>,
        ratio: u8,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => prop::collection::vec((prop::option::weighted(0.9, 0u8..40), prop::bool::weighted(0.15), any::<u8>(), 0u8..40), 1..5)
            .prop_map(Op::Append),
        3 => (any::<u8>(), 0u16..600, 0u16..600, prop::option::of(1024u16..2500), 0u8..=10)
            .prop_map(|(ahead, lag, delete_retention, map_bytes, ratio)| Op::Clean { ahead, lag, delete_retention, map_bytes, ratio }),
        1 => Just(Op::Reopen),
    ]
}

fn log_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        segment_ms: None,
        index_interval_bytes: 128,
        flush: FlushPolicy::Never,
        ..Default::default()
    }
}

fn topic(key: u8) -> Bytes {
    Bytes::from(format!("devices/{key}/state"))
}

fn replay(log: &Log) -> Vec<StoredRecord> {
    let mut next = log.offsets().log_start;
    let mut out = Vec::new();
    loop {
        let fetch = log.read(next, 600).unwrap();
        let Some(after) = fetch.next_offset() else { return out };
        out.extend(fetch.records(next).unwrap());
        next = after;
    }
}

struct Check<'a> {
    model: &'a BTreeMap<u64, (Option<u8>, StoredRecord)>,
    /// Offsets present before the pass: earlier passes, with other settings, may have removed
    /// records that this pass's rules would protect.
    before: &'a [u64],
    now: i64,
    lag: i64,
    delete_retention: i64,
}

impl Check<'_> {
    fn run(&self, log: &Log) {
        let replay = replay(log);
        assert!(replay.windows(2).all(|p| p[0].offset < p[1].offset), "offsets must strictly increase");
        let mut last_seen: HashMap<u8, &StoredRecord> = HashMap::new();
        for record in &replay {
            let (key, want) = self.model.get(&record.offset).expect("a replayed offset the model never wrote");
            assert_eq!(record, want, "record at {} changed", record.offset);
            if let Some(k) = key {
                last_seen.insert(*k, record);
            }
        }
        // A time lookup answers with the first surviving record at or after the time: the
        // cleaned segments' time indexes describe what they now hold.
        for t in replay.iter().flat_map(|r| [r.timestamp - 1, r.timestamp, r.timestamp + 1]) {
            let want = replay.iter().find(|r| r.timestamp >= t).map(|r| r.offset);
            assert_eq!(log.offset_for_timestamp(t).unwrap(), want, "offset for time {t}");
        }
        let present = |offset: u64| replay.binary_search_by_key(&offset, |r| r.offset).is_ok();
        let active_base = log.segment_summaries().last().unwrap().base_offset;
        let mut latest: HashMap<u8, &StoredRecord> = HashMap::new();
        for (offset, (key, record)) in self.model {
            if let Some(k) = key {
                latest.insert(*k, record);
            }
            // Protected: keyless records, the active segment, and anything younger than the lag.
            let was_there = self.before.binary_search(offset).is_ok();
            if was_there && (key.is_none() || *offset >= active_base || record.timestamp > self.now - self.lag) {
                assert!(present(*offset), "protected record {offset} was removed");
            }
        }
        for (key, want) in &latest {
            match last_seen.get(key) {
                Some(seen) => assert_eq!(seen.offset, want.offset, "key {key}: last value is not the latest"),
                None => {
                    assert!(want.value.is_empty(), "key {key}: its latest value vanished");
                    assert!(
                        !self.before.contains(&want.offset) || want.timestamp < self.now - self.delete_retention,
                        "key {key}: tombstone dropped before delete_retention"
                    );
                }
            }
        }
    }
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), log_config()).unwrap();
    let mut model: BTreeMap<u64, (Option<u8>, StoredRecord)> = BTreeMap::new();
    let mut clock = 1_000i64;
    let mut last_now = clock;
    let mut serial = 0u64;
    for op in ops {
        match op {
            Op::Append(specs) => {
                let records: Vec<Record> = specs
                    .iter()
                    .map(|&(key, tombstone, len, step)| {
                        clock += i64::from(step);
                        serial += 1;
                        let value = if tombstone && key.is_some() {
                            Bytes::new()
                        } else {
                            let mut v = serial.to_le_bytes().to_vec();
                            v.resize(8 + usize::from(len), b'x');
                            Bytes::from(v)
                        };
                        let mut record = Record::new(clock, value);
                        if let Some(k) = key {
                            record = record.with_header(TOPIC_HEADER, topic(k));
                        }
                        record
                    })
                    .collect();
                let info = log.append(&records, 1).unwrap();
                for (i, (record, &(key, ..))) in records.into_iter().zip(&specs).enumerate() {
                    let offset = info.base_offset + i as u64;
                    let stored = StoredRecord {
                        offset,
                        timestamp: record.timestamp,
                        key: record.key,
                        value: record.value,
                        headers: record.headers,
                    };
                    model.insert(offset, (key, stored));
                }
            }
            Op::Clean { ahead, lag, delete_retention, map_bytes, ratio } => {
                let config = CompactionConfig {
                    min_compaction_lag_ms: u64::from(lag),
                    delete_retention_ms: u64::from(delete_retention),
                    offset_map_bytes: map_bytes.map_or(1 << 20, usize::from),
                    min_cleanable_dirty_ratio: f64::from(ratio) / 10.0,
                    segment_bytes: 2048,
                    ..Default::default()
                };
                let now = last_now.max(clock + i64::from(ahead));
                last_now = now;
                let before: Vec<u64> = replay(&log).iter().map(|r| r.offset).collect();
                let outcome = clean_partition(&log, &config, now, &Throttle::new(None), &mut |_| {}).unwrap();
                assert!(outcome.cleaned_up_to <= log.offsets().high_watermark);
                let check = Check {
                    model: &model,
                    before: &before,
                    now,
                    lag: i64::from(lag),
                    delete_retention: i64::from(delete_retention),
                };
                check.run(&log);
            }
            Op::Reopen => {
                log.close().unwrap();
                drop(log);
                log = Log::open(dir.path(), log_config()).unwrap();
            }
        }
    }
    // With everything old enough and every tombstone expired, a final pass leaves at most
    // one record per key in the cleanable segments.
    let config = CompactionConfig {
        min_cleanable_dirty_ratio: 0.0,
        delete_retention_ms: 0,
        segment_bytes: 2048,
        ..Default::default()
    };
    let now = last_now.max(clock + 1);
    let before: Vec<u64> = replay(&log).iter().map(|r| r.offset).collect();
    clean_partition(&log, &config, now, &Throttle::new(None), &mut |_| {}).unwrap();
    Check { model: &model, before: &before, now, lag: 0, delete_retention: 0 }.run(&log);
    let sealed_end = log.sealed_segments().last().map_or(0, |s| s.next_offset());
    let mut seen = HashMap::new();
    for record in replay(&log).iter().filter(|r| r.offset < sealed_end) {
        if let Some(topic) = record.headers.first().map(|h| h.value.clone()) {
            assert!(seen.insert(topic, record.offset).is_none(), "two records of one key survived a full pass");
        }
    }
    log.close().unwrap();
    let report = strata_log::verify_partition(dir.path(), &mut |_| {}).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn compaction_keeps_the_latest_value_per_key(ops in prop::collection::vec(op(), 1..90)) {
        run(ops);
    }
}
