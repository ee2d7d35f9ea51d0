//! Reads: batches by offset up to the high watermark, and offsets by timestamp. Readers
//! take no lock; they work on the arc-swapped snapshot of the segment list. The one
//! exception, Raft's read past the high watermark, copies under the maintenance lock.

use std::{
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
};

use bytes::Bytes;

use super::Shared;
use crate::{
    BatchHeader, LogError, StoredRecord, flusher,
    format::{RecordDecoder, parse_header, records_section},
    segment::BatchWalker,
};

/// Batches returned by [`Log::read`](crate::Log::read).
#[derive(Clone, Debug)]
pub struct Fetch {
    /// Whole, CRC-checked batches in offset order. The first may start before the requested
    /// offset; [`Fetch::records`] skips those records.
    pub batches: Vec<Batch>,
    /// The high watermark when the read started.
    pub high_watermark: u64,
    /// The log start when the read started.
    pub log_start: u64,
}

impl Fetch {
    /// The records at or after `from`, decoded.
    pub fn records(&self, from: u64) -> Result<Vec<StoredRecord>, LogError> {
        let mut out = Vec::new();
        for batch in &self.batches {
            for record in batch.records()? {
                let record = record?;
                if record.offset >= from {
                    out.push(record);
                }
            }
        }
        Ok(out)
    }

    /// The offset after the last batch returned, or `None` if nothing was returned.
    pub fn next_offset(&self) -> Option<u64> {
        self.batches.last().map(|b| b.header.last_offset() + 1)
    }
}

/// One stored batch: its header and its bytes, shared with the mmap where uncompressed.
#[derive(Clone, Debug)]
pub struct Batch {
    header: BatchHeader,
    bytes: Bytes,
    path: Arc<PathBuf>,
    position: u64,
}

impl Batch {
    pub(crate) fn new(header: BatchHeader, bytes: Bytes, path: Arc<PathBuf>, position: u64) -> Self {
        Batch { header, bytes, path, position }
    }

    /// The batch header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The batch exactly as stored (header included), e.g. to replicate it.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Whether this is a control batch (Raft's blank and membership entries): it occupies one
    /// offset and holds no user record. [`Batch::control_payload`] reads what it carries.
    pub fn is_control(&self) -> bool {
        self.header.control
    }

    /// The payload of a control batch; `None` for a batch of user records.
    pub fn control_payload(&self) -> Result<Option<Bytes>, LogError> {
        if !self.header.control {
            return Ok(None);
        }
        let corrupt = |reason| LogError::Corrupt { path: self.path.to_path_buf(), position: self.position, reason };
        let section = records_section(&self.bytes, &self.header).map_err(corrupt)?;
        let mut decoder = RecordDecoder::new(section, self.header);
        match decoder.next() {
            Some(Ok(record)) => Ok(Some(record.value)),
            Some(Err(reason)) => Err(corrupt(reason)),
            None => Err(corrupt("a control batch holds no entry")),
        }
    }

    /// Decodes the user records. Keys and values are slices of the mmap when uncompressed.
    /// A control batch has none, so every reader that goes through here skips it, as Kafka's
    /// consumers skip control records.
    pub fn records(&self) -> Result<impl Iterator<Item = Result<StoredRecord, LogError>> + use<>, LogError> {
        let corrupt = |reason| LogError::Corrupt { path: self.path.to_path_buf(), position: self.position, reason };
        let (section, header) = match self.header.control {
            true => (Bytes::new(), BatchHeader { record_count: 0, ..self.header }),
            false => (records_section(&self.bytes, &self.header).map_err(corrupt)?, self.header),
        };
        let path = Arc::clone(&self.path);
        let position = self.position;
        Ok(RecordDecoder::new(section, header)
            .map(move |r| r.map_err(|reason| LogError::Corrupt { path: path.to_path_buf(), position, reason })))
    }
}

