//! Crash-safe replacement of closed segments by rewritten ones: the file side of compaction.
//!
//! The cleaner (in `strata-compaction`) decides which records survive; this module writes
//! them as `.cleaned` files, swaps them in with the protocol of docs/format.md ("Segment
//! swaps"), and finishes or discards an interrupted swap when the log is opened.

use std::{
    fs::{self, File},
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering},
};

use crate::{
    Batch, BatchHeader, Log, LogError, StoredRecord,
    error::IoContext,
    format::encode_rewritten_batch,
    index::{IndexEntry, SegmentIndex, encode_offset_index, encode_time_index},
    log::Snapshot,
    meta::sync_dir,
    segment::{BatchWalker, Segment, SegmentState, map_file, segment_file_name},
};

const CLEANED: &str = "cleaned";
const SWAP: &str = "swap";

/// A closed segment wholly below the high watermark: what compaction may rewrite.
#[derive(Clone)]
pub struct SealedSegment {
    segment: Arc<Segment>,
    next_offset: u64,
}

impl SealedSegment {
    /// The segment's base offset.
    pub fn base_offset(&self) -> u64 {
        self.segment.base_offset
    }

    /// The next segment's base offset: every offset here is below it.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Size of the `.log` file.
    pub fn size_bytes(&self) -> u64 {
        self.segment.state.written_len.load(Ordering::Acquire)
    }

    /// Largest record timestamp; `i64::MIN` when empty.
    pub fn max_timestamp(&self) -> i64 {
        self.segment.state.max_timestamp.load(Ordering::Acquire)
    }

    /// The segment's batches, CRC-checked, oldest first. Damage ends the walk with an error.
    pub fn batches(&self) -> impl Iterator<Item = Result<Batch, LogError>> + '_ {
        let data = self.segment.visible();
        let mut walker_position = 0usize;
        let mut failed = false;
        std::iter::from_fn(move || {
            if failed {
                return None;
            }
            let mut walker = BatchWalker::new(&data, walker_position, self.segment.base_offset);
            match walker.next()? {
                Ok((position, header)) => {
                    walker_position = position + header.batch_length as usize;
                    let bytes = data.slice(position..walker_position);
                    Some(Ok(Batch::new(header, bytes, Arc::clone(&self.segment.path), position as u64)))
                }
                Err(defect) => {
                    failed = true;
                    Some(Err(self.segment.corrupt(defect.position, defect.reason)))
                }
            }
        })
    }
}

/// The steps of a swap, in order, for crash-injection tests.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SwapStep {
    /// The `.cleaned` files are written and fsynced.
    CleanedWritten,
    /// The index and `.replaces` files are renamed to `.swap`; the log file is not yet.
    IndexesSwapped,
    /// `<base>.log.swap` exists: the commit point.
    LogSwapped,
    /// The replaced segments other than the first are deleted.
    OldDeleted,
    /// The `.swap` files are in place as the segment.
    Finished,
}

/// What a committed rewrite changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RewriteOutcome {
    /// Segments replaced.
    pub segments_before: u64,
    /// Segments written in their place.
    pub segments_after: u64,
    /// Bytes of the replaced segments.
    pub bytes_before: u64,
    /// Bytes of the new segments.
    pub bytes_after: u64,
}

/// One output segment being written.
struct Output {
    base: u64,
    replaces: Vec<SealedSegment>,
    file: BufWriter<File>,
    len: u64,
    entries: Vec<IndexEntry>,
    last_indexed: Option<u64>,
    max_timestamp: i64,
    last_batch_base: Option<u64>,
    previous_last_offset: Option<u64>,
}

/// Builds replacement segments and swaps them in. Dropping it without [`SegmentRewrite::commit`]
/// deletes what it wrote.
pub struct SegmentRewrite<'a> {
    log: &'a Log,
    outputs: Vec<Output>,
    buf: Vec<u8>,
    scratch: Vec<u8>,
    committed: bool,
}

