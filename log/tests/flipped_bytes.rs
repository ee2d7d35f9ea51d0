//! Bit rot: one flipped byte anywhere in a segment or index file. `verify_partition` must
//! name the damaged file; the log must never serve a record that differs from what was
//! written (it may refuse with an error), and damage to a cache (`.index`, `.timeindex`) must
//! not change what reads or time lookups return at all.

mod common;

use std::{fs, path::Path};

use common::{
    Model, Rng, assert_each_offset_reads, assert_log_holds, build_log, copy_dir, files_with_extension, random_record,
    small_config, verify,
};
use strata_log::{Compression, Log, LogConfig, Record};

fn build(dir: &Path, config: &LogConfig, batch_count: i64, max_value: u64, seed: u64) -> Model {
    let mut rng = Rng::new(seed);
    let mut batches = Vec::new();
    for i in 0..batch_count {
        let count = rng.range(1, 4) as usize;
        let records: Vec<Record> = (0..count)
            .map(|_| {
                let mut r = random_record(&mut rng, common::BASE_TS + i * 500);
                r.value.truncate(rng.range(0, max_value) as usize);
                r
            })
            .collect();
        let compression = if (i / 3) % 2 == 0 { Compression::None } else { Compression::Zstd };
        batches.push((records, compression));
    }
    build_log(dir, config, &batches)
}

/// Every file a flip may hit, with the positions to flip in it.
fn targets(dir: &Path, log_stride: usize, index_stride: usize) -> Vec<(String, Vec<usize>)> {
    let mut targets = Vec::new();
    for extension in ["log", "index", "timeindex"] {
        let stride = if extension == "log" { log_stride } else { index_stride };
        for path in files_with_extension(dir, extension) {
            let len = fs::metadata(&path).unwrap().len() as usize;
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            // Always include the last bytes: the final entry of an index, the tail of a batch.
            let mut positions: Vec<usize> = (0..len).step_by(stride).chain(len.saturating_sub(3)..len).collect();
            positions.sort_unstable();
            positions.dedup();
            targets.push((name, positions));
        }
    }
    targets
}

struct Outcome {
    open_failed: bool,
    read_errors: usize,
    log_end: u64,
}

/// Flips one byte of `name` at `position` in a copy of `source`, then checks verify, open and
/// reads.
fn check_flip(
    source: &Path,
    config: &LogConfig,
    model: &Model,
    timestamps: &[i64],
    name: &str,
    position: usize,
    mask: u8,
) -> Outcome {
    let context = format!("{name} byte {position} ^ {mask:#04x}");
    let dir = common::scratch_dir();
    copy_dir(source, dir.path());
    let path = dir.path().join(name);
    let mut bytes = fs::read(&path).unwrap();
    bytes[position] ^= mask;
    fs::write(&path, &bytes).unwrap();

    let report = verify(dir.path());
    assert!(
        report.problems.iter().any(|p| p.path == path),
        "{context}: verify did not name the file; it found {:?}",
        report.problems
    );

    let is_cache = !name.ends_with(".log");
    let log = match Log::open(dir.path(), config.clone()) {
        Ok(log) => log,
        Err(e) => {
            assert!(!is_cache, "{context}: a damaged cache must not stop the open: {e}");
            return Outcome { open_failed: true, read_errors: 0, log_end: 0 };
        }
    };
    if is_cache {
        // A cache is only a shortcut: every read must come out exactly as before.
        assert_log_holds(&log, &model.records, &context);
        assert_each_offset_reads(&log, &model.records, &context);
        // Time lookups go through `.timeindex`: they too must answer as if it were intact.
        for t in timestamps {
            let found = log.offset_for_timestamp(*t).unwrap_or_else(|e| panic!("{context}: time {t}: {e}"));
            assert_eq!(found, model.offset_for_timestamp(*t), "{context}: offset for time {t}");
        }
        log.crash_for_tests();
        return Outcome { open_failed: false, read_errors: 0, log_end: model.records.len() as u64 };
    }

    // Damaged data: every read either fails or returns exactly what was written, starting at
    // the offset asked for (a read never silently skips a record).
    let mut read_errors = 0;
    for want in &model.records {
        let fetch = match log.read(want.offset, 1) {
            Ok(fetch) => fetch,
            Err(_) => {
                read_errors += 1;
                continue;
            }
        };
        let records = match fetch.records(want.offset) {
            Ok(records) => records,
            Err(_) => {
                read_errors += 1;
                continue;
            }
        };
        match records.first() {
            None => assert!(
                want.offset >= fetch.high_watermark,
                "{context}: read({}) returned nothing below the high watermark {}",
                want.offset,
                fetch.high_watermark
            ),
            Some(first) => assert_eq!(first.offset, want.offset, "{context}: read({}) skipped records", want.offset),
        }
        for record in &records {
            assert!(record.offset < fetch.high_watermark, "{context}");
            assert_eq!(record, &model.records[record.offset as usize], "{context}: a damaged record was served");
        }
    }
    // Reading everything in big steps must also stop at the damage, never serve it.
    if let Ok(all) = common::read_all(&log) {
        for record in &all {
            assert_eq!(record, &model.records[record.offset as usize], "{context}: a damaged record was served");
        }
    }
    let log_end = log.offsets().log_end;
    log.crash_for_tests();
    Outcome { open_failed: false, read_errors, log_end }
}

fn flip_everywhere(config: LogConfig, batch_count: i64, max_value: u64, log_stride: usize, index_stride: usize) {
    let source = common::scratch_dir();
    let model = build(source.path(), &config, batch_count, max_value, 0xF11B);
    let segments = files_with_extension(source.path(), "log").len();
    assert!(segments >= 3, "the log should have closed segments and an active one, got {segments}");
    let mut rng = Rng::new(4242);
    let timestamps = model.interesting_timestamps();
    let mut flips = 0;
    for (name, positions) in targets(source.path(), log_stride, index_stride) {
        for position in positions {
            let mask = rng.range(1, 256) as u8;
            let outcome = check_flip(source.path(), &config, &model, &timestamps, &name, position, mask);
            if name.ends_with(".log") {
                // The damage must show: the open fails, a read fails, or recovery cut the tail.
                assert!(
                    outcome.open_failed || outcome.read_errors > 0 || outcome.log_end < model.records.len() as u64,
                    "{name} byte {position}: a flipped byte went unnoticed by reads"
                );
            }
            flips += 1;
        }
    }
    assert!(flips > 500, "only {flips} flips");
}

/// Every byte of every file of a small log: five or so 1 KiB segments.
#[test]
fn every_byte_of_a_small_log() {
    flip_everywhere(small_config(1024, 150), 28, 120, 1, 1);
}

/// A stride through a bigger log with more index entries per segment.
#[test]
fn stride_through_a_bigger_log() {
    flip_everywhere(small_config(4096, 400), 110, 400, 29, 3);
}
