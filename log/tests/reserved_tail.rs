//! The active segment's file runs past its last batch with reserved zeros (`tail.rs`). After a
//! crash they are there on disk: `verify` and `dump` must take them for the end of the log,
//! recovery must cut them without reporting a loss, and a clean close must leave none.

mod common;

use std::fs;

use common::{check_derived, derived_record, files_with_extension, read_all, verify};
use strata_log::{FlushPolicy, Log, LogConfig, dump_partition};

const RECORDS: u64 = 500;

fn config() -> LogConfig {
    LogConfig { segment_bytes: 64 << 20, segment_ms: None, flush: FlushPolicy::Never, ..LogConfig::default() }
}

/// Appends `RECORDS` records, one per batch, and returns the bytes they take in the file.
/// Every tenth comes after a pause, so that it goes through the mapping (a batch right
/// after another goes through `pwrite`).
fn append_all(log: &Log) -> u64 {
    for offset in 0..RECORDS {
        if offset % 10 == 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        log.append(&[derived_record(offset)], 0).unwrap();
    }
    let mut batch_bytes = 0;
    dump_partition(log.dir(), 0, &mut |batch| {
        batch_bytes += u64::from(batch.header.batch_length);
        true
    })
    .unwrap();
    batch_bytes
}

#[test]
fn reserved_zeros_survive_a_crash_as_the_end_of_the_log_and_a_clean_close_leaves_none() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    let written = append_all(&log);
    log.crash_for_tests();
    drop(log);

    let segment = files_with_extension(dir.path(), "log").pop().unwrap();
    let on_disk = fs::metadata(&segment).unwrap().len();
    assert!(on_disk >= written, "the file holds every batch: {on_disk} < {written}");
    let bytes = fs::read(&segment).unwrap();
    assert!(bytes[written as usize..].iter().all(|&b| b == 0), "past the batches: zeros only");
    let reserved = on_disk - written;
    eprintln!("{reserved} bytes reserved past {written} bytes of batches");

    // Before recovery: the offline tools see every batch and no damage.
    // (Its index files were never written, as no flush ran: verify may name those, which
    // open rebuilds; the segment itself must show no damage.)
    let report = verify(dir.path());
    assert!(!report.problems.iter().any(|p| p.path == segment), "{:?}", report.problems);
    assert_eq!(report.records, RECORDS);
    assert_eq!(report.reserved_bytes, reserved, "verify tells the reserved zeros from data");
    let mut dumped = 0;
    dump_partition(dir.path(), 0, &mut |batch| {
        dumped += batch.records.len() as u64;
        true
    })
    .unwrap();
    assert_eq!(dumped, RECORDS);

    // Recovery cuts the zeros and reports them as reserved, not lost.
    let log = Log::open(dir.path(), config()).unwrap();
    let recovery = log.recovery_report().clone();
    assert!(!recovery.clean_shutdown);
    assert_eq!(recovery.truncated, None, "nothing was lost");
    assert_eq!(recovery.reserved_bytes_cut, reserved);
    assert_eq!(fs::metadata(&segment).unwrap().len(), written);
    let records = read_all(&log).unwrap();
    assert_eq!(records.len() as u64, RECORDS);
    records.iter().for_each(check_derived);

    // Appends after recovery reserve again; a clean close cuts back to the last batch.
    for offset in RECORDS..RECORDS + 10 {
        log.append(&[derived_record(offset)], 0).unwrap();
    }
    log.close().unwrap();
    drop(log);
    let mut batch_bytes = 0;
    dump_partition(dir.path(), 0, &mut |batch| {
        batch_bytes += u64::from(batch.header.batch_length);
        true
    })
    .unwrap();
    assert_eq!(fs::metadata(&segment).unwrap().len(), batch_bytes, "a closed log ends at its last batch");
    let log = Log::open(dir.path(), config()).unwrap();
    assert!(log.recovery_report().clean_shutdown);
    assert_eq!(read_all(&log).unwrap().len() as u64, RECORDS + 10);
}

#[test]
fn a_rolled_segment_ends_at_its_last_batch() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_bytes: 16 << 10, ..config() };
    let log = Log::open(dir.path(), config).unwrap();
    append_all(&log);
    let segments = files_with_extension(dir.path(), "log");
    assert!(segments.len() > 2, "the test wants rolled segments");
    let mut ends = std::collections::HashMap::new();
    dump_partition(dir.path(), 0, &mut |batch| {
        let end = batch.position + u64::from(batch.header.batch_length);
        let entry = ends.entry(batch.path.clone()).or_insert(0);
        *entry = end.max(*entry);
        true
    })
    .unwrap();
    for sealed in &segments[..segments.len() - 1] {
        assert_eq!(fs::metadata(sealed).unwrap().len(), ends[sealed], "{}", sealed.display());
    }
    log.close().unwrap();
}
