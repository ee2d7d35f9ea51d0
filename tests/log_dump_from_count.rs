//! `strata log dump --from OFFSET --count N` prints exactly the records from OFFSET on, at
//! most N of them, even across segments and from the middle of a batch.

mod common;

use common::{code, segments, stdout, strata_on, write_partition};

fn printed_offsets(out: &str) -> Vec<u64> {
    out.lines()
        .filter_map(|line| line.trim_start().strip_prefix("offset="))
        .map(|rest| rest.split(' ').next().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn from_and_count_select_records() {
    let dir = tempfile::tempdir().unwrap();
    write_partition(dir.path(), 12, 3);
    assert!(segments(dir.path()).len() > 2);

    let all = strata_on(&["log", "dump"], dir.path(), &[]);
    assert_eq!(code(&all), 0, "{all:?}");
    assert_eq!(printed_offsets(&stdout(&all)), (0..36).collect::<Vec<_>>());

    // Offset 20 is the middle record of batch 6 (offsets 18..=20 hold 3 per batch: 18, 19, 20).
    let some = strata_on(&["log", "dump"], dir.path(), &["--from", "19", "--count", "7"]);
    let out = stdout(&some);
    assert_eq!(code(&some), 0, "{some:?}");
    assert_eq!(printed_offsets(&out), (19..26).collect::<Vec<_>>(), "{out}");
    assert!(out.contains("key=\"device-19\""), "{out}");
    assert!(out.contains("7 records in 3 batches (stopped at --count 7)"), "{out}");

    let past_end = strata_on(&["log", "dump"], dir.path(), &["--from", "1000"]);
    assert_eq!(code(&past_end), 0, "{past_end:?}");
    assert!(stdout(&past_end).contains("no records at or after offset 1000"));
}
