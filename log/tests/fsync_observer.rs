//! `Log::on_fsync`: the observer is told of every fsync of appended data (here: one per
//! `wait_durable_blocking` under `FlushPolicy::Always`), and only the first observer counts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use strata_log::{FlushPolicy, Log, LogConfig, Record};

#[test]
fn every_data_fsync_reaches_the_observer() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig { flush: FlushPolicy::Always, ..LogConfig::default() }).unwrap();
    let fsyncs = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&fsyncs);
    assert!(log.on_fsync(Arc::new(move |_elapsed| {
        counted.fetch_add(1, Ordering::Relaxed);
    })));
    assert!(!log.on_fsync(Arc::new(|_| {})), "a second observer is refused");
    for i in 0..3 {
        let appended = log.append(&[Record::new(1, format!("v{i}"))], 0).unwrap();
        log.wait_durable_blocking(appended.last_offset).unwrap();
    }
    assert_eq!(fsyncs.load(Ordering::Relaxed), 3);
    log.close().unwrap();
}
