//! How batches reach the active segment's file. A `pwrite` per batch is a system call into the
//! file system, and a slow one when the thread had been idle: 12–24 µs per 250-byte write at
//! 100 writes/s against under 1 µs when warm (benches/README.md, "Appends through a mapping"). So
//! the file is extended ahead of the writes with `fallocate`, [`RESERVE_STEP`] at a time, and
//! a small batch that comes after a pause is copied into a shared writable mapping of it,
//! which is one `memcpy` into the page cache: a process crash loses nothing, and `fdatasync`
//! makes it durable as before. Batches written back to back still go through `pwrite`,
//! which is then cheaper ([`MAPPED_WRITE_MAX`]).
//!
//! `fallocate` allocates the blocks, so a full disk is an error when the file is extended,
//! never a SIGBUS at a write. Where `fallocate` or the mapping is refused (another file
//! system, another OS), batches are written with `pwrite` as before.
//!
//! Invariant: the file's bytes from the log's `active_len` to [`ReservedTail::file_len`] are
//! zeros no batch owns. Rolling and closing cut the file back to `active_len`, so sealed
//! segments end at their last batch; recovery cuts a tail of zeros without reporting a loss.

use std::{
    fs::File,
    os::unix::fs::FileExt,
    path::Path,
    time::{Duration, Instant},
};

use memmap2::{MmapOptions, MmapRaw, UncheckedAdvice};

use crate::{LogError, error::IoContext};

/// How far ahead of the writes the file is extended.
pub(crate) const RESERVE_STEP: u64 = 1 << 20;

/// Only a batch up to this size, coming after the writer was idle for [`MAPPED_AFTER_IDLE`],
/// goes through the mapping; the others go through `pwrite`. Appending flat out, `pwrite`
/// is warm (about 1 µs), each page written through the mapping costs a page fault, and
/// writeback has to convert the blocks `fallocate` reserved: with every batch mapped, scenario
/// Ab delivered about 8% less and its p99 rose from 65–82 ms to 86–118 ms.
pub(crate) const MAPPED_WRITE_MAX: usize = 4 << 10;

/// See [`MAPPED_WRITE_MAX`]. After 1 ms of idling a `pwrite` cost 3–6 µs here, after 10 ms
/// 12–24 µs.
pub(crate) const MAPPED_AFTER_IDLE: Duration = Duration::from_micros(500);

/// The write side of the active segment file.
pub(crate) struct ReservedTail {
    /// The file's length: what was written plus the reserved zeros.
    file_len: u64,
    /// A shared writable mapping of the file; `None` until the first mapped write.
    map: Option<MmapRaw>,
    /// False once `fallocate` or `mmap` was refused: `pwrite` from then on.
    mapped_writes: bool,
    /// The mapped pages below this were released ([`ReservedTail::release_written_pages`]).
    released_below: usize,
    /// When the last batch was written.
    last_write: Option<Instant>,
    /// [`MAPPED_AFTER_IDLE`]; zero in unit tests, to map every small batch.
    map_after_idle: Duration,
}

impl ReservedTail {
    /// The tail of a file `file_len` bytes long, all of it written.
    pub(crate) fn new(file_len: u64) -> ReservedTail {
        ReservedTail {
            file_len,
            map: None,
            mapped_writes: cfg!(target_os = "linux"),
            released_below: 0,
            last_write: None,
            map_after_idle: MAPPED_AFTER_IDLE,
        }
    }

