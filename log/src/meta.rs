//! Small fsynced files beside the segments: `partition.meta` (vote, log start, high
//! watermark) and the `clean_shutdown` marker. Both are written whole through a rename.

use std::{
    fs::{self, File},
    io::Write,
    path::Path,
};

use crate::{LogError, error::IoContext};

pub(crate) const META_FILE: &str = "partition.meta";
pub(crate) const CLEAN_SHUTDOWN_FILE: &str = "clean_shutdown";
/// `partition.meta` of version 1 (before the last purged entry and the reset flag).
const META_V1_LEN: usize = 64;
const META_LEN: usize = 80;
const META_VERSION: u32 = 2;
const MARKER_LEN: usize = 48;
/// The clean-shutdown marker's version; its layout did not change with `partition.meta`'s.
const VERSION: u32 = 1;
/// `flags` bit 0: `last_purged_term` and `last_purged_offset` hold a value.
const FLAG_LAST_PURGED: u8 = 1;
/// `flags` bit 1: a reset to a snapshot (`Log::reset_to`) committed; open finishes it.
const FLAG_RESET_PENDING: u8 = 2;
/// `flags` bit 2: an install of snapshot segments (`Log::install_segments`) committed; open
/// finishes it.
const FLAG_INSTALL_PENDING: u8 = 4;

/// A Raft vote: the term, and whom this node voted for in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Vote {
    /// The term.
    pub term: u64,
    /// The node voted for, if any.
    pub node: Option<u64>,
    /// Whether the vote was granted by a quorum (openraft's committed vote).
    pub committed: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PartitionMeta {
    pub vote: Vote,
    pub log_start: u64,
    pub cleaned_up_to: u64,
    pub high_watermark: u64,
    /// The term and offset of the last entry removed from the start of the log (retention,
    /// or a reset to a snapshot), which Raft keeps as its last purged log id.
    pub last_purged: Option<(u64, u64)>,
    /// A reset to `log_start` committed and may not be finished on disk: every segment is
    /// to be deleted and an empty one started at `log_start`.
    pub reset_pending: bool,
    /// An install of snapshot segments committed and may not be finished on disk: the old
    /// segments are to be replaced by the staged ones (docs/format.md, "Snapshots").
    pub install_pending: bool,
}

impl PartitionMeta {
    fn encode(&self) -> [u8; META_LEN] {
        let mut b = [0u8; META_LEN];
        b[4..8].copy_from_slice(&META_VERSION.to_le_bytes());
        b[8..16].copy_from_slice(&self.vote.term.to_le_bytes());
        b[16..24].copy_from_slice(&self.vote.node.unwrap_or(u64::MAX).to_le_bytes());
        b[24] = u8::from(self.vote.committed);
        b[32..40].copy_from_slice(&self.log_start.to_le_bytes());
        b[40..48].copy_from_slice(&self.cleaned_up_to.to_le_bytes());
        b[48..56].copy_from_slice(&self.high_watermark.to_le_bytes());
        let mut flags = 0;
        if let Some((term, offset)) = self.last_purged {
            flags |= FLAG_LAST_PURGED;
            b[64..72].copy_from_slice(&term.to_le_bytes());
            b[72..80].copy_from_slice(&offset.to_le_bytes());
        }
        if self.reset_pending {
            flags |= FLAG_RESET_PENDING;
        }
        if self.install_pending {
            flags |= FLAG_INSTALL_PENDING;
        }
        b[25] = flags;
        let crc = crc32fast::hash(&b[4..]);
        b[0..4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes version 2, or version 1 (64 bytes, no last purged entry, no flags), which
    /// partitions written before control batches hold until their next metadata write.
    fn decode(b: &[u8]) -> Result<Self, &'static str> {
        if b.len() != META_LEN && b.len() != META_V1_LEN {
            return Err("wrong length");
        }
        if crc32fast::hash(&b[4..]) != u32_at(b, 0) {
            return Err("CRC mismatch");
        }
        let flags = match (u32_at(b, 4), b.len()) {
            (1, META_V1_LEN) => 0,
            (META_VERSION, META_LEN) => b[25],
            (1 | META_VERSION, _) => return Err("wrong length for its version"),
            _ => return Err("unknown version"),
        };
        if b[24] > 1 {
            return Err("bad committed flag");
        }
        if flags & !(FLAG_LAST_PURGED | FLAG_RESET_PENDING | FLAG_INSTALL_PENDING) != 0 {
            return Err("unknown flags");
        }
        let node = u64_at(b, 16);
        Ok(PartitionMeta {
            vote: Vote { term: u64_at(b, 8), node: (node != u64::MAX).then_some(node), committed: b[24] == 1 },
            log_start: u64_at(b, 32),
            cleaned_up_to: u64_at(b, 40),
            high_watermark: u64_at(b, 48),
            last_purged: (flags & FLAG_LAST_PURGED != 0).then(|| (u64_at(b, 64), u64_at(b, 72))),
            reset_pending: flags & FLAG_RESET_PENDING != 0,
            install_pending: flags & FLAG_INSTALL_PENDING != 0,
        })
    }

    /// Reads the file; a missing file is the default meta.
    pub(crate) fn load(dir: &Path) -> Result<Self, LogError> {
        let path = dir.join(META_FILE);
        match fs::read(&path) {
            Ok(bytes) => PartitionMeta::decode(&bytes).map_err(|reason| LogError::BadMetadata { path, reason }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(PartitionMeta::default()),
            Err(e) => Err(e).at(&path, "reading"),
        }
    }

    pub(crate) fn store(&self, dir: &Path) -> Result<(), LogError> {
        write_atomically(dir, META_FILE, &self.encode())
    }
}

/// What a clean close recorded about the active segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CleanShutdown {
    pub active_base: u64,
    pub active_len: u64,
    pub log_end: u64,
    pub last_term: u64,
    pub active_max_timestamp: i64,
}

impl CleanShutdown {
    pub(crate) fn store(&self, dir: &Path) -> Result<(), LogError> {
        let mut b = [0u8; MARKER_LEN];
        b[4..8].copy_from_slice(&VERSION.to_le_bytes());
        b[8..16].copy_from_slice(&self.active_base.to_le_bytes());
        b[16..24].copy_from_slice(&self.active_len.to_le_bytes());
        b[24..32].copy_from_slice(&self.log_end.to_le_bytes());
        b[32..40].copy_from_slice(&self.last_term.to_le_bytes());
        b[40..48].copy_from_slice(&self.active_max_timestamp.to_le_bytes());
        let crc = crc32fast::hash(&b[4..]);
        b[0..4].copy_from_slice(&crc.to_le_bytes());
        write_atomically(dir, CLEAN_SHUTDOWN_FILE, &b)
    }

