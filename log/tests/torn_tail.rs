//! A crash can leave the active segment holding any prefix of what was written, or stale
//! bytes after it. Recovery must keep exactly the longest valid prefix of whole batches, and
//! appends must continue right after it.

mod common;

use std::{fs, path::Path};

use common::{
    Model, Rng, append_to_file, assert_each_offset_reads, assert_log_holds, base_of, build_log, copy_dir,
    files_with_extension, random_record, small_config, stored, truncate_file, verify,
};
use strata_log::{Compression, Log, LogConfig, Record, StoredRecord};

const SEGMENT_BYTES: u64 = 4096;
const INDEX_INTERVAL: u64 = 300;

fn config() -> LogConfig {
    small_config(SEGMENT_BYTES, INDEX_INTERVAL)
}

/// A log of several segments whose batches alternate, two by two, between no compression and
/// zstd, with one to six records each.
fn build(dir: &Path) -> Model {
    let mut rng = Rng::new(0x0070_4174_4111);
    let mut batches = Vec::new();
    for i in 0..70 {
        let count = rng.range(1, 7) as usize;
        let around = common::BASE_TS + i * 1000;
        let records: Vec<Record> = (0..count).map(|_| random_record(&mut rng, around)).collect();
        let compression = if (i / 2) % 2 == 0 { Compression::None } else { Compression::Zstd };
        batches.push((records, compression));
    }
    let model = build_log(dir, &config(), &batches);
    assert!(files_with_extension(dir, "log").len() >= 4, "the log should span several segments");
    model
}

/// (position, length, base offset) of every batch of a segment file, read straight from the
/// bytes, independently of the crate.
fn batch_layout(path: &Path) -> Vec<(u64, u64, u64)> {
    let bytes = fs::read(path).unwrap();
    let mut layout = Vec::new();
    let mut position = 0usize;
    while position < bytes.len() {
        let length = u32::from_le_bytes(bytes[position + 4..position + 8].try_into().unwrap()) as usize;
        let base = u64::from_le_bytes(bytes[position + 12..position + 20].try_into().unwrap());
        assert!(length >= 52 && position + length <= bytes.len(), "unexpected layout at {position}");
        layout.push((position as u64, length as u64, base));
        position += length;
    }
    layout
}

/// The records a segment cut at `cut` keeps: every record before the segment, and those of the
/// segment's batches that end at or before the cut. Also returns the valid length.
fn expected_after_cut(
    model: &Model,
    layout: &[(u64, u64, u64)],
    segment_base: u64,
    cut: u64,
) -> (Vec<StoredRecord>, u64) {
    let mut end_offset = segment_base;
    let mut valid_len = 0;
    for &(position, length, base) in layout {
        if position + length > cut {
            break;
        }
        let batch = model.batches.iter().find(|b| b.base_offset == base).expect("batch in model");
        end_offset = batch.last_offset + 1;
        valid_len = position + length;
    }
    (model.records[..end_offset as usize].to_vec(), valid_len)
}

/// Appends a batch after recovery, checks its offsets, and checks it survives a reopen.
fn append_and_reopen(dir: &Path, log: Log, mut expected: Vec<StoredRecord>, rng: &mut Rng, context: &str) {
    let next = expected.last().map_or(0, |r| r.offset + 1);
    let records: Vec<Record> = (0..3).map(|_| random_record(rng, common::BASE_TS)).collect();
    let info = log.append(&records, 2).unwrap();
    assert_eq!(info.base_offset, next, "{context}: appends must continue after the recovered prefix");
    assert_eq!(info.last_offset, next + 2, "{context}");
    expected.extend(records.iter().enumerate().map(|(i, r)| stored(next + i as u64, r)));
    assert_log_holds(&log, &expected, &format!("{context}, before reopening"));
    log.close().unwrap();
    drop(log);
    let log = Log::open(dir, config()).unwrap();
    assert!(log.recovery_report().truncated.is_none(), "{context}: nothing to cut after a clean close");
    assert_log_holds(&log, &expected, &format!("{context}, after reopening"));
    assert_eq!(log.last_term_and_offset(), Some((2, next + 2)), "{context}");
    log.close().unwrap();
    let report = verify(dir);
    assert!(report.problems.is_empty(), "{context}: verify found {:?}", report.problems);
}

