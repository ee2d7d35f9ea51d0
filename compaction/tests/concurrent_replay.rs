//! Readers replaying a partition from its start while a writer appends and the cleaner swaps
//! segments under them still end each replay with every key's latest value: compaction only
//! drops records that a later offset supersedes, and readers never miss a live offset.

mod common;

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Barrier,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

use bytes::Bytes;
use common::*;
use strata_compaction::{CleanOutcome, CompactionConfig, TOPIC_HEADER, Throttle, clean_partition};
use strata_log::{Log, LogError, Record, StoredRecord};

/// Records the writer appends, offsets `0..RECORDS`.
const RECORDS: u64 = 3000;
const KEYS: u64 = 16;
const READERS: usize = 3;
const KEY_HEADER: &str = "entity_id";

/// The key of the record at `offset`: a scrambled, uneven spread over `KEYS` entities.
fn key_of(offset: u64) -> String {
    let h = offset.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) ^ offset;
    let k = if h.is_multiple_of(4) { h % 3 } else { h % KEYS };
    format!("e{k}")
}

fn is_tombstone(offset: u64) -> bool {
    offset % 23 == 7
}

/// The record at `offset`. Its value names its key and offset, so a reader can check exactly
/// what it got. The topic is the same for every record: compacting by it instead of the
/// configured key header would lose entities.
fn record_at(offset: u64) -> Record {
    let key = key_of(offset);
    let value = if is_tombstone(offset) { Bytes::new() } else { Bytes::from(format!("{key}:{offset}")) };
    Record::new(BASE_TS + offset as i64, value)
        .with_header(TOPIC_HEADER, "fleet/telemetry")
        .with_header(KEY_HEADER, key.into_bytes())
}

fn stored_at(offset: u64) -> StoredRecord {
    let r = record_at(offset);
    StoredRecord { offset, timestamp: r.timestamp, key: r.key, value: r.value, headers: r.headers }
}

/// For each key, its offsets in order: the model of everything the writer appends.
fn offsets_by_key() -> BTreeMap<String, Vec<u64>> {
    let mut by_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for offset in 0..RECORDS {
        by_key.entry(key_of(offset)).or_default().push(offset);
    }
    by_key
}

/// One replay from `log_start` to the end. Returns the last record seen per key and the high
/// watermark of the final (empty) read.
fn replay(log: &Log) -> (BTreeMap<Bytes, StoredRecord>, u64) {
    let mut next = log.offsets().log_start;
    let mut last_offset: Option<u64> = None;
    let mut last_seen = BTreeMap::new();
    loop {
        let fetch = match log.read(next, 2048) {
            Ok(fetch) => fetch,
            Err(e @ LogError::OffsetOutOfRange { .. }) => panic!("retention does not run here, yet {e}"),
            Err(e) => panic!("read({next}): {e}"),
        };
        let Some(after) = fetch.next_offset() else {
            assert!(
                next >= fetch.high_watermark,
                "read({next}) returned nothing though the high watermark is {}",
                fetch.high_watermark
            );
            return (last_seen, fetch.high_watermark);
        };
        for record in fetch.records(next).unwrap() {
            assert!(
                last_offset.is_none_or(|last| record.offset > last),
                "offset {} after {last_offset:?}",
                record.offset
            );
            assert!(record.offset < fetch.high_watermark, "read past the high watermark");
            assert_eq!(record, stored_at(record.offset), "record at {} is not what was written", record.offset);
            last_offset = Some(record.offset);
            last_seen.insert(header_value(&record, KEY_HEADER).unwrap().clone(), record);
        }
        next = after;
    }
}

/// Every key's last record in a replay is its latest record below the replay's high watermark.
fn check_replay(by_key: &BTreeMap<String, Vec<u64>>, last_seen: &BTreeMap<Bytes, StoredRecord>, high_watermark: u64) {
    for (key, offsets) in by_key {
        let expected = offsets.iter().copied().take_while(|&o| o < high_watermark).last();
        let seen = last_seen.get(key.as_bytes()).map(|r| r.offset);
        assert_eq!(seen, expected, "key {key}: last offset seen in a replay up to {high_watermark}");
    }
    assert!(last_seen.keys().all(|k| by_key.contains_key(std::str::from_utf8(k).unwrap())));
}

