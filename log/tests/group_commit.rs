//! Under `FlushPolicy::Always`, concurrent appenders that wait for durability all get through
//! (sharing fsyncs), and waiting for an offset never appended fails instead of hanging.

use std::sync::Arc;

use strata_log::{FlushPolicy, Log, LogConfig, LogError, Record};

#[test]
fn concurrent_waiters_all_become_durable() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { flush: FlushPolicy::Always, segment_bytes: 64 * 1024, ..LogConfig::default() };
    let log = Arc::new(Log::open(dir.path(), config.clone()).unwrap());
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for i in 0..50u32 {
                    let info =
                        log.append(&[Record::new(0, vec![t; 100]).with_key(i.to_le_bytes().to_vec())], 0).unwrap();
                    log.wait_durable_blocking(info.last_offset).unwrap();
                    assert!(log.durable_end() > info.last_offset);
                    mine.push(info.last_offset);
                }
                mine
            })
        })
        .collect();
    let mut offsets: Vec<u64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    offsets.sort_unstable();
    assert_eq!(offsets, (0..400).collect::<Vec<_>>(), "every append got its own offset");

    let end = log.offsets().log_end;
    match log.wait_durable_blocking(end) {
        Err(LogError::NotWritten { offset, log_end }) => assert_eq!((offset, log_end), (end, end)),
        other => panic!("waiting past the end must fail, got {other:?}"),
    }
    log.crash_for_tests();
    drop(log);
    let reopened = Log::open(dir.path(), config).unwrap();
    assert_eq!(reopened.offsets().log_end, 400);
    assert_eq!(reopened.recovery_report().truncated, None);
}
