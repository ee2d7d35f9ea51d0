//! Snapshots made of the segments themselves (docs/format.md, "Snapshots"): a leader opens
//! the segment files that cover a committed offset ([`Log::snapshot_files`]) and streams them;
//! a follower stages them beside its segments and swaps them in ([`Log::install_segments`]).
//! Also the limit Raft puts on retention and compaction ([`Log::limit_maintenance`]), so
//! neither removes an entry Raft may still send to a follower.

use std::{
    fs::{self, File},
    io::ErrorKind,
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering},
};

use tokio::sync::watch;

use super::{Log, Shared, recovery::recover};
use crate::{
    LogError,
    error::IoContext,
    meta::{CleanShutdown, PartitionMeta, sync_dir},
    segment::{BatchWalker, parse_segment_file_name, segment_file_name},
    verify::verify_partition,
};

/// Where a follower writes the segment files of a snapshot it receives.
const STAGING_DIR: &str = "snapshot.staging";
/// The staging directory once the old segments are gone: its files are the new log.
const INSTALL_DIR: &str = "snapshot.install";

/// One segment file of a snapshot, open for reading: the file stays readable however
/// retention or compaction change the partition meanwhile (they unlink, never rewrite in
/// place).
#[derive(Debug)]
pub struct SnapshotFile {
    /// The segment's base offset (its name).
    pub base_offset: u64,
    /// The `.log` file.
    pub file: File,
    /// How many of its bytes belong to the snapshot: whole batches only.
    pub len: u64,
}

/// The segment files that hold a partition's entries from its log start up to a committed
/// offset, and what a follower needs to start its log from them.
#[derive(Debug)]
pub struct SnapshotFiles {
    /// The files, oldest first; the last one may be taken in part.
    pub files: Vec<SnapshotFile>,
    /// What the files hold and how a log made of them starts.
    pub info: SnapshotInfo,
}

/// What a snapshot's segment files hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The offset after the last entry: the files end with the batch holding `end - 1`.
    pub end: u64,
    /// The term of the entry at `end - 1`.
    pub last_term: u64,
    /// The leader's first offset.
    pub log_start: u64,
    /// The leader's `cleaned_up_to` (compaction may have dropped batches below it).
    pub cleaned_up_to: u64,
    /// The leader's last purged entry (term, offset), if any.
    pub last_purged: Option<(u64, u64)>,
}

/// The steps of [`Log::install_segments`] after its commit point, in order, for
/// crash-injection tests: an install stopped after any of them reopens as the new log.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum InstallStep {
    /// The staged files are checked and synced; nothing else changed (before the commit
    /// point: reopens as the old log).
    Verified,
    /// `partition.meta` holds the new offsets and the install flag: the commit point.
    MetaWritten,
    /// The old segment files are deleted.
    OldDeleted,
    /// The staging directory is renamed to the install directory.
    StagingRenamed,
    /// The staged files are moved beside the partition's other files.
    FilesMoved,
}