impl Log {
    /// Closed segments wholly below the high watermark and the maintenance limit
    /// ([`Log::limit_maintenance`]), oldest first. Segments held back by the limit only are
    /// recorded as wanted ([`Log::watch_maintenance_wanted`]).
    pub fn sealed_segments(&self) -> Vec<SealedSegment> {
        let shared = self.shared();
        let snapshot = shared.snapshot.load();
        let high_watermark = shared.high_watermark.load(Ordering::Acquire);
        let limit = shared.maintenance_limit.load(Ordering::Acquire);
        let segments = &snapshot.segments;
        let sealed: Vec<SealedSegment> = segments
            .windows(2)
            .map(|pair| SealedSegment { segment: Arc::clone(&pair[0]), next_offset: pair[1].base_offset })
            .take_while(|s| s.next_offset <= high_watermark)
            .collect();
        if let Some(wanted) = sealed.last().map(SealedSegment::next_offset).filter(|&wanted| wanted > limit) {
            shared.want_maintenance_up_to(wanted);
        }
        sealed.into_iter().take_while(|s| s.next_offset <= limit).collect()
    }

    /// Records that compaction has cleaned everything below `offset` (clamped into
    /// `[log_start, high_watermark]`), durably.
    pub fn set_cleaned_up_to(&self, offset: u64) -> Result<(), LogError> {
        let shared = self.shared();
        let offsets = self.offsets();
        let offset = offset.clamp(offsets.log_start, offsets.high_watermark);
        let mut meta = shared.lock_meta();
        shared.cleaned_up_to.fetch_max(offset, Ordering::AcqRel);
        meta.cleaned_up_to = meta.cleaned_up_to.max(offset);
        meta.store(&shared.dir)
    }

    /// Starts a rewrite of closed segments.
    pub fn rewrite(&self) -> SegmentRewrite<'_> {
        SegmentRewrite { log: self, outputs: Vec::new(), buf: Vec::new(), scratch: Vec::new(), committed: false }
    }
}

