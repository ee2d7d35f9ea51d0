//! `strata log verify` on a sound partition exits 0 and counts what it checked.

mod common;

use common::{batches, code, segments, stdout, strata_on, write_partition};

#[test]
fn clean_partition_verifies_with_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    write_partition(dir.path(), 12, 3);
    let segment_count = segments(dir.path()).len();
    assert!(segment_count > 1, "the test wants several segments, got {segment_count}");
    let batch_count = batches(dir.path()).len();

    let output = strata_on(&["log", "verify"], dir.path(), &[]);
    let out = stdout(&output);
    assert_eq!(code(&output), 0, "{output:?}");
    assert!(out.contains(&format!("{segment_count} segments, {batch_count} batches, 36 records")), "{out}");
    assert!(out.contains("result: ok"), "{out}");
    assert!(!out.contains("PROBLEM"), "{out}");
}