impl Log {
    /// The segment files covering the entries from the log start up to `last` (a committed
    /// offset), each opened now, under the lock that retention and compaction take, so none
    /// is deleted or swapped between the listing and the opening. The last file is cut at a
    /// batch boundary: at the end of the batch holding `last`, or before it if that batch
    /// goes past `last` (the caller then snapshots at the batch before). `None` if no whole
    /// batch lies at or below `last`.
    pub fn snapshot_files(&self, last: u64) -> Result<Option<SnapshotFiles>, LogError> {
        let shared = &self.shared;
        let _maintenance = shared.lock_maintenance();
        let high_watermark = shared.high_watermark.load(Ordering::Acquire);
        let Some(upto) = last.checked_add(1).map(|upto| upto.min(high_watermark)) else { return Ok(None) };
        let snapshot = shared.snapshot.load_full();
        let mut included = Vec::new();
        let mut end = None;
        for segment in snapshot.segments.iter().take_while(|s| s.base_offset < upto) {
            let written = &segment.data[..segment.state.written_len.load(Ordering::Acquire) as usize];
            // Every batch before an indexed one ends below its offset, so the walk starts at
            // the last indexed batch below `upto`; if that batch reaches `upto`, at the one
            // indexed before it.
            let mut target = upto - 1;
            let found = loop {
                let start = segment.start_position(target);
                let mut found = None;
                let mut first_base = None;
                for item in BatchWalker::new(written, start, segment.base_offset) {
                    let (position, header) = item.map_err(|d| segment.corrupt(d.position, d.reason))?;
                    first_base.get_or_insert(header.base_offset);
                    if header.last_offset() >= upto {
                        break;
                    }
                    found =
                        Some((position + header.batch_length as usize, header.last_offset() + 1, header.leader_term));
                }
                match (found, first_base) {
                    (Some(found), _) => break Some(found),
                    (None, Some(base)) if start > 0 && base > segment.base_offset => target = base - 1,
                    _ => break None,
                }
            };
            if let Some((len, segment_end, term)) = found {
                included.push((Arc::clone(segment), len as u64));
                end = Some((segment_end, term));
            }
        }
        let Some((end, last_term)) = end else { return Ok(None) };
        let mut files = Vec::with_capacity(included.len());
        for (segment, len) in included {
            let path = segment.path.as_path();
            let file = File::open(path).at(path, "opening for a snapshot")?;
            files.push(SnapshotFile { base_offset: segment.base_offset, file, len });
        }
        let meta = *shared.lock_meta();
        let offsets = self.offsets();
        let info = SnapshotInfo {
            end,
            last_term,
            log_start: offsets.log_start,
            cleaned_up_to: offsets.cleaned_up_to.min(end),
            last_purged: meta.last_purged.filter(|&(_, purged)| purged < offsets.log_start),
        };
        Ok(Some(SnapshotFiles { files, info }))
    }

    /// The directory inside the partition where a follower stages a snapshot's segment files
    /// before [`Log::install_segments`]. Open removes it when no install committed.
    pub fn staging_dir(&self) -> PathBuf {
        self.shared.dir.join(STAGING_DIR)
    }

    /// The path, in the staging directory, of the `.log` file of the segment at `base_offset`.
    pub fn staging_segment_path(&self, base_offset: u64) -> PathBuf {
        self.staging_dir().join(segment_file_name(base_offset, "log"))
    }

    /// Replaces the whole log by the segment files staged in [`Log::staging_dir`] (`.log`
    /// files only; their indexes are built here), which `info` describes: the log then holds
    /// the offsets from `info.log_start` to `info.end` (exclusive), all committed. Every
    /// staged batch is checked first (CRC, record encoding, offsets in order); the last one
    /// must end at `info.end - 1` with term `info.last_term`. Refused below the high
    /// watermark, which readers may have seen.
    ///
    /// Crash-safe: `partition.meta`, written with an install flag once the staged files are
    /// checked and synced, is the commit point. A crash before it reopens the old log (open
    /// removes the staging directory); a crash after it reopens the new one (open finishes
    /// the install). Readers holding batches of the old segments keep them.
    pub fn install_segments(&self, info: &SnapshotInfo) -> Result<(), LogError> {
        self.shared.install_segments(info, None)
    }

    /// [`Log::install_segments`], stopped after `step` as a crash would stop it: the log is
    /// left closed, its files as they are. For crash tests.
    #[doc(hidden)]
    pub fn install_segments_with_crash_at(&self, info: &SnapshotInfo, step: InstallStep) -> Result<(), LogError> {
        self.shared.install_segments(info, Some(step))
    }

    /// Retention and compaction leave every offset at or above `limit` alone from now on.
    /// A log opens without a limit; the first call sets one, later calls only raise it. Raft
    /// sets it to what it has purged, so nothing it may still send to a follower disappears.
    pub fn limit_maintenance(&self, limit: u64) {
        let raise = |current: u64| Some(if current == u64::MAX { limit } else { current.max(limit) });
        let _ = self.shared.maintenance_limit.fetch_update(Ordering::AcqRel, Ordering::Acquire, raise);
    }

    /// The limit set by [`Log::limit_maintenance`] (`u64::MAX`: none).
    pub fn maintenance_limit(&self) -> u64 {
        self.shared.maintenance_limit.load(Ordering::Acquire)
    }

