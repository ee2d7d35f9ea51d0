//! Oracle test: random appends, reads, timestamp lookups, high-watermark moves, truncations,
//! retention, clean reopens and crash reopens, checked against a plain `Vec` model.

use std::path::Path;

use bytes::Bytes;
use proptest::prelude::*;
use strata_log::{
    Compression, FlushPolicy, HighWatermarkMode, Log, LogConfig, LogError, Record, RetentionPolicy, StoredRecord,
};

#[derive(Clone, Debug)]
enum Op {
    Append(Vec<(Option<u8>, u16, i64)>),
    Read { offset_pick: u16, max_bytes: u16 },
    ReadByTimestamp(i64),
    SetHighWatermark(u16),
    Truncate(u16),
    Retention { bytes: Option<u16>, messages: Option<u8>, time_ms: Option<u16> },
    Reopen,
    CrashReopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec((prop::option::of(0u8..8), 0u16..300, 0i64..1000), 1..6).prop_map(Op::Append),
        4 => (any::<u16>(), 1u16..4000).prop_map(|(offset_pick, max_bytes)| Op::Read { offset_pick, max_bytes }),
        2 => (-10i64..1100).prop_map(Op::ReadByTimestamp),
        3 => any::<u16>().prop_map(Op::SetHighWatermark),
        1 => any::<u16>().prop_map(Op::Truncate),
        1 => (prop::option::of(0u16..6000), prop::option::of(0u8..60), prop::option::of(0u16..1200))
            .prop_map(|(bytes, messages, time_ms)| Op::Retention { bytes, messages, time_ms }),
        1 => Just(Op::Reopen),
        1 => Just(Op::CrashReopen),
    ]
}

/// What the log should hold.
struct Model {
    records: Vec<StoredRecord>,
    /// Base offsets of the batches still stored, oldest first.
    batch_bases: Vec<u64>,
    /// One past the last offset of each stored batch.
    batch_ends: Vec<u64>,
    log_start: u64,
    log_end: u64,
    high_watermark: u64,
}

impl Model {
    /// Readers see whole batches below the high watermark.
    fn visible(&self) -> impl Iterator<Item = &StoredRecord> {
        let end = self.batch_ends.iter().copied().filter(|&e| e <= self.high_watermark).max().unwrap_or(0);
        self.records.iter().filter(move |r| r.offset >= self.log_start && r.offset < end)
    }
}

fn config(mode: HighWatermarkMode, compression: Compression) -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        segment_ms: None,
        index_interval_bytes: 200,
        flush: FlushPolicy::Never,
        compression,
        high_watermark: mode,
    }
}

fn record(key: Option<u8>, len: u16, timestamp: i64, serial: u64) -> Record {
    let mut value = serial.to_le_bytes().to_vec();
    value.resize(usize::from(len).max(8), (serial % 251) as u8);
    if len == 0 {
        value.clear(); // a tombstone
    }
    let mut r = Record::new(timestamp, value).with_header("topic", format!("t/{serial}"));
    if let Some(k) = key {
        r = r.with_key(Bytes::from(vec![b'k', k]));
    }
    r
}

fn check_read(log: &Log, model: &Model, offset: u64, max_bytes: usize) {
    let result = log.read(offset, max_bytes);
    if offset < model.log_start || offset > model.log_end {
        assert!(
            matches!(result, Err(LogError::OffsetOutOfRange { .. })),
            "read({offset}) outside [{}, {}] gave {result:?}",
            model.log_start,
            model.log_end
        );
        return;
    }
    let fetch = result.unwrap();
    assert_eq!(fetch.high_watermark, model.high_watermark);
    let got = fetch.records(offset).unwrap();
    let want: Vec<&StoredRecord> = model.visible().filter(|r| r.offset >= offset).collect();
    assert!(got.len() <= want.len(), "read({offset}) returned more than is visible");
    if !want.is_empty() {
        assert!(!got.is_empty(), "read({offset}) returned nothing though records are visible");
    }
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, *w, "read({offset}) differs from the model");
    }
}

fn check_everything(log: &Log, model: &Model) {
    let offsets = log.offsets();
    assert_eq!(offsets.log_start, model.log_start, "log_start");
    assert_eq!(offsets.log_end, model.log_end, "log_end");
    assert_eq!(offsets.high_watermark, model.high_watermark, "high watermark");
    assert!(offsets.log_start <= offsets.cleaned_up_to && offsets.cleaned_up_to <= offsets.high_watermark);
    // A full replay from the start equals the model.
    let mut next = model.log_start;
    let mut replay = Vec::new();
    loop {
        let fetch = log.read(next, 700).unwrap();
        let Some(after) = fetch.next_offset() else { break };
        replay.extend(fetch.records(next).unwrap());
        next = after;
    }
    let want: Vec<StoredRecord> = model.visible().cloned().collect();
    let offsets = |v: &[StoredRecord]| v.iter().map(|r| r.offset).collect::<Vec<_>>();
    assert_eq!(offsets(&replay), offsets(&want), "full replay returns other offsets than the model");
    assert!(replay == want, "full replay returns other records than the model");
}