impl SegmentRewrite<'_> {
    /// Starts a new output segment that will replace `replaces` (consecutive sealed segments,
    /// after those of earlier outputs). It takes the first one's base offset as its name.
    pub fn start_segment(&mut self, replaces: &[SealedSegment]) -> Result<(), LogError> {
        let first = replaces.first().ok_or(LogError::InvalidRewrite { reason: "an output must replace a segment" })?;
        let contiguous = replaces.windows(2).all(|p| p[0].next_offset == p[1].base_offset());
        let after_previous =
            self.outputs.last().is_none_or(|o| o.replaces.last().is_some_and(|l| l.next_offset <= first.base_offset()));
        if !contiguous || !after_previous {
            return Err(LogError::InvalidRewrite { reason: "replaced segments must be consecutive and in order" });
        }
        let base = first.base_offset();
        let path = self.path(base, "log", CLEANED);
        let file = File::create(&path).at(&path, "creating a cleaned segment")?;
        self.outputs.push(Output {
            base,
            replaces: replaces.to_vec(),
            file: BufWriter::with_capacity(1 << 20, file),
            len: 0,
            entries: Vec::new(),
            last_indexed: None,
            max_timestamp: i64::MIN,
            last_batch_base: None,
            previous_last_offset: None,
        });
        Ok(())
    }

    /// Writes the survivors of `original` (records in offset order, a subset of the batch's)
    /// to the current output. All survivors: the batch is copied as it is. None: it is dropped.
    ///
    /// A control batch (which has no records, so no survivors) is always copied: it is one
    /// small batch per Raft election or membership change, and keeping it keeps its term in
    /// the log (for `Log::term_at` after a reopen) and its membership payload readable.
    pub fn write_batch(&mut self, original: &Batch, survivors: &[StoredRecord]) -> Result<(), LogError> {
        if original.is_control() {
            return self.append_bytes(original.header(), original.as_bytes());
        }
        if survivors.is_empty() {
            return Ok(());
        }
        let header = *original.header();
        if survivors.len() == header.record_count as usize {
            return self.append_bytes(&header, original.as_bytes());
        }
        let mut buf = std::mem::take(&mut self.buf);
        let rewritten = encode_rewritten_batch(&mut buf, &mut self.scratch, &header, survivors);
        let result = self.append_bytes(&rewritten, &buf);
        self.buf = buf;
        result
    }

    /// Writes `batch` to the current output as it is, every record kept: for merging
    /// segments that are already clean.
    pub fn copy_batch(&mut self, batch: &Batch) -> Result<(), LogError> {
        self.append_bytes(batch.header(), batch.as_bytes())
    }

    fn append_bytes(&mut self, header: &BatchHeader, bytes: &[u8]) -> Result<(), LogError> {
        let interval = self.log.config().index_interval_bytes;
        let path = self.path(self.outputs.last().map_or(0, |o| o.base), "log", CLEANED);
        let output = self.outputs.last_mut().ok_or(LogError::InvalidRewrite { reason: "no output segment started" })?;
        let in_range = output.replaces.first().is_some_and(|f| header.base_offset >= f.base_offset())
            && output.replaces.last().is_some_and(|l| header.last_offset() < l.next_offset);
        let relative = header.last_offset() - output.base;
        if !in_range || output.previous_last_offset.is_some_and(|p| header.base_offset <= p) {
            return Err(LogError::InvalidRewrite {
                reason: "batch offsets outside the replaced range or out of order",
            });
        }
        if relative > u64::from(u32::MAX) || output.len + bytes.len() as u64 > u64::from(u32::MAX) {
            return Err(LogError::InvalidRewrite { reason: "output segment too large for 32-bit index entries" });
        }
        output.max_timestamp = output.max_timestamp.max(header.max_timestamp);
        if output.last_indexed.is_none_or(|last| output.len - last >= interval) {
            output.entries.push(IndexEntry {
                relative_offset: (header.base_offset - output.base) as u32,
                position: output.len as u32,
                max_timestamp: output.max_timestamp,
            });
            output.last_indexed = Some(output.len);
        }
        output.file.write_all(bytes).at(&path, "writing a cleaned segment")?;
        output.len += bytes.len() as u64;
        output.last_batch_base = Some(header.base_offset);
        output.previous_last_offset = Some(header.last_offset());
        Ok(())
    }

    /// Swaps every output in. Fails without changing the log if a replaced segment is no longer
    /// in the log (retention or truncation got there first).
    pub fn commit(self) -> Result<RewriteOutcome, LogError> {
        self.commit_until(None)
    }

    /// Like [`SegmentRewrite::commit`], but stops dead after `step` of output `output`, as a
    /// crash would, leaving the files as they are. For crash tests.
    #[doc(hidden)]
    pub fn commit_with_crash_at(self, output: usize, step: SwapStep) -> Result<RewriteOutcome, LogError> {
        self.commit_until(Some((output, step)))
    }

    fn commit_until(mut self, crash_at: Option<(usize, SwapStep)>) -> Result<RewriteOutcome, LogError> {
        let shared = Arc::clone(self.log.shared());
        let _maintenance = shared.lock_maintenance();
        {
            let snapshot = shared.snapshot.load();
            let present = |s: &SealedSegment| snapshot.segments.iter().any(|c| Arc::ptr_eq(c, &s.segment));
            if !self.outputs.iter().flat_map(|o| &o.replaces).all(present) {
                return Err(LogError::InvalidRewrite { reason: "a replaced segment is no longer in the log" });
            }
        }
        let mut outcome = RewriteOutcome::default();
        let dir = shared.dir.clone();
        let outputs = std::mem::take(&mut self.outputs);
        // From here on, files this rewrite created are the swap protocol's to clean up.
        self.committed = true;
        for (i, output) in outputs.into_iter().enumerate() {
            let stop = |step: SwapStep| crash_at == Some((i, step));
            let base = output.base;
            outcome.segments_before += output.replaces.len() as u64;
            outcome.bytes_before += output.replaces.iter().map(SealedSegment::size_bytes).sum::<u64>();
            outcome.segments_after += 1;
            outcome.bytes_after += output.len;
            let (entries, len, max_timestamp) = (output.entries.clone(), output.len, output.max_timestamp);
            write_cleaned_files(&dir, output)?;
            if stop(SwapStep::CleanedWritten) {
                return Ok(outcome);
            }
            for extension in ["index", "timeindex", "replaces"] {
                rename(&swap_path(&dir, base, extension, CLEANED), &swap_path(&dir, base, extension, SWAP))?;
            }
            sync_dir(&dir)?;
            if stop(SwapStep::IndexesSwapped) {
                return Ok(outcome);
            }
            rename(&swap_path(&dir, base, "log", CLEANED), &swap_path(&dir, base, "log", SWAP))?;
            sync_dir(&dir)?;
            if stop(SwapStep::LogSwapped) {
                return Ok(outcome);
            }
            let replaced = read_replaces(&swap_path(&dir, base, "replaces", SWAP))?;
            delete_replaced(&dir, base, &replaced)?;
            if stop(SwapStep::OldDeleted) {
                return Ok(outcome);
            }
            finish_swap(&dir, base)?;
            if stop(SwapStep::Finished) {
                return Ok(outcome);
            }
            self.publish(&shared, base, &replaced, entries, len, max_timestamp)?;
        }
        Ok(outcome)
    }

    /// Puts the new segment into the readers' snapshot in place of the ones it replaced.
    fn publish(
        &self,
        shared: &crate::log::Shared,
        base: u64,
        replaced: &[u64],
        entries: Vec<IndexEntry>,
        len: u64,
        max_timestamp: i64,
    ) -> Result<(), LogError> {
        let path = shared.dir.join(segment_file_name(base, "log"));
        let file = File::open(&path).at(&path, "opening a cleaned segment")?;
        let mapping = map_file(&file, &path, len)?;
        let segment = Arc::new(Segment {
            base_offset: base,
            path: Arc::new(path.clone()),
            data: mapping.data,
            mmap: mapping.mmap,
            state: Arc::new(SegmentState::new(len, len, max_timestamp)),
            index: Arc::new(SegmentIndex::from_entries(&entries, entries.len())),
        });
        let _writer = shared.lock_writer()?;
        let snapshot = shared.snapshot.load();
        let mut segments = Vec::with_capacity(snapshot.segments.len());
        for current in &snapshot.segments {
            if current.base_offset == base {
                segments.push(Arc::clone(&segment));
            } else if !replaced.contains(&current.base_offset) {
                segments.push(Arc::clone(current));
            }
        }
        debug_assert!(segments.windows(2).all(|p| p[0].base_offset < p[1].base_offset));
        shared.snapshot.store(Arc::new(Snapshot { segments, log_start: snapshot.log_start }));
        Ok(())
    }

    fn path(&self, base: u64, extension: &str, stage: &str) -> PathBuf {
        swap_path(self.log.dir(), base, extension, stage)
    }
}