    /// Reads the marker; anything missing or damaged is simply "not clean".
    pub(crate) fn load(dir: &Path) -> Option<Self> {
        let b = fs::read(dir.join(CLEAN_SHUTDOWN_FILE)).ok()?;
        if b.len() != MARKER_LEN || crc32fast::hash(&b[4..]) != u32_at(&b, 0) || u32_at(&b, 4) != VERSION {
            return None;
        }
        Some(CleanShutdown {
            active_base: u64_at(&b, 8),
            active_len: u64_at(&b, 16),
            log_end: u64_at(&b, 24),
            last_term: u64_at(&b, 32),
            active_max_timestamp: u64_at(&b, 40) as i64,
        })
    }

    /// Removes the marker durably, so a later crash is not mistaken for a clean close.
    pub(crate) fn remove(dir: &Path) -> Result<(), LogError> {
        let path = dir.join(CLEAN_SHUTDOWN_FILE);
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).at(&path, "removing"),
        }
    }
}

/// Writes `name` whole: a temporary file, fsync, rename, directory fsync.
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), LogError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&tmp).at(&tmp, "creating")?;
    file.write_all(bytes).at(&tmp, "writing")?;
    file.sync_all().at(&tmp, "syncing")?;
    let path = dir.join(name);
    fs::rename(&tmp, &path).at(&path, "renaming into place")?;
    sync_dir(dir)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir, "syncing directory")
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_rejects_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(PartitionMeta::load(dir.path()).unwrap(), PartitionMeta::default());
        let meta = PartitionMeta {
            vote: Vote { term: 7, node: Some(3), committed: true },
            log_start: 10,
            cleaned_up_to: 12,
            high_watermark: 20,
            last_purged: Some((3, 9)),
            reset_pending: false,
            install_pending: false,
        };
        meta.store(dir.path()).unwrap();
        assert_eq!(PartitionMeta::load(dir.path()).unwrap(), meta);
        let path = dir.path().join(META_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes[9] ^= 1;
        fs::write(&path, bytes).unwrap();
        let err = PartitionMeta::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("partition.meta") && err.contains("CRC"), "{err}");
    }
}

#[cfg(test)]
mod version_tests {
    use super::*;

    /// A version-1 file, as partitions written before format version 2 hold, byte for byte.
    fn v1_bytes(term: u64, node: u64, log_start: u64, cleaned_up_to: u64, high_watermark: u64) -> Vec<u8> {
        let mut b = vec![0u8; META_V1_LEN];
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        b[8..16].copy_from_slice(&term.to_le_bytes());
        b[16..24].copy_from_slice(&node.to_le_bytes());
        b[24] = 1;
        b[32..40].copy_from_slice(&log_start.to_le_bytes());
        b[40..48].copy_from_slice(&cleaned_up_to.to_le_bytes());
        b[48..56].copy_from_slice(&high_watermark.to_le_bytes());
        let crc = crc32fast::hash(&b[4..]);
        b[0..4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn a_version_1_file_still_loads_and_is_rewritten_as_version_2() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(META_FILE), v1_bytes(4, 2, 100, 120, 150)).unwrap();
        let meta = PartitionMeta::load(dir.path()).unwrap();
        assert_eq!(
            meta,
            PartitionMeta {
                vote: Vote { term: 4, node: Some(2), committed: true },
                log_start: 100,
                cleaned_up_to: 120,
                high_watermark: 150,
                last_purged: None,
                reset_pending: false,
                install_pending: false,
            }
        );
        meta.store(dir.path()).unwrap();
        let bytes = fs::read(dir.path().join(META_FILE)).unwrap();
        assert_eq!((bytes.len(), u32_at(&bytes, 4)), (META_LEN, META_VERSION));
        assert_eq!(PartitionMeta::load(dir.path()).unwrap(), meta);
    }

    #[test]
    fn the_reset_flag_and_last_purged_round_trip_and_unknown_flags_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let meta = PartitionMeta { log_start: 7, last_purged: Some((2, 6)), reset_pending: true, ..Default::default() };
        meta.store(dir.path()).unwrap();
        assert_eq!(PartitionMeta::load(dir.path()).unwrap(), meta);
        let installing = PartitionMeta { install_pending: true, ..meta };
        installing.store(dir.path()).unwrap();
        assert_eq!(PartitionMeta::load(dir.path()).unwrap(), installing);
        let mut bytes = meta.encode();
        bytes[25] |= 0x80;
        let crc = crc32fast::hash(&bytes[4..]);
        bytes[0..4].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(PartitionMeta::decode(&bytes), Err("unknown flags"));
        assert_eq!(PartitionMeta::decode(&bytes[..META_V1_LEN]), Err("CRC mismatch"));
    }
}
