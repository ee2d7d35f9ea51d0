//! One cleaning pass over a partition, Kafka's log-cleaner semantics.
//!
//! Planning is pure (`plan_cleaning`, `group_for_rewrite`): it looks at segment summaries and
//! returns decisions. The pass around it reads batches, builds the bounded key map, decides
//! per record, and hands the survivors to the log's crash-safe segment rewrite.

use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_log::{Log, SealedSegment, StoredRecord};

use crate::{CompactionConfig, CompactionError, offset_map::OffsetMap, throttle::Throttle};

/// What the planner needs of one sealed segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentFacts {
    /// Base offset.
    pub base_offset: u64,
    /// The next segment's base offset.
    pub next_offset: u64,
    /// File size.
    pub size_bytes: u64,
    /// Newest record timestamp; `i64::MIN` when empty.
    pub max_timestamp: i64,
}

impl From<&SealedSegment> for SegmentFacts {
    fn from(s: &SealedSegment) -> Self {
        SegmentFacts {
            base_offset: s.base_offset(),
            next_offset: s.next_offset(),
            size_bytes: s.size_bytes(),
            max_timestamp: s.max_timestamp(),
        }
    }
}

/// The planner's decision for a partition.
#[derive(Clone, Debug, PartialEq)]
pub enum CleaningDecision {
    /// Nothing is old enough to clean, or nothing is dirty.
    NothingToClean,
    /// Dirty, but under `min_cleanable_dirty_ratio` and not forced by `max_compaction_lag_ms`.
    NotDirtyEnough {
        /// Dirty bytes / cleanable bytes.
        dirty_ratio: f64,
    },
    /// Clean the first `cleanable` sealed segments, mapping keys from `dirty_start`.
    Clean {
        /// How many sealed segments (a prefix) may be rewritten.
        cleanable: usize,
        /// Dirty bytes / cleanable bytes.
        dirty_ratio: f64,
        /// Whether `max_compaction_lag_ms` forced the pass.
        forced: bool,
    },
}

/// Decides whether to clean. Only a prefix of sealed segments whose newest record is older than
/// `min_compaction_lag_ms` is cleanable; the active segment is never among sealed segments.
pub fn plan_cleaning(
    segments: &[SegmentFacts],
    cleaned_up_to: u64,
    now_ms: i64,
    config: &CompactionConfig,
) -> CleaningDecision {
    let cleanable = cleanable_count(segments, now_ms, config);
    let segments = &segments[..cleanable];
    let first_dirty = segments.partition_point(|s| s.next_offset <= cleaned_up_to);
    let total: u64 = segments.iter().map(|s| s.size_bytes).sum();
    let dirty: u64 = segments[first_dirty..].iter().map(|s| s.size_bytes).sum();
    if dirty == 0 || total == 0 {
        return CleaningDecision::NothingToClean;
    }
    let dirty_ratio = dirty as f64 / total as f64;
    let forced = config.max_compaction_lag_ms.is_some_and(|max| {
        let oldest_dirty = segments[first_dirty].max_timestamp;
        oldest_dirty != i64::MIN && now_ms.saturating_sub(oldest_dirty) >= max as i64
    });
    if dirty_ratio < config.min_cleanable_dirty_ratio && !forced {
        return CleaningDecision::NotDirtyEnough { dirty_ratio };
    }
    CleaningDecision::Clean { cleanable, dirty_ratio, forced }
}

/// How many sealed segments, from the oldest, have only records older than the lag.
fn cleanable_count(segments: &[SegmentFacts], now_ms: i64, config: &CompactionConfig) -> usize {
    let old_enough = |s: &SegmentFacts| {
        s.max_timestamp == i64::MIN || now_ms.saturating_sub(s.max_timestamp) >= config.min_compaction_lag_ms as i64
    };
    segments.iter().take_while(|s| old_enough(s)).count()
}

/// What becomes of one record in a pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It stays.
    Keep,
    /// A newer record has its key.
    Superseded,
    /// A tombstone older than `delete_retention_ms`, with no older value left to resurrect.
    TombstoneExpired,
}

