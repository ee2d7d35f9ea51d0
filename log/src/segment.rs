//! One segment: its file, its mmap, its in-memory index, and the batch walker that recovery,
//! index rebuilds, reads and `verify` share.

use std::{
    fs::File,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
};

use bytes::Bytes;
use memmap2::{Mmap, MmapOptions, UncheckedAdvice};

use crate::{
    LogError,
    error::IoContext,
    format::{BatchDefect, BatchHeader, check_batch, parse_header},
    index::{IndexEntry, SegmentIndex},
};

/// `<base offset, 20 digits>.<extension>`.
pub(crate) fn segment_file_name(base_offset: u64, extension: &str) -> String {
    format!("{base_offset:020}.{extension}")
}

/// Parses a segment file name back into its base offset.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A file mapping: the bytes readers slice, and the mapping itself so that its pages can be
/// released (see [`Segment::release_pages`]). `mmap` is `None` for an empty mapping.
pub(crate) struct Mapping {
    pub data: Bytes,
    pub mmap: Option<Arc<Mmap>>,
}

/// Lets `Bytes` slices share one `Arc<Mmap>` with the segment.
struct SharedMmap(Arc<Mmap>);

impl AsRef<[u8]> for SharedMmap {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Maps `len` bytes of `file`, read-only and shared (`MAP_SHARED`). The mapping may run past
/// the end of the file (the active segment grows into it); callers never touch bytes at or
/// past `SegmentState::visible_len`, which is always within the file.
pub(crate) fn map_file(file: &File, path: &Path, len: u64) -> Result<Mapping, LogError> {
    if len == 0 {
        return Ok(Mapping { data: Bytes::new(), mmap: None });
    }
    // SAFETY: the partition directory is locked by this process, and the log only truncates a
    // file below bytes that no reader may see (truncation never cuts below the high
    // watermark), so no mapped byte a reader touches can vanish or change under it.
    let mmap = Arc::new(unsafe { MmapOptions::new().len(len as usize).map(file) }.at(path, "mapping")?);
    Ok(Mapping { data: Bytes::from_owner(SharedMmap(Arc::clone(&mmap))), mmap: Some(mmap) })
}

/// Counters of a segment shared by every mapping of it.
#[derive(Debug)]
pub(crate) struct SegmentState {
    /// Bytes written to the file.
    pub written_len: AtomicU64,
    /// Bytes readers may touch: whole batches below the high watermark.
    pub visible_len: AtomicU64,
    /// Largest record timestamp written; `i64::MIN` when empty.
    pub max_timestamp: AtomicI64,
    /// The newest visible batch: `relative_offset << 32 | position`, or [`NO_TAIL_BATCH`].
    /// A reader at the tail starts there instead of at the last index entry, which lies up
    /// to an index interval behind and would have every batch in between CRC-checked.
    /// Stored before the `visible_len` that shows the batch, and cleared by truncation
    /// before the lengths are lowered, so a reader that loads it after `visible_len` never
    /// sees a hint older than the bytes it may read.
    tail_batch: AtomicU64,
}

/// [`SegmentState::tail_batch`] when no batch is known.
const NO_TAIL_BATCH: u64 = u64::MAX;

impl SegmentState {
    pub(crate) fn new(written_len: u64, visible_len: u64, max_timestamp: i64) -> Self {
        SegmentState {
            written_len: AtomicU64::new(written_len),
            visible_len: AtomicU64::new(visible_len),
            max_timestamp: AtomicI64::new(max_timestamp),
            tail_batch: AtomicU64::new(NO_TAIL_BATCH),
        }
    }

    /// Records that the batch at `position` with `relative_offset` is the newest readers may
    /// see; call before storing the `visible_len` that covers it.
    pub(crate) fn set_tail_batch(&self, relative_offset: u32, position: u32) {
        self.tail_batch.store(u64::from(relative_offset) << 32 | u64::from(position), Ordering::Relaxed);
    }

    /// Forgets the tail batch; truncation calls this before lowering the lengths.
    pub(crate) fn clear_tail_batch(&self) {
        self.tail_batch.store(NO_TAIL_BATCH, Ordering::Release);
    }