impl Shared {
    pub(super) fn read(&self, offset: u64, max_bytes: usize) -> Result<Fetch, LogError> {
        // The high watermark first: the writer stores a rolled segment's snapshot and the
        // visible lengths before it publishes the high watermark, so the snapshot loaded after
        // it holds every batch below it. Visible bytes may already reach past it.
        let high_watermark = self.high_watermark.load(Ordering::Acquire);
        let snapshot = self.snapshot.load();
        let log_end = self.log_end.load(Ordering::Acquire);
        let mut fetch = Fetch { batches: Vec::new(), high_watermark, log_start: snapshot.log_start };
        if offset < snapshot.log_start || offset > log_end {
            return Err(LogError::OffsetOutOfRange { requested: offset, log_start: snapshot.log_start, log_end });
        }
        if offset >= high_watermark {
            return Ok(fetch);
        }
        // The caller touches the pages of this fetch; the flusher will release them.
        flusher::mark(&self.read_since_release);
        let segments = &snapshot.segments;
        let first = segments.partition_point(|s| s.base_offset <= offset).saturating_sub(1);
        let mut total = 0usize;
        for segment in &segments[first..] {
            let visible = segment.visible();
            let start = segment.read_start(offset, &visible);
            if start > visible.len() {
                break;
            }
            let mut walker = BatchWalker::new(&visible, start, segment.base_offset);
            loop {
                // A batch that would not fit is not returned, so stop before the walker
                // CRC-checks it: with large batches that check costs as much as the fetch.
                if !fetch.batches.is_empty()
                    && let Ok(next) = parse_header(&visible[walker.position()..])
                    && total + next.batch_length as usize > max_bytes
                {
                    return Ok(fetch);
                }
                let Some(item) = walker.next() else { break };
                let (position, header) = item.map_err(|d| segment.corrupt(d.position, d.reason))?;
                if header.last_offset() < offset {
                    continue;
                }
                let len = header.batch_length as usize;
                // Published after this read loaded the high watermark: not part of this fetch.
                if header.last_offset() >= high_watermark || (!fetch.batches.is_empty() && total + len > max_bytes) {
                    return Ok(fetch);
                }
                total += len;
                fetch.batches.push(Batch {
                    header,
                    bytes: visible.slice(position..position + len),
                    path: Arc::clone(&segment.path),
                    position: position as u64,
                });
            }
            // A segment whose visible part ends before its written part is where the high
            // watermark lies; nothing after it is visible.
            if visible.len() as u64 != segment.state.written_len.load(Ordering::Acquire) || total >= max_bytes {
                break;
            }
        }
        Ok(fetch)
    }

    /// Whole batches from `offset` up to the log end, copied out of the mappings. Holds the
    /// maintenance lock, so no truncation cuts a file under the copy: past the high
    /// watermark, bytes may be cut, and a mapped page past the end of its file faults.
    pub(super) fn read_uncommitted(&self, offset: u64, max_bytes: usize) -> Result<Fetch, LogError> {
        let _maintenance = self.lock_maintenance();
        let high_watermark = self.high_watermark.load(Ordering::Acquire);
        let snapshot = self.snapshot.load();
        let log_end = self.log_end.load(Ordering::Acquire);
        let mut fetch = Fetch { batches: Vec::new(), high_watermark, log_start: snapshot.log_start };
        if offset < snapshot.log_start || offset > log_end {
            return Err(LogError::OffsetOutOfRange { requested: offset, log_start: snapshot.log_start, log_end });
        }
        flusher::mark(&self.read_since_release);
        let segments = &snapshot.segments;
        let first = segments.partition_point(|s| s.base_offset <= offset).saturating_sub(1);
        let mut total = 0usize;
        for segment in &segments[first..] {
            let written_len = segment.state.written_len.load(Ordering::Acquire) as usize;
            let written = segment.data.slice(..written_len.min(segment.data.len()));
            let start = segment.start_position(offset).min(written.len());
            for item in BatchWalker::new(&written, start, segment.base_offset) {
                let (position, header) = item.map_err(|d| segment.corrupt(d.position, d.reason))?;
                if header.last_offset() < offset {
                    continue;
                }
                let len = header.batch_length as usize;
                if header.last_offset() >= log_end || (!fetch.batches.is_empty() && total + len > max_bytes) {
                    return Ok(fetch);
                }
                total += len;
                let bytes = Bytes::copy_from_slice(&written[position..position + len]);
                fetch.batches.push(Batch { header, bytes, path: Arc::clone(&segment.path), position: position as u64 });
            }
            if total >= max_bytes {
                break;
            }
        }
        Ok(fetch)
    }