/// Decides one keyed record. `mapped_latest` is the offset map's entry for its key. A tombstone
/// may go only when no older record of its key survives the pass: when it is the mapped latest
/// itself, or when its key is unmapped and it lies in the already-clean range (which holds at
/// most one record per key). Beyond the map's end an older value may survive, so it stays.
pub fn decide(
    offset: u64,
    is_tombstone: bool,
    timestamp: i64,
    mapped_latest: Option<u64>,
    dirty_start: u64,
    horizon: i64,
) -> Verdict {
    if mapped_latest.is_some_and(|latest| offset < latest) {
        return Verdict::Superseded;
    }
    let nothing_older_survives = mapped_latest == Some(offset) || (mapped_latest.is_none() && offset < dirty_start);
    if is_tombstone && timestamp < horizon && nothing_older_survives {
        return Verdict::TombstoneExpired;
    }
    Verdict::Keep
}

/// Splits segments into runs to merge into one output each: consecutive segments whose sizes
/// add up to at most `segment_bytes` (a run holds at least one), and whose offsets fit the
/// 32-bit relative offsets of one segment. Returns the runs as index ranges.
pub fn group_for_rewrite(segments: &[SegmentFacts], segment_bytes: u64) -> Vec<std::ops::Range<usize>> {
    let mut groups = Vec::new();
    let mut start = 0;
    let mut size = 0u64;
    for (i, segment) in segments.iter().enumerate() {
        let span = segment.next_offset - segments[start].base_offset;
        if i > start && (size + segment.size_bytes > segment_bytes || span > u64::from(u32::MAX)) {
            groups.push(start..i);
            start = i;
            size = 0;
        }
        size += segment.size_bytes;
    }
    if start < segments.len() {
        groups.push(start..segments.len());
    }
    groups
}

/// The key a record is compacted by: the configured header, else the topic header, else the
/// record key. `None`: the record has no key and is always kept.
pub fn compaction_key<'r>(record: &'r StoredRecord, config: &CompactionConfig) -> Option<&'r Bytes> {
    let header = |name: &Bytes| record.headers.iter().find(|h| h.name == *name).map(|h| &h.value);
    config.key_header.as_ref().and_then(header).or_else(|| header(&config.topic_header)).or(record.key.as_ref())
}

/// What one call of [`clean_partition`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CleanOutcome {
    /// Passes run (more than one when the keys did not fit the offset map at once).
    pub passes: u32,
    /// Bytes read (building the map, rewriting, and merging small outputs).
    pub bytes_read: u64,
    /// Bytes of the segments rewritten.
    pub bytes_before: u64,
    /// Bytes of their replacements.
    pub bytes_after: u64,
    /// Segments rewritten, and written in their place.
    pub segments_before: u64,
    /// Segments written.
    pub segments_after: u64,
    /// Records dropped because a newer record has their key.
    pub records_superseded: u64,
    /// Tombstones dropped because they outlived `delete_retention_ms`.
    pub tombstones_dropped: u64,
    /// The partition's `cleaned_up_to` afterwards.
    pub cleaned_up_to: u64,
    /// Wall time of the call.
    pub duration: Duration,
    /// What the planner said before the first pass.
    pub decision: Option<CleaningDecision>,
}

impl CleanOutcome {
    /// Bytes the call freed on disk.
    pub fn bytes_freed(&self) -> u64 {
        self.bytes_before.saturating_sub(self.bytes_after)
    }
}

