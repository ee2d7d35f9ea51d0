//! Recovery on open (docs/format.md, "Recovery on open"): the segments, their indexes, a
//! torn tail cut, and the offsets and writer state rebuilt from what is on disk.

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    path::{Path, PathBuf},
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::Instant,
};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::{PendingBatch, RecoveryReport, Shared, Snapshot, TermRuns, Writer};
use crate::{
    BatchHeader, HighWatermarkMode, LogConfig, LogError,
    error::IoContext,
    format::parse_header,
    index::{
        IndexEntry, LoadedIndex, SegmentIndex, TIME_ENTRY_LEN, decode_index_files, encode_offset_index,
        encode_time_index,
    },
    meta::{CleanShutdown, PartitionMeta, sync_dir},
    segment::{
        BatchWalker, Mapping, Rebuilt, Segment, SegmentState, entry_points_at_batch, entry_points_at_valid_batch,
        map_file, parse_segment_file_name, read_small_file, rebuild_from, segment_file_name,
    },
    tail::ReservedTail,
};

/// The (term, last offset) of the newest batch in `segments`.
pub(super) fn last_batch_of(segments: &[Arc<Segment>]) -> Option<(u64, u64)> {
    segments.iter().rev().find_map(|segment| {
        let written = &segment.data[..segment.state.written_len.load(Ordering::Acquire) as usize];
        let start = segment.index.floor_offset(u64::MAX).map_or(0, |e| e.position as usize);
        BatchWalker::new(written, start, segment.base_offset)
            .map_while(Result::ok)
            .last()
            .map(|(_, h)| (h.leader_term, h.last_offset()))
    })
}

/// The term runs of the stored batches, from their headers. A segment whose first and last
/// batches have the same term is one run and is not walked (the common case: terms change
/// at elections only); the others are walked header by header, without CRC checks (reads
/// check those), stopping at the first header that does not parse or go forward.
fn term_runs_of(segments: &[Arc<Segment>]) -> TermRuns {
    let mut runs = TermRuns::default();
    let mut last_offset = None;
    let push = |runs: &mut TermRuns, header: &BatchHeader, last_offset: &mut Option<u64>| {
        if last_offset.is_some_and(|last| header.base_offset <= last) {
            return false;
        }
        *last_offset = Some(header.last_offset());
        // Terms only grow; a damaged log that says otherwise keeps the higher term.
        if runs.last_term().is_none_or(|term| header.leader_term > term) {
            runs.push(header.base_offset, header.leader_term);
        }
        true
    };
    for segment in segments {
        let written = &segment.data[..segment.state.written_len.load(Ordering::Acquire) as usize];
        let Ok(first) = parse_header(written) else { continue };
        let last_start = segment.index.floor_offset(u64::MAX).map_or(0, |e| e.position as usize);
        let last = headers_from(written, last_start).last();
        match last {
            Some(last) if last.leader_term == first.leader_term => {
                push(&mut runs, &first, &mut last_offset);
                last_offset = Some(last.last_offset());
            }
            _ => {
                for header in headers_from(written, 0) {
                    if !push(&mut runs, &header, &mut last_offset) {
                        break;
                    }
                }
            }
        }
    }
    runs
}

/// The batch headers from `position` on, as long as they parse and fit in `data`.
fn headers_from(data: &[u8], mut position: usize) -> impl Iterator<Item = BatchHeader> + '_ {
    std::iter::from_fn(move || {
        let header = parse_header(data.get(position..)?).ok()?;
        let end = position.checked_add(header.batch_length as usize).filter(|&end| end <= data.len())?;
        position = end;
        Some(header)
    })
}

