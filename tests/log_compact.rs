//! `strata log compact` keeps the latest value per key, shrinks the partition, and says so;
//! it refuses a partition another process holds.

mod common;

use std::collections::HashMap;

use common::{code, stderr, stdout, strata_on};
use strata_log::{Log, LogConfig, Record};

fn config() -> LogConfig {
    LogConfig { segment_bytes: 2048, index_interval_bytes: 256, ..LogConfig::default() }
}

/// 40 entities updated 25 times each, keyed by the `entity_id` header; entity 7 is deleted in
/// round 12 (so its tombstone lies in a closed segment) and not written again.
fn write_updates(dir: &std::path::Path) -> HashMap<String, Vec<u8>> {
    let log = Log::open(dir, config()).unwrap();
    let mut latest = HashMap::new();
    for round in 0..25u32 {
        let records: Vec<Record> = (0..40u32)
            .filter(|&entity| entity != 7 || round <= 12)
            .map(|entity| {
                let value =
                    if entity == 7 && round == 12 { Vec::new() } else { format!("{entity}:{round}").into_bytes() };
                latest.insert(entity.to_string(), value.clone());
                Record::new(1_000 + i64::from(round), value)
                    .with_header("entity_id", entity.to_string())
                    .with_header("mqtt.topic", "fleet/updates")
            })
            .collect();
        log.append(&records, 0).unwrap();
    }
    log.close().unwrap();
    latest
}

#[test]
fn compact_keeps_the_latest_value_per_key_and_reports_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let latest = write_updates(dir.path());
    let before = Log::open(dir.path(), config()).unwrap();
    let (size_before, segments_before) = (before.size_bytes(), before.segment_count());
    before.close().unwrap();
    drop(before);

    let output = strata_on(&["log", "compact"], dir.path(), &["--key", "entity_id", "--segment-bytes", "8192"]);
    assert_eq!(code(&output), 0, "{output:?}");
    let out = stdout(&output);
    assert!(out.contains("size before") && out.contains("size after"), "{out}");
    assert!(out.contains(&format!("in {segments_before} segments")), "{out}");

    let log = Log::open(dir.path(), config()).unwrap();
    assert!(log.size_bytes() < size_before / 4, "{} bytes after, {size_before} before", log.size_bytes());
    assert!(log.segment_count() < segments_before, "small cleaned segments are merged");
    let mut seen: HashMap<String, Vec<u8>> = HashMap::new();
    let mut next = log.offsets().log_start;
    while let Some(after) = {
        let fetch = log.read(next, 1 << 16).unwrap();
        for record in fetch.records(next).unwrap() {
            let entity = record.headers.iter().find(|h| &h.name[..] == b"entity_id").unwrap();
            seen.insert(String::from_utf8(entity.value.to_vec()).unwrap(), record.value.to_vec());
        }
        fetch.next_offset()
    } {
        next = after;
    }
    // Entity 7's tombstone is decades older than the default delete retention, so it is gone,
    // and with it every older value of entity 7.
    let mut expected = latest;
    assert_eq!(expected.remove("7"), Some(Vec::new()));
    assert_eq!(seen, expected, "every other entity's last value survives");
}

#[test]
fn compact_refuses_a_partition_that_is_open_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    write_updates(dir.path());
    let _held = Log::open(dir.path(), config()).unwrap();
    let output = strata_on(&["log", "compact"], dir.path(), &[]);
    assert_eq!(code(&output), 2, "{output:?}");
    assert!(stderr(&output).contains("already open"), "{}", stderr(&output));
}
