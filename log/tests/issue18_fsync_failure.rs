//! Issue 18, "a failed fsync is treated as success": after an fsync of appended data fails,
//! the page cache can no longer be trusted (a second fsync may succeed without writing what
//! the first lost). The log must refuse appends and durability waits with an error naming
//! the partition, keep its data marked dirty, never fsync it again, and close as a crash
//! would, so that reopening scans the tail. The failure is injected with
//! `Log::fail_next_fsync_for_tests`, as a failing disk would return `EIO`.

use std::time::{Duration, Instant};

use strata_log::{FlushPolicy, Log, LogConfig, LogError, Record};

fn record(i: u64) -> Record {
    Record::new(1_700_000_000_000 + i as i64, format!("value-{i}"))
}

/// The error names the partition and says appends are refused.
fn assert_sync_failed(error: &LogError, dir: &std::path::Path) {
    assert!(matches!(error, LogError::SyncFailed { .. }), "expected SyncFailed, got {error:?}");
    let message = error.to_string();
    assert!(message.contains(&dir.display().to_string()), "{message:?} names the partition");
    assert!(message.contains("refuses appends"), "{message:?} says what follows");
}

#[test]
fn issue18_failed_fsync_refuses_appends_and_keeps_the_data_dirty() {
    let dir = tempfile::tempdir().unwrap();
    // No background flush during the test: the fsyncs are the ones the test asks for.
    let config = LogConfig { flush: FlushPolicy::Never, ..LogConfig::default() };
    let log = Log::open(dir.path(), config.clone()).unwrap();
    log.append(&[record(0)], 1).unwrap();
    log.flush().unwrap();
    assert!(!log.is_dirty_for_tests(), "a successful fsync cleans");
    let written = log.append(&[record(1), record(2)], 1).unwrap();
    assert!(log.is_dirty_for_tests());

    log.fail_next_fsync_for_tests();
    let error = log.flush().unwrap_err();
    assert_sync_failed(&error, dir.path());
    assert!(log.is_dirty_for_tests(), "a failed fsync must not clear the dirty flag");
    assert_sync_failed(&log.sync_failure().expect("the failure is reported"), dir.path());

    // Appends are refused, by both append paths.
    assert_sync_failed(&log.append(&[record(3)], 1).unwrap_err(), dir.path());
    assert_sync_failed(&log.try_append_now(&[record(3)], 1).unwrap_err(), dir.path());
    assert_eq!(log.offsets().log_end, 3, "nothing was appended after the failure");
    // What the failed fsync should have covered is not durable; what an earlier one
    // covered still is.
    assert_sync_failed(&log.wait_durable_blocking(written.last_offset).unwrap_err(), dir.path());
    log.wait_durable_blocking(0).unwrap();
    assert_eq!(log.durable_end(), 1);
    // No second fsync that could succeed falsely: flush keeps failing without trying.
    assert_sync_failed(&log.flush().unwrap_err(), dir.path());
    assert!(log.is_dirty_for_tests());
    // Reads of what was visible still work.
    assert_eq!(log.read(0, 1 << 20).unwrap().records(0).unwrap().len(), 3);

    // Close reports the failure and leaves no clean-shutdown marker: reopening scans.
    assert_sync_failed(&log.close().unwrap_err(), dir.path());
    drop(log);
    let reopened = Log::open(dir.path(), config).unwrap();
    assert!(!reopened.recovery_report().clean_shutdown, "reopening after a failed fsync scans the tail");
    assert!(reopened.sync_failure().is_none(), "reopening recovers the partition");
    // The disk here is healthy, so every whole batch is still there; appends work again.
    assert_eq!(reopened.offsets().log_end, 3);
    let next = reopened.append(&[record(3)], 1).unwrap();
    assert_eq!(next.base_offset, 3);
    reopened.flush().unwrap();
    reopened.close().unwrap();
}