impl Drop for SegmentRewrite<'_> {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        for output in &self.outputs {
            for extension in ["log", "index", "timeindex", "replaces"] {
                let _ = fs::remove_file(self.path(output.base, extension, CLEANED));
            }
        }
    }
}

fn swap_path(dir: &Path, base: u64, extension: &str, stage: &str) -> PathBuf {
    dir.join(format!("{}.{stage}", segment_file_name(base, extension)))
}

fn rename(from: &Path, to: &Path) -> Result<(), LogError> {
    fs::rename(from, to).at(to, "renaming during a segment swap")
}

/// Finishes and fsyncs the `.cleaned` log, its two index files and its `.replaces` list.
fn write_cleaned_files(dir: &Path, output: Output) -> Result<(), LogError> {
    let base = output.base;
    let log_path = swap_path(dir, base, "log", CLEANED);
    let file = output.file.into_inner().map_err(|e| e.into_error()).at(&log_path, "writing a cleaned segment")?;
    file.sync_all().at(&log_path, "syncing a cleaned segment")?;
    let final_entry = output.last_batch_base.map(|b| (output.max_timestamp, (b - base) as u32));
    let mut replaces = Vec::with_capacity(8 + output.replaces.len() * 8);
    replaces.extend_from_slice(&[0u8; 4]);
    replaces.extend_from_slice(&(output.replaces.len() as u32).to_le_bytes());
    for segment in &output.replaces {
        replaces.extend_from_slice(&segment.base_offset().to_le_bytes());
    }
    let crc = crc32fast::hash(&replaces[4..]);
    replaces[0..4].copy_from_slice(&crc.to_le_bytes());
    for (extension, bytes) in [
        ("index", encode_offset_index(&output.entries)),
        ("timeindex", encode_time_index(&output.entries, final_entry)),
        ("replaces", replaces),
    ] {
        let path = swap_path(dir, base, extension, CLEANED);
        let mut file = File::create(&path).at(&path, "writing a swap file")?;
        file.write_all(&bytes).at(&path, "writing a swap file")?;
        file.sync_all().at(&path, "syncing a swap file")?;
    }
    Ok(())
}

