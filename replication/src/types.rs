//! The openraft type configuration of a partition group, and the group id that routes RPCs.

use std::fmt;

use openraft::{BasicNode, impls::OneshotResponder};

/// A node of the cluster (`[cluster] node_id`, > 0).
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Raft types of a partition: an entry's data is one record, and the response to a
    /// proposal is the offset the record was committed at.
    pub TypeConfig:
        D = strata_log::Record,
        R = u64,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = crate::snapshot::SegmentSnapshot,
        Responder = OneshotResponder<TypeConfig>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub(crate) type Entry = openraft::Entry<TypeConfig>;
pub(crate) type LogId = openraft::LogId<NodeId>;
pub(crate) type Vote = openraft::Vote<NodeId>;
pub(crate) type Membership = openraft::Membership<NodeId, BasicNode>;
pub(crate) type StoredMembership = openraft::StoredMembership<NodeId, BasicNode>;
pub(crate) type StorageError = openraft::StorageError<NodeId>;
pub(crate) type Raft = openraft::Raft<TypeConfig>;

/// A Raft group: one partition of one stream. Every RPC names its group, so one connection
/// per peer carries all of them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId {
    /// The stream's name.
    pub stream: String,
    /// The partition number within the stream.
    pub partition: u32,
}

impl GroupId {
    /// The group of `stream`'s partition `partition`.
    pub fn new(stream: impl Into<String>, partition: u32) -> Self {
        GroupId { stream: stream.into(), partition }
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.stream, self.partition)
    }
}

/// A log id from its term and index (single-term-leader: the term is the whole leader id).
pub(crate) fn log_id(term: u64, index: u64) -> LogId {
    openraft::LogId::new(openraft::CommittedLeaderId::new(term, 0), index)
}
