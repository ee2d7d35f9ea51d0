//! The writer: encoding and writing batches at the log end, rolling segments, the index
//! files of the active segment, and publishing the high watermark.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    sync::{Arc, atomic::Ordering},
    time::Instant,
};

use bytes::Bytes;

use super::{AppendInfo, PendingBatch, Shared, Snapshot, Writer};
use crate::{
    BatchHeader, Compression, FlushPolicy, HighWatermarkMode, LogError, Record,
    error::IoContext,
    flusher,
    format::{MAX_BATCH_LEN, encode_batch, encode_control_batch},
    index::{IndexEntry, SegmentIndex, encode_offset_index, encode_time_index},
    segment::{BatchWalker, Mapping, Segment, SegmentState, map_file},
    tail::ReservedTail,
};

/// What one append writes as one batch.
pub(super) enum Entries<'a> {
    /// User records, one offset each.
    Records(&'a [Record]),
    /// A control batch: one offset, no user record (see `docs/format.md`).
    Control(Bytes),
}

/// Where an append must start.
#[derive(Clone, Copy)]
pub(super) enum Placement {
    /// Wherever the log ends (a leader, or a single node).
    LogEnd,
    /// At exactly this offset, which must be the log end (a Raft follower).
    At(u64),
}

impl Writer {
    /// The lowest term the next batch may carry: that of the last batch, or of the last
    /// entry purged before it (terms never go back along the offsets).
    pub(super) fn last_term(&self) -> u64 {
        self.last_batch.map_or(self.min_term, |(term, _)| term.max(self.min_term))
    }
}

impl Shared {
    /// Encodes and writes one batch. Without `may_roll`, a batch that would roll the segment
    /// first is not written: `Ok(None)`.
    pub(super) fn append_locked(
        &self,
        w: &mut Writer,
        entries: Entries<'_>,
        leader_term: u64,
        placement: Placement,
        may_roll: bool,
    ) -> Result<Option<AppendInfo>, LogError> {
        self.check_sync_failure()?;
        let base_offset = w.log_end;
        if let Placement::At(requested) = placement
            && requested != base_offset
        {
            return Err(LogError::NotAtLogEnd { partition: self.dir.clone(), requested, log_end: base_offset });
        }
        let last_term = w.last_term();
        if leader_term < last_term {
            return Err(LogError::TermWentBack {
                partition: self.dir.clone(),
                term: leader_term,
                offset: base_offset,
                last_term,
            });
        }
        let mut buf = std::mem::take(&mut w.buf);
        let mut scratch = std::mem::take(&mut w.scratch);
        let header = match entries {
            Entries::Records(records) => {
                encode_batch(&mut buf, &mut scratch, records, base_offset, leader_term, self.config.compression)
            }
            Entries::Control(payload) => {
                scratch.clear();
                // No time of its own (`i64::MIN`, as an empty segment): it never makes a segment
                // look younger to time-based retention or to compaction's lag.
                encode_control_batch(&mut buf, base_offset, leader_term, i64::MIN, payload)
            }
        };
        // Reads refuse a zstd frame that decodes to more than a batch may hold (format.rs).
        let uncompressed = if self.config.compression == Compression::Zstd { scratch.len() } else { 0 };
        w.scratch = scratch;
        let result = if uncompressed > MAX_BATCH_LEN {
            Err(LogError::BatchTooLarge { bytes: uncompressed, limit: MAX_BATCH_LEN })
        } else if !may_roll && self.roll_due(w, buf.len() as u64) {
            Ok(None)
        } else {
            self.write_batch(w, &buf, &header).map(Some)
        };
        match &result {
            Err(error) if error.is_disk_full() => {
                self.disk_full_needed.store(buf.len() as u64, Ordering::Release);
                self.disk_full.store(true, Ordering::Release);
            }
            Ok(Some(())) if self.disk_full.load(Ordering::Relaxed) => self.disk_full.store(false, Ordering::Release),
            _ => {}
        }
        // Keep the buffer for the next append unless one huge batch blew it up.
        if buf.capacity() <= 4 << 20 {
            w.buf = buf;
        }
        Ok(result?.map(|()| AppendInfo { base_offset, last_offset: header.last_offset() }))
    }

    /// Whether a batch of `len` bytes would roll the active segment first.
    pub(super) fn roll_due(&self, w: &Writer, len: u64) -> bool {
        let too_old = self.config.segment_ms.is_some_and(|ms| w.active_created.elapsed().as_millis() >= u128::from(ms));
        w.active_len > 0 && (w.active_len + len > self.config.segment_bytes || too_old)
    }

