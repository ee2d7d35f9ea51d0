//! The maintenance service's retention: partitions whose policy deletes lose their oldest
//! whole segments by time, size or message count, on the background interval or on demand;
//! never the active segment, never anything at or past the high watermark; compact-only
//! partitions are left alone.

mod common;

use std::{collections::BTreeMap, time::Duration};

use common::*;
use strata_compaction::{
    CleanupPolicy, CompactionConfig, Maintenance, MaintenanceConfig, MaintenanceTotals, PartitionSettings, TOPIC_HEADER,
};
use strata_log::{HighWatermarkMode, Log, LogConfig, LogError, RetentionPolicy, SegmentSummary};

const SEGMENT_BYTES: u64 = 1024;
const DAY_MS: i64 = 24 * 3600 * 1000;
const WAIT: Duration = Duration::from_secs(10);

/// Appends `count` single-record batches on ten topics, stamped `timestamp`.
fn fill(log: &Log, model: &mut Model, count: u64, timestamp: i64) {
    for i in 0..count {
        let topic = format!("site/{}/level", i % 10);
        model.append(
            log,
            vec![keyed(TOPIC_HEADER, &topic, format!("{topic}:{}:{}", model.len(), "z".repeat(20)), timestamp)],
        );
    }
}

fn settings(cleanup_policy: CleanupPolicy, retention: RetentionPolicy) -> PartitionSettings {
    // A compaction lag of a year keeps the cleaner off these partitions: only retention acts.
    let compaction = CompactionConfig { min_compaction_lag_ms: 365 * DAY_MS as u64, ..Default::default() };
    PartitionSettings { cleanup_policy, retention, compaction }
}

/// One partition under test: its log, model, the segments before retention and the base offset
/// retention must move `log_start` to.
struct Case {
    name: &'static str,
    _dir: tempfile::TempDir,
    log: Log,
    model: Model,
    before: Vec<SegmentSummary>,
    expected_start: u64,
    settings: PartitionSettings,
}

impl Case {
    fn new(
        name: &'static str,
        config: LogConfig,
        settings: PartitionSettings,
        build: impl FnOnce(&Log, &mut Model),
    ) -> Case {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), config).unwrap();
        let mut model = Model::new(TOPIC_HEADER);
        build(&log, &mut model);
        let before = log.segment_summaries();
        assert!(before.len() >= 6, "{name}: only {} segments", before.len());
        Case { name, _dir: dir, log, model, before, expected_start: 0, settings }
    }

    /// The segments retention is expected to delete.
    fn deleted(&self) -> Vec<SegmentSummary> {
        self.before.iter().copied().filter(|s| s.next_offset <= self.expected_start).collect()
    }

    /// Checks the partition once retention is done.
    fn check(&self) {
        let name = self.name;
        let offsets = self.log.offsets();
        assert_eq!(offsets.log_start, self.expected_start, "{name}: log start");
        let after = self.log.segment_summaries();
        // Whole segments from the front, nothing else touched; log_start is a segment boundary.
        assert_eq!(after, self.before[self.before.len() - after.len()..], "{name}: remaining segments");
        assert_eq!(after[0].base_offset, offsets.log_start, "{name}: log start is the first segment's base");
        assert_eq!(after.last(), self.before.last(), "{name}: the active segment is never deleted");
        assert_eq!(offsets.log_end, self.model.end(), "{name}: log end");
        assert_eq!(segment_files(self.log.dir()), after.iter().map(|s| s.base_offset).collect::<Vec<_>>());
        // Below log_start: out of range; from it on: everything, as written.
        if offsets.log_start > 0 {
            for old in [0, offsets.log_start - 1] {
                match self.log.read(old, 1 << 20) {
                    Err(LogError::OffsetOutOfRange { requested, log_start, .. }) => {
                        assert_eq!((requested, log_start), (old, offsets.log_start), "{name}")
                    }
                    other => panic!("{name}: read({old}) below log start {}: {other:?}", offsets.log_start),
                }
            }
        }
        let records = read_all(&self.log);
        assert_records_match_model(&self.model, &records);
        let visible_end = offsets.high_watermark;
        let expected =
            self.model.offsets().into_iter().filter(|&o| o >= offsets.log_start && o < visible_end).collect();
        assert_offsets(&records, &expected, name);
    }
}

