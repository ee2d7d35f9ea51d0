//! Pages that readers touched through the segment mappings are released: after ~64 MiB are
//! written and read back, releasing the mapped pages brings the process's file-backed RSS
//! back near where it started (the pages stay in the page cache, not in our page tables), and
//! every record still reads back with its exact content.
//!
//! One test in this file on purpose: it measures the whole process's RSS.

mod common;

use common::{append_stamped, mapped_file_rss, stamped_value};
use strata_log::{FlushPolicy, Log, LogConfig};

const RECORDS_PER_BATCH: u64 = 64;
const BATCHES: u64 = 1024; // 64 Ki records of 1000 B: ~64 MiB.
const MIB: u64 = 1 << 20;

/// Reads every record from offset 0, checking each one; returns the bytes of batches read.
fn read_all_and_check(log: &Log, total: u64) -> u64 {
    let mut next = 0;
    let mut bytes = 0;
    while next < total {
        let fetch = log.read(next, 1 << 20).unwrap();
        assert!(!fetch.batches.is_empty(), "nothing read at offset {next}");
        bytes += fetch.batches.iter().map(|b| b.as_bytes().len() as u64).sum::<u64>();
        for record in fetch.records(next).unwrap() {
            assert_eq!(record.offset, next, "records out of order");
            assert_eq!(&record.value[..], &stamped_value(next)[..], "content of offset {next}");
            next += 1;
        }
    }
    bytes
}

#[test]
fn releasing_mapped_pages_drops_file_rss_and_keeps_every_record() {
    let baseline = mapped_file_rss();
    let dir = tempfile::tempdir().unwrap();
    let config =
        LogConfig { segment_bytes: 16 * MIB, segment_ms: None, flush: FlushPolicy::Never, ..Default::default() };
    let log = Log::open(dir.path(), config).unwrap();
    let total = append_stamped(&log, BATCHES, RECORDS_PER_BATCH);
    assert!(log.segment_count() >= 4, "closed segments and an active one");

    let read = read_all_and_check(&log, total);
    assert!(read >= 60 * MIB, "read {read} bytes");
    log.release_mapped_pages_for_tests();
    let after = mapped_file_rss();
    let held = after.saturating_sub(baseline);
    assert!(
        held < read / 8,
        "after the release the process still maps {} MiB of file pages more than at the start, having read {} MiB",
        held / MIB,
        read / MIB
    );

    // Nothing was lost: every record reads back the same, from the page cache.
    assert_eq!(read_all_and_check(&log, total), read);
    log.close().unwrap();
}
