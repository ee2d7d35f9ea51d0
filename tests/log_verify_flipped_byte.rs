//! A byte flipped inside a closed segment makes `strata log verify` exit 1, naming the file
//! and the byte position of the damaged batch first.

mod common;

use common::{batches, code, flip_byte, segments, stdout, strata_on, write_partition};

#[test]
fn flipped_byte_is_reported_with_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    write_partition(dir.path(), 12, 3);
    let first_segment = segments(dir.path())[0].clone();
    // The second batch of the first (closed) segment; flip a byte inside its records.
    let victim = batches(dir.path()).into_iter().filter(|b| b.path == first_segment).nth(1).expect("two batches");
    flip_byte(&first_segment, victim.position + 60);

    let output = strata_on(&["log", "verify"], dir.path(), &[]);
    let out = stdout(&output);
    assert_eq!(code(&output), 1, "{output:?}");
    let expected = format!("FIRST PROBLEM: {} at byte {}: CRC mismatch", first_segment.display(), victim.position);
    assert!(out.contains(&expected), "expected {expected:?} in:\n{out}");
    assert!(out.contains("result: DAMAGED"), "{out}");
}
