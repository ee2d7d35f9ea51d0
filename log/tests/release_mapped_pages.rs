//! Pages that readers touched through the segment mappings are released: after ~64 MiB are
//! written and read back, releasing the mapped pages leaves none of the pages read mapped in
//! this process (the pages stay in the page cache, not in our page tables), and every record
//! still reads back with its exact content.
//!
//! The pages are observed in the process's page table (`/proc/self/pagemap`), not through
//! RSS counters, which some kernels report only approximately (issue 18).

mod common;

use common::{append_stamped, pages_present, stamped_value};
use strata_log::{Fetch, FlushPolicy, Log, LogConfig};

const RECORDS_PER_BATCH: u64 = 64;
const BATCHES: u64 = 1024; // 64 Ki records of 1000 B: ~64 MiB.
const MIB: u64 = 1 << 20;

/// Reads every record from offset 0, checking each one. Returns the fetches, which keep the
/// batches' bytes (and so their mappings) alive for the caller to inspect, and how many of the
/// pages read were mapped just after being read, of how many.
fn read_all_and_check(log: &Log, total: u64) -> (Vec<Fetch>, u64, u64) {
    let mut next = 0;
    let mut fetches = Vec::new();
    let (mut present, mut pages) = (0, 0);
    while next < total {
        let fetch = log.read(next, 1 << 20).unwrap();
        assert!(!fetch.batches.is_empty(), "nothing read at offset {next}");
        for record in fetch.records(next).unwrap() {
            assert_eq!(record.offset, next, "records out of order");
            assert_eq!(&record.value[..], &stamped_value(next)[..], "content of offset {next}");
            next += 1;
        }
        // Checked right away: the flusher thread releases pages about once a second on its own.
        let (now_present, now_pages) = pages_present(fetch.batches.iter().map(|b| &b.as_bytes()[..]));
        present += now_present;
        pages += now_pages;
        fetches.push(fetch);
    }
    (fetches, present, pages)
}

fn mapped_ranges(fetches: &[Fetch]) -> impl Iterator<Item = &[u8]> {
    fetches.iter().flat_map(|fetch| fetch.batches.iter().map(|batch| &batch.as_bytes()[..]))
}

#[test]
fn releasing_mapped_pages_unmaps_every_page_read_and_keeps_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        LogConfig { segment_bytes: 16 * MIB, segment_ms: None, flush: FlushPolicy::Never, ..Default::default() };
    let log = Log::open(dir.path(), config).unwrap();
    let total = append_stamped(&log, BATCHES, RECORDS_PER_BATCH);
    assert!(log.segment_count() >= 4, "closed segments and an active one");

    let (fetches, present, pages) = read_all_and_check(&log, total);
    let bytes: u64 = mapped_ranges(&fetches).map(|b| b.len() as u64).sum();
    assert!(bytes >= 60 * MIB, "read {bytes} bytes");
    assert!(
        present * 2 >= pages,
        "only {present} of the {pages} pages were mapped just after being read: this test cannot see a release"
    );

    log.release_mapped_pages_for_tests();
    let (present, pages) = pages_present(mapped_ranges(&fetches));
    assert_eq!(present, 0, "after the release, {present} of the {pages} pages read are still mapped");

    // Nothing was lost: every record reads back the same, from the page cache.
    let (again, _, _) = read_all_and_check(&log, total);
    assert_eq!(mapped_ranges(&again).map(|b| b.len() as u64).sum::<u64>(), bytes);
    drop(fetches);
    log.close().unwrap();
}
