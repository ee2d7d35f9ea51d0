//! `Log::reset_to` while readers hold batches of the old segments: they keep reading them,
//! new readers see the empty log at the new start, and watchers of the high watermark see
//! it move to the new start. A reset below the high watermark is refused.

use strata_log::{HighWatermarkMode, Log, LogConfig, LogError, Record};

#[test]
fn readers_of_the_old_log_keep_their_batches_and_the_new_log_starts_at_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 256,
        high_watermark: HighWatermarkMode::SetByCaller,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config).unwrap();
    for i in 0..60u64 {
        log.append(&[Record::new(i as i64, format!("old {i}"))], 2).unwrap();
    }
    log.set_high_watermark(40).unwrap();
    let held = log.read(0, 1 << 20).unwrap();
    assert_eq!(held.records(0).unwrap().len(), 40);

    let err = log.reset_to(39, 3).unwrap_err();
    assert!(matches!(err, LogError::InvalidReset { offset: 39, .. }), "{err}");
    assert!(err.to_string().contains(&dir.path().display().to_string()), "the error names the partition: {err}");

    let watch = log.watch_high_watermark();
    // A follower whose uncommitted tail (40..60) conflicts takes a snapshot up to 100.
    log.reset_to(100, 3).unwrap();
    assert_eq!(*watch.borrow(), 100);
    let offsets = log.offsets();
    assert_eq!((offsets.log_start, offsets.high_watermark, offsets.log_end), (100, 100, 100));
    assert_eq!(log.term_at(99).unwrap(), Some(3));
    assert_eq!(log.term_at(50).unwrap(), None);
    assert!(matches!(log.read(50, 1 << 20), Err(LogError::OffsetOutOfRange { .. })));

    // The batches read before the reset are still whole (their files were unlinked, not cut).
    let records = held.records(0).unwrap();
    assert_eq!(records.len(), 40);
    assert_eq!(&records[39].value[..], b"old 39");

    log.append_control_at(100, 4, "blank of term 4").unwrap();
    log.append_at(101, 4, &[Record::new(7, "new")]).unwrap();
    log.set_high_watermark(102).unwrap();
    let fetch = log.read(100, 1 << 20).unwrap();
    assert_eq!(fetch.batches.len(), 2);
    assert_eq!(&fetch.batches[0].control_payload().unwrap().unwrap()[..], b"blank of term 4");
    let records = fetch.records(100).unwrap();
    assert_eq!(records.len(), 1, "the control batch yields no record");
    assert_eq!((records[0].offset, &records[0].value[..]), (101, &b"new"[..]));
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some(101), "time lookups skip control batches");
    log.close().unwrap();
}
