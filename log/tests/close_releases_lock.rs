//! Closing a log releases its directory lock at once (regression: a restart raced the
//! background flusher's brief hold on the log and failed with `Locked`).

use strata_log::{Log, LogConfig, LogError, Record};

/// Close releases the directory lock at once, even while another handle to the log is alive,
/// so a restart can open the partition right away.
#[test]
fn close_releases_the_lock_while_handles_linger() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let lingering = log.clone();
    assert!(matches!(Log::open(dir.path(), LogConfig::default()), Err(LogError::Locked { .. })));
    log.close().unwrap();
    let reopened = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert!(reopened.recovery_report().clean_shutdown);
    assert!(matches!(lingering.append(&[Record::new(0, "late")], 0), Err(LogError::Closed { .. })));
}