    /// Writes `bytes` at `position` (the end of what was written), within the first
    /// `capacity` bytes of the file when it goes through the mapping.
    pub(crate) fn write(
        &mut self,
        file: &File,
        path: &Path,
        bytes: &[u8],
        position: u64,
        capacity: u64,
    ) -> Result<(), LogError> {
        let end = position + bytes.len() as u64;
        let now = Instant::now();
        let was_idle = self.last_write.is_none_or(|last| now.duration_since(last) >= self.map_after_idle);
        self.last_write = Some(now);
        let mapped = self.mapped_writes && was_idle && bytes.len() <= MAPPED_WRITE_MAX && end <= capacity;
        if mapped && self.reserve(file, path, position, end, capacity) {
            let map = self.map.as_ref().expect("reserve maps the file");
            debug_assert!(end <= map.len() as u64 && end <= self.file_len);
            // SAFETY: `[position, end)` lies within the mapping and within the file (whose
            // blocks `fallocate` allocated), and past every byte readers may see (the log's
            // visible length never exceeds what was written before this batch); the writer
            // lock, which the caller holds, makes this the only writer.
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), map.as_mut_ptr().add(position as usize), bytes.len())
            };
            return Ok(());
        }
        if let Err(e) = file.write_all_at(bytes, position) {
            // Cut off whatever part was written, so the file matches what we believe.
            let _ = file.set_len(position);
            self.file_len = position;
            return Err(e).at(path, "appending a batch");
        }
        self.file_len = self.file_len.max(end);
        Ok(())
    }

    /// Makes `[position, end)` writable through the mapping: extends the file and maps it as
    /// needed. False when that failed; the caller then writes with `pwrite`.
    fn reserve(&mut self, file: &File, path: &Path, position: u64, end: u64, capacity: u64) -> bool {
        if end > self.file_len {
            let new_len = (end + RESERVE_STEP).min(capacity).max(end);
            if let Err(error) = allocate(file, self.file_len, new_len - self.file_len) {
                // No room for a whole step may still leave room for this batch: `pwrite` will
                // tell. A file system without `fallocate` will not grow one.
                if error.raw_os_error() != Some(libc::ENOSPC) {
                    tracing::debug!(file = %path.display(), %error, "fallocate refused; appending with pwrite");
                    self.mapped_writes = false;
                }
                return false;
            }
            self.file_len = new_len;
            self.release_written_pages(position);
        }
        if self.map.as_ref().is_none_or(|map| (map.len() as u64) < end) {
            match MmapOptions::new().len(capacity as usize).map_raw(file) {
                Ok(map) => self.map = Some(map),
                Err(error) => {
                    tracing::debug!(file = %path.display(), %error, "mapping for writes refused; appending with pwrite");
                    self.mapped_writes = false;
                    self.map = None;
                    return false;
                }
            }
        }
        true
    }

    /// Drops this process's page-table entries for the mapped pages wholly below `position`,
    /// so the written part of a segment does not accumulate in the broker's RSS. The pages
    /// stay in the page cache (dirty ones are written back as usual).
    fn release_written_pages(&mut self, position: u64) {
        let Some(map) = &self.map else { return };
        let below = (position as usize & !(page_size() - 1)).min(map.len());
        if below > self.released_below {
            // SAFETY: no reference into this mapping is held; a later write faults the page
            // back in from the page cache, which kept what was written.
            let from = self.released_below;
            let _ = unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, from, below - from) };
            self.released_below = below;
        }
    }

    /// Cuts the reserved zeros off: the file ends at `len`, the end of its last batch.
    pub(crate) fn cut_back(&mut self, file: &File, path: &Path, len: u64) -> Result<(), LogError> {
        self.map = None;
        self.released_below = 0;
        if self.file_len > len {
            file.set_len(len).at(path, "cutting the reserved tail")?;
            self.file_len = len;
        }
        Ok(())
    }
}

#[cfg(target_os = "linux")]
fn allocate(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(std::io::ErrorKind::InvalidInput.into());
    };
    // SAFETY: plain system call on a descriptor `file` keeps open.
    match unsafe { libc::fallocate(file.as_raw_fd(), 0, offset, len) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

#[cfg(not(target_os = "linux"))]
fn allocate(_file: &File, _offset: u64, _len: u64) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).ok().filter(|s| s.is_power_of_two()).unwrap_or(4096)
}

/// Whether `bytes` (the tail after the last valid batch) is reserved space: zeros only.
pub(crate) fn is_reserved(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty file and its tail, mapping every small batch (no idle time required).
    fn empty_segment() -> (tempfile::TempDir, std::path::PathBuf, File, ReservedTail) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        let tail = ReservedTail { map_after_idle: Duration::ZERO, ..ReservedTail::new(0) };
        (dir, path, file, tail)
    }

    #[test]
    fn mapped_writes_land_in_the_file_and_cut_back_leaves_exactly_them() {
        let (_dir, path, file, mut tail) = empty_segment();
        let mut expected = Vec::new();
        for i in 0..300u32 {
            let batch = vec![(i % 251) as u8 + 1; 100 + (i as usize % 7)];
            tail.write(&file, &path, &batch, expected.len() as u64, 1 << 30).unwrap();
            expected.extend_from_slice(&batch);
        }
        let on_disk = std::fs::read(&path).unwrap();
        if cfg!(target_os = "linux") && tail.mapped_writes {
            let reserved = (on_disk.len() - expected.len()) as u64;
            assert!(reserved > 0 && reserved <= RESERVE_STEP, "reserved up to one step ahead: {reserved}");
            assert!(is_reserved(&on_disk[expected.len()..]));
        }
        assert_eq!(&on_disk[..expected.len()], &expected[..]);
        tail.cut_back(&file, &path, expected.len() as u64).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }

    #[test]
    fn large_batches_and_batches_past_the_capacity_go_through_pwrite_between_mapped_ones() {
        let (_dir, path, file, mut tail) = empty_segment();
        let large = MAPPED_WRITE_MAX + 1000;
        let mut expected = Vec::new();
        // Mapped, pwrite into the reserved space (too large to map), mapped again, then
        // pwrite past the mapping's capacity.
        for (fill, len, capacity) in [(1u8, 100, 1 << 20), (2, large, 1 << 20), (3, 100, 1 << 20), (4, 5000, 4096)] {
            tail.write(&file, &path, &vec![fill; len], expected.len() as u64, capacity).unwrap();
            expected.extend(std::iter::repeat_n(fill, len));
        }
        tail.cut_back(&file, &path, expected.len() as u64).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }

    #[test]
    fn only_zeros_are_reserved() {
        assert!(is_reserved(&[]));
        assert!(is_reserved(&[0; 64]));
        assert!(!is_reserved(&[0, 0, 1, 0]));
    }
}
