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
const META_LEN: usize = 64;
const MARKER_LEN: usize = 48;
const VERSION: u32 = 1;

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
}

impl PartitionMeta {
    fn encode(&self) -> [u8; META_LEN] {
        let mut b = [0u8; META_LEN];
        b[4..8].copy_from_slice(&VERSION.to_le_bytes());
        b[8..16].copy_from_slice(&self.vote.term.to_le_bytes());
        b[16..24].copy_from_slice(&self.vote.node.unwrap_or(u64::MAX).to_le_bytes());
        b[24] = u8::from(self.vote.committed);
        b[32..40].copy_from_slice(&self.log_start.to_le_bytes());
        b[40..48].copy_from_slice(&self.cleaned_up_to.to_le_bytes());
        b[48..56].copy_from_slice(&self.high_watermark.to_le_bytes());
        let crc = crc32fast::hash(&b[4..]);
        b[0..4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Result<Self, &'static str> {
        if b.len() != META_LEN {
            return Err("wrong length");
        }
        if crc32fast::hash(&b[4..]) != u32_at(b, 0) {
            return Err("CRC mismatch");
        }
        if u32_at(b, 4) != VERSION {
            return Err("unknown version");
        }
        if b[24] > 1 {
            return Err("bad committed flag");
        }
        let node = u64_at(b, 16);
        Ok(PartitionMeta {
            vote: Vote { term: u64_at(b, 8), node: (node != u64::MAX).then_some(node), committed: b[24] == 1 },
            log_start: u64_at(b, 32),
            cleaned_up_to: u64_at(b, 40),
            high_watermark: u64_at(b, 48),
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