/// Partitions for every policy; their expected log starts follow from the segment list.
fn cases(now: i64) -> Vec<Case> {
    let old = now - 10 * DAY_MS;
    let by_time = RetentionPolicy { retention_ms: Some(DAY_MS as u64), ..Default::default() };

    // (a) Time: old records, then recent ones. Segments whose newest record is old go.
    let mut time = Case::new("time", log_config(SEGMENT_BYTES), settings(CleanupPolicy::Delete, by_time), |log, m| {
        fill(log, m, 60, old);
        fill(log, m, 40, now);
    });
    time.expected_start = time.before.iter().find(|s| s.max_timestamp >= now - DAY_MS).unwrap().base_offset;
    assert!(time.expected_start > 0 && time.expected_start < time.before.last().unwrap().base_offset);

    // (b) Bytes: keep at least 3000 bytes; deleting one more segment would go below.
    let limit = 3000;
    let by_bytes = RetentionPolicy { retention_bytes: Some(limit), ..Default::default() };
    let mut bytes =
        Case::new("bytes", log_config(SEGMENT_BYTES), settings(CleanupPolicy::Delete, by_bytes), |log, m| {
            fill(log, m, 90, now)
        });
    let mut remaining: u64 = bytes.before.iter().map(|s| s.size_bytes).sum();
    let mut keep = 0;
    while keep + 1 < bytes.before.len() && remaining - bytes.before[keep].size_bytes >= limit {
        remaining -= bytes.before[keep].size_bytes;
        keep += 1;
    }
    bytes.expected_start = bytes.before[keep].base_offset;
    assert!(bytes.expected_start > 0);

    // (c) Messages: keep at least 35 offsets.
    let by_messages = RetentionPolicy { retention_messages: Some(35), ..Default::default() };
    let mut messages =
        Case::new("messages", log_config(SEGMENT_BYTES), settings(CleanupPolicy::Delete, by_messages), |log, m| {
            fill(log, m, 90, now)
        });
    let end = messages.before.last().unwrap().next_offset;
    messages.expected_start =
        messages.before.iter().rev().find(|s| end - s.base_offset >= 35).map(|s| s.base_offset).unwrap();
    assert!(messages.expected_start > 0);

    // Everything expired: all but the active segment go.
    let mut all_old =
        Case::new("all old", log_config(SEGMENT_BYTES), settings(CleanupPolicy::Delete, by_time), |log, m| {
            fill(log, m, 80, old)
        });
    all_old.expected_start = all_old.before.last().unwrap().base_offset;

    // Everything expired, but the high watermark (set by replication) lags: segments holding an
    // offset at or past it stay.
    let replicated = LogConfig { high_watermark: HighWatermarkMode::SetByCaller, ..log_config(SEGMENT_BYTES) };
    let mut lagging = Case::new("lagging hw", replicated, settings(CleanupPolicy::Delete, by_time), |log, m| {
        fill(log, m, 80, old);
        let summaries = log.segment_summaries();
        // The high watermark in the middle of the fourth segment.
        let s = summaries[3];
        log.set_high_watermark((s.base_offset + s.next_offset) / 2).unwrap();
    });
    let hw = lagging.log.offsets().high_watermark;
    lagging.expected_start = lagging.before.iter().find(|s| s.next_offset > hw).unwrap().base_offset;
    assert_eq!(lagging.expected_start, lagging.before[3].base_offset);

    // Compact only: retention leaves it alone, however old.
    let compact =
        Case::new("compact", log_config(SEGMENT_BYTES), settings(CleanupPolicy::Compact, by_time), |log, m| {
            fill(log, m, 80, old)
        });

    // Compact and delete: retention applies.
    let mut both = Case::new(
        "compact,delete",
        log_config(SEGMENT_BYTES),
        settings(CleanupPolicy::CompactDelete, by_time),
        |log, m| {
            fill(log, m, 60, old);
            fill(log, m, 40, now);
        },
    );
    both.expected_start = both.before.iter().find(|s| s.max_timestamp >= now - DAY_MS).unwrap().base_offset;
    assert!(both.expected_start > 0);

    vec![time, bytes, messages, all_old, lagging, compact, both]
}

fn expected_totals(cases: &[Case]) -> (u64, u64) {
    let deleted: Vec<SegmentSummary> = cases.iter().flat_map(Case::deleted).collect();
    (deleted.len() as u64, deleted.iter().map(|s| s.size_bytes).sum())
}

