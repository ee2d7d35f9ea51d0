//! The sparse offset and time indexes of one segment: an append-only in-memory table that
//! readers search without locks, and its two cache files (`.index`, `.timeindex`).
//!
//! One in-memory entry joins what the two files store for the same batch: its relative
//! offset, its byte position and the segment's running maximum timestamp through it.

use std::sync::{
    OnceLock,
    atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering},
};

const CHUNK: usize = 1024;
pub(crate) const OFFSET_ENTRY_LEN: usize = 8;
pub(crate) const TIME_ENTRY_LEN: usize = 12;

/// One indexed batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub relative_offset: u32,
    pub position: u32,
    /// Largest record timestamp in the segment up to and including this batch.
    pub max_timestamp: i64,
}

struct Slot {
    offset_and_position: AtomicU64,
    max_timestamp: AtomicI64,
}

/// Append-only table with a single writer. Entries are written before `len` is published
/// with release ordering, so a reader that loads `len` with acquire sees them whole.
pub(crate) struct SegmentIndex {
    chunks: Box<[OnceLock<Box<[Slot]>>]>,
    len: AtomicUsize,
}

impl SegmentIndex {
    pub(crate) fn with_capacity(entries: usize) -> Self {
        let chunk_count = entries.div_ceil(CHUNK).max(1);
        SegmentIndex { chunks: (0..chunk_count).map(|_| OnceLock::new()).collect(), len: AtomicUsize::new(0) }
    }

    pub(crate) fn from_entries(entries: &[IndexEntry], capacity: usize) -> Self {
        let index = SegmentIndex::with_capacity(capacity.max(entries.len()));
        for entry in entries {
            index.push(*entry);
        }
        index
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Adds an entry; returns false when full, which only makes the index sparser.
    /// Only the segment's single writer calls this.
    pub(crate) fn push(&self, entry: IndexEntry) -> bool {
        let at = self.len.load(Ordering::Relaxed);
        let Some(chunk) = self.chunks.get(at / CHUNK) else {
            return false;
        };
        if let Some(last) = at.checked_sub(1).map(|i| self.get(i)) {
            debug_assert!(last.relative_offset < entry.relative_offset && last.position < entry.position);
        }
        let chunk = chunk.get_or_init(|| {
            (0..CHUNK)
                .map(|_| Slot { offset_and_position: AtomicU64::new(0), max_timestamp: AtomicI64::new(0) })
                .collect()
        });
        let slot = &chunk[at % CHUNK];
        slot.offset_and_position
            .store((u64::from(entry.relative_offset) << 32) | u64::from(entry.position), Ordering::Relaxed);
        slot.max_timestamp.store(entry.max_timestamp, Ordering::Relaxed);
        self.len.store(at + 1, Ordering::Release);
        true
    }

    /// The entry at `i`, which must be below a `len()` the caller loaded.
    pub(crate) fn get(&self, i: usize) -> IndexEntry {
        let slot = &self.chunks[i / CHUNK].get().expect("entries below len are initialised")[i % CHUNK];
        let packed = slot.offset_and_position.load(Ordering::Relaxed);
        IndexEntry {
            relative_offset: (packed >> 32) as u32,
            position: packed as u32,
            max_timestamp: slot.max_timestamp.load(Ordering::Relaxed),
        }
    }

    /// The last entry whose relative offset is at most `relative_offset`.
    pub(crate) fn floor_offset(&self, relative_offset: u64) -> Option<IndexEntry> {
        let len = self.len();
        let count = partition_point(len, |i| u64::from(self.get(i).relative_offset) <= relative_offset);
        count.checked_sub(1).map(|i| self.get(i))
    }

    /// Where a search for the first record at or after `timestamp` may start: the entry
    /// before the last one whose running maximum timestamp is below `timestamp` (`None`:
    /// from the segment's start). One entry back, because `.timeindex` carries no checksum:
    /// a timestamp damaged on disk that still passed the ordering checks at load would
    /// otherwise let the search skip the batches it misdescribes. The entry before a damaged
    /// one is intact, and (the entries being in order) below `timestamp`.
    pub(crate) fn search_start_for(&self, timestamp: i64) -> Option<IndexEntry> {
        let len = self.len();
        let count = partition_point(len, |i| self.get(i).max_timestamp < timestamp);
        count.checked_sub(2).map(|i| self.get(i))
    }

    pub(crate) fn entries(&self) -> Vec<IndexEntry> {
        (0..self.len()).map(|i| self.get(i)).collect()
    }
}

fn partition_point(len: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) { lo = mid + 1 } else { hi = mid }
    }
    lo
}

/// Serialises entries into the `.index` file layout.
pub(crate) fn encode_offset_index(entries: &[IndexEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * OFFSET_ENTRY_LEN);
    for e in entries {
        out.extend_from_slice(&e.relative_offset.to_le_bytes());
        out.extend_from_slice(&e.position.to_le_bytes());
    }
    out
}

