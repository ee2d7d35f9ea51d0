//! A crash at every step of a segment swap leaves the partition whole: after reopening, either
//! the old segments or the rewritten one are in place (never a mix), nothing of the swap is
//! left behind, every key still reads back its latest value, and the cleaner runs on it.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fs,
    path::Path,
};

use bytes::Bytes;
use common::*;
use strata_compaction::{CompactionConfig, TOPIC_HEADER, Throttle, clean_partition};
use strata_log::{Log, LogConfig, RewriteOutcome, SegmentSummary, StoredRecord, SwapStep};

const SEGMENT_BYTES: u64 = 2048;
/// Sealed segments per output of the hand-driven rewrite.
const SEGMENTS_PER_OUTPUT: usize = 3;
const STEPS: [SwapStep; 5] = [
    SwapStep::CleanedWritten,
    SwapStep::IndexesSwapped,
    SwapStep::LogSwapped,
    SwapStep::OldDeleted,
    SwapStep::Finished,
];

fn config() -> LogConfig {
    log_config(SEGMENT_BYTES)
}

/// A partition of many closed segments: ten topics updated over and over in batches of one to
/// three records, occasional tombstones, topics written once early and never again, and three
/// topics that are written early, deleted by a tombstone midway and never written again.
/// Deterministic, so every call builds the same.
fn build(dir: &Path) -> (Log, Model) {
    let log = Log::open(dir, config()).unwrap();
    let mut model = Model::new(TOPIC_HEADER);
    let mut rng = Rng::new(0x5eed);
    let mut seq = 0u64;
    for batch in 0..160u64 {
        let records = (0..rng.range(1, 4))
            .map(|_| {
                seq += 1;
                let timestamp = BASE_TS + seq as i64;
                if batch < 70 && rng.range(0, 3) == 0 {
                    // Written once, never updated: survives every rewrite.
                    let topic = format!("plant/config/{seq}");
                    return keyed(TOPIC_HEADER, &topic, format!("{topic}={seq}"), timestamp);
                }
                if batch < 40 && rng.range(0, 4) == 0 {
                    let topic = format!("plant/retired/{}", rng.range(0, 3));
                    return keyed(TOPIC_HEADER, &topic, format!("{topic}={seq}"), timestamp);
                }
                if batch == 80 {
                    // Retire the three early topics, all in one batch.
                    return keyed(TOPIC_HEADER, &format!("plant/retired/{}", seq % 3), Bytes::new(), timestamp);
                }
                let topic = format!("plant/line-{}/temp", rng.range(0, 10));
                if rng.range(0, 9) == 0 {
                    return keyed(TOPIC_HEADER, &topic, Bytes::new(), timestamp);
                }
                let padding = "x".repeat(rng.range(0, 40) as usize);
                keyed(TOPIC_HEADER, &topic, format!("{topic}={seq}{padding}"), timestamp)
            })
            .collect();
        model.append(&log, records);
    }
    for _ in 0..20 {
        seq += 1;
        let topic = format!("plant/line-{}/temp", rng.range(0, 10));
        model.append(&log, vec![keyed(TOPIC_HEADER, &topic, format!("{topic}={seq}"), BASE_TS + 20_000 + seq as i64)]);
    }
    (log, model)
}

/// One output of the rewrite: the sealed segments it replaces, as `[base, end)`.
#[derive(Clone, Copy, Debug)]
struct Output {
    base: u64,
    end: u64,
}

/// Drives a rewrite of every sealed segment by hand, as the cleaner does: the survivors are the
/// latest record per key over the rewritten range; outputs merge `SEGMENTS_PER_OUTPUT` segments
/// each. Commits normally, or stops dead after `crash`.
fn rewrite_by_hand(log: &Log, crash: Option<(usize, SwapStep)>) -> (Vec<Output>, RewriteOutcome) {
    let sealed = log.sealed_segments();
    assert!(sealed.len() >= 2 * SEGMENTS_PER_OUTPUT, "only {} sealed segments", sealed.len());
    let mut latest: HashMap<Bytes, u64> = HashMap::new();
    for segment in &sealed {
        for batch in segment.batches() {
            for record in batch.unwrap().records().unwrap() {
                let record = record.unwrap();
                latest.insert(header_value(&record, TOPIC_HEADER).unwrap().clone(), record.offset);
            }
        }
    }
    let mut rewrite = log.rewrite();
    let mut outputs = Vec::new();
    let mut survivors: Vec<StoredRecord> = Vec::new();
    for group in sealed.chunks(SEGMENTS_PER_OUTPUT) {
        rewrite.start_segment(group).unwrap();
        outputs.push(Output { base: group[0].base_offset(), end: group.last().unwrap().next_offset() });
        for segment in group {
            for batch in segment.batches() {
                let batch = batch.unwrap();
                survivors.clear();
                for record in batch.records().unwrap() {
                    let record = record.unwrap();
                    if latest[header_value(&record, TOPIC_HEADER).unwrap()] == record.offset {
                        survivors.push(record);
                    }
                }
                rewrite.write_batch(&batch, &survivors).unwrap();
            }
        }
    }
    assert!(outputs.len() >= 2);
    let outcome = match crash {
        None => rewrite.commit().unwrap(),
        Some((output, step)) => rewrite.commit_with_crash_at(output, step).unwrap(),
    };
    (outputs, outcome)
}