    fn tail_batch(&self) -> Option<IndexEntry> {
        let packed = self.tail_batch.load(Ordering::Acquire);
        (packed != NO_TAIL_BATCH).then_some(IndexEntry {
            relative_offset: (packed >> 32) as u32,
            position: packed as u32,
            max_timestamp: i64::MIN,
        })
    }
}

/// An immutable view of one segment, shared with readers through the snapshot.
pub(crate) struct Segment {
    pub base_offset: u64,
    pub path: Arc<PathBuf>,
    pub data: Bytes,
    /// The mapping `data` slices, for [`Segment::release_pages`].
    pub mmap: Option<Arc<Mmap>>,
    pub state: Arc<SegmentState>,
    pub index: Arc<SegmentIndex>,
}

impl Segment {
    /// The bytes readers may look at now.
    pub(crate) fn visible(&self) -> Bytes {
        let visible = self.state.visible_len.load(Ordering::Acquire) as usize;
        self.data.slice(..visible.min(self.data.len()))
    }

    /// The byte position to start scanning from for `offset`. The index is a cache read from
    /// disk and recovery only checks its last entry, so an entry that does not point at a
    /// batch with the offset it claims (bit rot) is passed over for an earlier one: a damaged
    /// cache must neither fail a read nor make it skip records.
    pub(crate) fn start_position(&self, offset: u64) -> usize {
        let mut floor = offset.checked_sub(self.base_offset).and_then(|relative| self.index.floor_offset(relative));
        while let Some(entry) = floor {
            if self.entry_is_sound(&entry) {
                return entry.position as usize;
            }
            floor = entry.relative_offset.checked_sub(1).and_then(|r| self.index.floor_offset(u64::from(r)));
        }
        0
    }

    /// Like [`Segment::start_position`], for a read of `visible` (loaded before this call):
    /// starts at the newest batch when `offset` lies in or past it, so a reader at the tail
    /// walks one batch, not a whole index interval.
    pub(crate) fn read_start(&self, offset: u64, visible: &[u8]) -> usize {
        // Every batch before the tail batch ends below its offset, so none of them would be
        // returned, and no index entry at or below `offset` lies past it.
        let tail = self.state.tail_batch().filter(|tail| {
            offset >= self.base_offset + u64::from(tail.relative_offset)
                && (tail.position as usize) < visible.len()
                && entry_points_at_batch(visible, self.base_offset, tail)
        });
        tail.map_or_else(|| self.start_position(offset), |tail| tail.position as usize)
    }

    /// Whether `entry` points, within the written bytes, at a batch header with its offset.
    pub(crate) fn entry_is_sound(&self, entry: &IndexEntry) -> bool {
        let written = (self.state.written_len.load(Ordering::Acquire) as usize).min(self.data.len());
        entry_points_at_batch(&self.data[..written], self.base_offset, entry)
    }

    /// Drops this process's page-table entries for the mapped pages below `len` (clamped to
    /// the mapping), so that pages readers have passed stop counting in the broker's RSS. The
    /// pages stay in the kernel's page cache; a later read faults the same bytes back in.
    pub(crate) fn release_pages(&self, len: u64) {
        let Some(mmap) = &self.mmap else { return };
        let len = (len as usize).min(mmap.len());
        if len == 0 {
            return;
        }
        // SAFETY: `madvise(MADV_DONTNEED)` is unsafe in general because on a private or
        // anonymous mapping it discards the contents: the next access sees the file's bytes or
        // zeros, not what was there, which would change memory under live `&[u8]`s. This
        // mapping is a read-only `MAP_SHARED` mapping of a file (see `map_file`): no byte of it
        // was ever written through it, and for a shared file mapping the advice only removes
        // this process's page-table entries. The pages stay in the page cache (or are read back
        // from the file), so the next access faults in exactly the same bytes, and nothing is
        // lost. Those bytes cannot have changed meanwhile: callers pass a closed segment's
        // written length or the active segment's visible length, and below those a segment is
        // never modified in place (truncation cuts only above the high watermark; compaction
        // replaces whole files, and old mappings keep the old inode). Even were a byte to
        // change, a shared mapping would show the change with or without this call. The range
        // starts at the mapping's (page-aligned) start and lies within it; the `Arc<Mmap>`
        // held here keeps it mapped for the duration of the call.
        let result = unsafe { mmap.unchecked_advise_range(UncheckedAdvice::DontNeed, 0, len) };
        if let Err(e) = result {
            tracing::debug!(file = %self.path.display(), error = %e, "releasing mapped pages failed");
        }
    }

