//! Oracle test of what Raft uses: leader and follower appends (at an offset, after cutting a
//! conflicting suffix), control batches, terms by offset, the last purged entry, retention,
//! resets to a snapshot, clean and crash reopens, checked against a plain `Vec` model.

use std::path::Path;

use proptest::prelude::*;
use strata_log::{
    Compression, FlushPolicy, HighWatermarkMode, Log, LogConfig, LogError, Record, RetentionPolicy, StoredRecord,
};

#[derive(Clone, Debug)]
enum Op {
    /// A leader's append at the log end: records, or a control batch when `control`.
    Append {
        records: u8,
        term_bump: u8,
        control: bool,
    },
    /// A follower's append at a batch boundary at or above the high watermark, chosen by
    /// `pick`, after cutting the suffix from there.
    FollowerAppend {
        pick: u16,
        records: u8,
        term_bump: u8,
        control: bool,
    },
    SetHighWatermark(u16),
    ReadByTimestamp(i64),
    Retention(u16),
    ResetTo {
        ahead: u8,
        term_bump: u8,
    },
    Reopen,
    CrashReopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u8..5, 0u8..3, prop::bool::weighted(0.25))
            .prop_map(|(records, term_bump, control)| Op::Append { records, term_bump, control }),
        4 => (any::<u16>(), 1u8..5, 0u8..3, prop::bool::weighted(0.25)).prop_map(
            |(pick, records, term_bump, control)| Op::FollowerAppend { pick, records, term_bump, control }
        ),
        3 => any::<u16>().prop_map(Op::SetHighWatermark),
        1 => (-10i64..1100).prop_map(Op::ReadByTimestamp),
        1 => (0u16..3000).prop_map(Op::Retention),
        1 => (0u8..5, 0u8..3).prop_map(|(ahead, term_bump)| Op::ResetTo { ahead, term_bump }),
        1 => Just(Op::Reopen),
        1 => Just(Op::CrashReopen),
    ]
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Record(StoredRecord),
    Control(Vec<u8>),
}

#[derive(Clone, Debug)]
struct Entry {
    term: u64,
    kind: Kind,
}

/// What the log should hold: `entries[i]` is at offset `log_start + i`.
#[derive(Debug, Default)]
struct Model {
    entries: Vec<Entry>,
    /// `(base, end)` of every stored batch.
    batches: Vec<(u64, u64)>,
    log_start: u64,
    high_watermark: u64,
    last_purged: Option<(u64, u64)>,
    serial: u64,
}

impl Model {
    fn log_end(&self) -> u64 {
        self.log_start + self.entries.len() as u64
    }

    fn last_term(&self) -> u64 {
        let floor = self.last_purged.map_or(0, |(term, _)| term);
        self.entries.last().map_or(floor, |e| e.term.max(floor))
    }

    fn term_at(&self, offset: u64) -> Option<u64> {
        if offset >= self.log_start && offset < self.log_end() {
            return Some(self.entries[(offset - self.log_start) as usize].term);
        }
        self.last_purged.filter(|&(_, purged)| purged == offset).map(|(term, _)| term)
    }

    /// One past the last offset readers see: the end of the last whole batch below the
    /// high watermark.
    fn visible_end(&self) -> u64 {
        self.batches.iter().map(|&(_, end)| end).filter(|&end| end <= self.high_watermark).max().unwrap_or(0)
    }

    fn truncate_from(&mut self, cut: u64) {
        self.entries.truncate((cut - self.log_start) as usize);
        self.batches.retain(|&(base, _)| base < cut);
    }

    /// Entries to append: records with timestamps in 0..1000, or one control payload.
    fn entries(&mut self, base: u64, term: u64, count: u8, control: bool) -> (Vec<Record>, Vec<Entry>) {
        if control {
            self.serial += 1;
            let payload = format!("membership {}", self.serial).into_bytes();
            return (Vec::new(), vec![Entry { term, kind: Kind::Control(payload) }]);
        }
        let mut records = Vec::new();
        let mut entries = Vec::new();
        for i in 0..u64::from(count) {
            self.serial += 1;
            let timestamp = (self.serial * 37 % 1000) as i64;
            let value = format!("record {}", self.serial).into_bytes();
            records.push(Record::new(timestamp, value.clone()));
            let stored =
                StoredRecord { offset: base + i, timestamp, key: None, value: value.into(), headers: Vec::new() };
            entries.push(Entry { term, kind: Kind::Record(stored) });
        }
        (records, entries)
    }

