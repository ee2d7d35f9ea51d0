//! `strata log dump` prints every batch and record of a partition: offsets, keys, headers.

mod common;

use common::{T0, batches, code, stdout, strata_on};
use strata_log::{Log, Record};

#[test]
fn dump_prints_batches_and_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), common::small_segments()).unwrap();
    log.append(
        &[
            Record::new(T0, "hello").with_key("device-7").with_header("mqtt.topic", "sensors/7"),
            Record::new(T0 + 5, vec![0u8; 3]).with_key(vec![0xde, 0xad, 0xbe, 0xef]).with_header("raw", vec![0u8, 1]),
        ],
        2,
    )
    .unwrap();
    log.append(&[Record::new(T0 + 10, "")], 2).unwrap();
    log.close().unwrap();
    let first = &batches(dir.path())[0];

    let output = strata_on(&["log", "dump"], dir.path(), &[]);
    let out = stdout(&output);
    assert_eq!(code(&output), 0, "{output:?}");
    let expected_lines = [
        format!(
            "batch 00000000000000000000.log @ byte 0: offsets 0-1, term 2, 2 records, compression none, {} bytes",
            first.header.batch_length
        ),
        "  timestamps: first 1700000000000 (2023-11-14T22:13:20.000Z), max 1700000000005 (2023-11-14T22:13:20.005Z)"
            .into(),
        "  offset=0 timestamp=1700000000000 (2023-11-14T22:13:20.000Z) key=\"device-7\" value=5 bytes \
         headers: mqtt.topic=\"sensors/7\""
            .into(),
        "  offset=1 timestamp=1700000000005 (2023-11-14T22:13:20.005Z) key=0xdeadbeef value=3 bytes headers: raw=0x0001"
            .into(),
        format!("batch 00000000000000000000.log @ byte {}: offsets 2-2, term 2, 1 record", first.header.batch_length),
        "  offset=2 timestamp=1700000000010 (2023-11-14T22:13:20.010Z) key=(none) value=0 bytes (tombstone)".into(),
        "3 records in 2 batches".into(),
    ];
    for line in expected_lines {
        assert!(out.contains(&line), "expected {line:?} in:\n{out}");
    }
}