/// The offsets the log holds once the outputs marked in `committed` are swapped in.
fn expected_offsets(model: &Model, outputs: &[Output], committed: &[bool]) -> BTreeSet<u64> {
    // Survivors are the latest per key over the whole rewritten range.
    let latest = model.latest_by_key(0, outputs.last().unwrap().end);
    model
        .offsets()
        .into_iter()
        .filter(|&offset| match outputs.iter().position(|o| (o.base..o.end).contains(&offset)) {
            Some(i) if committed[i] => latest[model.key_at(offset)] == offset,
            _ => true,
        })
        .collect()
}

/// The segment list once the outputs marked in `committed` are swapped in: the original list
/// with each committed output's segments replaced by that output as the reference run wrote it.
fn expected_summaries(
    original: &[SegmentSummary],
    reference: &BTreeMap<u64, SegmentSummary>,
    outputs: &[Output],
    committed: &[bool],
) -> Vec<SegmentSummary> {
    let mut expected = Vec::new();
    for summary in original {
        match outputs.iter().position(|o| (o.base..o.end).contains(&summary.base_offset)) {
            Some(i) if committed[i] => {
                if summary.base_offset == outputs[i].base {
                    expected.push(reference[&outputs[i].base]);
                }
            }
            _ => expected.push(*summary),
        }
    }
    expected
}

/// The swap as the reference run commits it, without a crash: what each output becomes.
fn reference_outputs() -> (Vec<SegmentSummary>, BTreeMap<u64, SegmentSummary>, Vec<Output>) {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = build(dir.path());
    let original = log.segment_summaries();
    let (outputs, outcome) = rewrite_by_hand(&log, None);
    assert_eq!(outcome.segments_after, outputs.len() as u64);
    assert!(outcome.bytes_after < outcome.bytes_before, "the rewrite must drop something: {outcome:?}");
    let summaries: BTreeMap<u64, SegmentSummary> =
        log.segment_summaries().into_iter().map(|s| (s.base_offset, s)).collect();
    let rewritten: BTreeMap<u64, SegmentSummary> = outputs.iter().map(|o| (o.base, summaries[&o.base])).collect();
    // The outputs the crashes hit keep some records and drop others.
    for output in &outputs[..2] {
        let old: u64 =
            original.iter().filter(|s| (output.base..output.end).contains(&s.base_offset)).map(|s| s.size_bytes).sum();
        let new = rewritten[&output.base].size_bytes;
        assert!(new > 0 && new < old, "output at {}: {old} bytes rewritten to {new}", output.base);
    }
    (original, rewritten, outputs)
}

