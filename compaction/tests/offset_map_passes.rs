//! When the keys of the dirty range do not fit the offset map at once, cleaning takes several
//! passes and still ends with the latest record per key; a key that cannot fit at all is an
//! error that leaves the partition whole.

mod common;

use std::path::Path;

use bytes::Bytes;
use common::*;
use strata_compaction::{
    CleanOutcome, CompactionConfig, CompactionError, MIN_OFFSET_MAP_BYTES, TOPIC_HEADER, Throttle, clean_partition,
};
use strata_log::Log;

const SEGMENT_BYTES: u64 = 2048;
const KEYS: u64 = 100;
const RECORDS: u64 = 700;
const ENTITY: &str = "entity_id";

/// `RECORDS` records over `KEYS` keys in random order, about every eighth a tombstone, plus five
/// keys written only in the first third and then deleted; keyed by `key_header`. Record `i` is
/// stamped `BASE_TS + i`.
fn build(dir: &Path, key_header: &str) -> (Log, Model) {
    let log = Log::open(dir, log_config(SEGMENT_BYTES)).unwrap();
    let mut model = Model::new(key_header);
    let mut rng = Rng::new(42);
    let mut seq = 0u64;
    while seq < RECORDS {
        let batch = (0..rng.range(1, 4))
            .map(|_| {
                let retire = RECORDS / 3;
                let (key, tombstone) = if (retire..retire + 5).contains(&seq) {
                    // Five keys of the first third are deleted here and never written again.
                    (format!("gone/{}", seq - retire), true)
                } else if seq < retire && rng.range(0, 6) == 0 {
                    (format!("gone/{}", rng.range(0, 5)), false)
                } else {
                    (format!("k/{:03}", rng.range(0, KEYS)), rng.range(0, 8) == 0)
                };
                let value = if tombstone { Bytes::new() } else { Bytes::from(format!("{key}@{seq}")) };
                let record = keyed(key_header, &key, value, BASE_TS + seq as i64);
                seq += 1;
                // Under a configured key header the topic is shared: it must not be the key.
                if key_header == ENTITY { record.with_header(TOPIC_HEADER, "plant/all") } else { record }
            })
            .collect();
        model.append(&log, batch);
    }
    (log, model)
}

fn clean(log: &Log, config: &CompactionConfig, now: i64) -> CleanOutcome {
    clean_partition(log, config, now, &Throttle::new(None), &mut |_| {}).unwrap()
}

/// Checks the result of a full cleaning: below the sealed end, the latest record per key
/// (minus tombstones older than `horizon`); every removal is counted once.
fn check_cleaned(log: &Log, model: &Model, outcome: &CleanOutcome, horizon: i64) -> Vec<strata_log::StoredRecord> {
    let cut = log.sealed_segments().last().unwrap().next_offset();
    assert_eq!(outcome.cleaned_up_to, cut, "{outcome:?}");
    assert_eq!(log.offsets().cleaned_up_to, cut);
    let expected = model.expected_after_clean(cut, horizon);
    let records = read_all(log);
    assert_records_match_model(model, &records);
    assert_offsets(&records, &expected, "after cleaning");
    let removed = model.len() as u64 - expected.len() as u64;
    assert_eq!(outcome.records_superseded + outcome.tombstones_dropped, removed, "{outcome:?}");
    assert_eq!(swap_leftovers(log.dir()), Vec::<String>::new());
    records
}

#[test]
fn a_small_offset_map_takes_several_passes_to_the_same_result() {
    let now = BASE_TS + 1_000_000;
    let small = CompactionConfig { offset_map_bytes: 2048, min_cleanable_dirty_ratio: 0.0, ..Default::default() };
    let dir = tempfile::tempdir().unwrap();
    let (log, model) = build(dir.path(), TOPIC_HEADER);
    assert!(log.sealed_segments().len() >= 10);
    let outcome = clean(&log, &small, now);
    assert!(outcome.passes > 1, "{} keys cannot fit 2048 bytes in one pass: {outcome:?}", KEYS);
    assert_eq!(outcome.tombstones_dropped, 0, "tombstones are younger than delete_retention_ms");
    let records = check_cleaned(&log, &model, &outcome, i64::MIN);
    assert_latest_per_key(&model, &records);

    // The same partition cleaned with room for every key: one pass, the same records.
    let big_dir = tempfile::tempdir().unwrap();
    let (big_log, big_model) = build(big_dir.path(), TOPIC_HEADER);
    let big = CompactionConfig { offset_map_bytes: 1 << 20, ..small.clone() };
    let one_pass = clean(&big_log, &big, now);
    assert_eq!(one_pass.passes, 1, "{one_pass:?}");
    assert_eq!(read_all(&big_log), records, "several passes and one pass keep the same records");
    check_cleaned(&big_log, &big_model, &one_pass, i64::MIN);

    // Cleaning again finds nothing to do; the result survives a reopen.
    assert_eq!(clean(&log, &small, now).passes, 0);
    log.close().unwrap();
    drop(log);
    assert_sound(dir.path());
    let log = Log::open(dir.path(), log_config(SEGMENT_BYTES)).unwrap();
    assert_eq!(read_all(&log), records);
}