#[test]
fn every_cut_keeps_exactly_the_whole_batches_before_it() {
    let source = common::scratch_dir();
    let model = build(source.path());
    let last_log = files_with_extension(source.path(), "log").pop().unwrap();
    let segment_base = base_of(&last_log);
    let layout = batch_layout(&last_log);
    let file_len = fs::metadata(&last_log).unwrap().len();
    let in_segment: Vec<_> = model.batches.iter().filter(|b| b.base_offset >= segment_base).collect();
    assert_eq!(layout.len(), in_segment.len(), "the last segment holds the last batches");
    for (&(_, _, base), batch) in layout.iter().zip(&in_segment) {
        assert_eq!(base, batch.base_offset);
    }
    let tail = &layout[layout.len().saturating_sub(8)..];
    assert!(layout.len() > tail.len(), "the first batch of the segment is cut separately");
    let tail_batches = &in_segment[in_segment.len() - tail.len()..];
    assert!(tail_batches.iter().any(|b| b.compression == Compression::Zstd));
    assert!(tail_batches.iter().any(|b| b.compression == Compression::None));
    assert!(tail_batches.iter().any(|b| b.last_offset > b.base_offset), "some batches hold several records");

    // Cut points: every header field edge, spots through the records, and batch boundaries.
    // The segment's first batch too, so some cuts leave the segment empty.
    let mut cuts = vec![file_len];
    for &(position, length, _) in tail.iter().chain(&layout[..1]) {
        let mut deltas: Vec<u64> =
            vec![0, 1, 3, 4, 5, 7, 8, 9, 10, 11, 12, 16, 19, 20, 27, 28, 31, 32, 35, 36, 43, 44, 50, 51, 52, 53, 54];
        deltas.extend((1..=12).map(|k| 52 + (length - 52) * k / 13));
        deltas.extend([length / 2, length - 2, length - 1]);
        cuts.extend(deltas.into_iter().filter(|&d| d < length).map(|d| position + d));
    }
    cuts.sort_unstable();
    cuts.dedup();
    assert!(cuts.len() >= 200, "only {} cut points", cuts.len());

    let mut rng = Rng::new(99);
    let mut truncated_cases = 0;
    for (i, &cut) in cuts.iter().enumerate() {
        let context = format!("cut at byte {cut} of {}", last_log.display());
        let dir = common::scratch_dir();
        copy_dir(source.path(), dir.path());
        // Most crashes leave no marker; a stale one (naming another length) must not be trusted.
        if i % 3 != 0 {
            fs::remove_file(dir.path().join("clean_shutdown")).unwrap();
        }
        let path = dir.path().join(last_log.file_name().unwrap());
        truncate_file(&path, cut);

        let (expected, valid_len) = expected_after_cut(&model, &layout, segment_base, cut);
        let log = Log::open(dir.path(), config()).unwrap();
        match &log.recovery_report().truncated {
            None => assert_eq!(cut, valid_len, "{context}: a torn batch was not cut"),
            Some((cut_path, position, dropped, _reason)) => {
                truncated_cases += 1;
                assert_eq!(cut_path, &path, "{context}");
                assert_eq!(*position, valid_len, "{context}: cut at the wrong place");
                assert_eq!(*dropped, cut - valid_len, "{context}");
            }
        }
        assert_eq!(fs::metadata(&path).unwrap().len(), valid_len, "{context}: file not truncated to the prefix");
        assert_log_holds(&log, &expected, &context);
        let in_last: Vec<StoredRecord> = expected.iter().filter(|r| r.offset >= segment_base).cloned().collect();
        assert_each_offset_reads(&log, &in_last, &context);
        // The segment's largest timestamp must be the recovered prefix's, not the lost tail's.
        let last_segment_timestamps =
            model.records[segment_base as usize..].iter().flat_map(|r| [r.timestamp - 1, r.timestamp, r.timestamp + 1]);
        for t in last_segment_timestamps.chain([i64::MIN, i64::MAX]) {
            let want = expected.iter().find(|r| r.timestamp >= t).map(|r| r.offset);
            assert_eq!(log.offset_for_timestamp(t).unwrap(), want, "{context}: offset_for_timestamp({t})");
        }
        let expected_last = expected.last().map(|r| (1, r.offset));
        assert_eq!(log.last_term_and_offset(), expected_last, "{context}");
        append_and_reopen(dir.path(), log, expected, &mut rng, &context);
    }
    assert!(truncated_cases > cuts.len() / 2, "most cuts fall inside a batch");
}