    /// A receiver of the offset below which retention or compaction last wanted to remove
    /// entries but [`Log::limit_maintenance`] held them back: the limit it takes for them to
    /// proceed.
    pub fn watch_maintenance_wanted(&self) -> watch::Receiver<u64> {
        self.shared.maintenance_wanted.subscribe()
    }
}

fn is_segment_file(name: &str) -> bool {
    let digits = [".log", ".index", ".timeindex"].iter().find_map(|extension| name.strip_suffix(extension));
    digits.is_some_and(|digits| digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
}

fn remove_segment_files(dir: &Path, purpose: &'static str) -> Result<(), LogError> {
    for entry in fs::read_dir(dir).at(dir, "listing")? {
        let entry = entry.at(dir, "listing")?;
        if entry.file_name().to_str().is_some_and(is_segment_file) {
            let path = entry.path();
            if let Err(e) = fs::remove_file(&path)
                && e.kind() != ErrorKind::NotFound
            {
                return Err(e).at(&path, purpose);
            }
        }
    }
    Ok(())
}

fn remove_dir_if_present(path: &Path) -> Result<(), LogError> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e).at(path, "removing"),
        _ => Ok(()),
    }
}

/// Open's part of an install (docs/format.md, "Snapshots"). With the install flag set in
/// `meta`, finishes the install from wherever a crash stopped it and clears the flag;
/// without it, removes what an install that never committed (or finished) left behind.
/// `crash_at` stops it as a crash would, for tests; `Ok(true)` then.
pub(super) fn finish_install(
    dir: &Path,
    meta: &mut PartitionMeta,
    crash_at: Option<InstallStep>,
) -> Result<bool, LogError> {
    let staging = dir.join(STAGING_DIR);
    let install = dir.join(INSTALL_DIR);
    if !meta.install_pending {
        remove_dir_if_present(&staging)?;
        remove_dir_if_present(&install)?;
        return Ok(false);
    }
    if staging.exists() {
        remove_segment_files(dir, "deleting a segment replaced by a snapshot")?;
        CleanShutdown::remove(dir)?;
        sync_dir(dir)?;
        if crash_at == Some(InstallStep::OldDeleted) {
            return Ok(true);
        }
        fs::rename(&staging, &install).at(&staging, "renaming the staged snapshot")?;
        sync_dir(dir)?;
        if crash_at == Some(InstallStep::StagingRenamed) {
            return Ok(true);
        }
    }
    if install.exists() {
        for entry in fs::read_dir(&install).at(&install, "listing")? {
            let entry = entry.at(&install, "listing")?;
            let from = entry.path();
            fs::rename(&from, dir.join(entry.file_name())).at(&from, "moving a snapshot segment in")?;
        }
        sync_dir(dir)?;
        if crash_at == Some(InstallStep::FilesMoved) {
            return Ok(true);
        }
    }
    meta.install_pending = false;
    meta.store(dir)?;
    remove_dir_if_present(&install)?;
    Ok(false)
}

