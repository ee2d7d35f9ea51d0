//! `strata log verify <data-dir>` finds the partitions nested below it and checks each one.

mod common;

use common::{batches, code, flip_byte, segments, stdout, strata_on, write_partition};

#[test]
fn data_dir_verify_finds_every_nested_partition() {
    let data = tempfile::tempdir().unwrap();
    let partitions = ["orders/0", "orders/1", "sensors/0"].map(|p| data.path().join(p));
    for (i, dir) in partitions.iter().enumerate() {
        write_partition(dir, 4 + i as u64, 2);
    }
    std::fs::create_dir_all(data.path().join("empty-stream")).unwrap();

    let output = strata_on(&["log", "verify"], data.path(), &[]);
    let out = stdout(&output);
    assert_eq!(code(&output), 0, "{output:?}");
    assert!(out.contains("verifying 3 partition(s)"), "{out}");
    for dir in &partitions {
        assert!(out.contains(&format!("ok  {}:", dir.display())), "{} missing in:\n{out}", dir.display());
    }
    assert!(out.contains("batches, 30 records"), "(4 + 5 + 6) batches of 2 records:\n{out}");

    // Damage in the last partition is found through the data dir too.
    let segment = segments(&partitions[2])[0].clone();
    let victim = &batches(&partitions[2])[0];
    flip_byte(&segment, victim.position + 20);
    let output = strata_on(&["log", "verify"], data.path(), &[]);
    let out = stdout(&output);
    assert_eq!(code(&output), 1, "{output:?}");
    assert!(out.contains(&format!("FIRST PROBLEM: {} at byte {}", segment.display(), victim.position)), "{out}");
    assert!(out.contains(&format!("ok  {}:", partitions[0].display())), "{out}");
}