#[test]
fn the_background_task_deletes_old_segments_by_time_bytes_and_messages() {
    let cases = cases(wall_clock_ms());
    // A fetch taken before retention keeps its batches readable after their files are gone.
    let early = cases[0].log.read(0, 1 << 20).unwrap();
    assert!(!early.batches.is_empty());

    let maintenance = Maintenance::start(MaintenanceConfig {
        retention_check_interval: Duration::from_millis(50),
        cleaner_threads: 1,
        cleaner_throttle_bytes_per_sec: None,
        cleaner_backoff: Duration::from_millis(50),
        ..Default::default()
    })
    .unwrap();
    for case in &cases {
        maintenance.register(case.name, case.log.clone(), case.settings.clone()).unwrap();
    }
    let (segments, bytes) = expected_totals(&cases);
    assert!(segments > 0);
    wait_until("retention on every partition", WAIT, || {
        cases.iter().all(|c| c.log.offsets().log_start == c.expected_start)
    });
    wait_until("the totals to count the deletions", WAIT, || {
        maintenance.totals().retention_segments_deleted >= segments
    });
    let totals = maintenance.totals();
    assert_eq!((totals.retention_segments_deleted, totals.retention_bytes_deleted), (segments, bytes), "{totals:?}");
    for case in &cases {
        case.check();
    }
    // Nothing more is due: another round deletes nothing and the totals stay.
    assert_eq!(maintenance.enforce_retention_now(), (0, 0));
    assert_eq!(maintenance.totals(), totals);
    assert!(maintenance.cleaner_state("compact").unwrap().runs == 0, "the cleaner had nothing to do");

    let first = early.records(0).unwrap();
    assert_eq!(first.len(), early.batches.len());
    for record in &first {
        assert_eq!(*record, cases[0].model.stored(record.offset), "a fetch from before retention still decodes");
    }
    maintenance.shutdown();

    // Deletions are durable: a reopened partition starts where retention left it.
    for case in cases {
        let Case { name, _dir: dir, log, model, expected_start, .. } = case;
        let config = log.config().clone();
        log.close().unwrap();
        drop(log);
        let log = Log::open(dir.path(), config).unwrap();
        assert_eq!(log.offsets().log_start, expected_start, "{name}: log start after reopening");
        assert_eq!(segment_files(dir.path())[0], expected_start, "{name}: segment files after reopening");
        let records = read_all(&log);
        assert_records_match_model(&model, &records);
        assert_eq!(records.first().map(|r| r.offset), Some(expected_start), "{name}");
    }
}

#[test]
fn enforce_retention_now_deletes_at_once_and_counts_it() {
    let now = wall_clock_ms();
    let cases = cases(now);
    // The background task would first run in an hour: only the direct calls act.
    let maintenance = Maintenance::start(MaintenanceConfig {
        retention_check_interval: Duration::from_secs(3600),
        cleaner_threads: 1,
        cleaner_throttle_bytes_per_sec: None,
        cleaner_backoff: Duration::from_secs(3600),
        ..Default::default()
    })
    .unwrap();
    for case in &cases {
        maintenance.register(case.name, case.log.clone(), case.settings.clone()).unwrap();
    }
    assert!(cases.iter().all(|c| c.log.offsets().log_start == 0), "nothing happens before the call");
    let expected = expected_totals(&cases);
    assert_eq!(maintenance.enforce_retention_now(), expected);
    for case in &cases {
        case.check();
    }
    let totals = maintenance.totals();
    assert_eq!((totals.retention_segments_deleted, totals.retention_bytes_deleted), expected);
    assert_eq!(
        MaintenanceTotals { retention_segments_deleted: 0, retention_bytes_deleted: 0, ..totals },
        MaintenanceTotals::default()
    );
    assert_eq!(maintenance.enforce_retention_now(), (0, 0));

    // More data pushes the message-count partition over its limit again.
    let messages = cases.iter().find(|c| c.name == "messages").unwrap();
    let mut model = messages.model.clone();
    fill(&messages.log, &mut model, 30, now);
    let before: BTreeMap<u64, SegmentSummary> =
        messages.log.segment_summaries().into_iter().map(|s| (s.base_offset, s)).collect();
    let (segments, bytes) = maintenance.enforce_retention_now();
    let start = messages.log.offsets().log_start;
    let gone: Vec<&SegmentSummary> = before.values().filter(|s| s.base_offset < start).collect();
    assert!(segments > 0 && segments == gone.len() as u64, "{segments} deleted, {} below the new start", gone.len());
    assert_eq!(bytes, gone.iter().map(|s| s.size_bytes).sum::<u64>());
    let end = messages.log.offsets().log_end;
    let kept = messages.log.segment_summaries();
    assert!(end - kept[0].base_offset >= 35 && (kept.len() == 1 || end - kept[1].base_offset < 35));
    maintenance.shutdown();
}
