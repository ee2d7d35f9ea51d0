//! `strata log verify` exits 2 with a message naming the path when there is nothing it can
//! check.

mod common;

use common::{code, stderr, strata_on};

#[test]
fn missing_dir_exits_2_naming_it() {
    let parent = tempfile::tempdir().unwrap();
    let missing = parent.path().join("no-such-data");
    let output = strata_on(&["log", "verify"], &missing, &[]);
    assert_eq!(code(&output), 2, "{output:?}");
    assert!(stderr(&output).contains(&missing.display().to_string()), "{output:?}");
}

#[test]
fn dir_without_partitions_exits_2_naming_it() {
    let data = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(data.path().join("stream/0")).unwrap();
    let output = strata_on(&["log", "verify"], data.path(), &[]);
    assert_eq!(code(&output), 2, "{output:?}");
    let err = stderr(&output);
    assert!(err.contains(&data.path().display().to_string()) && err.contains("no partition"), "{err}");
}