/// Cleans `log` until its cleanable dirty range is clean (one pass per offset-map load).
/// `progress` is told the bytes read so far.
pub fn clean_partition(
    log: &Log,
    config: &CompactionConfig,
    now_ms: i64,
    throttle: &Throttle,
    progress: &mut dyn FnMut(u64),
) -> Result<CleanOutcome, CompactionError> {
    config.validate()?;
    let started = Instant::now();
    let mut outcome = CleanOutcome::default();
    loop {
        let sealed = log.sealed_segments();
        let facts: Vec<SegmentFacts> = sealed.iter().map(SegmentFacts::from).collect();
        let cleaned_up_to = log.offsets().cleaned_up_to;
        let decision = plan_cleaning(&facts, cleaned_up_to, now_ms, config);
        let first_pass = outcome.decision.is_none();
        if first_pass {
            outcome.decision = Some(decision.clone());
        }
        let cleanable = match decision {
            CleaningDecision::Clean { cleanable, .. } => cleanable,
            // A later pass finishes what the first one started, whatever the ratio is now.
            CleaningDecision::NotDirtyEnough { .. } if !first_pass => cleanable_count(&facts, now_ms, config),
            _ => break,
        };
        let cleanable = &sealed[..cleanable];
        let (map, map_end) = build_offset_map(cleanable, cleaned_up_to, config, throttle, &mut outcome, progress)?;
        let rewrite_count = cleanable.partition_point(|s| s.base_offset() < map_end);
        let pass = Pass { map: &map, dirty_start: cleaned_up_to, config, now_ms, throttle };
        pass.rewrite(log, &cleanable[..rewrite_count], &mut outcome, progress)?;
        log.set_cleaned_up_to(map_end)?;
        outcome.passes += 1;
        outcome.cleaned_up_to = log.offsets().cleaned_up_to;
        let cleanable_end = cleanable.last().map_or(0, SealedSegment::next_offset);
        if map_end >= cleanable_end {
            break;
        }
    }
    outcome.cleaned_up_to = log.offsets().cleaned_up_to;
    outcome.duration = started.elapsed();
    Ok(outcome)
}

/// Maps key → latest offset from `dirty_start` on, until the map is full. Returns the map and
/// the offset it covers up to (exclusive).
fn build_offset_map(
    cleanable: &[SealedSegment],
    dirty_start: u64,
    config: &CompactionConfig,
    throttle: &Throttle,
    outcome: &mut CleanOutcome,
    progress: &mut dyn FnMut(u64),
) -> Result<(OffsetMap, u64), CompactionError> {
    let mut map = OffsetMap::new(config.offset_map_bytes);
    let mut map_end = dirty_start;
    for segment in cleanable.iter().filter(|s| s.next_offset() > dirty_start) {
        for batch in segment.batches() {
            let batch = batch?;
            if batch.header().last_offset() < dirty_start {
                continue;
            }
            let len = u64::from(batch.header().batch_length);
            throttle.consume(len);
            outcome.bytes_read += len;
            progress(outcome.bytes_read);
            for record in batch.records()? {
                let record = record?;
                if record.offset < dirty_start {
                    continue;
                }
                if let Some(key) = compaction_key(&record, config)
                    && !map.insert(key, record.offset)
                {
                    if map.len() == 0 {
                        return Err(CompactionError::OffsetMapTooSmall { budget: config.offset_map_bytes });
                    }
                    return Ok((map, record.offset));
                }
                map_end = record.offset + 1;
            }
        }
        map_end = map_end.max(segment.next_offset());
    }
    Ok((map, map_end))
}

/// The fixed inputs of one rewrite.
struct Pass<'a> {
    map: &'a OffsetMap,
    dirty_start: u64,
    config: &'a CompactionConfig,
    now_ms: i64,
    throttle: &'a Throttle,
}

