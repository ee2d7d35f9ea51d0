//! Issue 18: a cleaning pass merges its own small outputs. Each key's updates come one after
//! the other, so every segment holds a few keys' latest records: grouped by their inputs'
//! sizes, the outputs were one small segment per input. The pass now ends with as few
//! segments as `segment_bytes` allows, reports them as its outputs, and keeps the latest
//! record per key.

mod common;

use common::*;
use strata_compaction::{CompactionConfig, TOPIC_HEADER, Throttle, clean_partition};
use strata_log::Log;

const SEGMENT_BYTES: u64 = 4096;
const KEYS: u64 = 60;
const UPDATES: u64 = 40;

#[test]
fn issue18_a_pass_merges_its_small_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), log_config(SEGMENT_BYTES)).unwrap();
    let mut model = Model::new(TOPIC_HEADER);
    for key in 0..KEYS {
        for update in 0..UPDATES {
            let topic = format!("devices/{key:02}");
            let record = keyed(TOPIC_HEADER, &topic, format!("{topic} state {update}"), BASE_TS);
            model.append(&log, vec![record]);
        }
    }
    let sealed_before = log.sealed_segments().len() as u64;
    assert!(sealed_before > 20, "{sealed_before} sealed segments: the scenario makes many");

    let config = CompactionConfig { segment_bytes: SEGMENT_BYTES, ..CompactionConfig::default() };
    let outcome = clean_partition(&log, &config, BASE_TS, &Throttle::new(None), &mut |_| {}).unwrap();

    let sealed = log.sealed_segments();
    let live: u64 = sealed.iter().map(|s| s.size_bytes()).sum();
    // Merged up to the segment size: one segment more than the live bytes need, at most.
    assert!(
        (sealed.len() as u64) <= live.div_ceil(SEGMENT_BYTES) + 1,
        "{} segments for {live} bytes of segments of {SEGMENT_BYTES}",
        sealed.len()
    );
    // The outcome counts what is on disk now, not the intermediate outputs.
    assert_eq!(outcome.segments_before, sealed_before);
    assert_eq!(outcome.segments_after, sealed.len() as u64, "{outcome:?}");
    assert_eq!(outcome.bytes_after, live, "{outcome:?}");

    let records = read_all(&log);
    assert_records_match_model(&model, &records);
    assert_latest_per_key(&model, &records);
    log.close().unwrap();
    drop(log);
    assert_sound(dir.path());
}