/// Serialises entries into the `.timeindex` file layout. A rolled or closed segment passes
/// `segment_max` = (largest timestamp, last batch's relative offset), written as a final entry.
pub(crate) fn encode_time_index(entries: &[IndexEntry], segment_max: Option<(i64, u32)>) -> Vec<u8> {
    let mut out = Vec::with_capacity((entries.len() + 1) * TIME_ENTRY_LEN);
    let mut put = |ts: i64, rel: u32| {
        out.extend_from_slice(&ts.to_le_bytes());
        out.extend_from_slice(&rel.to_le_bytes());
    };
    for e in entries {
        put(e.max_timestamp, e.relative_offset);
    }
    if let Some((max_timestamp, last_batch_relative)) = segment_max {
        put(max_timestamp, last_batch_relative);
    }
    out
}

/// Parsed index files of a segment, not yet checked against the segment's bytes.
pub(crate) struct LoadedIndex {
    pub entries: Vec<IndexEntry>,
    /// The time index's extra final entry, if present: the segment's largest timestamp.
    pub segment_max_timestamp: Option<i64>,
}

/// Parses both files and checks what can be checked without the segment: sizes, order, and
/// that the two files describe the same batches. `None` means "damaged, rebuild".
pub(crate) fn decode_index_files(offset_bytes: &[u8], time_bytes: &[u8], segment_len: u64) -> Option<LoadedIndex> {
    if offset_bytes.is_empty()
        || !offset_bytes.len().is_multiple_of(OFFSET_ENTRY_LEN)
        || !time_bytes.len().is_multiple_of(TIME_ENTRY_LEN)
    {
        return None;
    }
    let count = offset_bytes.len() / OFFSET_ENTRY_LEN;
    let time_count = time_bytes.len() / TIME_ENTRY_LEN;
    if time_count != count && time_count != count + 1 {
        return None;
    }
    let time_entry = |i: usize| {
        let b = &time_bytes[i * TIME_ENTRY_LEN..(i + 1) * TIME_ENTRY_LEN];
        (i64::from_le_bytes(b[0..8].try_into().unwrap()), u32::from_le_bytes(b[8..12].try_into().unwrap()))
    };
    let mut entries: Vec<IndexEntry> = Vec::with_capacity(count);
    for i in 0..count {
        let b = &offset_bytes[i * OFFSET_ENTRY_LEN..(i + 1) * OFFSET_ENTRY_LEN];
        let relative_offset = u32::from_le_bytes(b[0..4].try_into().unwrap());
        let position = u32::from_le_bytes(b[4..8].try_into().unwrap());
        let (max_timestamp, time_relative) = time_entry(i);
        let in_order = match entries.last() {
            None => position == 0,
            Some(prev) => {
                prev.relative_offset < relative_offset
                    && prev.position < position
                    && prev.max_timestamp <= max_timestamp
            }
        };
        if !in_order || u64::from(position) >= segment_len || time_relative != relative_offset {
            return None;
        }
        entries.push(IndexEntry { relative_offset, position, max_timestamp });
    }
    let mut segment_max_timestamp = None;
    if time_count == count + 1 {
        let (ts, rel) = time_entry(count);
        let last = entries.last()?;
        if ts < last.max_timestamp || rel < last.relative_offset {
            return None;
        }
        segment_max_timestamp = Some(ts);
    }
    Some(LoadedIndex { entries, segment_max_timestamp })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(rel: u32, pos: u32, ts: i64) -> IndexEntry {
        IndexEntry { relative_offset: rel, position: pos, max_timestamp: ts }
    }

    #[test]
    fn lookups_across_chunks() {
        let index = SegmentIndex::with_capacity(3000);
        for i in 0..3000u32 {
            assert!(index.push(entry(i * 10, i * 100, i64::from(i) * 2)));
        }
        assert_eq!(index.floor_offset(0), Some(entry(0, 0, 0)));
        assert_eq!(index.floor_offset(25_555).unwrap().relative_offset, 25_550);
        assert_eq!(index.search_start_for(0), None);
        // Only the first entry is below 2: the search starts at the segment's start.
        assert_eq!(index.search_start_for(2), None);
        // The last entry below 11 is at 50; the search starts one entry before it.
        assert_eq!(index.search_start_for(11).unwrap().relative_offset, 40);
        assert!(!index.push(entry(40_000, 400_000, 0)) || index.len() == 3001);
    }

    #[test]
    fn files_round_trip_and_damage_is_refused() {
        let entries = vec![entry(0, 0, 5), entry(3, 200, 9), entry(7, 500, 9)];
        let offsets = encode_offset_index(&entries);
        let times = encode_time_index(&entries, Some((12, 9)));
        let loaded = decode_index_files(&offsets, &times, 600).unwrap();
        assert_eq!(loaded.entries, entries);
        assert_eq!(loaded.segment_max_timestamp, Some(12));
        assert!(decode_index_files(&offsets, &times, 500).is_none(), "position past the end");
        assert!(decode_index_files(&offsets[..12], &times, 600).is_none(), "torn entry");
        let mut swapped = offsets.clone();
        swapped.swap(8, 16);
        assert!(decode_index_files(&swapped, &times, 600).is_none(), "out of order");
        assert!(decode_index_files(&[], &[], 600).is_none(), "empty");
    }
}