impl Shared {
    /// Checks the staged files against `info`, then syncs them and their directory.
    fn check_staged(&self, info: &SnapshotInfo) -> Result<(), LogError> {
        let staging = self.dir.join(STAGING_DIR);
        let bad = |position: u64, reason: String| LogError::BadSnapshot { path: staging.clone(), position, reason };
        let mut bases = Vec::new();
        for entry in fs::read_dir(&staging).at(&staging, "listing")? {
            let entry = entry.at(&staging, "listing")?;
            match entry.file_name().to_str().and_then(parse_segment_file_name) {
                Some(base) => bases.push(base),
                None => return Err(bad(0, format!("unexpected file {:?}", entry.file_name()))),
            }
        }
        bases.sort_unstable();
        let (Some(&first), Some(&last_base)) = (bases.first(), bases.last()) else {
            return Err(bad(0, "no segment file".into()));
        };
        if first > info.log_start {
            return Err(bad(0, format!("the first segment starts at {first}, after the log start {}", info.log_start)));
        }
        let report = verify_partition(&staging, &mut |_| {})?;
        // Only `.log` files travel; their index files are built at install.
        if let Some(problem) = report.problems.iter().find(|p| p.path.extension().is_some_and(|e| e == "log")) {
            return Err(LogError::BadSnapshot {
                path: problem.path.clone(),
                position: problem.position,
                reason: problem.reason.clone(),
            });
        }
        if report.reserved_bytes > 0 {
            return Err(bad(0, "zeros after the last batch".into()));
        }
        let last_path = staging.join(segment_file_name(last_base, "log"));
        let data = fs::read(&last_path).at(&last_path, "reading")?;
        let last = BatchWalker::new(&data, 0, last_base).map_while(Result::ok).last();
        match last {
            Some((_, header)) if header.last_offset() + 1 == info.end && header.leader_term == info.last_term => {}
            Some((_, header)) => {
                return Err(bad(
                    0,
                    format!(
                        "the last batch ends at offset {} with term {}, not at {} with term {}",
                        header.last_offset(),
                        header.leader_term,
                        info.end - 1,
                        info.last_term
                    ),
                ));
            }
            None => return Err(bad(0, "the last segment holds no batch".into())),
        }
        for &base in &bases {
            let path = staging.join(segment_file_name(base, "log"));
            File::open(&path).and_then(|f| f.sync_all()).at(&path, "syncing a staged segment")?;
        }
        sync_dir(&staging)
    }

    fn install_segments(&self, info: &SnapshotInfo, crash_at: Option<InstallStep>) -> Result<(), LogError> {
        let _maintenance = self.lock_maintenance();
        let mut w = self.lock_writer()?;
        self.check_sync_failure()?;
        if info.end < self.high_watermark.load(Ordering::Acquire) || info.end <= info.log_start {
            return Err(LogError::InvalidReset {
                partition: self.dir.clone(),
                offset: info.end,
                reason: "a snapshot must end above the log start and at or above the high watermark",
            });
        }
        self.check_staged(info)?;
        let crash = || {
            self.closed.store(true, Ordering::Release);
            self.lock.lock().unwrap_or_else(|p| p.into_inner()).take();
            Ok(())
        };
        if crash_at == Some(InstallStep::Verified) {
            return crash();
        }
        let mut meta = {
            let mut meta = self.lock_meta();
            let mut installed = *meta;
            installed.log_start = info.log_start;
            installed.cleaned_up_to = info.cleaned_up_to.clamp(info.log_start, info.end);
            installed.high_watermark = info.end;
            installed.last_purged = info.last_purged;
            installed.reset_pending = false;
            installed.install_pending = true;
            installed.store(&self.dir)?;
            *meta = installed;
            installed
        };
        if crash_at == Some(InstallStep::MetaWritten) {
            return crash();
        }
        if finish_install(&self.dir, &mut meta, crash_at)? {
            return crash();
        }
        // Open the new segments as open would, then take over what it built. The copy of the
        // lock file it holds keeps the lock (an `flock` lasts as long as any copy).
        let lock = match self.lock.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(lock) => lock.try_clone().at(&self.dir, "duplicating the lock file")?,
            None => return Err(LogError::Closed { path: self.dir.clone() }),
        };
        let fresh = recover(self.dir.clone(), self.config.clone(), lock)?;
        // It must not close what it opened when dropped: this log owns it now.
        fresh.closed.store(true, Ordering::Release);
        std::mem::swap(&mut *w, &mut *fresh.writer.lock().unwrap_or_else(|p| p.into_inner()));
        {
            let mut terms = self.lock_terms();
            std::mem::swap(&mut *terms, &mut *fresh.lock_terms());
            *self.lock_meta() = *fresh.lock_meta();
            self.snapshot.store(fresh.snapshot.load_full());
            let log_end = fresh.log_end.load(Ordering::Acquire);
            self.log_end.store(log_end, Ordering::Release);
            self.synced.store(log_end, Ordering::Release);
            self.cleaned_up_to.store(fresh.cleaned_up_to.load(Ordering::Acquire), Ordering::Release);
        }
        self.publish_high_watermark(fresh.high_watermark.load(Ordering::Acquire));
        Ok(())
    }
}