fn read_replaces(path: &Path) -> Result<Vec<u64>, LogError> {
    let bad = |reason| LogError::Corrupt { path: path.to_path_buf(), position: 0, reason };
    let bytes = fs::read(path).at(path, "reading a swap's list of replaced segments")?;
    if bytes.len() < 8 || crc32fast::hash(&bytes[4..]) != u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) {
        return Err(bad("list of replaced segments fails its CRC"));
    }
    let count = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize;
    if bytes.len() != 8 + count * 8 {
        return Err(bad("list of replaced segments has the wrong length"));
    }
    Ok(bytes[8..].chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect())
}

/// Deletes the replaced segments, except the one the swap file is renamed over.
fn delete_replaced(dir: &Path, base: u64, replaced: &[u64]) -> Result<(), LogError> {
    for &old in replaced.iter().filter(|&&b| b != base) {
        for extension in ["log", "index", "timeindex"] {
            let path = dir.join(segment_file_name(old, extension));
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).at(&path, "deleting a replaced segment"),
            }
        }
    }
    Ok(())
}

/// Renames the committed swap files over the old segment (indexes first, the log last), then
/// drops the list. A missing index `.swap` means the index was already renamed or never made
/// it; the index in place may then be the old one, so it is removed for open to rebuild.
fn finish_swap(dir: &Path, base: u64) -> Result<(), LogError> {
    for extension in ["index", "timeindex"] {
        let swap = swap_path(dir, base, extension, SWAP);
        let target = dir.join(segment_file_name(base, extension));
        if swap.exists() {
            rename(&swap, &target)?;
        } else if let Err(e) = fs::remove_file(&target)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(e).at(&target, "removing a stale index");
        }
    }
    rename(&swap_path(dir, base, "log", SWAP), &dir.join(segment_file_name(base, "log")))?;
    let replaces = swap_path(dir, base, "replaces", SWAP);
    fs::remove_file(&replaces).at(&replaces, "removing a finished swap's list")?;
    sync_dir(dir)
}

/// Recovery: discards uncommitted `.cleaned` files and finishes committed swaps (those whose
/// `<base>.log.swap` exists). Returns the base offsets of the swaps it finished.
pub(crate) fn recover_swaps(dir: &Path) -> Result<Vec<u64>, LogError> {
    let mut committed = Vec::new();
    let mut leftovers = Vec::new();
    for entry in fs::read_dir(dir).at(dir, "listing")? {
        let entry = entry.at(dir, "listing")?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".cleaned") {
            let path = entry.path();
            fs::remove_file(&path).at(&path, "removing an unfinished cleaned file")?;
        } else if let Some(stem) = name.strip_suffix(".log.swap") {
            if let Some(base) = stem.parse().ok().filter(|_| stem.len() == 20) {
                committed.push(base);
            }
        } else if name.ends_with(".swap") {
            leftovers.push(entry.path());
        }
    }
    committed.sort_unstable();
    for &base in &committed {
        let replaced = read_replaces(&swap_path(dir, base, "replaces", SWAP))?;
        tracing::info!(dir = %dir.display(), base, replaced = replaced.len(), "finishing an interrupted segment swap");
        delete_replaced(dir, base, &replaced)?;
        finish_swap(dir, base)?;
    }
    // Index or list files of a swap that never reached its commit point, or a finished swap's
    // list that was not yet removed.
    for path in leftovers {
        if path.exists() {
            fs::remove_file(&path).at(&path, "removing a leftover swap file")?;
        }
    }
    sync_dir(dir)?;
    Ok(committed)
}
