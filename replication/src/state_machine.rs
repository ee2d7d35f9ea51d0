//! The state machine of a partition. The partition's state is its log, so applying an entry
//! only moves the high watermark past it (readers see it from then on) and tracks the
//! membership. A snapshot is the log's segment files up to an offset plus the state there
//! (its log id and the membership then): see `snapshot.rs` and docs/format.md, "Snapshots".
//!
//! The membership is kept in `raft.membership` beside the segments (written whole through a
//! rename, at each applied membership entry: rare), so a restart need not scan the log for it.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use openraft::{EntryPayload, RaftSnapshotBuilder, SnapshotMeta, StorageIOError};
use prost::Message;
use strata_proto::cluster::v1 as pb;

use crate::{
    ReplicationError, TypeConfig,
    codec::{log_id_from_pb, log_id_to_pb, membership_from_pb, membership_to_pb},
    log_store::{LogStoreError, PartitionLog, StrataLog},
    snapshot::SegmentSnapshot,
    types::{Entry, LogId, StorageError, StoredMembership, log_id},
};

const MEMBERSHIP_FILE: &str = "raft.membership";

type Snapshot = openraft::Snapshot<TypeConfig>;

/// Applies committed entries of one partition.
pub(crate) struct StateMachine {
    log: Arc<StrataLog>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
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
        Ok(StateMachine { log, last_applied, membership })
    }
}

/// Tells snapshots apart: openraft keys a transfer in progress by its id.
static SNAPSHOT_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// A snapshot of `log` at `last_applied`, whose membership is `membership`: the segment
/// files up to the last whole batch at or below it (a snapshot of a batch's first records
/// only would leave the follower's log ending inside a batch), opened now so that retention
/// cannot delete them while they are sent. `None` before anything was applied.
fn build(
    log: &StrataLog,
    last_applied: Option<LogId>,
    membership: &StoredMembership,
) -> Result<Option<Snapshot>, LogStoreError> {
    let Some(applied) = last_applied else { return Ok(None) };
    let (last, data) = match log.log().snapshot_files(applied.index)? {
        Some(files) => (log_id(files.info.last_term, files.info.end - 1), SegmentSnapshot::send(files)),
        // No whole batch at or below it (the log was reset to a later start, or it ends
        // inside the first batch): only the state at the offset.
        None => {
            let offsets = log.log().offsets();
            let info = strata_log::SnapshotInfo {
                end: applied.index + 1,
                last_term: applied.leader_id.term,
                log_start: applied.index + 1,
                cleaned_up_to: applied.index + 1,
                last_purged: Some((applied.leader_id.term, applied.index)),
            };
            debug_assert!(offsets.high_watermark > applied.index, "a snapshot of what is not committed");
            (applied, SegmentSnapshot::send_empty(info))
        }
    };
    let sequence = SNAPSHOT_SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let meta = SnapshotMeta {
        last_log_id: Some(last),
        last_membership: membership.clone(),
        snapshot_id: format!("{}-{}-{}-{sequence}", last.leader_id.term, last.index, std::process::id()),
    };
    Ok(Some(Snapshot { meta, snapshot: Box::new(data) }))
}

/// Builds a snapshot: the segment files at the last applied offset.
pub(crate) struct SnapshotBuilder {
    log: Arc<StrataLog>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let built = build(&self.log, self.last_applied, &self.membership)
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        // openraft builds snapshots only when retention asks (`partition.rs`), after
        // something was applied; an empty one stands for "nothing yet".
        Ok(built.unwrap_or_else(|| Snapshot {
            meta: SnapshotMeta {
                last_log_id: None,
                last_membership: self.membership.clone(),
                snapshot_id: "empty".to_string(),
            },
            snapshot: Box::new(SegmentSnapshot::send_empty(strata_log::SnapshotInfo {
                end: 0,
                last_term: 0,
                log_start: 0,
                cleaned_up_to: 0,
                last_purged: None,
            })),
        }))
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
        SnapshotBuilder {
            log: Arc::clone(&self.log),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SegmentSnapshot>, StorageError> {
        let snapshot = SegmentSnapshot::receive(self.log.log().staging_dir())
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Box::new(snapshot))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        snapshot: Box<SegmentSnapshot>,
    ) -> Result<(), StorageError> {
        let signature = Some(meta.signature());
        let failed =
            |e: &dyn std::error::Error| StorageIOError::write_snapshot(signature.clone(), &AnyError(e.to_string()));
        if let Some(last) = meta.last_log_id {
            let term = last.leader_id.term;
            // Raft keeps the log after a snapshot whose last entry it already holds.
            let held = self.log.term_at(last.index).map_err(|e| failed(&e))? == Some(term);
            if held {
                let _ = fs::remove_dir_all(self.log.log().staging_dir());
            } else {
                // Checking every staged batch and fsyncing the files reads and writes the
                // whole snapshot: off the async threads.
                let log = Arc::clone(&self.log);
                let install = move || -> Result<(), String> {
                    let received = snapshot.finish_receiving().map_err(|e| e.to_string())?;
                    if received.info.end != last.index + 1 || received.info.last_term != term {
                        return Err(format!(
                            "the snapshot's files end at offset {} of term {}, its log id is {last}",
                            received.info.end, received.info.last_term
                        ));
                    }
                    match received.has_files {
                        true => log.install_segments(&received.info),
                        false => log.reset_after(last.index, term),
                    }
                    .map_err(|e| e.to_string())
                };
                let installed = tokio::task::spawn_blocking(install)
                    .await
                    .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()));
                installed.map_err(|e| failed(&AnyError(e)))?;
            }
            self.log.commit_to(last.index + 1).map_err(|e| failed(&e))?;
        }
        self.membership = meta.last_membership.clone();
        write_membership(self.log.dir(), &self.membership).map_err(|e| failed(&e))?;
        self.last_applied = meta.last_log_id;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        // Built afresh at every call: the files are the log's own, so the newest snapshot
        // costs what an older one would, and its files are pinned only while it is sent.
        build(&self.log, self.last_applied, &self.membership)
            .map_err(|e| StorageIOError::read_snapshot(None, &e).into())
    }
}

/// An error message as an error, for openraft's error wrappers.
#[derive(Debug)]
struct AnyError(String);

impl std::fmt::Display for AnyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AnyError {}