    pub(super) fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<u64>, LogError> {
        let snapshot = self.snapshot.load();
        for segment in &snapshot.segments {
            if segment.state.max_timestamp.load(Ordering::Acquire) < timestamp {
                continue;
            }
            let visible = segment.visible();
            let start = segment
                .index
                .search_start_for(timestamp)
                .filter(|e| segment.entry_is_sound(e))
                .map_or(0, |e| e.position as usize);
            for item in BatchWalker::new(&visible, start.min(visible.len()), segment.base_offset) {
                let (position, header) = item.map_err(|d| segment.corrupt(d.position, d.reason))?;
                if header.max_timestamp < timestamp {
                    continue;
                }
                let batch = Batch {
                    header,
                    bytes: visible.slice(position..position + header.batch_length as usize),
                    path: Arc::clone(&segment.path),
                    position: position as u64,
                };
                for record in batch.records()? {
                    let record = record?;
                    if record.timestamp >= timestamp && record.offset >= snapshot.log_start {
                        return Ok(Some(record.offset));
                    }
                }
            }
            if visible.len() as u64 != segment.state.written_len.load(Ordering::Acquire) {
                break;
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use crate::log::Log;
    use crate::{HighWatermarkMode, LogConfig, Record};

    fn append_one(log: &Log, i: u64) -> u64 {
        let value = vec![i as u8; 200];
        log.append(&[Record::new(1_700_000_000_000 + i as i64, value)], 1).unwrap().base_offset
    }

    /// Where a read of `offset` in the active segment starts walking, and where the batch
    /// holding `offset` is.
    fn starts(log: &Log, offset: u64) -> (usize, usize, u64) {
        let snapshot = log.shared.snapshot.load();
        let active = snapshot.segments.last().unwrap();
        let visible = active.visible();
        let indexed = active.start_position(offset);
        let start = active.read_start(offset, &visible);
        let fetch = log.read(offset, 1).unwrap();
        let batch = fetch.batches.first().map_or(u64::MAX, |b| b.position);
        (indexed, start, batch)
    }

    #[test]
    fn a_read_at_the_tail_starts_at_the_newest_visible_batch() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig { high_watermark: HighWatermarkMode::SetByCaller, ..LogConfig::default() };
        let log = Log::open(dir.path(), config).unwrap();
        for i in 0..40 {
            append_one(&log, i);
        }
        log.set_high_watermark(40).unwrap();
        // 40 batches of about 250 bytes span more than two index intervals.
        let (indexed, start, batch) = starts(&log, 39);
        assert!(indexed < start, "the index entry ({indexed}) lies before the tail batch ({start})");
        assert_eq!(start as u64, batch, "the read starts at the batch it returns");
        // Earlier offsets fall back to the index.
        let (indexed, start, _) = starts(&log, 38);
        assert_eq!(indexed, start);

        // Batches written but not yet visible do not move the start.
        for i in 40..45 {
            append_one(&log, i);
        }
        assert_eq!(starts(&log, 39).1 as u64, starts(&log, 39).2);
        log.set_high_watermark(43).unwrap();
        let (_, start, batch) = starts(&log, 42);
        assert_eq!(start as u64, batch);

        // Truncation forgets the tail batch; new batches at the cut set it again.
        log.truncate_after(42).unwrap();
        let (indexed, start, _) = starts(&log, 42);
        assert_eq!(indexed, start, "a truncated log starts from the index");
        let replaced = append_one(&log, 99);
        assert_eq!(replaced, 43);
        log.set_high_watermark(44).unwrap();
        let (_, start, batch) = starts(&log, 43);
        assert_eq!(start as u64, batch);
        let fetch = log.read(43, 1 << 20).unwrap();
        assert_eq!(fetch.records(43).unwrap()[0].value[0], 99);
    }
}
