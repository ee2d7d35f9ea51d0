//! A reset to a snapshot (`Log::reset_to`) stopped by a crash between any two of its steps
//! reopens either as the old log (before its commit point, `partition.meta`) or as the reset
//! one (after it), never as a mix.

use std::{fs, path::Path};

use strata_log::{FlushPolicy, Log, LogConfig, LogError, Record, ResetStep};

const RESET_AT: u64 = 500;
const RESET_TERM: u64 = 9;

fn config() -> LogConfig {
    LogConfig { segment_bytes: 2048, index_interval_bytes: 256, flush: FlushPolicy::Never, ..LogConfig::default() }
}

/// Several segments of records in terms 1 to 3, with a control batch at each term change.
fn build(dir: &Path) -> Log {
    let log = Log::open(dir, config()).unwrap();
    for term in 1..=3u64 {
        log.append_control(term, format!("blank of term {term}")).unwrap();
        for i in 0..40 {
            log.append(&[Record::new(1_000 + i, vec![term as u8; 60]), Record::new(1_001 + i, "b")], term).unwrap();
        }
    }
    log
}

fn segment_bases(dir: &Path) -> Vec<u64> {
    let mut bases: Vec<u64> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".log")?.parse().ok())
        .collect();
    bases.sort_unstable();
    bases
}

fn assert_reset(dir: &Path) {
    let log = Log::open(dir, config()).unwrap();
    let offsets = log.offsets();
    assert_eq!(
        (offsets.log_start, offsets.cleaned_up_to, offsets.high_watermark, offsets.log_end),
        (RESET_AT, RESET_AT, RESET_AT, RESET_AT)
    );
    assert_eq!(log.last_purged(), Some((RESET_TERM, RESET_AT - 1)));
    assert_eq!(log.term_at(RESET_AT - 1).unwrap(), Some(RESET_TERM));
    assert_eq!(log.term_at(RESET_AT).unwrap(), None);
    assert_eq!(log.term_at(3).unwrap(), None, "nothing of the old log is left");
    assert_eq!(log.last_term_and_offset(), None);
    assert_eq!(segment_bases(dir), vec![RESET_AT], "only the empty segment at the new start is left");
    assert!(log.read(RESET_AT, 1 << 20).unwrap().batches.is_empty());
    let err = log.append_at(RESET_AT, RESET_TERM - 1, &[Record::new(5, "old")]).unwrap_err();
    assert!(matches!(err, LogError::TermWentBack { last_term: RESET_TERM, .. }), "{err}");
    let info = log.append_at(RESET_AT, RESET_TERM, &[Record::new(5, "new")]).unwrap();
    assert_eq!(info.base_offset, RESET_AT);
    assert_eq!(log.term_at(RESET_AT).unwrap(), Some(RESET_TERM));
    assert_eq!(&log.read(RESET_AT, 1 << 20).unwrap().records(RESET_AT).unwrap()[0].value[..], b"new");
    log.close().unwrap();
    let report = strata_log::verify_partition(dir, &mut |_| {}).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[test]
fn a_reset_stopped_after_its_commit_point_reopens_reset() {
    for step in [ResetStep::MetaWritten, ResetStep::SegmentsDeleted, ResetStep::SegmentCreated] {
        let dir = tempfile::tempdir().unwrap();
        let log = build(dir.path());
        assert!(segment_bases(dir.path()).len() > 3, "the test needs several segments");
        log.reset_to_with_crash_at(RESET_AT, RESET_TERM, step).unwrap();
        assert!(matches!(log.append(&[Record::new(0, "x")], RESET_TERM), Err(LogError::Closed { .. })));
        drop(log);
        assert_reset(dir.path());
    }
}

#[test]
fn a_reset_stopped_before_its_commit_point_reopens_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let log = build(dir.path());
    let before = log.offsets();
    let terms: Vec<_> = (0..before.log_end).map(|o| log.term_at(o).unwrap()).collect();
    let records = log.read(0, 1 << 24).unwrap().records(0).unwrap();
    // The crash came while the new `partition.meta` was being written: only its temporary
    // file exists, which open deletes.
    fs::write(dir.path().join("partition.meta.tmp"), [0xAB; 80]).unwrap();
    log.crash_for_tests();
    drop(log);
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.offsets(), before);
    assert_eq!(log.last_purged(), None);
    assert_eq!((0..before.log_end).map(|o| log.term_at(o).unwrap()).collect::<Vec<_>>(), terms);
    assert_eq!(log.read(0, 1 << 24).unwrap().records(0).unwrap(), records);
    assert!(!dir.path().join("partition.meta.tmp").exists());
}

#[test]
fn a_finished_reset_survives_a_crash_and_a_clean_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = build(dir.path());
    log.reset_to(RESET_AT, RESET_TERM).unwrap();
    log.crash_for_tests();
    drop(log);
    assert_reset(dir.path());
}