#[test]
fn replays_see_the_latest_value_of_every_key_while_the_cleaner_swaps_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), log_config(1024)).unwrap();
    let by_key = Arc::new(offsets_by_key());
    let writer_done = Arc::new(AtomicBool::new(false));
    let cleaner_done = Arc::new(AtomicBool::new(false));
    let cleanings = Arc::new(AtomicU64::new(0));
    let replays = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(2 + READERS));

    let writer = {
        let (log, writer_done, cleanings, replays, start) =
            (log.clone(), writer_done.clone(), cleanings.clone(), replays.clone(), start.clone());
        thread::spawn(move || {
            start.wait();
            let mut offset = 0;
            while offset < RECORDS {
                let n = (1 + offset % 3).min(RECORDS - offset);
                let records: Vec<Record> = (offset..offset + n).map(record_at).collect();
                let info = log.append(&records, 0).unwrap();
                assert_eq!(info.base_offset, offset, "one writer: offsets are the record sequence");
                offset += n;
                if offset == RECORDS / 2 {
                    // Halfway, make sure the cleaner has swapped segments and readers have
                    // replayed, so the second half is written while they keep at it.
                    wait_until("a cleaning that rewrote segments", Duration::from_secs(60), || {
                        cleanings.load(Ordering::Acquire) > 0
                    });
                    wait_until("a replay per reader", Duration::from_secs(60), || {
                        replays.load(Ordering::Acquire) >= READERS as u64
                    });
                }
                if offset % 64 == 0 {
                    thread::yield_now();
                }
            }
            writer_done.store(true, Ordering::Release);
        })
    };

    let cleaner = {
        let (log, writer_done, cleaner_done, cleanings, start) =
            (log.clone(), writer_done.clone(), cleaner_done.clone(), cleanings.clone(), start.clone());
        thread::spawn(move || {
            let config = CompactionConfig {
                key_header: Some(Bytes::from_static(KEY_HEADER.as_bytes())),
                min_cleanable_dirty_ratio: 0.0,
                segment_bytes: 4096,
                ..Default::default()
            };
            let throttle = Throttle::new(None);
            let now = BASE_TS + RECORDS as i64 + 1000;
            let mut total = CleanOutcome::default();
            start.wait();
            loop {
                // One more pass after the writer stops, to clean what it wrote last.
                let last = writer_done.load(Ordering::Acquire);
                let outcome = clean_partition(&log, &config, now, &throttle, &mut |_| {}).unwrap();
                assert_eq!(outcome.tombstones_dropped, 0, "tombstones are younger than delete_retention_ms");
                total.segments_before += outcome.segments_before;
                total.segments_after += outcome.segments_after;
                total.records_superseded += outcome.records_superseded;
                if outcome.segments_before > outcome.segments_after || outcome.records_superseded > 0 {
                    cleanings.fetch_add(1, Ordering::Release);
                }
                if last {
                    break;
                }
                thread::yield_now();
            }
            cleaner_done.store(true, Ordering::Release);
            total
        })
    };

    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (log, by_key, cleaner_done, replays, start) =
                (log.clone(), by_key.clone(), cleaner_done.clone(), replays.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                let mut count = 0u64;
                loop {
                    let done = cleaner_done.load(Ordering::Acquire);
                    let (last_seen, high_watermark) = replay(&log);
                    check_replay(&by_key, &last_seen, high_watermark);
                    count += 1;
                    replays.fetch_add(1, Ordering::Release);
                    if done {
                        assert_eq!(high_watermark, RECORDS, "the final replay covers everything");
                        return count;
                    }
                }
            })
        })
        .collect();

    writer.join().expect("writer");
    let total = cleaner.join().expect("cleaner");
    let replay_counts: Vec<u64> = readers.into_iter().map(|r| r.join().expect("reader")).collect();

    assert!(cleanings.load(Ordering::Acquire) >= 2, "the cleaner compacted more than once");
    assert!(total.records_superseded > 0 && total.segments_before > total.segments_after, "{total:?}");
    assert!(replay_counts.iter().all(|&n| n >= 2), "replays per reader: {replay_counts:?}");

    // The end state: each key's latest record is there, nothing else of the cleaned range.
    let sealed_end = log.sealed_segments().last().map_or(0, |s| s.next_offset());
    assert_eq!(log.offsets().cleaned_up_to, sealed_end);
    let records = read_all(&log);
    for record in &records {
        assert_eq!(*record, stored_at(record.offset));
        let offsets = &by_key[&key_of(record.offset)];
        let latest_below_cut = offsets.iter().copied().take_while(|&o| o < sealed_end).last();
        assert!(
            record.offset >= sealed_end || latest_below_cut == Some(record.offset),
            "offset {} survived though superseded within the cleaned range",
            record.offset
        );
    }
    let (last_seen, high_watermark) = replay(&log);
    assert_eq!(high_watermark, RECORDS);
    check_replay(&by_key, &last_seen, RECORDS);
    log.close().unwrap();
    drop(log);
    assert_sound(dir.path());
    assert_eq!(swap_leftovers(dir.path()), Vec::<String>::new());
}