/// Appends `garbage` after the last valid batch; recovery must cut exactly it.
fn check_garbage(source: &Path, model: &Model, garbage: &[u8], name: &str, rng: &mut Rng) {
    let context = format!("{} bytes of {name} after the last batch", garbage.len());
    let dir = common::scratch_dir();
    copy_dir(source, dir.path());
    fs::remove_file(dir.path().join("clean_shutdown")).unwrap();
    let path = files_with_extension(dir.path(), "log").pop().unwrap();
    let valid_len = fs::metadata(&path).unwrap().len();
    append_to_file(&path, garbage);

    let log = Log::open(dir.path(), config()).unwrap();
    let report = log.recovery_report();
    if garbage.iter().all(|&b| b == 0) {
        // Zeros only: space the writer reserves ahead of its writes, cut without a loss reported.
        assert_eq!(report.truncated, None, "{context}");
        assert_eq!(report.reserved_bytes_cut, garbage.len() as u64, "{context}");
    } else {
        let truncated = report.truncated.clone();
        let (cut_path, position, dropped, _) = truncated.unwrap_or_else(|| panic!("{context}: nothing was cut"));
        assert_eq!(cut_path, path, "{context}");
        assert_eq!((position, dropped), (valid_len, garbage.len() as u64), "{context}");
    }
    assert_eq!(fs::metadata(&path).unwrap().len(), valid_len, "{context}");
    assert_log_holds(&log, &model.records, &context);
    append_and_reopen(dir.path(), log, model.records.clone(), rng, &context);
}

#[test]
fn garbage_after_the_last_batch_is_cut() {
    let source = common::scratch_dir();
    let model = build(source.path());
    let last_log = files_with_extension(source.path(), "log").pop().unwrap();
    let layout = batch_layout(&last_log);
    let bytes = fs::read(&last_log).unwrap();
    let &(last_position, last_length, _) = layout.last().unwrap();
    let last_batch = &bytes[last_position as usize..(last_position + last_length) as usize];

    let mut rng = Rng::new(7);
    for len in [1, 7, 51, 52, 53, 200, 5000] {
        let garbage = rng.bytes(len);
        check_garbage(source.path(), &model, &garbage, "random bytes", &mut rng);
    }
    for len in [1, 4, 52, 100, 4096, 10_000] {
        check_garbage(source.path(), &model, &vec![0; len], "zeros", &mut rng);
    }
    check_garbage(source.path(), &model, &[0xff; 60], "0xff", &mut rng);

    // A whole, CRC-valid copy of the last batch: its offsets do not follow, so it is not valid.
    check_garbage(source.path(), &model, last_batch, "a repeated last batch", &mut rng);

    // The last batch renumbered to the next offset without fixing the CRC.
    let mut renumbered = last_batch.to_vec();
    let next = model.records.len() as u64;
    renumbered[12..20].copy_from_slice(&next.to_le_bytes());
    check_garbage(source.path(), &model, &renumbered, "a renumbered batch with a stale CRC", &mut rng);

    // A plausible header promising more bytes than the file holds.
    let mut header = renumbered[..52].to_vec();
    header[4..8].copy_from_slice(&4000u32.to_le_bytes());
    check_garbage(source.path(), &model, &header, "a header with no body", &mut rng);

    // A torn write: the first part of a real batch followed by stale zeros where the file grew.
    let mut torn = renumbered.clone();
    let half = torn.len() / 2;
    torn[half..].fill(0);
    torn.extend_from_slice(&[0; 300]);
    check_garbage(source.path(), &model, &torn, "a torn batch and zeros", &mut rng);
}