    fn push(&mut self, base: u64, entries: Vec<Entry>) {
        self.batches.push((base, base + entries.len() as u64));
        self.entries.extend(entries);
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        segment_ms: None,
        index_interval_bytes: 200,
        flush: FlushPolicy::Never,
        compression: Compression::None,
        high_watermark: HighWatermarkMode::SetByCaller,
    }
}

fn payload_of(kind: &Kind) -> Option<&[u8]> {
    match kind {
        Kind::Control(payload) => Some(payload),
        Kind::Record(_) => None,
    }
}

fn check_everything(log: &Log, model: &Model) {
    let offsets = log.offsets();
    assert_eq!(
        (offsets.log_start, offsets.high_watermark, offsets.log_end),
        (model.log_start, model.high_watermark, model.log_end()),
        "offsets"
    );
    assert_eq!(log.last_purged(), model.last_purged, "last purged");
    for offset in model.log_start.saturating_sub(2)..model.log_end() + 2 {
        assert_eq!(log.term_at(offset).unwrap(), model.term_at(offset), "term of offset {offset}");
    }
    let last = model.entries.last().map(|e| (e.term, model.log_end() - 1));
    assert_eq!(log.last_term_and_offset(), last, "last term and offset");

    // A replay returns the user records below the visible end and skips control batches,
    // whose payloads read back through the batch.
    let visible_end = model.visible_end();
    let mut next = model.log_start;
    let mut records = Vec::new();
    let mut controls = Vec::new();
    for _ in 0..10_000 {
        let fetch = log.read(next, 300).unwrap();
        let Some(after) = fetch.next_offset() else { break };
        for batch in &fetch.batches {
            match batch.control_payload().unwrap() {
                Some(payload) => {
                    assert_eq!(batch.records().unwrap().count(), 0, "a control batch yields no record");
                    controls.push((batch.header().base_offset, payload.to_vec()));
                }
                None => assert!(!batch.is_control()),
            }
        }
        records.extend(fetch.records(next).unwrap());
        next = after;
    }
    assert_eq!(next.max(model.log_start), visible_end.max(model.log_start), "replay stopped early or late");
    let visible = model.entries.iter().enumerate().map(|(i, e)| (model.log_start + i as u64, e));
    let visible: Vec<_> = visible.filter(|&(offset, _)| offset < visible_end).collect();
    let want_records: Vec<StoredRecord> = visible
        .iter()
        .filter_map(|(_, e)| match &e.kind {
            Kind::Record(r) => Some(r.clone()),
            Kind::Control(_) => None,
        })
        .collect();
    assert_eq!(records, want_records, "replayed records");
    let want_controls: Vec<(u64, Vec<u8>)> =
        visible.iter().filter_map(|&(offset, e)| payload_of(&e.kind).map(|p| (offset, p.to_vec()))).collect();
    assert_eq!(controls, want_controls, "control payloads");

    // A leader's read past the high watermark returns every entry up to the log end.
    let mut next = model.log_start;
    let mut entries = Vec::new();
    for _ in 0..10_000 {
        let fetch = log.read_uncommitted(next, 300).unwrap();
        let Some(after) = fetch.next_offset() else { break };
        for batch in &fetch.batches {
            let term = batch.header().leader_term;
            match batch.control_payload().unwrap() {
                Some(payload) => entries.push((batch.header().base_offset, term, Kind::Control(payload.to_vec()))),
                None => entries.extend(batch.records().unwrap().map(|r| {
                    let r = r.unwrap();
                    (r.offset, term, Kind::Record(r))
                })),
            }
        }
        next = after;
    }
    assert_eq!(next.max(model.log_start), model.log_end(), "read_uncommitted stopped early or late");
    let want: Vec<_> =
        model.entries.iter().enumerate().map(|(i, e)| (model.log_start + i as u64, e.term, e.kind.clone())).collect();
    assert_eq!(entries, want, "entries read past the high watermark");
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let path: &Path = dir.path();
    let mut log = Log::open(path, config()).unwrap();
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Append { records, term_bump, control } => {
                let term = model.last_term() + u64::from(term_bump);
                let base = model.log_end();
                let (records, entries) = model.entries(base, term, records, control);
                if control {
                    let Kind::Control(payload) = &entries[0].kind else { unreachable!() };
                    assert_eq!(log.append_control(term, payload.clone()).unwrap(), base);
                } else {
                    let info = log.append(&records, term).unwrap();
                    assert_eq!((info.base_offset, info.last_offset), (base, base + records.len() as u64 - 1));
                }
                model.push(base, entries);
            }
            Op::FollowerAppend { pick, records, term_bump, control } => {
                // Cut points: batch boundaries at or above the high watermark, or the end.
                let mut cuts: Vec<u64> = model
                    .batches
                    .iter()
                    .map(|&(base, _)| base)
                    .filter(|&b| b >= model.high_watermark && b > model.log_start)
                    .collect();
                cuts.push(model.log_end());
                let at = cuts[usize::from(pick) % cuts.len()];
                if at < model.log_end() {
                    log.truncate_after(at - 1).unwrap();
                    model.truncate_from(at);
                }
                let term = model.last_term() + u64::from(term_bump);
                // An append anywhere but the end is refused, naming both offsets.
                let err = log.append_at(at + 1, term, &[Record::new(0, "x")]).unwrap_err();
                assert!(
                    matches!(err, LogError::NotAtLogEnd { requested, log_end, .. } if requested == at + 1 && log_end == at)
                );
                if let Some(lower) = model.last_term().checked_sub(1) {
                    let err = log.append_at(at, lower, &[Record::new(0, "x")]).unwrap_err();
                    assert!(matches!(err, LogError::TermWentBack { .. }), "{err}");
                }
                let (records, entries) = model.entries(at, term, records, control);
                if control {
                    let Kind::Control(payload) = &entries[0].kind else { unreachable!() };
                    log.append_control_at(at, term, payload.clone()).unwrap();
                } else {
                    let info = log.append_at(at, term, &records).unwrap();
                    assert_eq!(info.base_offset, at);
                }
                model.push(at, entries);
            }
            Op::SetHighWatermark(pick) => {
                let range = model.log_end() - model.high_watermark + 1;
                let high_watermark = model.high_watermark + u64::from(pick) % range;
                log.set_high_watermark(high_watermark).unwrap();
                model.high_watermark = high_watermark;
            }
            Op::ReadByTimestamp(timestamp) => {
                let visible_end = model.visible_end();
                let want = model.entries.iter().find_map(|e| match &e.kind {
                    Kind::Record(r) if r.offset < visible_end && r.timestamp >= timestamp => Some(r.offset),
                    _ => None,
                });
                assert_eq!(log.offset_for_timestamp(timestamp).unwrap(), want, "offset for timestamp {timestamp}");
            }
            Op::Retention(bytes) => {
                let policy = RetentionPolicy {
                    retention_bytes: Some(u64::from(bytes)),
                    retention_messages: None,
                    retention_ms: None,
                };
                let before = log.offsets().log_start;
                log.enforce_retention(&policy, 1000).unwrap();
                let after = log.offsets().log_start;
                assert!(after <= model.high_watermark, "retention deleted past the high watermark");
                if after > before {
                    model.last_purged = Some((model.term_at(after - 1).unwrap(), after - 1));
                    model.entries.drain(..(after - model.log_start) as usize);
                    model.batches.retain(|&(base, _)| base >= after);
                    model.log_start = after;
                }
            }
            Op::ResetTo { ahead, term_bump } => {
                if model.high_watermark > 0 {
                    let err = log.reset_to(model.high_watermark - 1, 1).unwrap_err();
                    assert!(matches!(err, LogError::InvalidReset { .. }), "{err}");
                }
                let offset = model.log_end() + u64::from(ahead);
                let term = model.last_term() + u64::from(term_bump);
                log.reset_to(offset, term).unwrap();
                model.entries.clear();
                model.batches.clear();
                model.log_start = offset;
                model.high_watermark = offset;
                model.last_purged = offset.checked_sub(1).map(|last| (term, last));
            }
            Op::Reopen => {
                log.close().unwrap();
                drop(log);
                log = Log::open(path, config()).unwrap();
                assert!(log.recovery_report().clean_shutdown);
            }
            Op::CrashReopen => {
                log.crash_for_tests();
                drop(log);
                log = Log::open(path, config()).unwrap();
                assert_eq!(log.recovery_report().truncated, None, "a process crash loses nothing written");
                // The high watermark is not persisted on every move; replication recomputes it.
                let high_watermark = log.offsets().high_watermark;
                assert!(high_watermark <= model.high_watermark && high_watermark >= model.log_start);
                model.high_watermark = high_watermark;
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
    fn raft_log_matches_the_model(ops in prop::collection::vec(op(), 1..100)) {
        run(ops);
    }
}