/// Reopens, checks the partition is whole and as `committed` says, then cleans it.
fn check_after_crash(
    dir: &Path,
    model: &Model,
    outputs: &[Output],
    committed: &[bool],
    expected_segments: &[SegmentSummary],
    finished_swaps: &[u64],
    context: &str,
) {
    let log = Log::open(dir, config()).unwrap_or_else(|e| panic!("{context}: reopening failed: {e}"));
    assert_eq!(swap_leftovers(dir), Vec::<String>::new(), "{context}: swap files left after open");
    assert_sound(dir);
    assert_eq!(log.recovery_report().finished_swaps, finished_swaps, "{context}: finished swaps");
    assert_eq!(log.segment_summaries(), expected_segments, "{context}: segment list after recovery");
    assert_eq!(segment_files(dir), expected_segments.iter().map(|s| s.base_offset).collect::<Vec<_>>());
    assert_eq!(log.offsets().log_end, model.end(), "{context}: log end");

    let records = read_all(&log);
    assert_records_match_model(model, &records);
    assert_offsets(&records, &expected_offsets(model, outputs, committed), context);
    assert_latest_per_key(model, &records);

    // The cleaner takes the recovered partition from here.
    let now = BASE_TS + 1_000_000;
    let compaction =
        CompactionConfig { min_cleanable_dirty_ratio: 0.0, segment_bytes: 4 * SEGMENT_BYTES, ..Default::default() };
    let outcome = clean_partition(&log, &compaction, now, &Throttle::new(None), &mut |_| {})
        .unwrap_or_else(|e| panic!("{context}: cleaning after recovery failed: {e}"));
    let cut = log.sealed_segments().last().unwrap().next_offset();
    assert!(outcome.passes >= 1, "{context}: {outcome:?}");
    assert_eq!(outcome.cleaned_up_to, cut, "{context}: {outcome:?}");
    assert_eq!(swap_leftovers(dir), Vec::<String>::new(), "{context}: swap files left by the cleaner");
    let horizon = now - compaction.delete_retention_ms as i64;
    let records = read_all(&log);
    assert_records_match_model(model, &records);
    assert_offsets(&records, &model.expected_after_clean(cut, horizon), &format!("{context}, cleaned"));
    assert_latest_per_key(model, &records);

    // And all of it survives a clean close.
    log.close().unwrap();
    drop(log);
    assert_sound(dir);
    let log = Log::open(dir, config()).unwrap();
    assert_eq!(read_all(&log), records, "{context}: records after a clean reopen");
}

#[test]
fn a_crash_at_any_swap_step_leaves_old_or_new_segments_never_a_mix() {
    let (original, reference, reference_outputs) = reference_outputs();
    for output in [0usize, 1] {
        for step in STEPS {
            let context = format!("crash after {step:?} of output {output}");
            let dir = tempfile::tempdir().unwrap();
            let (log, model) = build(dir.path());
            assert_eq!(log.segment_summaries(), original, "builds are deterministic");
            let (outputs, _) = rewrite_by_hand(&log, Some((output, step)));
            assert_eq!(outputs.len(), reference_outputs.len());
            let committed: Vec<bool> =
                (0..outputs.len()).map(|i| i < output || (i == output && step >= SwapStep::LogSwapped)).collect();

            // The running log still serves from its snapshot: outputs before the crashed one
            // were published, the crashed one was not (even if its old files are unlinked).
            let published: Vec<bool> = (0..outputs.len()).map(|i| i < output).collect();
            let records = read_all(&log);
            assert_records_match_model(&model, &records);
            assert_offsets(
                &records,
                &expected_offsets(&model, &outputs, &published),
                &format!("{context}, before reopening"),
            );

            // The files of the crashed output are where the step left them.
            let base = outputs[output].base;
            let leftovers = swap_leftovers(dir.path());
            let name = |ext: &str, stage: &str| format!("{base:020}.{ext}.{stage}");
            let expected_leftovers: Vec<String> = match step {
                SwapStep::CleanedWritten => {
                    ["index", "log", "replaces", "timeindex"].iter().map(|e| name(e, "cleaned")).collect()
                }
                SwapStep::IndexesSwapped => vec![
                    name("index", "swap"),
                    name("log", "cleaned"),
                    name("replaces", "swap"),
                    name("timeindex", "swap"),
                ],
                SwapStep::LogSwapped | SwapStep::OldDeleted => {
                    ["index", "log", "replaces", "timeindex"].iter().map(|e| name(e, "swap")).collect()
                }
                SwapStep::Finished => vec![],
            };
            // Later outputs were started (their cleaned logs created) but not yet swapped.
            let mut expected_leftovers = expected_leftovers;
            expected_leftovers.extend(outputs[output + 1..].iter().map(|o| format!("{:020}.log.cleaned", o.base)));
            expected_leftovers.sort();
            assert_eq!(leftovers, expected_leftovers, "{context}: files on disk at the crash");

            log.crash_for_tests();
            drop(log);

            let expected_segments = expected_summaries(&original, &reference, &outputs, &committed);
            if !committed[output] {
                // Before the commit point the crashed output's old segments are all there.
                let old: Vec<&SegmentSummary> = original
                    .iter()
                    .filter(|s| (outputs[output].base..outputs[output].end).contains(&s.base_offset))
                    .collect();
                assert!(old.len() > 1);
                for s in old {
                    assert!(expected_segments.contains(s));
                }
            }
            let finished: Vec<u64> =
                if matches!(step, SwapStep::LogSwapped | SwapStep::OldDeleted) { vec![base] } else { vec![] };
            check_after_crash(dir.path(), &model, &outputs, &committed, &expected_segments, &finished, &context);
        }
    }
}