/// Opens the directory's segments, repairing what a crash left behind (docs/format.md,
/// "Recovery on open").
pub(super) fn recover(dir: PathBuf, config: LogConfig, lock: File) -> Result<Shared, LogError> {
    let mut report = RecoveryReport { finished_swaps: crate::rewrite::recover_swaps(&dir)?, ..Default::default() };
    let mut meta = PartitionMeta::load(&dir)?;
    if meta.install_pending {
        tracing::warn!(partition = %dir.display(), log_start = meta.log_start, "finishing an install of snapshot segments that a crash interrupted");
    }
    // A snapshot install that committed is finished; what one that did not left is removed.
    super::snapshot::finish_install(&dir, &mut meta, None)?;
    let mut bases = Vec::new();
    for entry in fs::read_dir(&dir).at(&dir, "listing")? {
        let entry = entry.at(&dir, "listing")?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".tmp") {
            let path = entry.path();
            fs::remove_file(&path).at(&path, "removing a leftover temporary file")?;
        } else if let Some(base) = parse_segment_file_name(name) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    if meta.reset_pending {
        // A reset to a snapshot committed before a crash: finish it (docs/format.md).
        for base in bases.drain(..) {
            for extension in ["log", "index", "timeindex"] {
                let path = dir.join(segment_file_name(base, extension));
                if let Err(e) = fs::remove_file(&path)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    return Err(e).at(&path, "deleting a segment to finish a reset");
                }
            }
        }
        CleanShutdown::remove(&dir)?;
        sync_dir(&dir)?;
        tracing::warn!(partition = %dir.display(), log_start = meta.log_start, "finished a reset to a snapshot that a crash interrupted");
    }
    // Segments wholly below a recorded log start were condemned by retention before a crash.
    while bases.len() > 1 && bases[1] <= meta.log_start {
        let base = bases.remove(0);
        for extension in ["log", "index", "timeindex"] {
            let path = dir.join(segment_file_name(base, extension));
            let _ = fs::remove_file(&path);
        }
    }
    let marker = CleanShutdown::load(&dir);
    if bases.is_empty() {
        bases.push(meta.log_start);
        let path = dir.join(segment_file_name(meta.log_start, "log"));
        File::create(&path).at(&path, "creating the first segment")?;
        if meta.reset_pending {
            sync_dir(&dir)?;
            meta.reset_pending = false;
            meta.store(&dir)?;
        }
    }
    debug_assert!(!meta.reset_pending, "a reset is finished before the segments are opened");
    let index_capacity = config.index_capacity();
    let mut segments = Vec::with_capacity(bases.len());
    let last_base = *bases.last().expect("at least one segment");
    for &base in &bases[..bases.len() - 1] {
        segments.push(Arc::new(open_closed_segment(&dir, base, &config, &mut report)?));
    }
    // The active segment.
    let path = dir.join(segment_file_name(last_base, "log"));
    let file = OpenOptions::new().read(true).write(true).open(&path).at(&path, "opening")?;
    let file_len = file.metadata().at(&path, "reading metadata")?.len();
    if !marker.as_ref().is_some_and(|m| m.active_base == last_base && m.active_len == file_len) {
        // A crash start, perhaps after a failed fsync: drop the cached clean pages of the
        // tail (pages whose write-back failed may be cached as clean), so the scan below
        // checks what the disk holds. Dirty pages stay cached and are written back as usual.
        drop_cached_pages(&file);
    }
    let Mapping { data, mmap } = map_file(&file, &path, config.segment_bytes.max(file_len))?;
    let written = &data[..file_len as usize];
    let index_path = dir.join(segment_file_name(last_base, "index"));
    let time_path = dir.join(segment_file_name(last_base, "timeindex"));
    let loaded = decode_index_files(
        &read_small_file(&index_path).unwrap_or_default(),
        &read_small_file(&time_path).unwrap_or_default(),
        file_len,
    );
    let clean = marker.filter(|m| m.active_base == last_base && m.active_len == file_len);
    let loaded = match loaded {
        None if file_len == 0 => Some(LoadedIndex { entries: Vec::new(), segment_max_timestamp: None }),
        other => other,
    };
    let index_matches = |l: &LoadedIndex| match l.entries.last() {
        None => file_len == 0,
        Some(e) => entry_points_at_batch(written, last_base, e) && timestamps_plausible(written, last_base, &l.entries),
    };
    let (entries, active_len, log_end, last_batch, max_timestamp) = match (clean, loaded) {
        (Some(marker), Some(loaded)) if index_matches(&loaded) => {
            report.clean_shutdown = true;
            let last_batch = (file_len > 0).then(|| (marker.last_term, marker.log_end - 1));
            (loaded.entries, file_len, marker.log_end, last_batch, marker.active_max_timestamp)
        }
        (_, loaded) => {
            // Crash start: trust the index only up to its last entry that points at a valid
            // batch, then scan and check everything after it.
            let loaded_count = loaded.as_ref().map_or(0, |l| l.entries.len());
            let mut entries = salvage_entries(loaded, written, last_base);
            if entries.len() < loaded_count || (entries.is_empty() && file_len > 0) {
                report.rebuilt_indexes.push(index_path.clone());
            }
            let start = entries.last().copied();
            let rebuilt: Rebuilt = rebuild_from(written, last_base, config.index_interval_bytes, start);
            report.scanned_bytes = (rebuilt.valid_len - start.map_or(0, |e| e.position as usize)) as u64;
            entries.extend(rebuilt.entries);
            if let Some(defect) = rebuilt.defect {
                let cut = rebuilt.valid_len as u64;
                if crate::tail::is_reserved(&written[rebuilt.valid_len..]) {
                    tracing::debug!(file = %path.display(), position = cut, bytes = file_len - cut, "cutting reserved space");
                    report.reserved_bytes_cut = file_len - cut;
                } else {
                    tracing::warn!(file = %path.display(), position = cut, reason = defect.reason, dropped_bytes = file_len - cut, "truncating a torn or damaged tail");
                    report.truncated = Some((path.clone(), cut, file_len - cut, defect.reason));
                }
                file.set_len(cut).at(&path, "truncating a damaged tail")?;
                file.sync_data().at(&path, "syncing a truncated tail")?;
            }
            let last_batch = rebuilt.last_batch.map(|h| (h.leader_term, h.last_offset()));
            let log_end = last_batch.map_or(last_base, |(_, last)| last + 1);
            (entries, rebuilt.valid_len as u64, log_end, last_batch, rebuilt.max_timestamp)
        }
    };
    let active = Arc::new(Segment {
        base_offset: last_base,
        path: Arc::new(path.clone()),
        data,
        mmap,
        state: Arc::new(SegmentState::new(active_len, active_len, max_timestamp)),
        index: Arc::new(SegmentIndex::from_entries(&entries, index_capacity)),
    });
    // Rewrite the active segment's index files so they hold exactly the in-memory entries.
    for (p, bytes) in [(&index_path, encode_offset_index(&entries)), (&time_path, encode_time_index(&entries, None))] {
        fs::write(p, bytes).at(p, "rewriting an index")?;
    }
    segments.push(Arc::clone(&active));
    let last_batch = last_batch.or_else(|| last_batch_of(&segments));
    CleanShutdown::remove(&dir)?;

    let log_start = meta.log_start.max(bases[0]).min(log_end);
    let mut pending = VecDeque::new();
    let high_watermark = match config.high_watermark {
        HighWatermarkMode::FollowsLogEnd => log_end,
        HighWatermarkMode::SetByCaller => {
            let high_watermark = meta.high_watermark.clamp(log_start, log_end);
            hide_past_high_watermark(&segments, high_watermark, &mut pending);
            high_watermark
        }
    };
    meta.log_start = log_start;
    meta.cleaned_up_to = meta.cleaned_up_to.clamp(log_start, high_watermark);
    let (high_watermark_watch, _) = watch::channel(high_watermark);
    let cleaned_up_to = meta.cleaned_up_to;
    let mut terms = term_runs_of(&segments);
    terms.purge_before(log_start);
    debug_assert!(
        log_start <= cleaned_up_to && cleaned_up_to <= high_watermark && high_watermark <= log_end,
        "offset invariant broken at open: {log_start} {cleaned_up_to} {high_watermark} {log_end}"
    );
    let writer = Writer {
        active: Arc::clone(&active),
        file: Arc::new(file),
        active_len,
        active_created: Instant::now(),
        last_indexed_position: active.index.floor_offset(u64::MAX).map(|e| u64::from(e.position)),
        persisted_entries: entries.len(),
        log_end,
        last_batch,
        min_term: meta.last_purged.map_or(0, |(term, _)| term),
        pending,
        tail: ReservedTail::new(active_len),
        buf: Vec::new(),
        scratch: Vec::new(),
        dirty: false,
        batches_written: 0,
    };
    Ok(Shared {
        dir,
        config,
        snapshot: ArcSwap::from_pointee(Snapshot { segments, log_start }),
        high_watermark: AtomicU64::new(high_watermark),
        log_end: AtomicU64::new(log_end),
        cleaned_up_to: AtomicU64::new(cleaned_up_to),
        synced: AtomicU64::new(log_end),
        high_watermark_watch,
        writer: Mutex::new(writer),
        terms: Mutex::new(terms),
        meta: Mutex::new(meta),
        maintenance: Mutex::new(()),
        maintenance_limit: AtomicU64::new(u64::MAX),
        maintenance_wanted: watch::channel(0).0,
        sync_in_progress: Mutex::new(false),
        sync_done: Condvar::new(),
        fsync_observer: std::sync::OnceLock::new(),
        last_flush_ms: AtomicI64::new(0),
        appended_since_flush: AtomicBool::new(false),
        // Recovery read the segments through their mappings.
        read_since_release: AtomicBool::new(true),
        release_again: AtomicBool::new(false),
        closed: AtomicBool::new(false),
        sync_failure: arc_swap::ArcSwapOption::empty(),
        fail_next_fsync: AtomicBool::new(false),
        disk_full: AtomicBool::new(false),
        disk_full_needed: AtomicU64::new(0),
        recovery: report,
        lock: Mutex::new(Some(lock)),
    })
}

