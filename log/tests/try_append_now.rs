//! `Log::try_append_now` appends like `append` while the batch fits the active segment, and
//! gives up without writing anything when a roll (which fsyncs) would come first.

use strata_log::{Log, LogConfig, Record};

#[test]
fn it_appends_in_place_and_refuses_a_roll() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_bytes: 1024, index_interval_bytes: 256, ..LogConfig::default() };
    let log = Log::open(dir.path(), config).unwrap();
    let record = |i: u64| Record::new(1_700_000_000_000 + i as i64, vec![b'x'; 100]);
    let mut next = 0u64;
    loop {
        match log.try_append_now(&[record(next)], 0).unwrap() {
            Some(info) => {
                assert_eq!((info.base_offset, info.last_offset), (next, next));
                next += 1;
            }
            None => break,
        }
        assert!(next < 100, "a 1 KiB segment must fill");
    }
    assert!(next >= 2, "several 100-byte records fit before the roll");
    let offsets = log.offsets();
    assert_eq!((offsets.log_end, offsets.high_watermark), (next, next), "nothing written by the refusal");
    assert_eq!(log.segment_count(), 1, "no roll happened");
    // The ordinary append rolls and goes on from the same offset.
    assert_eq!(log.append(&[record(next)], 0).unwrap().base_offset, next);
    assert_eq!(log.segment_count(), 2);
    let mut stored = 0;
    let mut offset = 0;
    while let Some(end) = log.read(offset, 1 << 20).unwrap().next_offset() {
        stored += log.read(offset, 1 << 20).unwrap().records(offset).unwrap().len() as u64;
        offset = end;
    }
    assert_eq!(stored, next + 1, "every record once");
}
