//! The crate's one error type.

use std::path::PathBuf;

use crate::{GroupId, NodeId};

/// What can go wrong replicating a partition.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// The partition log failed (the message names the file or offset).
    #[error("partition log: {0}")]
    Log(#[from] strata_log::LogError),
    /// This replica is not the group's leader; `leader` is the one it knows of, if any.
    #[error("group {group}: this node is not the leader (leader: {leader:?})")]
    NotLeader {
        /// The group.
        group: GroupId,
        /// The leader this node knows of, with its address.
        leader: Option<(NodeId, String)>,
    },
    /// Raft refused or failed the request (shut down, membership change in progress, ...).
    #[error("group {group}: raft: {message}")]
    Raft {
        /// The group.
        group: GroupId,
        /// openraft's description.
        message: String,
    },
    /// The group is already open on this node.
    #[error("group {0} is already open on this node")]
    AlreadyOpen(GroupId),
    /// No leader was seen in time.
    #[error("group {group}: no leader within {waited_ms} ms")]
    NoLeader {
        /// The group.
        group: GroupId,
        /// How long we waited.
        waited_ms: u64,
    },
    /// A Raft membership file beside the segments could not be read or written.
    #[error("{path}: {reason}")]
    MembershipFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A cluster TLS file cannot be used ([`crate::ClusterTls::load`]).
    #[error("cluster TLS {what} ({}): {reason}", path.display())]
    TlsFile {
        /// Which file: `certificate`, `private key` or `CA`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The gRPC server failed.
    #[error("cluster transport: {0}")]
    Transport(String),
    /// A proposal with no records.
    #[error("nothing to propose")]
    EmptyProposal,
    /// Fewer replicas are in sync with the leader than the proposal requires; nothing was
    /// appended.
    #[error("group {group}: {in_sync} replicas in sync, {required} required")]
    NotEnoughReplicas {
        /// The group.
        group: GroupId,
        /// Replicas in sync, the leader included.
        in_sync: usize,
        /// The proposal's `min_in_sync`.
        required: usize,
    },
    /// The proposal was not committed in time (no leader, no quorum, or too slow); it may
    /// still be committed later.
    #[error("group {group}: not committed within {waited_ms} ms")]
    Timeout {
        /// The group.
        group: GroupId,
        /// How long the proposal waited.
        waited_ms: u64,
    },
}
