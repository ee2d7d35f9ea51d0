//! What Raft needs of the log beyond appends at the end: a follower's append at a given
//! offset, the term of any offset, control batches (Raft's blank and membership entries),
//! the last purged entry, and a reset to a snapshot. One Raft entry is one offset.

use std::{
    fs,
    sync::{Arc, atomic::Ordering},
    time::Instant,
};

use bytes::Bytes;

use super::{
    AppendInfo, Fetch, Log, Shared, Snapshot,
    writer::{Entries, Placement},
};
use crate::{LogError, Record, error::IoContext, meta::sync_dir, tail::ReservedTail};

/// The steps of [`Log::reset_to`], in order, for crash-injection tests: a reset stopped
/// after any of them reopens as the reset log.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ResetStep {
    /// `partition.meta` holds the new start and the reset flag: the commit point.
    MetaWritten,
    /// Every segment file is deleted.
    SegmentsDeleted,
    /// The empty segment at the new start exists.
    SegmentCreated,
}

impl Log {
    /// A follower's append: `records` as one batch of `leader_term` whose first record takes
    /// `base_offset`, which must be the log end ([`LogError::NotAtLogEnd`] otherwise; cut a
    /// conflicting suffix first with [`Log::truncate_after`]). The term may not be below
    /// the last entry's ([`LogError::TermWentBack`]). Durability as for [`Log::append`].
    pub fn append_at(&self, base_offset: u64, leader_term: u64, records: &[Record]) -> Result<AppendInfo, LogError> {
        if records.is_empty() {
            return Err(LogError::EmptyBatch);
        }
        let mut writer = self.shared.lock_writer()?;
        let entries = Entries::Records(records);
        let appended =
            self.shared.append_locked(&mut writer, entries, leader_term, Placement::At(base_offset), true)?;
        Ok(appended.expect("an append that may roll always writes"))
    }

    /// Appends a control batch at the log end: one offset that holds no user record and
    /// carries `payload` (a Raft blank or membership entry). Every record read skips it
    /// ([`Batch::records`](crate::Batch::records) yields nothing for it);
    /// [`Batch::control_payload`](crate::Batch::control_payload) reads it back. Returns its
    /// offset.
    pub fn append_control(&self, leader_term: u64, payload: impl Into<Bytes>) -> Result<u64, LogError> {
        let mut writer = self.shared.lock_writer()?;
        let entries = Entries::Control(payload.into());
        let appended = self.shared.append_locked(&mut writer, entries, leader_term, Placement::LogEnd, true)?;
        Ok(appended.expect("an append that may roll always writes").base_offset)
    }

    /// A follower's [`Log::append_control`]: at `offset`, which must be the log end.
    pub fn append_control_at(&self, offset: u64, leader_term: u64, payload: impl Into<Bytes>) -> Result<(), LogError> {
        let mut writer = self.shared.lock_writer()?;
        let entries = Entries::Control(payload.into());
        self.shared.append_locked(&mut writer, entries, leader_term, Placement::At(offset), true)?;
        Ok(())
    }

    /// Reads whole batches from `offset` up to about `max_bytes` (at least one batch if
    /// any), up to the log end rather than the high watermark: the entries a Raft leader
    /// sends its followers before they commit. Control batches included. The bytes are
    /// copied out of the segment mappings, and the read waits for a truncation, retention or
    /// compaction swap in progress (and holds the next one off while it copies).
    pub fn read_uncommitted(&self, offset: u64, max_bytes: usize) -> Result<Fetch, LogError> {
        self.shared.read_uncommitted(offset, max_bytes)
    }

    /// The term of the entry at `offset`: for a stored offset (`log_start ≤ offset <
    /// log_end`, visible or not), and for the last purged one ([`Log::last_purged`]);
    /// `None` for any other. Answered from memory.
    ///
    /// Compaction may drop whole batches below `cleaned_up_to`; until the next open their
    /// offsets keep their term, after it they take the term of the batch before them.
    pub fn term_at(&self, offset: u64) -> Result<Option<u64>, LogError> {
        let last_purged = self.shared.lock_meta().last_purged;
        let terms = self.shared.lock_terms();
        // Read under the terms lock: truncation and reset change both under it.
        let log_start = self.shared.snapshot.load().log_start;
        let log_end = self.shared.log_end.load(Ordering::Acquire);
        if (log_start..log_end).contains(&offset) {
            return Ok(terms.term_at(offset));
        }
        Ok(last_purged.filter(|&(_, purged)| purged == offset).map(|(term, _)| term))
    }