fn drop_cached_pages(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain system call on a descriptor `file` keeps open; only advice.
        let _ = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// Keeps the prefix of loaded entries that are ordered, in the file, and whose last entry
/// points at a whole, CRC-valid batch.
fn salvage_entries(loaded: Option<LoadedIndex>, written: &[u8], base: u64) -> Vec<IndexEntry> {
    let mut entries = loaded.map(|l| l.entries).unwrap_or_default();
    while let Some(last) = entries.last() {
        if entry_points_at_valid_batch(written, base, last) {
            break;
        }
        entries.pop();
    }
    if !timestamps_plausible(written, base, &entries) {
        entries.clear();
    }
    entries
}

/// The scan after the last kept entry continues its running maximum timestamp, so check what
/// is cheap to check: the first entry's is exactly the first batch's maximum, and the last
/// entry's is not below its own batch's. (A time index from elsewhere fails this.)
fn timestamps_plausible(written: &[u8], base: u64, entries: &[IndexEntry]) -> bool {
    let batch_max = |e: &IndexEntry| {
        BatchWalker::new(written, e.position as usize, base).next().and_then(Result::ok).map(|(_, h)| h.max_timestamp)
    };
    entries.first().is_none_or(|first| batch_max(first) == Some(first.max_timestamp))
        && entries.last().is_none_or(|last| batch_max(last).is_some_and(|max| max <= last.max_timestamp))
}

/// With an externally set high watermark, readers must not see batches at or past it: set
/// each segment's visible length accordingly and queue the hidden batches.
fn hide_past_high_watermark(segments: &[Arc<Segment>], high_watermark: u64, pending: &mut VecDeque<PendingBatch>) {
    for segment in segments {
        let written_len = segment.state.written_len.load(Ordering::Acquire);
        let written = &segment.data[..written_len as usize];
        let mut visible = None;
        let start = segment.start_position(high_watermark);
        for (position, header) in BatchWalker::new(written, start, segment.base_offset).map_while(Result::ok) {
            if header.last_offset() >= high_watermark {
                visible.get_or_insert(position as u64);
                pending.push_back(PendingBatch {
                    last_offset: header.last_offset(),
                    position: position as u32,
                    relative_offset: (header.base_offset - segment.base_offset) as u32,
                    end_position: (position + header.batch_length as usize) as u64,
                    state: Arc::clone(&segment.state),
                });
            }
        }
        let visible = if segment.base_offset >= high_watermark { 0 } else { visible.unwrap_or(written_len) };
        segment.state.visible_len.store(visible, Ordering::Release);
    }
}

/// A closed segment's time index ends with the segment's largest timestamp and its last
/// batch's relative offset. Check both against the batches from the last offset-index entry to
/// the end of the file (at most an index interval and one batch): a stale or damaged final
/// entry would make `offset_for_timestamp` skip the segment and retention misjudge its age.
fn final_time_entry_matches(data: &[u8], base: u64, loaded: &LoadedIndex, time_bytes: &[u8]) -> bool {
    let (Some(last), Some(segment_max)) = (loaded.entries.last(), loaded.segment_max_timestamp) else {
        return false;
    };
    let Some(final_entry) = time_bytes.len().checked_sub(TIME_ENTRY_LEN).map(|at| &time_bytes[at..]) else {
        return false;
    };
    let final_relative = u32::from_le_bytes(final_entry[8..12].try_into().expect("4 bytes"));
    let mut max_timestamp = last.max_timestamp;
    let mut last_relative = None;
    let mut walker = BatchWalker::new(data, last.position as usize, base);
    for item in &mut walker {
        let Ok((_, header)) = item else { return false };
        max_timestamp = max_timestamp.max(header.max_timestamp);
        last_relative = Some(header.base_offset - base);
    }
    walker.position() == data.len() && max_timestamp == segment_max && last_relative == Some(u64::from(final_relative))
}

/// Opens a rolled segment: its mapping and its index, rebuilt when missing or damaged. It is
/// never truncated; damage is reported and left for reads to refuse.
fn open_closed_segment(
    dir: &Path,
    base: u64,
    config: &LogConfig,
    report: &mut RecoveryReport,
) -> Result<Segment, LogError> {
    let path = dir.join(segment_file_name(base, "log"));
    let file = File::open(&path).at(&path, "opening")?;
    let len = file.metadata().at(&path, "reading metadata")?.len();
    let Mapping { data, mmap } = map_file(&file, &path, len)?;
    let index_path = dir.join(segment_file_name(base, "index"));
    let time_path = dir.join(segment_file_name(base, "timeindex"));
    let time_bytes = read_small_file(&time_path).unwrap_or_default();
    let loaded = decode_index_files(&read_small_file(&index_path).unwrap_or_default(), &time_bytes, len)
        .filter(|l| l.segment_max_timestamp.is_some())
        .filter(|l| l.entries.last().is_some_and(|e| entry_points_at_batch(&data, base, e)))
        .filter(|l| final_time_entry_matches(&data, base, l, &time_bytes));
    let (entries, max_timestamp) = match loaded {
        Some(loaded) => (loaded.entries, loaded.segment_max_timestamp.expect("filtered above")),
        None if len == 0 => (Vec::new(), i64::MIN),
        None => {
            let rebuilt = rebuild_from(&data, base, config.index_interval_bytes, None);
            if let Some(defect) = rebuilt.defect {
                tracing::error!(file = %path.display(), position = defect.position, reason = defect.reason, "damaged batch in a closed segment");
                report.damaged_segments.push((path.clone(), defect.position as u64, defect.reason));
            }
            let final_entry = rebuilt.last_batch.map(|h| (rebuilt.max_timestamp, (h.base_offset - base) as u32));
            for (p, bytes) in [
                (&index_path, encode_offset_index(&rebuilt.entries)),
                (&time_path, encode_time_index(&rebuilt.entries, final_entry)),
            ] {
                fs::write(p, bytes).at(p, "rewriting an index")?;
            }
            report.rebuilt_indexes.push(index_path);
            (rebuilt.entries, rebuilt.max_timestamp)
        }
    };
    Ok(Segment {
        base_offset: base,
        path: Arc::new(path),
        data,
        mmap,
        state: Arc::new(SegmentState::new(len, len, max_timestamp)),
        index: Arc::new(SegmentIndex::from_entries(&entries, entries.len())),
    })
}
