//! The state machine of a partition. The partition's state is its log, so applying an entry
//! only moves the high watermark past it (readers see it from then on) and tracks the
//! membership. A snapshot is "the state at an offset": the last applied log id and the
//! membership then; the data is the segments themselves, which stay on disk.
//!
//! The membership is kept in `raft.membership` beside the segments (written whole through a
//! rename, at each applied membership entry: rare), so a restart need not scan the log for it.

use std::{
    fs,
    io::{Cursor, Write},
    path::{Path, PathBuf},
    sync::Arc,
};

use openraft::{EntryPayload, RaftSnapshotBuilder, SnapshotMeta, StorageIOError};
use prost::Message;
use strata_proto::cluster::v1 as pb;

use crate::{
    ReplicationError, TypeConfig,
    codec::{log_id_from_pb, log_id_to_pb, membership_from_pb, membership_to_pb},
    log_store::{PartitionLog, StrataLog},
    types::{Entry, LogId, StorageError, StoredMembership, log_id},
};

const MEMBERSHIP_FILE: &str = "raft.membership";

type Snapshot = openraft::Snapshot<TypeConfig>;

/// Applies committed entries of one partition.
pub(crate) struct StateMachine {
    log: Arc<StrataLog>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    current_snapshot: Option<SnapshotMeta<u64, openraft::BasicNode>>,
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> ReplicationError {
    ReplicationError::MembershipFile { path: path.to_path_buf(), reason: reason.to_string() }
}

fn read_membership(dir: &Path) -> Result<StoredMembership, ReplicationError> {
    let path = dir.join(MEMBERSHIP_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(StoredMembership::default()),
        Err(e) => return Err(file_error(&path, e)),
    };
    let meta = pb::SnapshotMeta::decode(&bytes[..]).map_err(|e| file_error(&path, e))?;
    let membership = membership_from_pb(meta.membership.unwrap_or_default()).map_err(|e| file_error(&path, e))?;
    Ok(StoredMembership::new(meta.membership_log_id.map(log_id_from_pb), membership))
}

fn write_membership(dir: &Path, membership: &StoredMembership) -> Result<(), ReplicationError> {
    let path = dir.join(MEMBERSHIP_FILE);
    let tmp: PathBuf = dir.join(format!("{MEMBERSHIP_FILE}.tmp"));
    let meta = pb::SnapshotMeta {
        last_log_id: None,
        membership_log_id: membership.log_id().as_ref().map(log_id_to_pb),
        membership: Some(membership_to_pb(membership.membership())),
        snapshot_id: String::new(),
    };
    let write = || -> std::io::Result<()> {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&meta.encode_to_vec())?;
        file.sync_all()?;
        fs::rename(&tmp, &path)?;
        fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| file_error(&path, e))
}

impl StateMachine {
    /// The state machine of an opened partition: applied up to the persisted high watermark,
    /// or to the last applied membership entry if that is further.
    pub(crate) fn open(log: Arc<StrataLog>) -> Result<StateMachine, ReplicationError> {
        let membership = read_membership(log.dir())?;
        let high_watermark = log.high_watermark();
        let mut last_applied = match high_watermark.checked_sub(1) {
            Some(last) => log.term_at(last).map_err(|e| file_error(log.dir(), e))?.map(|term| log_id(term, last)),
            None => None,
        };
        // The membership file is written when its entry is applied, which needs it committed;
        // the high watermark in partition.meta may be older than that after a crash.
        if let Some(applied) = membership.log_id()
            && Some(*applied) > last_applied
        {
            log.commit_to(applied.index + 1).map_err(|e| file_error(log.dir(), e))?;
            last_applied = Some(*applied);
        }
        Ok(StateMachine { log, last_applied, membership, current_snapshot: None })
    }

    fn snapshot_meta(&self) -> SnapshotMeta<u64, openraft::BasicNode> {
        let snapshot_id = match self.last_applied {
            Some(id) => format!("{}-{}", id.leader_id.term, id.index),
            None => "empty".to_string(),
        };
        SnapshotMeta { last_log_id: self.last_applied, last_membership: self.membership.clone(), snapshot_id }
    }
}

/// Builds a snapshot: the state at the last applied offset.
pub(crate) struct SnapshotBuilder {
    meta: SnapshotMeta<u64, openraft::BasicNode>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        Ok(Snapshot { meta: self.meta.clone(), snapshot: Box::new(Cursor::new(Vec::new())) })
    }
}

impl openraft::storage::RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<u64>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut offsets = Vec::new();
        for entry in entries {
            if let EntryPayload::Membership(membership) = entry.payload {
                self.membership = StoredMembership::new(Some(entry.log_id), membership);
                write_membership(self.log.dir(), &self.membership)
                    .map_err(|e| StorageIOError::write_state_machine(&e))?;
            }
            self.last_applied = Some(entry.log_id);
            offsets.push(entry.log_id.index);
        }
        if let Some(last) = self.last_applied {
            self.log.commit_to(last.index + 1).map_err(|e| StorageIOError::apply(last, &e))?;
        }
        Ok(offsets)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { meta: self.snapshot_meta() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        _snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        if let Some(last) = meta.last_log_id {
            self.log
                .reset_after(last.index, last.leader_id.term)
                .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
            self.log.commit_to(last.index + 1).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        }
        self.membership = meta.last_membership.clone();
        write_membership(self.log.dir(), &self.membership).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        self.last_applied = meta.last_log_id;
        self.current_snapshot = Some(meta.clone());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.current_snapshot.clone().map(|meta| Snapshot { meta, snapshot: Box::new(Cursor::new(Vec::new())) }))
    }
}