#[test]
fn tombstones_expire_correctly_across_passes() {
    // Every segment is old enough to clean; tombstones of the first half are past
    // delete_retention_ms, later ones are not.
    let now = BASE_TS + RECORDS as i64 + 1000;
    let horizon = BASE_TS + RECORDS as i64 / 2;
    let config = CompactionConfig {
        key_header: Some(Bytes::from_static(ENTITY.as_bytes())),
        offset_map_bytes: 2048,
        min_cleanable_dirty_ratio: 0.0,
        delete_retention_ms: (now - horizon) as u64,
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let (log, model) = build(dir.path(), ENTITY);
    let outcome = clean(&log, &config, now);
    assert!(outcome.passes > 1, "{outcome:?}");
    assert!(outcome.tombstones_dropped > 0, "{outcome:?}");
    let records = check_cleaned(&log, &model, &outcome, horizon);
    // No key comes back from the dead: a key whose latest record is an expired tombstone in the
    // cleaned range has no record left there at all.
    let cut = log.offsets().cleaned_up_to;
    let dead: Vec<Bytes> = model
        .latest_by_key(0, cut)
        .into_iter()
        .filter(|&(_, o)| {
            let r = model.stored(o);
            r.value.is_empty() && r.timestamp < horizon
        })
        .map(|(k, _)| k)
        .collect();
    assert!(!dead.is_empty());
    for record in records.iter().filter(|r| r.offset < cut) {
        let key = header_value(record, ENTITY).unwrap();
        assert!(!dead.contains(key), "deleted key {key:?} resurfaced at offset {}", record.offset);
    }

    // The same with room for every key.
    let big_dir = tempfile::tempdir().unwrap();
    let (big_log, _) = build(big_dir.path(), ENTITY);
    let one_pass = clean(&big_log, &CompactionConfig { offset_map_bytes: 1 << 20, ..config }, now);
    assert_eq!(one_pass.passes, 1);
    assert_eq!(read_all(&big_log), records, "several passes and one pass keep the same records");
}

#[test]
fn a_key_larger_than_the_offset_map_is_an_error_that_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), log_config(8192)).unwrap();
    let mut model = Model::new(TOPIC_HEADER);
    let huge = format!("huge/{}", "k".repeat(MIN_OFFSET_MAP_BYTES + 100));
    for i in 0..40 {
        model.append(&log, vec![keyed(TOPIC_HEADER, &huge, format!("v{i}"), BASE_TS + i)]);
    }
    let before = log.segment_summaries();
    assert!(log.sealed_segments().len() >= 3);
    let config = CompactionConfig {
        offset_map_bytes: MIN_OFFSET_MAP_BYTES,
        min_cleanable_dirty_ratio: 0.0,
        ..Default::default()
    };
    match clean_partition(&log, &config, BASE_TS + 1000, &Throttle::new(None), &mut |_| {}) {
        Err(CompactionError::OffsetMapTooSmall { budget }) => assert_eq!(budget, MIN_OFFSET_MAP_BYTES),
        other => panic!("expected OffsetMapTooSmall, got {other:?}"),
    }
    assert_eq!(log.segment_summaries(), before, "nothing was rewritten");
    assert_eq!(log.offsets().cleaned_up_to, 0);
    assert_eq!(swap_leftovers(dir.path()), Vec::<String>::new());
    let records = read_all(&log);
    assert_records_match_model(&model, &records);
    assert_offsets(&records, &model.offsets(), "after the failed cleaning");

    // A budget under the minimum is refused before any work.
    let tiny = CompactionConfig { offset_map_bytes: MIN_OFFSET_MAP_BYTES - 1, ..config.clone() };
    assert!(matches!(
        clean_partition(&log, &tiny, BASE_TS + 1000, &Throttle::new(None), &mut |_| {}),
        Err(CompactionError::InvalidConfig { key: "cleaner_buffer_bytes", .. })
    ));
}

#[test]
fn an_oversized_key_after_small_ones_stops_cleaning_where_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), log_config(8192)).unwrap();
    let mut model = Model::new(TOPIC_HEADER);
    for i in 0..60 {
        let topic = format!("small/{}", i % 4);
        model.append(&log, vec![keyed(TOPIC_HEADER, &topic, format!("{topic}={i}{}", "p".repeat(100)), BASE_TS + i)]);
    }
    let first_huge = model.end();
    let huge = format!("huge/{}", "k".repeat(MIN_OFFSET_MAP_BYTES));
    for i in 60..80 {
        model.append(&log, vec![keyed(TOPIC_HEADER, &huge, format!("v{i}"), BASE_TS + i)]);
    }
    assert!(log.sealed_segments().last().unwrap().next_offset() > first_huge);
    let config = CompactionConfig {
        offset_map_bytes: MIN_OFFSET_MAP_BYTES,
        min_cleanable_dirty_ratio: 0.0,
        ..Default::default()
    };
    // The first pass cleans the small keys up to the huge one; the next cannot map anything.
    match clean_partition(&log, &config, BASE_TS + 1000, &Throttle::new(None), &mut |_| {}) {
        Err(CompactionError::OffsetMapTooSmall { budget }) => assert_eq!(budget, MIN_OFFSET_MAP_BYTES),
        other => panic!("expected OffsetMapTooSmall, got {other:?}"),
    }
    assert_eq!(log.offsets().cleaned_up_to, first_huge, "progress up to the huge key is kept");
    let records = read_all(&log);
    assert_records_match_model(&model, &records);
    assert_offsets(&records, &model.expected_after_clean(first_huge, i64::MIN), "after the partial cleaning");
    assert_latest_per_key(&model, &records);
    assert_eq!(swap_leftovers(dir.path()), Vec::<String>::new());
    log.close().unwrap();
    drop(log);
    assert_sound(dir.path());
}
