//! What `strata cluster status` and `GET /cluster/status` show (issue 20): the cluster's
//! nodes, and for every partition its leader, replicas, in-sync replicas, each replica's log
//! end and the committed offset. The JSON keys of the contract are these fields' names.

use std::collections::BTreeMap;

/// A node of the cluster, as `[cluster] peers` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// Its id (`[cluster] node_id`).
    pub node_id: u64,
    /// Its inter-node gRPC address.
    pub addr: String,
}

/// One partition's replication, as its leader sees it (this node's own view when no leader
/// is known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStatus {
    /// The stream's name (an internal one such as `$streams` too).
    pub stream: String,
    /// The partition number.
    pub partition: u32,
    /// The leader's node id; `None` while there is none.
    pub leader: Option<u64>,
    /// The replicas (Raft voters), by node id, sorted.
    pub replicas: Vec<u64>,
    /// The replicas in sync with the leader (the leader among them), sorted.
    pub in_sync: Vec<u64>,
    /// Each replica's log end (the next offset it will write), by node id.
    pub log_end: BTreeMap<u64, u64>,
    /// The committed offset (high watermark): offsets below it are committed.
    pub committed: u64,
}

/// The whole cluster as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    /// This node's id.
    pub node_id: u64,
    /// Every node of `[cluster] peers`, by id.
    pub nodes: Vec<NodeStatus>,
    /// Every partition of every stream, internal ones first, by stream then number.
    pub partitions: Vec<PartitionStatus>,
}