#[test]
fn issue18_failed_group_commit_fails_its_waiters() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig { flush: FlushPolicy::Always, ..LogConfig::default() }).unwrap();
    let first = log.append(&[record(0)], 1).unwrap();
    log.wait_durable_blocking(first.last_offset).unwrap();
    let pending = log.append(&[record(1)], 1).unwrap();
    log.fail_next_fsync_for_tests();
    // The acknowledgement waiting for this fsync must fail, not go out.
    assert_sync_failed(&log.wait_durable_blocking(pending.last_offset).unwrap_err(), dir.path());
    // A second waiter does not get a fresh fsync that might succeed.
    assert_sync_failed(&log.wait_durable_blocking(pending.last_offset).unwrap_err(), dir.path());
    assert_sync_failed(&log.append(&[record(2)], 1).unwrap_err(), dir.path());
    assert!(log.is_dirty_for_tests());
    assert_eq!(log.durable_end(), 1);
}

#[test]
fn issue18_failed_background_fsync_is_not_only_logged() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { flush: FlushPolicy::Interval(Duration::from_millis(5)), ..LogConfig::default() };
    let log = Log::open(dir.path(), config).unwrap();
    log.fail_next_fsync_for_tests();
    log.append(&[record(0)], 1).unwrap();
    // The background flusher fsyncs within its interval; wait (bounded) until it has.
    let deadline = Instant::now() + Duration::from_secs(30);
    while log.sync_failure().is_none() {
        assert!(Instant::now() < deadline, "the background flusher never reported its failed fsync");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_sync_failed(&log.append(&[record(1)], 1).unwrap_err(), dir.path());
    assert_sync_failed(&log.wait_durable_blocking(0).unwrap_err(), dir.path());
    assert!(log.is_dirty_for_tests(), "the flusher must not clear the dirty flag of a failed fsync");
}

#[test]
fn issue18_failed_fsync_recovers_in_place_by_writing_the_segment_again() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { flush: FlushPolicy::Always, ..LogConfig::default() };
    let log = Log::open(dir.path(), config.clone()).unwrap();
    assert!(!log.recover_failed_sync().unwrap(), "nothing to recover from");
    for i in 0..3 {
        let appended = log.append(&[record(i)], 1).unwrap();
        log.wait_durable_blocking(appended.last_offset).unwrap();
    }
    let lost = log.append(&[record(3)], 1).unwrap();
    log.fail_next_fsync_for_tests();
    assert_sync_failed(&log.wait_durable_blocking(lost.last_offset).unwrap_err(), dir.path());

    // A disk that fails again keeps the partition refusing.
    log.fail_next_fsync_for_tests();
    assert_sync_failed(&log.recover_failed_sync().unwrap_err(), dir.path());
    assert_sync_failed(&log.append(&[record(4)], 1).unwrap_err(), dir.path());
    assert!(log.is_dirty_for_tests());

    // Once the fsync of the rewritten segment succeeds, everything written is durable and
    // appends are accepted again.
    assert!(log.recover_failed_sync().unwrap());
    assert!(log.sync_failure().is_none());
    assert!(!log.is_dirty_for_tests());
    log.wait_durable_blocking(lost.last_offset).unwrap();
    let next = log.append(&[record(4)], 1).unwrap();
    assert_eq!(next.base_offset, 4);
    log.wait_durable_blocking(next.last_offset).unwrap();
    let values: Vec<_> = log.read(0, 1 << 20).unwrap().records(0).unwrap().into_iter().map(|r| r.value).collect();
    assert_eq!(values, (0..5).map(|i| format!("value-{i}")).collect::<Vec<_>>());
    log.close().unwrap();
    drop(log);
    let reopened = Log::open(dir.path(), config).unwrap();
    assert!(reopened.recovery_report().clean_shutdown, "a recovered log closes cleanly");
    assert_eq!(reopened.offsets().log_end, 5);
}