    pub(crate) fn corrupt(&self, position: usize, reason: &'static str) -> LogError {
        LogError::Corrupt { path: self.path.to_path_buf(), position: position as u64, reason }
    }
}

/// Walks the batches of a segment's bytes from a position, checking each one.
pub(crate) struct BatchWalker<'a> {
    data: &'a [u8],
    position: usize,
    segment_base: u64,
    previous_last_offset: Option<u64>,
    done: bool,
}

/// A batch the walker could not accept, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Defect {
    pub position: usize,
    pub reason: &'static str,
}

impl<'a> BatchWalker<'a> {
    pub(crate) fn new(data: &'a [u8], position: usize, segment_base: u64) -> Self {
        BatchWalker { data, position, segment_base, previous_last_offset: None, done: false }
    }

    /// Position after the last batch accepted so far.
    pub(crate) fn position(&self) -> usize {
        self.position
    }

    fn check(&self) -> Result<BatchHeader, &'static str> {
        let rest = &self.data[self.position..];
        let header = check_batch(rest).map_err(BatchDefect::describe)?;
        if header.base_offset < self.segment_base || header.last_offset() - self.segment_base > u64::from(u32::MAX) {
            return Err("batch offset outside the segment's range");
        }
        if self.previous_last_offset.is_some_and(|prev| header.base_offset <= prev) {
            return Err("batch offset does not follow the previous batch");
        }
        Ok(header)
    }
}

impl Iterator for BatchWalker<'_> {
    type Item = Result<(usize, BatchHeader), Defect>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.position >= self.data.len() {
            return None;
        }
        match self.check() {
            Ok(header) => {
                let at = self.position;
                self.position += header.batch_length as usize;
                self.previous_last_offset = Some(header.last_offset());
                Some(Ok((at, header)))
            }
            Err(reason) => {
                self.done = true;
                Some(Err(Defect { position: self.position, reason }))
            }
        }
    }
}

/// The result of walking a segment to rebuild its index.
pub(crate) struct Rebuilt {
    pub entries: Vec<IndexEntry>,
    /// End of the last valid batch.
    pub valid_len: usize,
    pub last_batch: Option<BatchHeader>,
    pub max_timestamp: i64,
    pub defect: Option<Defect>,
}

/// Walks `data` from `start` (an indexed batch, or 0) and indexes batches with the writer's
/// rule: the first batch, then any batch at least `interval` bytes past the last indexed one.
pub(crate) fn rebuild_from(data: &[u8], segment_base: u64, interval: u64, start: Option<IndexEntry>) -> Rebuilt {
    let start_position = start.map_or(0, |e| e.position as usize);
    let mut rebuilt = Rebuilt {
        entries: Vec::new(),
        valid_len: start_position,
        last_batch: None,
        max_timestamp: start.map_or(i64::MIN, |e| e.max_timestamp),
        defect: None,
    };
    let mut last_indexed = start.map(|e| e.position as usize);
    let mut walker = BatchWalker::new(data, start_position, segment_base);
    for item in &mut walker {
        match item {
            Ok((position, header)) => {
                rebuilt.max_timestamp = rebuilt.max_timestamp.max(header.max_timestamp);
                let due = match last_indexed {
                    None => true,
                    Some(last) => position > last && (position - last) as u64 >= interval,
                };
                if due {
                    rebuilt.entries.push(IndexEntry {
                        relative_offset: (header.base_offset - segment_base) as u32,
                        position: position as u32,
                        max_timestamp: rebuilt.max_timestamp,
                    });
                    last_indexed = Some(position);
                }
                rebuilt.last_batch = Some(header);
            }
            Err(defect) => rebuilt.defect = Some(defect),
        }
    }
    rebuilt.valid_len = walker.position();
    rebuilt
}

/// Checks that an index entry points at the start of a batch with the expected offset.
pub(crate) fn entry_points_at_batch(data: &[u8], segment_base: u64, entry: &IndexEntry) -> bool {
    data.get(entry.position as usize..)
        .and_then(|rest| parse_header(rest).ok())
        .is_some_and(|h| h.base_offset == segment_base + u64::from(entry.relative_offset))
}

/// Like [`entry_points_at_batch`], and the batch there is whole and CRC-valid.
pub(crate) fn entry_points_at_valid_batch(data: &[u8], segment_base: u64, entry: &IndexEntry) -> bool {
    data.get(entry.position as usize..)
        .and_then(|rest| check_batch(rest).ok())
        .is_some_and(|h| h.base_offset == segment_base + u64::from(entry.relative_offset))
}

/// Reads a whole file into memory; used for the small index files.
pub(crate) fn read_small_file(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}
