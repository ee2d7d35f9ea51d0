//! `strata log verify` on a partition whose writer stopped as after `kill -9`: the zeros
//! reserved past the last batch of the active segment are counted apart from data, not
//! reported as damage.

mod common;

use common::{batch_records, small_segments, stdout, strata_on};
use strata_log::Log;

#[test]
fn reserved_zeros_after_a_crash_are_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments()).expect("open partition");
    for b in 0..3 {
        log.append(&batch_records(b, 2), 3).expect("append");
    }
    log.crash_for_tests();
    drop(log);

    let output = strata_on(&["log", "verify"], dir.path(), &[]);
    let out = stdout(&output);
    assert!(out.contains("reserved at the tail, not data"), "{out}");
    assert!(out.contains("6 records"), "{out}");
    // The crash left no index files, which verify names (open rebuilds them); the segment
    // itself has no defect.
    assert!(!out.contains(".log at byte"), "the reserved zeros are not a defect: {out}");
}
