//! `strata log dump` on a damaged segment prints every batch before the damage, then exits 1
//! with an error naming the file and byte position.

mod common;

use common::{batches, code, flip_byte, segments, stderr, stdout, strata_on, write_partition};

#[test]
fn dump_stops_at_damage_naming_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    write_partition(dir.path(), 12, 3);
    let first_segment = segments(dir.path())[0].clone();
    let victim = batches(dir.path()).into_iter().filter(|b| b.path == first_segment).nth(1).expect("two batches");
    let victim_first_offset = victim.header.base_offset;
    flip_byte(&first_segment, victim.position + 60);

    let output = strata_on(&["log", "dump"], dir.path(), &[]);
    let (out, err) = (stdout(&output), stderr(&output));
    assert_eq!(code(&output), 1, "{output:?}");
    for offset in 0..victim_first_offset {
        assert!(out.contains(&format!("offset={offset} ")), "offset {offset} precedes the damage:\n{out}");
    }
    assert!(!out.contains(&format!("offset={victim_first_offset} ")), "{out}");
    let expected = format!("{}: CRC mismatch at byte {}", first_segment.display(), victim.position);
    assert!(err.contains(&expected), "expected {expected:?} in:\n{err}");
    assert!(out.contains("before the error below"), "{out}");
}
