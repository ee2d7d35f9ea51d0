//! The `.index` and `.timeindex` files are caches: whatever happens to them (deleted, cut
//! short, overwritten with garbage, swapped with another segment's), the log opens, reads every
//! offset and answers `offset_for_timestamp` exactly as before, reports the indexes it rebuilt,
//! and leaves files that `verify_partition` finds sound.

mod common;

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

use common::{
    Model, Rng, assert_each_offset_reads, assert_log_holds, base_of, build_log, copy_dir, files_with_extension,
    random_record, small_config, truncate_file, verify,
};
use strata_log::{Compression, Log, LogConfig, Record};

fn config() -> LogConfig {
    small_config(4096, 256)
}

/// Several segments, several index entries each, and timestamps that jump back and forth
/// (within batches and across them), with a few far outliers.
fn build(dir: &Path) -> Model {
    let mut rng = Rng::new(0x1DE8);
    let mut batches = Vec::new();
    for i in 0..130 {
        let count = rng.range(1, 5) as usize;
        let records: Vec<Record> = (0..count)
            .map(|_| {
                let mut record = random_record(&mut rng, common::BASE_TS + i * 400);
                record.value.truncate(150);
                match rng.range(0, 20) {
                    0 => record.timestamp += 60_000,
                    1 => record.timestamp -= 60_000,
                    _ => {}
                }
                record
            })
            .collect();
        let compression = if i % 5 == 4 { Compression::Zstd } else { Compression::None };
        batches.push((records, compression));
    }
    let model = build_log(dir, &config(), &batches);
    let timestamps: Vec<i64> = model.records.iter().map(|r| r.timestamp).collect();
    assert!(timestamps.windows(2).any(|w| w[1] < w[0]), "timestamps should not be monotonic");
    model
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    DeleteIndex,
    DeleteTimeIndex,
    DeleteBoth,
    EmptyIndex,
    EmptyTimeIndex,
    IndexNotAMultiple,
    TimeIndexNotAMultiple,
    /// Drops the time index's final entry (a closed segment must then be rebuilt).
    TimeIndexWithoutFinalEntry,
    /// Keeps a prefix of both files that still pairs up: the final time entry is stale.
    ConsistentPrefix,
    RandomIndex,
    RandomTimeIndex,
    ZeroedIndex,
    ZeroedTimeIndex,
    AllOnesBoth,
    SwappedIndexEntries,
    /// Both files replaced by those of another segment.
    OtherSegmentsFiles,
}

const ALL_DAMAGE: [Damage; 16] = [
    Damage::DeleteIndex,
    Damage::DeleteTimeIndex,
    Damage::DeleteBoth,
    Damage::EmptyIndex,
    Damage::EmptyTimeIndex,
    Damage::IndexNotAMultiple,
    Damage::TimeIndexNotAMultiple,
    Damage::TimeIndexWithoutFinalEntry,
    Damage::ConsistentPrefix,
    Damage::RandomIndex,
    Damage::RandomTimeIndex,
    Damage::ZeroedIndex,
    Damage::ZeroedTimeIndex,
    Damage::AllOnesBoth,
    Damage::SwappedIndexEntries,
    Damage::OtherSegmentsFiles,
];

fn index_paths(dir: &Path, base: u64) -> (PathBuf, PathBuf) {
    (dir.join(format!("{base:020}.index")), dir.join(format!("{base:020}.timeindex")))
}

/// Damages the index files of segment `base` in `dir`; `other` names another segment's
/// (intact) index files.
fn damage(dir: &Path, base: u64, other: (PathBuf, PathBuf), what: Damage, rng: &mut Rng) {
    let (index, time) = index_paths(dir, base);
    let len = |p: &Path| fs::metadata(p).unwrap().len();
    let overwrite = |p: &Path, bytes: Vec<u8>| fs::write(p, bytes).unwrap();
    match what {
        Damage::DeleteIndex => fs::remove_file(&index).unwrap(),
        Damage::DeleteTimeIndex => fs::remove_file(&time).unwrap(),
        Damage::DeleteBoth => {
            fs::remove_file(&index).unwrap();
            fs::remove_file(&time).unwrap();
        }
        Damage::EmptyIndex => truncate_file(&index, 0),
        Damage::EmptyTimeIndex => truncate_file(&time, 0),
        Damage::IndexNotAMultiple => truncate_file(&index, len(&index) - 3),
        Damage::TimeIndexNotAMultiple => truncate_file(&time, len(&time) - 5),
        Damage::TimeIndexWithoutFinalEntry => truncate_file(&time, len(&time) - 12),
        Damage::ConsistentPrefix => {
            let kept = (len(&index) / 8).div_ceil(2);
            truncate_file(&index, kept * 8);
            truncate_file(&time, (kept + 1) * 12);
        }
        Damage::RandomIndex => overwrite(&index, rng.bytes(len(&index) as usize)),
        Damage::RandomTimeIndex => overwrite(&time, rng.bytes(len(&time) as usize)),
        Damage::ZeroedIndex => overwrite(&index, vec![0; len(&index) as usize]),
        Damage::ZeroedTimeIndex => overwrite(&time, vec![0; len(&time) as usize]),
        Damage::AllOnesBoth => {
            overwrite(&index, vec![0xff; len(&index) as usize]);
            overwrite(&time, vec![0xff; len(&time) as usize]);
        }
        Damage::SwappedIndexEntries => {
            let mut bytes = fs::read(&index).unwrap();
            assert!(bytes.len() >= 24, "segment {base} needs three index entries");
            let (first, rest) = bytes.split_at_mut(16);
            first[8..16].swap_with_slice(&mut rest[..8]);
            overwrite(&index, bytes);
        }
        Damage::OtherSegmentsFiles => {
            fs::copy(other.0, &index).unwrap();
            fs::copy(other.1, &time).unwrap();
        }
    }
}

