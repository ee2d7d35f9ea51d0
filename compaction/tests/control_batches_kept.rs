//! Cleaning keeps control batches (Raft's blank and membership entries): they hold no record
//! for the offset map, are copied as they are, keep their payload and their term, and reads
//! still skip them. Records are cleaned around them as usual.

mod common;

use common::*;
use strata_compaction::{CompactionConfig, TOPIC_HEADER, Throttle, clean_partition};
use strata_log::Log;

const SEGMENT_BYTES: u64 = 4096;

#[test]
fn cleaning_keeps_control_batches_and_their_terms() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), log_config(SEGMENT_BYTES)).unwrap();
    let mut model = Model::new(TOPIC_HEADER);
    let mut controls = Vec::new();
    for round in 0..80u64 {
        // Each round is a new leader term: a blank entry, then updates of the same keys.
        let term = round + 1;
        let offset = log.append_control(term, format!("blank of term {term}")).unwrap();
        controls.push((offset, term));
        for key in 0..10 {
            let topic = format!("devices/{key}");
            let record = keyed(TOPIC_HEADER, &topic, format!("{topic} state {round} {:>80}", ""), BASE_TS);
            model.append_in_term(&log, vec![record], term);
        }
    }
    let config = CompactionConfig { segment_bytes: SEGMENT_BYTES, ..CompactionConfig::default() };
    let outcome = clean_partition(&log, &config, BASE_TS, &Throttle::new(None), &mut |_| {}).unwrap();
    assert!(outcome.records_superseded > 0, "the pass cleaned something: {outcome:?}");
    let cleaned_up_to = log.offsets().cleaned_up_to;
    assert!(controls.iter().filter(|&&(o, _)| o < cleaned_up_to).count() > 10, "control batches were cleaned over");

    let records = read_all(&log);
    assert_records_match_model(&model, &records);
    assert_latest_per_key(&model, &records);
    // Every control batch is still there, with its payload and term, before and after a
    // reopen (which rebuilds the terms from the batches).
    let check = |log: &Log| {
        let mut found = Vec::new();
        let mut next = 0;
        while let Some(after) = log.read(next, 8 << 10).unwrap().next_offset() {
            for batch in log.read(next, 8 << 10).unwrap().batches {
                if let Some(payload) = batch.control_payload().unwrap() {
                    let term = batch.header().leader_term;
                    assert_eq!(payload, format!("blank of term {term}").as_bytes());
                    found.push((batch.header().base_offset, term));
                }
            }
            next = after;
        }
        assert_eq!(found, controls);
        for &(offset, term) in &controls {
            assert_eq!(log.term_at(offset).unwrap(), Some(term), "term of control offset {offset}");
        }
    };
    check(&log);
    log.close().unwrap();
    drop(log);
    let log = Log::open(dir.path(), log_config(SEGMENT_BYTES)).unwrap();
    check(&log);
    log.close().unwrap();
    drop(log);
    assert_sound(dir.path());
}