    /// The term and offset of the last entry removed from the start of the log, by
    /// retention or by [`Log::reset_to`]; kept in `partition.meta`. `None` while nothing
    /// was (or on a partition written before format version 2 that retention has not
    /// touched since).
    pub fn last_purged(&self) -> Option<(u64, u64)> {
        self.shared.lock_meta().last_purged
    }

    /// Resets the partition to a snapshot that covers every offset below `offset`, the last
    /// of them of `term`: deletes every segment and starts empty at `offset`
    /// (`log_start = cleaned_up_to = high_watermark = log_end = offset`, last purged
    /// `(term, offset - 1)`). Refused below the high watermark, which readers may have seen.
    ///
    /// Crash-safe: `partition.meta`, written first with a reset flag, is the commit point; a
    /// crash before it reopens the old log, a crash after it reopens the reset one (open
    /// finishes the deletions). Readers holding batches of the old segments keep them.
    pub fn reset_to(&self, offset: u64, term: u64) -> Result<(), LogError> {
        self.shared.reset_to(offset, term, None)
    }

    /// [`Log::reset_to`], stopped after `step` as a crash would stop it: the log is left
    /// closed, its files as they are. For crash tests.
    #[doc(hidden)]
    pub fn reset_to_with_crash_at(&self, offset: u64, term: u64, step: ResetStep) -> Result<(), LogError> {
        self.shared.reset_to(offset, term, Some(step))
    }
}

impl Shared {
    fn reset_to(&self, offset: u64, term: u64, crash_at: Option<ResetStep>) -> Result<(), LogError> {
        let _maintenance = self.lock_maintenance();
        let mut w = self.lock_writer()?;
        self.check_sync_failure()?;
        if offset < self.high_watermark.load(Ordering::Acquire) {
            return Err(LogError::InvalidReset {
                partition: self.dir.clone(),
                offset,
                reason: "it is below the high watermark, which readers may already have seen",
            });
        }
        let crash = || {
            self.closed.store(true, Ordering::Release);
            self.lock.lock().unwrap_or_else(|p| p.into_inner()).take();
            Ok(())
        };
        {
            let mut meta = self.lock_meta();
            let mut reset = *meta;
            reset.log_start = offset;
            reset.cleaned_up_to = offset;
            reset.high_watermark = offset;
            reset.last_purged = offset.checked_sub(1).map(|last| (term, last));
            reset.reset_pending = true;
            reset.store(&self.dir)?;
            *meta = reset;
        }
        if crash_at == Some(ResetStep::MetaWritten) {
            return crash();
        }
        // Unlinked, not truncated: readers of older snapshots keep reading their mappings.
        let snapshot = self.snapshot.load_full();
        for segment in &snapshot.segments {
            for extension in ["log", "index", "timeindex"] {
                let path = self.segment_path(segment.base_offset, extension);
                if let Err(e) = fs::remove_file(&path)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    return Err(e).at(&path, "deleting a segment for a reset");
                }
            }
        }
        sync_dir(&self.dir)?;
        if crash_at == Some(ResetStep::SegmentsDeleted) {
            return crash();
        }
        let (segment, file) = self.create_segment(offset)?;
        sync_dir(&self.dir)?;
        if crash_at == Some(ResetStep::SegmentCreated) {
            return crash();
        }
        {
            let mut terms = self.lock_terms();
            terms.clear();
            self.snapshot.store(Arc::new(Snapshot { segments: vec![Arc::clone(&segment)], log_start: offset }));
            w.active = segment;
            w.file = Arc::new(file);
            w.tail = ReservedTail::new(0);
            w.active_len = 0;
            w.active_created = Instant::now();
            w.last_indexed_position = None;
            w.persisted_entries = 0;
            w.log_end = offset;
            w.last_batch = None;
            // As open will set it from `partition.meta`: a reset to offset 0 purged nothing.
            w.min_term = offset.checked_sub(1).map_or(0, |_| term);
            w.pending.clear();
            w.dirty = false;
            self.log_end.store(offset, Ordering::Release);
            self.synced.store(offset, Ordering::Release);
            self.cleaned_up_to.store(offset, Ordering::Release);
        }
        self.publish_high_watermark(offset);
        let mut meta = self.lock_meta();
        meta.reset_pending = false;
        meta.store(&self.dir)
    }
}
