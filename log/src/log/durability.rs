//! Durability: fsync of appended data, group commit, the record of a failed fsync and the
//! way back from it, the flusher's work on a log, and close.

use std::{
    fs::File,
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering},
    time::Instant,
};

use super::Shared;
use crate::{
    FlushPolicy, LogError,
    error::IoContext,
    meta::{CleanShutdown, sync_dir},
    segment::BatchWalker,
};

/// Room beyond the failed write before [`Log::disk_full`] says there is space again: the
/// append may also have to create a segment and its index files.
pub(super) const DISK_FULL_HEADROOM: u64 = 64 << 10;

/// Bytes an unprivileged process may still write on the file system holding `dir`.
pub(super) fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a valid C string and `stat` is written by the call before it is read.
    if unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs succeeded, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Called with the wall time of each fsync of appended data (group commit or the
/// background flush), for metrics. It runs on the thread that fsyncs: keep it cheap.
pub type FsyncObserver = Arc<dyn Fn(std::time::Duration) + Send + Sync>;

impl Shared {
    /// `Err` once an fsync of appended data has failed (see [`LogError::SyncFailed`]).
    pub(crate) fn check_sync_failure(&self) -> Result<(), LogError> {
        match self.sync_failure.load().as_deref() {
            None => Ok(()),
            Some((path, reason)) => {
                Err(LogError::SyncFailed { path: path.clone(), partition: self.dir.clone(), reason: reason.clone() })
            }
        }
    }

    /// After a failed fsync, only what an earlier fsync covered is durable.
    pub(super) fn check_synced(&self, offset: u64) -> Result<(), LogError> {
        if self.has_failed() && self.synced.load(Ordering::Acquire) <= offset {
            return self.check_sync_failure();
        }
        Ok(())
    }

    /// Fsyncs appended data in `file`. A failure is remembered: from then on the log refuses
    /// appends, and never fsyncs that data again, since a second fsync may succeed without
    /// writing what the first one lost.
    pub(super) fn sync_appended(&self, file: &File, path: &Path) -> Result<(), LogError> {
        self.check_sync_failure()?;
        self.fsync(file).map_err(|error| self.record_sync_failure(path, &error))
    }

    /// As [`Shared::sync_appended`], for the directory entry of a new segment.
    pub(super) fn sync_dir_of_appends(&self) -> Result<(), LogError> {
        match sync_dir(&self.dir) {
            Err(LogError::Io { path, source, .. }) => Err(self.record_sync_failure(&path, &source)),
            other => other,
        }
    }

    pub(super) fn recover_failed_sync(&self) -> Result<bool, LogError> {
        if !self.has_failed() {
            return Ok(false);
        }
        let _maintenance = self.lock_maintenance();
        let mut w = self.lock_writer()?;
        let Err(failed) = self.check_sync_failure() else { return Ok(false) };
        let (active, file, len) = (Arc::clone(&w.active), Arc::clone(&w.file), w.active_len as usize);
        let data = &active.data[..len];
        let mut walker = BatchWalker::new(data, 0, active.base_offset);
        for item in &mut walker {
            if let Err(defect) = item {
                tracing::error!(
                    file = %active.path.display(),
                    position = defect.position,
                    reason = defect.reason,
                    "cannot recover from the failed fsync in place: a batch no longer checks out; reopen the partition"
                );
                return Err(failed);
            }
        }
        if walker.position() != len {
            return Err(failed);
        }
        // Written from a copy, not from the mapping of the very pages being written.
        const CHUNK: usize = 1 << 20;
        let mut copy = Vec::with_capacity(CHUNK.min(len));
        for (i, chunk) in data.chunks(CHUNK).enumerate() {
            copy.clear();
            copy.extend_from_slice(chunk);
            std::os::unix::fs::FileExt::write_all_at(file.as_ref(), &copy, (i * CHUNK) as u64)
                .at(&active.path, "writing a segment again after a failed fsync")?;
        }
        if let Err(error) = self.fsync(&file) {
            self.sync_failure.store(Some(Arc::new((active.path.to_path_buf(), error.to_string()))));
            return Err(self.check_sync_failure().expect_err("just stored"));
        }
        sync_dir(&self.dir)?;
        self.synced.fetch_max(w.log_end, Ordering::AcqRel);
        w.dirty = false;
        self.sync_failure.store(None);
        tracing::warn!(
            partition = %self.dir.display(),
            file = %active.path.display(),
            bytes = len,
            "recovered from a failed fsync: the active segment was written again and fsynced; appends are accepted again"
        );
        Ok(true)
    }

    /// `fdatasync`, or the failure [`Log::fail_next_fsync_for_tests`] asked for.
    pub(super) fn fsync(&self, file: &File) -> std::io::Result<()> {
        match self.fail_next_fsync.swap(false, Ordering::SeqCst) {
            true => Err(std::io::Error::from_raw_os_error(libc::EIO)),
            false => file.sync_data(),
        }
    }

    pub(super) fn record_sync_failure(&self, path: &Path, error: &std::io::Error) -> LogError {
        let failure = Some(Arc::new((path.to_path_buf(), error.to_string())));
        let previous = self.sync_failure.compare_and_swap(&None::<Arc<(PathBuf, String)>>, failure);
        if previous.is_none() {
            tracing::error!(
                partition = %self.dir.display(),
                file = %path.display(),
                %error,
                "fsync failed: the partition refuses appends until it is recovered"
            );
        }
        self.check_sync_failure().expect_err("just set")
    }

    pub(crate) fn has_failed(&self) -> bool {
        self.sync_failure.load().is_some()
    }

    pub(crate) fn flush_interval(&self) -> Option<std::time::Duration> {
        match self.config.flush {
            FlushPolicy::Interval(every) => Some(every),
            // Under `Always` the tick only writes the active index tail (plus a cheap fsync),
            // so recovery after a crash scans little.
            FlushPolicy::Always => Some(std::time::Duration::from_secs(1)),
            FlushPolicy::Never => None,
        }
    }

    /// Group commit: the first waiter fsyncs for everyone who appended before it started.
    pub(super) fn sync_to(&self, offset: u64) -> Result<(), LogError> {
        loop {
            if self.synced.load(Ordering::Acquire) > offset {
                return Ok(());
            }
            let mut in_progress = self.sync_in_progress.lock().unwrap_or_else(|p| p.into_inner());
            if self.synced.load(Ordering::Acquire) > offset {
                return Ok(());
            }
            if *in_progress {
                let _guard = self.sync_done.wait(in_progress).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            *in_progress = true;
            drop(in_progress);
            let result = self.flush_now(false);
            *self.sync_in_progress.lock().unwrap_or_else(|p| p.into_inner()) = false;
            self.sync_done.notify_all();
            result?;
            let log_end = self.log_end.load(Ordering::Acquire);
            if log_end <= offset {
                return Err(LogError::NotWritten { offset, log_end });
            }
        }
    }

    /// Fsyncs the active segment up to the current log end. With `with_index`, also appends
    /// pending index entries to the index files first.
    pub(crate) fn flush_now(&self, with_index: bool) -> Result<(), LogError> {
        self.check_sync_failure()?;
        let (file, path, target, written) = {
            let mut w = self.lock_writer()?;
            // The index files are caches (recovery rebuilds them): failing to extend one, on a
            // full disk say, must not hold back the fsync of the data.
            if with_index && let Err(error) = self.write_index_files(&mut w, false, false) {
                tracing::debug!(dir = %self.dir.display(), %error, "appending index entries failed; retried at the next flush");
            }
            (Arc::clone(&w.file), Arc::clone(&w.active.path), w.log_end, w.batches_written)
        };
        let started = Instant::now();
        self.sync_appended(&file, &path)?;
        // Clean only if no batch was written during the fsync, and only now that it
        // succeeded: a failed fsync leaves the data dirty.
        if let Ok(mut w) = self.writer.lock()
            && w.batches_written == written
            && Arc::ptr_eq(&w.file, &file)
        {
            w.dirty = false;
        }
        let elapsed = started.elapsed();
        tracing::trace!(elapsed_us = elapsed.as_micros() as u64, "fsync");
        if let Some(observer) = self.fsync_observer.get() {
            observer(elapsed);
        }
        self.synced.fetch_max(target, Ordering::AcqRel);
        Ok(())
    }

    /// Tells the kernel that this process no longer needs the pages readers touched through
    /// the segment mappings: the whole written part of closed segments, and the visible part
    /// (below the high watermark) of the active one. Without this, every page ever read stays
    /// mapped, and the process's RSS grows with the volume read. The pages stay in the page
    /// cache, so a reader that comes back faults them in again without disk I/O (while memory
    /// allows). Takes no lock: it works on the current snapshot, like a reader.
    pub(crate) fn release_mapped_pages(&self) {
        let snapshot = self.snapshot.load_full();
        let Some((active, closed)) = snapshot.segments.split_last() else { return };
        for segment in closed {
            segment.release_pages(segment.state.written_len.load(Ordering::Acquire));
        }
        active.release_pages(active.state.visible_len.load(Ordering::Acquire));
    }

    pub(crate) fn is_dirty(&self) -> bool {
        self.writer.lock().is_ok_and(|w| w.dirty)
    }

    pub(super) fn close(&self) -> Result<(), LogError> {
        let mut w = match self.writer.lock() {
            Ok(w) => w,
            Err(_) => return Err(LogError::Closed { path: self.dir.clone() }),
        };
        if self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        if let Err(failed) = self.check_sync_failure() {
            // Closed as a crash would leave it (no fsync, no clean-shutdown marker), so the
            // next open scans the tail and keeps only whole batches that are on disk.
            self.closed.store(true, Ordering::Release);
            self.lock.lock().unwrap_or_else(|p| p.into_inner()).take();
            self.high_watermark_watch.send_modify(|_| {});
            return Err(failed);
        }
        w.cut_reserved()?;
        self.write_index_files(&mut w, true, true)?;
        self.sync_appended(&w.file, &w.active.path)?;
        self.synced.fetch_max(w.log_end, Ordering::AcqRel);
        {
            let mut meta = self.lock_meta();
            meta.high_watermark = self.high_watermark.load(Ordering::Acquire);
            meta.store(&self.dir)?;
        }
        CleanShutdown {
            active_base: w.active.base_offset,
            active_len: w.active_len,
            log_end: w.log_end,
            last_term: w.last_batch.map_or(0, |(term, _)| term),
            active_max_timestamp: w.active.state.max_timestamp.load(Ordering::Relaxed),
        }
        .store(&self.dir)?;
        w.dirty = false;
        self.closed.store(true, Ordering::Release);
        self.lock.lock().unwrap_or_else(|p| p.into_inner()).take();
        // Wake readers waiting for data that will not come.
        self.high_watermark_watch.send_modify(|_| {});
        Ok(())
    }
}
