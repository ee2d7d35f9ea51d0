//! Removing records from either end: retention deletes whole segments at the start,
//! truncation (Raft conflict resolution) cuts the tail.

use std::{
    fs::{self, OpenOptions},
    sync::{Arc, atomic::Ordering},
};

use super::recovery::last_batch_of;
use super::{Shared, Snapshot, Writer};
use crate::{
    LogError,
    error::IoContext,
    index::{IndexEntry, SegmentIndex, encode_offset_index, encode_time_index},
    meta::sync_dir,
    retention::RetentionPlan,
    segment::{BatchWalker, Mapping, Segment, map_file, rebuild_from},
    tail::ReservedTail,
};

/// Segments and retention totals deleted by [`Log::apply_retention`](crate::Log::apply_retention).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    /// Segments deleted.
    pub segments_deleted: u64,
    /// Bytes of `.log` files deleted.
    pub bytes_deleted: u64,
}

impl Shared {
    /// Records that retention or compaction would remove entries below `offset` once the
    /// maintenance limit allows it.
    pub(crate) fn want_maintenance_up_to(&self, offset: u64) {
        self.maintenance_wanted.send_if_modified(|wanted| {
            let raise = offset > *wanted;
            if raise {
                *wanted = offset;
            }
            raise
        });
    }