fn run(ops: Vec<Op>, mode: HighWatermarkMode, compression: Compression) {
    let dir = tempfile::tempdir().unwrap();
    let path: &Path = dir.path();
    let mut log = Log::open(path, config(mode, compression)).unwrap();
    let mut model = Model {
        records: Vec::new(),
        batch_bases: Vec::new(),
        batch_ends: Vec::new(),
        log_start: 0,
        log_end: 0,
        high_watermark: 0,
    };
    let mut serial = 0u64;
    for op in ops {
        match op {
            Op::Append(specs) => {
                let records: Vec<Record> = specs
                    .iter()
                    .map(|&(key, len, ts)| {
                        serial += 1;
                        record(key, len, ts, serial)
                    })
                    .collect();
                let info = log.append(&records, 1).unwrap();
                assert_eq!(info.base_offset, model.log_end);
                assert_eq!(info.last_offset, model.log_end + records.len() as u64 - 1);
                model.batch_bases.push(info.base_offset);
                model.batch_ends.push(info.last_offset + 1);
                for (i, r) in records.into_iter().enumerate() {
                    model.records.push(StoredRecord {
                        offset: info.base_offset + i as u64,
                        timestamp: r.timestamp,
                        key: r.key,
                        value: r.value,
                        headers: r.headers,
                    });
                }
                model.log_end = info.last_offset + 1;
                if mode == HighWatermarkMode::FollowsLogEnd {
                    model.high_watermark = model.log_end;
                }
                assert_eq!(log.last_term_and_offset(), Some((1, info.last_offset)));
            }
            Op::Read { offset_pick, max_bytes } => {
                let span = model.log_end + 3;
                let offset = u64::from(offset_pick) % span;
                check_read(&log, &model, offset, usize::from(max_bytes));
            }
            Op::ReadByTimestamp(ts) => {
                let want = model.visible().find(|r| r.timestamp >= ts).map(|r| r.offset);
                assert_eq!(log.offset_for_timestamp(ts).unwrap(), want, "offset_for_timestamp({ts})");
            }
            Op::SetHighWatermark(pick) => {
                let range = model.log_end - model.high_watermark + 1;
                let hw = model.high_watermark + u64::from(pick) % range;
                log.set_high_watermark(hw).unwrap();
                if mode == HighWatermarkMode::SetByCaller {
                    model.high_watermark = hw;
                }
                if model.high_watermark > 0 {
                    assert!(log.set_high_watermark(model.high_watermark - 1).is_err(), "the high watermark moved back");
                }
            }
            Op::Truncate(pick) => {
                // Cut points: batch boundaries at or above the high watermark.
                let cuts: Vec<u64> =
                    model.batch_bases.iter().copied().filter(|&b| b >= model.high_watermark && b > 0).collect();
                if cuts.is_empty() {
                    continue;
                }
                let cut = cuts[usize::from(pick) % cuts.len()];
                log.truncate_after(cut - 1).unwrap();
                model.records.retain(|r| r.offset < cut);
                model.batch_bases.retain(|&b| b < cut);
                model.batch_ends.retain(|&e| e <= cut);
                model.log_end = cut;
                let last = model.records.last().filter(|r| r.offset >= model.log_start).map(|r| (1, r.offset));
                if let Some(expected) = last {
                    assert_eq!(log.last_term_and_offset(), Some(expected));
                }
                if let Some(inside) = model.records.last().map(|r| r.offset).filter(|&o| o > model.high_watermark) {
                    // Cutting through a batch is refused unless it is the batch's last record.
                    let base = *model.batch_bases.last().unwrap();
                    if inside > base {
                        assert!(log.truncate_after(base).is_err(), "truncate inside a batch was accepted");
                    }
                }
            }
            Op::Retention { bytes, messages, time_ms } => {
                let policy = RetentionPolicy {
                    retention_bytes: bytes.map(u64::from),
                    retention_messages: messages.map(u64::from),
                    retention_ms: time_ms.map(u64::from),
                };
                let before = log.offsets().log_start;
                log.enforce_retention(&policy, 1000).unwrap();
                let after = log.offsets().log_start;
                assert!(after >= before, "log_start moved back");
                assert!(after <= model.high_watermark, "retention deleted past the high watermark");
                assert!(
                    after == before || model.batch_bases.contains(&after) || after == model.log_end,
                    "log_start {after} is not a batch boundary"
                );
                if let Some(limit) =
                    policy.retention_messages.filter(|_| after > before && bytes.is_none() && time_ms.is_none())
                {
                    assert!(model.log_end - after >= limit, "retention_messages kept too few");
                }
                model.log_start = after;
                model.records.retain(|r| r.offset >= after);
                model.batch_bases.retain(|&b| b >= after);
                model.batch_ends.retain(|&e| e > after);
            }
            Op::Reopen => {
                log.close().unwrap();
                drop(log);
                log = Log::open(path, config(mode, compression)).unwrap();
                assert!(log.recovery_report().clean_shutdown, "a clean close must give a clean start");
                assert_eq!(log.recovery_report().truncated, None);
            }
            Op::CrashReopen => {
                log.crash_for_tests();
                drop(log);
                log = Log::open(path, config(mode, compression)).unwrap();
                assert_eq!(log.recovery_report().truncated, None, "nothing written may be lost on a process crash");
                // The high watermark is not persisted on every move; replication recomputes it.
                let hw = log.offsets().high_watermark;
                assert!(hw <= model.high_watermark && hw >= model.log_start);
                model.high_watermark = hw;
            }
        }
        check_everything(&log, &model);
    }
    log.close().unwrap();
    let report = strata_log::verify_partition(path, &mut |_| {}).unwrap();
    assert!(report.problems.is_empty(), "verify after the run: {:?}", report.problems);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn single_node_log_matches_the_model(ops in prop::collection::vec(op(), 1..120)) {
        run(ops, HighWatermarkMode::FollowsLogEnd, Compression::None);
    }

    #[test]
    fn replicated_log_matches_the_model(ops in prop::collection::vec(op(), 1..120)) {
        run(ops, HighWatermarkMode::SetByCaller, Compression::None);
    }

    #[test]
    fn compressed_log_matches_the_model(ops in prop::collection::vec(op(), 1..80)) {
        run(ops, HighWatermarkMode::SetByCaller, Compression::Zstd);
    }
}