    pub(super) fn write_batch(&self, w: &mut Writer, bytes: &[u8], header: &BatchHeader) -> Result<(), LogError> {
        if bytes.len() > MAX_BATCH_LEN {
            return Err(LogError::BatchTooLarge { bytes: bytes.len(), limit: MAX_BATCH_LEN });
        }
        let len = bytes.len() as u64;
        if self.roll_due(w, len) {
            self.roll(w)?;
        }
        if w.active_len + len > w.active.data.len() as u64 {
            self.remap_active(w, w.active_len + len)?;
        }
        if w.active_len == 0 {
            w.active_created = Instant::now();
        }
        let position = w.active_len;
        let capacity = w.active.data.len() as u64;
        w.tail.write(&w.file, &w.active.path, bytes, position, capacity)?;
        let state = &w.active.state;
        let max_timestamp = state.max_timestamp.load(Ordering::Relaxed).max(header.max_timestamp);
        let due = w.last_indexed_position.is_none_or(|last| position - last >= self.config.index_interval_bytes);
        if due {
            let pushed = w.active.index.push(IndexEntry {
                relative_offset: (header.base_offset - w.active.base_offset) as u32,
                position: position as u32,
                max_timestamp,
            });
            if pushed {
                w.last_indexed_position = Some(position);
            }
        }
        let end = position + len;
        w.active_len = end;
        w.log_end = header.last_offset() + 1;
        if w.last_batch.is_none_or(|(term, _)| term != header.leader_term) {
            self.lock_terms().push(header.base_offset, header.leader_term);
        }
        w.last_batch = Some((header.leader_term, header.last_offset()));
        w.dirty = true;
        w.batches_written += 1;
        if self.flush_interval().is_some() {
            flusher::mark(&self.appended_since_flush);
        }
        state.max_timestamp.store(max_timestamp, Ordering::Relaxed);
        state.written_len.store(end, Ordering::Release);
        self.log_end.store(w.log_end, Ordering::Release);
        let relative_offset = (header.base_offset - w.active.base_offset) as u32;
        match self.config.high_watermark {
            HighWatermarkMode::FollowsLogEnd => {
                state.set_tail_batch(relative_offset, position as u32);
                state.visible_len.store(end, Ordering::Release);
                self.publish_high_watermark(w.log_end);
            }
            HighWatermarkMode::SetByCaller => w.pending.push_back(PendingBatch {
                last_offset: header.last_offset(),
                position: position as u32,
                relative_offset,
                end_position: end,
                state: Arc::clone(state),
            }),
        }
        Ok(())
    }

    pub(super) fn publish_high_watermark(&self, high_watermark: u64) {
        debug_assert!(
            high_watermark >= self.high_watermark.load(Ordering::Relaxed),
            "the high watermark never moves back"
        );
        debug_assert!(high_watermark <= self.log_end.load(Ordering::Relaxed), "high watermark past the log end");
        self.high_watermark.store(high_watermark, Ordering::Release);
        // Notifying costs a lock per shard of tokio's notifier on every append, so it is
        // skipped while nobody watches. A receiver that subscribes meanwhile still sees the
        // value: it counts itself before it reads under the lock taken here.
        self.high_watermark_watch.send_if_modified(|watched| {
            *watched = high_watermark;
            self.high_watermark_watch.receiver_count() > 0
        });
    }

    pub(super) fn set_high_watermark_locked(&self, w: &mut Writer, high_watermark: u64) -> Result<(), LogError> {
        let current = self.high_watermark.load(Ordering::Acquire);
        if high_watermark < current || high_watermark > w.log_end {
            return Err(LogError::InvalidHighWatermark { requested: high_watermark, current, log_end: w.log_end });
        }
        if self.config.high_watermark == HighWatermarkMode::FollowsLogEnd {
            return Ok(());
        }
        while w.pending.front().is_some_and(|p| p.last_offset < high_watermark) {
            let batch = w.pending.pop_front().expect("checked above");
            batch.state.set_tail_batch(batch.relative_offset, batch.position);
            batch.state.visible_len.store(batch.end_position, Ordering::Release);
        }
        self.publish_high_watermark(high_watermark);
        Ok(())
    }

    pub(super) fn remap_active(&self, w: &mut Writer, needed: u64) -> Result<(), LogError> {
        let capacity = needed.max(self.config.segment_bytes).max(w.active.data.len() as u64 * 2);
        let Mapping { data, mmap } = map_file(&w.file, &w.active.path, capacity)?;
        let remapped = Arc::new(Segment {
            base_offset: w.active.base_offset,
            path: Arc::clone(&w.active.path),
            data,
            mmap,
            state: Arc::clone(&w.active.state),
            index: Arc::clone(&w.active.index),
        });
        self.replace_active(w, remapped);
        Ok(())
    }