    pub(super) fn apply_retention(&self, plan: &RetentionPlan) -> Result<RetentionOutcome, LogError> {
        let _maintenance = self.lock_maintenance();
        let (removed, new_log_start, high_watermark, last_purged) = {
            // Only the snapshot swap happens under the writer lock.
            let _writer = self.lock_writer()?;
            let snapshot = self.snapshot.load();
            let high_watermark = self.high_watermark.load(Ordering::Acquire);
            let segments = &snapshot.segments;
            let limit = self.maintenance_limit.load(Ordering::Acquire);
            let mut keep_from = 0;
            for planned in &plan.delete {
                let (Some(segment), Some(next)) = (segments.get(keep_from), segments.get(keep_from + 1)) else { break };
                if segment.base_offset != planned.base_offset || next.base_offset > high_watermark {
                    break;
                }
                if next.base_offset > limit {
                    // Raft may still send these entries: ask for the limit to move first.
                    self.want_maintenance_up_to(next.base_offset);
                    break;
                }
                keep_from += 1;
            }
            if keep_from == 0 {
                return Ok(RetentionOutcome::default());
            }
            let new_log_start = segments[keep_from].base_offset;
            debug_assert!(new_log_start <= high_watermark, "retention past the high watermark");
            let last_purged = {
                let mut terms = self.lock_terms();
                // Segments are contiguous, so the last purged offset is the one before the
                // first kept segment.
                let last_purged = terms.term_at(new_log_start - 1).map(|term| (term, new_log_start - 1));
                self.snapshot
                    .store(Arc::new(Snapshot { segments: segments[keep_from..].to_vec(), log_start: new_log_start }));
                terms.purge_before(new_log_start);
                last_purged
            };
            self.cleaned_up_to.fetch_max(new_log_start, Ordering::AcqRel);
            (segments[..keep_from].to_vec(), new_log_start, high_watermark, last_purged)
        };
        {
            let mut meta = self.lock_meta();
            meta.log_start = new_log_start;
            meta.cleaned_up_to = meta.cleaned_up_to.max(new_log_start);
            meta.high_watermark = meta.high_watermark.max(high_watermark);
            if last_purged.is_some() {
                meta.last_purged = last_purged;
            }
            // Record the new start before unlinking: recovery deletes segments below it.
            meta.store(&self.dir)?;
        }
        let mut outcome = RetentionOutcome::default();
        for segment in &removed {
            outcome.segments_deleted += 1;
            outcome.bytes_deleted += segment.state.written_len.load(Ordering::Acquire);
            for extension in ["log", "index", "timeindex"] {
                let path = self.segment_path(segment.base_offset, extension);
                if let Err(e) = fs::remove_file(&path)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    return Err(e).at(&path, "deleting a segment");
                }
            }
        }
        Ok(outcome)
    }

    pub(super) fn truncate_after_locked(&self, w: &mut Writer, offset: u64) -> Result<(), LogError> {
        let cut_offset =
            offset.checked_add(1).ok_or(LogError::InvalidTruncation { offset, reason: "offset overflows" })?;
        if cut_offset >= w.log_end {
            return Ok(());
        }
        if cut_offset < self.high_watermark.load(Ordering::Acquire) {
            return Err(LogError::InvalidTruncation { offset, reason: "it is below the high watermark" });
        }
        let snapshot = self.snapshot.load();
        let keep_count = snapshot.segments.partition_point(|s| s.base_offset <= cut_offset);
        let target = Arc::clone(&snapshot.segments[keep_count - 1]);
        let written = &target.data[..target.state.written_len.load(Ordering::Acquire) as usize];
        // Find the first batch past `offset`; refuse to cut through a batch.
        let start = target.start_position(offset);
        let mut cut_position = written.len();
        for item in BatchWalker::new(written, start, target.base_offset) {
            let (position, header) = item.map_err(|d| target.corrupt(d.position, d.reason))?;
            if header.base_offset > offset {
                cut_position = position;
                break;
            }
            if header.last_offset() > offset {
                return Err(LogError::InvalidTruncation { offset, reason: "it is inside a batch" });
            }
        }
        let entries: Vec<IndexEntry> =
            target.index.entries().into_iter().filter(|e| (e.position as usize) < cut_position).collect();
        let rebuilt = rebuild_from(
            &written[..cut_position],
            target.base_offset,
            self.config.index_interval_bytes,
            entries.last().copied(),
        );
        // Drop the later segments from the snapshot first, then from disk.
        let path = Arc::clone(&target.path);
        let file =
            OpenOptions::new().read(true).write(true).open(path.as_path()).at(&path, "opening for truncation")?;
        file.set_len(cut_position as u64).at(&path, "truncating")?;
        self.sync_appended(&file, &path)?;
        let Mapping { data, mmap } = map_file(&file, &path, self.config.segment_bytes.max(cut_position as u64))?;
        // Keep the segment's shared counters: batches waiting for the high watermark point at
        // them. Lowering them first is safe for readers of older snapshots, since nothing
        // visible lies past the cut.
        let state = Arc::clone(&target.state);
        state.clear_tail_batch();
        let visible = state.visible_len.load(Ordering::Acquire).min(cut_position as u64);
        state.visible_len.store(visible, Ordering::Release);
        state.written_len.store(cut_position as u64, Ordering::Release);
        state.max_timestamp.store(rebuilt.max_timestamp, Ordering::Release);
        let segment = Arc::new(Segment {
            base_offset: target.base_offset,
            path,
            data,
            mmap,
            state,
            index: Arc::new(SegmentIndex::from_entries(&entries, self.config.index_capacity())),
        });
        let removed: Vec<u64> = snapshot.segments[keep_count..].iter().map(|s| s.base_offset).collect();
        let mut segments = snapshot.segments[..keep_count].to_vec();
        *segments.last_mut().expect("kept at least the target") = Arc::clone(&segment);
        self.snapshot.store(Arc::new(Snapshot { segments, log_start: snapshot.log_start }));
        for base in removed {
            for extension in ["log", "index", "timeindex"] {
                let path = self.segment_path(base, extension);
                let _ = fs::remove_file(&path);
            }
        }
        w.active = segment;
        w.file = Arc::new(file);
        w.tail = ReservedTail::new(cut_position as u64);
        w.active_len = cut_position as u64;
        w.last_indexed_position = entries.last().map(|e| u64::from(e.position));
        w.persisted_entries = 0;
        w.log_end = cut_offset;
        w.pending.retain(|p| p.last_offset <= offset);
        // The term of the last record kept: in this segment, or in the one before it.
        w.last_batch = match rebuilt.last_batch {
            Some(h) => Some((h.leader_term, h.last_offset())),
            None => last_batch_of(&self.snapshot.load().segments),
        };
        let mut index_files_rewritten = Ok(());
        for (extension, bytes) in
            [("index", encode_offset_index(&entries)), ("timeindex", encode_time_index(&entries, None))]
        {
            let path = self.segment_path(target.base_offset, extension);
            if let Err(e) = fs::write(&path, bytes) {
                index_files_rewritten = Err(e).at(&path, "rewriting an index");
            }
        }
        w.persisted_entries = entries.len();
        {
            // Under the terms lock, so `term_at` never answers for an offset being cut.
            let mut terms = self.lock_terms();
            terms.truncate_from(cut_offset);
            self.log_end.store(cut_offset, Ordering::Release);
        }
        self.synced.fetch_min(cut_offset, Ordering::AcqRel);
        sync_dir(&self.dir)?;
        index_files_rewritten
    }
}