/// Segments whose index files `verify` finds fault with.
fn flagged_segments(dir: &Path) -> BTreeSet<u64> {
    verify(dir)
        .problems
        .iter()
        .filter(|p| p.path.extension().is_none_or(|e| e != "log"))
        .map(|p| base_of(&p.path))
        .collect()
}

fn check_reads(log: &Log, model: &Model, timestamps: &[i64], context: &str) {
    assert_log_holds(log, &model.records, context);
    assert_each_offset_reads(log, &model.records, context);
    for &t in timestamps {
        assert_eq!(
            log.offset_for_timestamp(t).unwrap(),
            model.offset_for_timestamp(t),
            "{context}: offset_for_timestamp({t})"
        );
    }
}

/// Damages the indexes of `targets` (segment base offsets) in a copy of `source`, optionally
/// as after a crash, then checks the log.
fn check(source: &Path, model: &Model, targets: &[u64], what: Damage, crash: bool, rng: &mut Rng) {
    let context = format!("{what:?} on segments {targets:?}{}", if crash { " after a crash" } else { "" });
    let dir = common::scratch_dir();
    copy_dir(source, dir.path());
    let bases: Vec<u64> = files_with_extension(dir.path(), "log").iter().map(|p| base_of(p)).collect();
    for &base in targets {
        let other = if base == bases[1] { bases[2] } else { bases[1] };
        damage(dir.path(), base, index_paths(source, other), what, rng);
    }
    if crash {
        fs::remove_file(dir.path().join("clean_shutdown")).unwrap();
    }
    let flagged = flagged_segments(dir.path());
    let active = *bases.last().unwrap();
    // Removing the final time entry is fine for the active segment: it is written on roll.
    let surely_damaged =
        targets.iter().filter(|&&b| !(matches!(what, Damage::TimeIndexWithoutFinalEntry) && b == active));
    for base in surely_damaged {
        assert!(flagged.contains(base), "{context}: verify did not notice segment {base}");
    }

    let log = Log::open(dir.path(), config()).unwrap();
    let rebuilt: BTreeSet<PathBuf> = log.recovery_report().rebuilt_indexes.iter().cloned().collect();
    // A shorter prefix of the active segment's index is still a valid (sparser) index, as after
    // a crash that lost its newest entries: its entries are kept, the rest of the segment is
    // indexed again, and the final time entry, which only a rolled segment has, is dropped by
    // the open. Every other damage is rebuilt.
    let kept_as_is = |base: u64| base == active && matches!(what, Damage::ConsistentPrefix);
    for &base in flagged.iter().filter(|&&b| !kept_as_is(b)) {
        let (index, _) = index_paths(dir.path(), base);
        assert!(rebuilt.contains(&index), "{context}: {} not reported as rebuilt: {rebuilt:?}", index.display());
    }
    assert!(log.recovery_report().damaged_segments.is_empty(), "{context}");
    assert!(log.recovery_report().truncated.is_none(), "{context}");
    let timestamps = model.interesting_timestamps();
    check_reads(&log, model, &timestamps, &context);
    let report = verify(dir.path());
    assert!(report.problems.is_empty(), "{context}: after the open, verify found {:?}", report.problems);
    assert_eq!(report.records, model.records.len() as u64, "{context}");

    log.close().unwrap();
    drop(log);
    let report = verify(dir.path());
    assert!(report.problems.is_empty(), "{context}: after the close, verify found {:?}", report.problems);
    let log = Log::open(dir.path(), config()).unwrap();
    assert!(log.recovery_report().clean_shutdown, "{context}");
    assert!(log.recovery_report().rebuilt_indexes.is_empty(), "{context}: rebuilt twice");
    check_reads(&log, model, &timestamps, &format!("{context}, reopened"));
    log.close().unwrap();
}

fn run(pick_targets: impl Fn(&[u64]) -> Vec<u64>, crash: bool) {
    let source = common::scratch_dir();
    let model = build(source.path());
    let bases: Vec<u64> = files_with_extension(source.path(), "log").iter().map(|p| base_of(p)).collect();
    assert!(bases.len() >= 6, "want several closed segments, got {}", bases.len());
    let targets = pick_targets(&bases);
    let mut rng = Rng::new(31);
    for what in ALL_DAMAGE {
        check(source.path(), &model, &targets, what, crash, &mut rng);
    }
}

#[test]
fn first_closed_segment() {
    run(|bases| vec![bases[0]], false);
}

#[test]
fn middle_closed_segments() {
    run(|bases| vec![bases[2], bases[bases.len() / 2]], false);
}

#[test]
fn active_segment() {
    run(|bases| vec![*bases.last().unwrap()], false);
}

#[test]
fn active_segment_after_a_crash() {
    run(|bases| vec![*bases.last().unwrap()], true);
}

#[test]
fn every_segment_after_a_crash() {
    run(|bases| bases.to_vec(), true);
}

/// A crash with intact indexes: nothing to rebuild but the active segment is scanned.
#[test]
fn crash_with_intact_indexes_rebuilds_nothing() {
    let source = common::scratch_dir();
    let model = build(source.path());
    let dir = common::scratch_dir();
    copy_dir(source.path(), dir.path());
    fs::remove_file(dir.path().join("clean_shutdown")).unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    assert!(!log.recovery_report().clean_shutdown);
    assert!(log.recovery_report().rebuilt_indexes.is_empty(), "{:?}", log.recovery_report().rebuilt_indexes);
    check_reads(&log, &model, &model.interesting_timestamps(), "crash with intact indexes");
    assert!(verify(dir.path()).problems.is_empty());
}