#[test]
fn a_crash_inside_the_final_renames_is_finished_by_open() {
    let (original, reference, _) = reference_outputs();
    // Step 5 renames the index, then the time index, then the log, then deletes the list. Stop
    // after each of those renames (starting from a crash after step 4 of output 0).
    for renamed in 1..=3usize {
        let context = format!("crash after {renamed} of the final renames");
        let dir = tempfile::tempdir().unwrap();
        let (log, model) = build(dir.path());
        let (outputs, _) = rewrite_by_hand(&log, Some((0, SwapStep::OldDeleted)));
        log.crash_for_tests();
        drop(log);
        let base = outputs[0].base;
        for ext in ["index", "timeindex", "log"].into_iter().take(renamed) {
            fs::rename(dir.path().join(format!("{base:020}.{ext}.swap")), dir.path().join(format!("{base:020}.{ext}")))
                .unwrap();
        }
        let committed: Vec<bool> = (0..outputs.len()).map(|i| i == 0).collect();
        let expected_segments = expected_summaries(&original, &reference, &outputs, &committed);
        // Once the log itself is renamed the swap is finished as far as open can tell.
        let finished: Vec<u64> = if renamed < 3 { vec![base] } else { vec![] };
        check_after_crash(dir.path(), &model, &outputs, &committed, &expected_segments, &finished, &context);
    }
}

#[test]
fn cleaned_files_of_an_unfinished_rewrite_are_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let image = tempfile::tempdir().unwrap();
    let (log, model) = build(dir.path());
    let original = log.segment_summaries();
    let sealed = log.sealed_segments();

    // A rewrite in progress: outputs started, batches written, nothing committed.
    let mut rewrite = log.rewrite();
    rewrite.start_segment(&sealed[..2]).unwrap();
    for batch in sealed[0].batches() {
        let batch = batch.unwrap();
        let records: Vec<StoredRecord> = batch.records().unwrap().map(Result::unwrap).collect();
        rewrite.write_batch(&batch, &records[..1]).unwrap();
    }
    rewrite.start_segment(&sealed[2..4]).unwrap();
    let first = sealed[0].base_offset();
    let second = sealed[2].base_offset();
    assert!(dir.path().join(format!("{first:020}.log.cleaned")).exists());
    assert!(dir.path().join(format!("{second:020}.log.cleaned")).exists());

    // The process dies here: take an image of the directory as it is.
    log.crash_for_tests();
    copy_dir(dir.path(), image.path());
    // Make the image worse than a clean stop: a torn cleaned log, stray cleaned indexes, and
    // index `.swap` files of a swap that stopped halfway through step 2 (no `.log.swap`).
    let segment = fs::read(dir.path().join(format!("{first:020}.log"))).unwrap();
    fs::write(image.path().join(format!("{first:020}.log.cleaned")), &segment[..segment.len() / 2 + 7]).unwrap();
    fs::write(image.path().join(format!("{first:020}.index.cleaned")), [1u8; 13]).unwrap();
    fs::write(image.path().join(format!("{second:020}.index.swap")), [0u8; 16]).unwrap();
    fs::write(image.path().join(format!("{second:020}.replaces.cleaned")), [7u8; 9]).unwrap();
    fs::write(image.path().join(format!("{second:020}.timeindex.cleaned")), [7u8; 24]).unwrap();

    // Dropping the unfinished rewrite deletes its own cleaned files.
    drop(rewrite);
    assert_eq!(swap_leftovers(dir.path()), Vec::<String>::new());
    drop(log);

    for (which, path) in [("image", image.path()), ("original", dir.path())] {
        let log = Log::open(path, config()).unwrap();
        assert_eq!(swap_leftovers(path), Vec::<String>::new(), "{which}: cleaned files are removed on open");
        assert!(log.recovery_report().finished_swaps.is_empty());
        assert_eq!(log.segment_summaries(), original, "{which}: the old segments are in place");
        assert_sound(path);
        let records = read_all(&log);
        assert_records_match_model(&model, &records);
        assert_offsets(&records, &model.offsets(), which);
    }
}