impl Pass<'_> {
    fn rewrite(
        &self,
        log: &Log,
        segments: &[SealedSegment],
        outcome: &mut CleanOutcome,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), CompactionError> {
        if segments.is_empty() {
            return Ok(());
        }
        let facts: Vec<SegmentFacts> = segments.iter().map(SegmentFacts::from).collect();
        let horizon = self.now_ms.saturating_sub(self.config.delete_retention_ms as i64);
        let mut rewrite = log.rewrite();
        let mut survivors = Vec::new();
        for group in group_for_rewrite(&facts, self.config.segment_bytes) {
            rewrite.start_segment(&segments[group.clone()])?;
            for segment in &segments[group] {
                for batch in segment.batches() {
                    let batch = batch?;
                    let len = u64::from(batch.header().batch_length);
                    self.throttle.consume(len);
                    outcome.bytes_read += len;
                    progress(outcome.bytes_read);
                    survivors.clear();
                    for record in batch.records()? {
                        let record = record?;
                        let verdict = match compaction_key(&record, self.config) {
                            None => Verdict::Keep,
                            Some(key) => decide(
                                record.offset,
                                record.value.is_empty(),
                                record.timestamp,
                                self.map.get(key),
                                self.dirty_start,
                                horizon,
                            ),
                        };
                        match verdict {
                            Verdict::Keep => survivors.push(record),
                            Verdict::Superseded => outcome.records_superseded += 1,
                            Verdict::TombstoneExpired => outcome.tombstones_dropped += 1,
                        }
                    }
                    rewrite.write_batch(&batch, &survivors)?;
                }
            }
        }
        let swapped = rewrite.commit()?;
        outcome.bytes_before += swapped.bytes_before;
        outcome.bytes_after += swapped.bytes_after;
        outcome.segments_before += swapped.segments_before;
        outcome.segments_after += swapped.segments_after;
        let replaced = facts[0].base_offset..facts[facts.len() - 1].next_offset;
        self.merge_outputs(log, replaced, outcome, progress)
    }

    /// Merges the outputs that replaced the offsets `replaced` into as few segments as
    /// `segment_bytes` allows. The rewrite grouped its inputs by their own sizes, before it
    /// knew how much of them survives: a pass that drops most records leaves many small
    /// segments, each with its own index files. The outputs are clean (every record stays),
    /// so their batches are copied as they are.
    fn merge_outputs(
        &self,
        log: &Log,
        replaced: std::ops::Range<u64>,
        outcome: &mut CleanOutcome,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), CompactionError> {
        let outputs: Vec<SealedSegment> = log
            .sealed_segments()
            .into_iter()
            .filter(|s| replaced.start <= s.base_offset() && s.next_offset() <= replaced.end)
            .collect();
        let facts: Vec<SegmentFacts> = outputs.iter().map(SegmentFacts::from).collect();
        let groups = group_for_rewrite(&facts, self.config.segment_bytes);
        if groups.iter().all(|group| group.len() == 1) {
            return Ok(());
        }
        let mut rewrite = log.rewrite();
        // A segment alone in its group stays as it is.
        for group in groups.into_iter().filter(|group| group.len() > 1) {
            rewrite.start_segment(&outputs[group.clone()])?;
            for segment in &outputs[group] {
                for batch in segment.batches() {
                    let batch = batch?;
                    let len = u64::from(batch.header().batch_length);
                    self.throttle.consume(len);
                    outcome.bytes_read += len;
                    progress(outcome.bytes_read);
                    rewrite.copy_batch(&batch)?;
                }
            }
        }
        let merged = rewrite.commit()?;
        // The merged segments were counted among this call's outputs; they are replaced.
        outcome.bytes_after = outcome.bytes_after.saturating_sub(merged.bytes_before) + merged.bytes_after;
        outcome.segments_after = outcome.segments_after.saturating_sub(merged.segments_before) + merged.segments_after;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(sizes: &[u64], timestamps: &[i64]) -> Vec<SegmentFacts> {
        sizes
            .iter()
            .zip(timestamps)
            .enumerate()
            .map(|(i, (&size, &ts))| SegmentFacts {
                base_offset: i as u64 * 10,
                next_offset: (i as u64 + 1) * 10,
                size_bytes: size,
                max_timestamp: ts,
            })
            .collect()
    }

    #[test]
    fn only_segments_older_than_the_lag_are_cleanable() {
        let config =
            CompactionConfig { min_compaction_lag_ms: 100, min_cleanable_dirty_ratio: 0.0, ..Default::default() };
        let segments = facts(&[10, 10, 10], &[0, 50, 0]);
        match plan_cleaning(&segments, 0, 120, &config) {
            CleaningDecision::Clean { cleanable, .. } => {
                assert_eq!(cleanable, 1, "segment 1 is too young, so 2 waits too")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(plan_cleaning(&segments, 0, 90, &config), CleaningDecision::NothingToClean);
    }

    #[test]
    fn dirty_ratio_gates_and_max_lag_forces() {
        let config = CompactionConfig { min_cleanable_dirty_ratio: 0.5, ..Default::default() };
        let segments = facts(&[60, 30, 10], &[0, 0, 0]);
        // Clean up to offset 20: 10 dirty bytes of 100.
        assert_eq!(plan_cleaning(&segments, 20, 1000, &config), CleaningDecision::NotDirtyEnough { dirty_ratio: 0.1 });
        let forced = CompactionConfig { max_compaction_lag_ms: Some(500), ..config.clone() };
        assert!(matches!(plan_cleaning(&segments, 20, 1000, &forced), CleaningDecision::Clean { forced: true, .. }));
        assert!(matches!(plan_cleaning(&segments, 10, 1000, &config), CleaningDecision::NotDirtyEnough { .. }));
        assert!(matches!(plan_cleaning(&segments, 0, 1000, &config), CleaningDecision::Clean { forced: false, .. }));
        assert_eq!(plan_cleaning(&segments, 30, 1000, &config), CleaningDecision::NothingToClean);
    }

    #[test]
    fn tombstones_go_only_when_nothing_older_can_resurface() {
        // Superseded, whatever it is.
        assert_eq!(decide(5, false, 0, Some(9), 0, 100), Verdict::Superseded);
        assert_eq!(decide(5, true, 0, Some(9), 0, 100), Verdict::Superseded);
        // The mapped latest tombstone goes once past the horizon.
        assert_eq!(decide(9, true, 50, Some(9), 0, 100), Verdict::TombstoneExpired);
        assert_eq!(decide(9, true, 150, Some(9), 0, 100), Verdict::Keep);
        // A clean-range tombstone with no newer record goes too.
        assert_eq!(decide(3, true, 50, None, 8, 100), Verdict::TombstoneExpired);
        // Beyond the map an older value may survive, so the tombstone stays.
        assert_eq!(decide(20, true, 50, None, 8, 100), Verdict::Keep);
        assert_eq!(decide(20, true, 50, Some(12), 8, 100), Verdict::Keep);
        assert_eq!(decide(9, false, 0, Some(9), 0, 100), Verdict::Keep);
    }

    #[test]
    fn groups_merge_small_segments_up_to_the_segment_size() {
        let segments = facts(&[40, 40, 40, 100, 10, 10], &[0; 6]);
        assert_eq!(group_for_rewrite(&segments, 100), vec![0..2, 2..3, 3..4, 4..6]);
        assert_eq!(group_for_rewrite(&segments[..1], 10), vec![0..1], "an oversized segment is its own group");
        assert!(group_for_rewrite(&[], 100).is_empty());
    }

    #[test]
    fn the_key_comes_from_the_header_then_the_topic_then_the_record_key() {
        let config = CompactionConfig { key_header: Some(Bytes::from_static(b"entity_id")), ..Default::default() };
        let mut record = StoredRecord {
            offset: 0,
            timestamp: 0,
            key: Some(Bytes::from_static(b"rk")),
            value: Bytes::new(),
            headers: vec![],
        };
        assert_eq!(compaction_key(&record, &config).map(|k| &k[..]), Some(&b"rk"[..]));
        record
            .headers
            .push(strata_log::Header { name: Bytes::from_static(b"mqtt.topic"), value: Bytes::from_static(b"a/b") });
        assert_eq!(compaction_key(&record, &config).map(|k| &k[..]), Some(&b"a/b"[..]));
        record
            .headers
            .push(strata_log::Header { name: Bytes::from_static(b"entity_id"), value: Bytes::from_static(b"42") });
        assert_eq!(compaction_key(&record, &config).map(|k| &k[..]), Some(&b"42"[..]));
        record.key = None;
        record.headers.clear();
        assert_eq!(compaction_key(&record, &config), None);
    }
}