    pub(super) fn replace_active(&self, w: &mut Writer, segment: Arc<Segment>) {
        let snapshot = self.snapshot.load();
        let mut segments = snapshot.segments.clone();
        let last = segments.last_mut().expect("a log always has an active segment");
        debug_assert_eq!(last.base_offset, segment.base_offset);
        *last = Arc::clone(&segment);
        self.snapshot.store(Arc::new(Snapshot { segments, log_start: snapshot.log_start }));
        w.active = segment;
    }

    /// Seals the active segment (index files written whole, fsynced unless `Never`) and
    /// starts a new one at the log end.
    pub(super) fn roll(&self, w: &mut Writer) -> Result<(), LogError> {
        let durable = !matches!(self.config.flush, FlushPolicy::Never);
        w.cut_reserved()?;
        self.write_index_files(w, true, durable)?;
        if durable {
            self.sync_appended(&w.file, &w.active.path)?;
            w.dirty = false;
            self.synced.fetch_max(w.log_end, Ordering::AcqRel);
        }
        let base = w.log_end;
        let (segment, file) = self.create_segment(base)?;
        if durable {
            self.sync_dir_of_appends()?;
        }
        let snapshot = self.snapshot.load();
        let mut segments = snapshot.segments.clone();
        segments.push(Arc::clone(&segment));
        self.snapshot.store(Arc::new(Snapshot { segments, log_start: snapshot.log_start }));
        w.active = segment;
        w.file = Arc::new(file);
        w.tail = ReservedTail::new(0);
        w.active_len = 0;
        w.active_created = Instant::now();
        w.last_indexed_position = None;
        w.persisted_entries = 0;
        Ok(())
    }

    pub(super) fn create_segment(&self, base: u64) -> Result<(Arc<Segment>, File), LogError> {
        let path = self.segment_path(base, "log");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .at(&path, "creating a segment")?;
        for extension in ["index", "timeindex"] {
            let index_path = self.segment_path(base, extension);
            File::create(&index_path).at(&index_path, "creating an index")?;
        }
        let Mapping { data, mmap } = map_file(&file, &path, self.config.segment_bytes)?;
        let segment = Arc::new(Segment {
            base_offset: base,
            path: Arc::new(path),
            data,
            mmap,
            state: Arc::new(SegmentState::new(0, 0, i64::MIN)),
            index: Arc::new(SegmentIndex::with_capacity(self.config.index_capacity())),
        });
        Ok((segment, file))
    }

    /// Writes the active segment's index entries to its files: whole (with the final time
    /// entry) when sealing, or only the entries not yet persisted.
    pub(super) fn write_index_files(&self, w: &mut Writer, seal: bool, durable: bool) -> Result<(), LogError> {
        let entries = w.active.index.entries();
        let base = w.active.base_offset;
        let (index_path, time_path) = (self.segment_path(base, "index"), self.segment_path(base, "timeindex"));
        if seal {
            let final_entry = w.last_batch.filter(|_| w.active_len > 0).map(|(_, last_offset)| {
                let last_base = self.last_batch_base(w).unwrap_or(last_offset);
                (w.active.state.max_timestamp.load(Ordering::Relaxed), (last_base - base) as u32)
            });
            for (path, bytes) in
                [(&index_path, encode_offset_index(&entries)), (&time_path, encode_time_index(&entries, final_entry))]
            {
                let mut file = File::create(path).at(path, "writing an index")?;
                file.write_all(&bytes).at(path, "writing an index")?;
                if durable {
                    file.sync_data().at(path, "syncing an index")?;
                }
            }
        } else if w.persisted_entries < entries.len() {
            let new = &entries[w.persisted_entries..];
            for (path, bytes) in [(&index_path, encode_offset_index(new)), (&time_path, encode_time_index(new, None))] {
                let mut file = OpenOptions::new().append(true).open(path).at(path, "appending to an index")?;
                file.write_all(&bytes).at(path, "appending to an index")?;
            }
        }
        w.persisted_entries = entries.len();
        Ok(())
    }

    /// Base offset of the active segment's last batch.
    pub(super) fn last_batch_base(&self, w: &Writer) -> Option<u64> {
        let data = &w.active.data[..w.active_len as usize];
        let start = w.active.index.floor_offset(u64::MAX).map(|e| e.position as usize).unwrap_or(0);
        BatchWalker::new(data, start, w.active.base_offset).filter_map(Result::ok).last().map(|(_, h)| h.base_offset)
    }
}
