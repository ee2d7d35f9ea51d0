//! A partition written before format version 2 (batches with `magic = 1`, a 64-byte
//! version-1 `partition.meta`) opens and reads as before, takes new (version 2) batches and
//! control batches after its old ones, and gets a version-2 `partition.meta` at its next
//! metadata write.

use std::{fs, path::Path};

use strata_log::{FlushPolicy, Log, LogConfig, Record, RetentionPolicy, Vote};

fn config() -> LogConfig {
    LogConfig { segment_bytes: 2048, index_interval_bytes: 256, flush: FlushPolicy::Never, ..LogConfig::default() }
}

/// Rewrites every batch of every segment as version 1 wrote it: `magic = 1`, CRC again.
fn downgrade_batches(dir: &Path) -> usize {
    let mut count = 0;
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("log") {
            continue;
        }
        let mut bytes = fs::read(&path).unwrap();
        let mut at = 0;
        while at + 52 <= bytes.len() {
            let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
            assert_eq!(bytes[at + 8], 2, "written as version 2");
            bytes[at + 8] = 1;
            let crc = crc32fast::hash(&bytes[at + 4..at + len]);
            bytes[at..at + 4].copy_from_slice(&crc.to_le_bytes());
            at += len;
            count += 1;
        }
        assert_eq!(at, bytes.len());
        fs::write(&path, bytes).unwrap();
    }
    count
}

/// A version-1 `partition.meta`, byte for byte.
fn write_v1_meta(dir: &Path, vote: Vote, high_watermark: u64) {
    let mut b = vec![0u8; 64];
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    b[8..16].copy_from_slice(&vote.term.to_le_bytes());
    b[16..24].copy_from_slice(&vote.node.unwrap_or(u64::MAX).to_le_bytes());
    b[24] = u8::from(vote.committed);
    b[48..56].copy_from_slice(&high_watermark.to_le_bytes());
    let crc = crc32fast::hash(&b[4..]);
    b[0..4].copy_from_slice(&crc.to_le_bytes());
    fs::write(dir.join("partition.meta"), b).unwrap();
}

#[test]
fn a_version_1_partition_opens_reads_and_takes_new_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    for i in 0..60u64 {
        let term = 1 + i / 20;
        log.append(&[Record::new(i as i64, vec![i as u8; 50]), Record::new(i as i64, "second")], term).unwrap();
    }
    let records = log.read(0, 1 << 24).unwrap().records(0).unwrap();
    log.close().unwrap();
    drop(log);
    assert!(downgrade_batches(dir.path()) >= 60);
    let vote = Vote { term: 3, node: Some(2), committed: true };
    write_v1_meta(dir.path(), vote, 120);

    let log = Log::open(dir.path(), config()).unwrap();
    assert!(log.recovery_report().clean_shutdown, "the clean-shutdown marker did not change");
    assert_eq!(log.vote(), vote);
    assert_eq!(log.last_purged(), None);
    assert_eq!(log.read(0, 1 << 24).unwrap().records(0).unwrap(), records);
    assert_eq!(
        (log.term_at(0).unwrap(), log.term_at(40).unwrap(), log.term_at(119).unwrap()),
        (Some(1), Some(2), Some(3))
    );
    log.append_control(4, "blank of term 4").unwrap();
    log.append(&[Record::new(200, "after")], 4).unwrap();
    log.crash_for_tests();
    drop(log);

    // A crash start scans the active segment, which holds both versions.
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.recovery_report().truncated, None);
    assert_eq!(log.term_at(120).unwrap(), Some(4));
    let all = log.read(0, 1 << 24).unwrap().records(0).unwrap();
    assert_eq!(all.len(), records.len() + 1);
    assert_eq!((all[120].offset, &all[120].value[..]), (121, &b"after"[..]));
    let outcome = log
        .enforce_retention(
            &RetentionPolicy { retention_bytes: Some(1), retention_messages: None, retention_ms: None },
            0,
        )
        .unwrap();
    assert!(outcome.segments_deleted > 0);
    let start = log.offsets().log_start;
    assert_eq!(log.last_purged(), Some((log.term_at(start - 1).unwrap().unwrap(), start - 1)));
    log.close().unwrap();
    drop(log);
    assert_eq!(fs::read(dir.path().join("partition.meta")).unwrap().len(), 80, "rewritten as version 2");
    let report = strata_log::verify_partition(dir.path(), &mut |_| {}).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}
