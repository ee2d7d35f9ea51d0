//! A replicated partition: an openraft group whose log is the partition's own log.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::Arc,
    time::Duration,
};

use openraft::{BasicNode, Config, SnapshotPolicy, error::ClientWriteError, metrics::RaftMetrics};
use strata_log::{HighWatermarkMode, Log, LogConfig, Record};
use tokio::sync::watch;

use crate::{
    Cluster, GroupId, NodeId, ReplicationError,
    log_store::{LogStore, PartitionLog, StrataLog},
    state_machine::StateMachine,
    types::Raft,
};

/// The Raft settings of every partition group.
///
/// - Heartbeats every 50 ms and elections after 150-300 ms of silence: a dead leader is
///   replaced well within a second on a LAN, at the price of a heartbeat per group and
///   follower every 50 ms, and of spurious elections if a node stalls for 150 ms (a long
///   fsync, a loaded machine).
/// - Snapshots are built and the log purged only when retention or compaction wants to
///   remove entries (see [`purge_when_wanted`]), never by entry count: a snapshot is the
///   segment files themselves, and a purge makes every follower behind it take one, so it
///   happens no sooner than the data is really going away. (`max_in_snapshot_log_to_keep`
///   at its maximum keeps openraft from purging on its own after a build.)
/// - A snapshot travels in chunks of 1 MiB; a chunk may take 10 s, the last one included,
///   whose reply waits for the follower to check and install every file.
/// - Up to 4096 entries per AppendEntries: a burst of proposals goes out in few RPCs.
pub fn raft_config() -> Config {
    Config {
        cluster_name: "strata".to_string(),
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        max_payload_entries: 4096,
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: u64::MAX,
        snapshot_max_chunk_size: 1 << 20,
        install_snapshot_timeout: 10_000,
        ..Config::default()
    }
}

/// How long a wanted purge waits for openraft to build the snapshot that must cover it.
const SNAPSHOT_BUILD_WAIT: Duration = Duration::from_secs(30);

/// Moves Raft's purge point up to where retention or compaction wants to remove entries
/// ([`Log::watch_maintenance_wanted`]): first a snapshot that covers them, then the purge,
/// which openraft performs once no replication reads those entries. Its purge callback
/// raises the log's maintenance limit (`log_store.rs`), and the next retention pass deletes.
/// Ends when Raft stops.
async fn purge_when_wanted(group: GroupId, raft: Raft, mut wanted: watch::Receiver<u64>) {
    while wanted.changed().await.is_ok() {
        let target = *wanted.borrow_and_update();
        let Some(upto) = target.checked_sub(1) else { continue };
        let mut metrics = raft.metrics();
        let covered = |m: &RaftMetrics<NodeId, BasicNode>| m.snapshot.is_some_and(|s| s.index >= upto);
        let is_covered = covered(&metrics.borrow());
        if !is_covered {
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
            match tokio::time::timeout(SNAPSHOT_BUILD_WAIT, metrics.wait_for(covered)).await {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    tracing::warn!(%group, upto, "no snapshot covered the entries retention wants to remove; they stay");
                    continue;
                }
            }
        }
        if raft.trigger().purge_log(upto).await.is_err() {
            return;
        }
    }
}

/// One partition replicated by Raft on this node.
pub struct ReplicatedPartition {
    group: GroupId,
    cluster: Cluster,
    raft: Raft,
    log: Arc<StrataLog>,
    purger: tokio::task::JoinHandle<()>,
}

impl ReplicatedPartition {
    /// Opens (or creates) the partition in `dir` as this node's replica of `group`, and
    /// registers it with `cluster` so peers reach it. The log's high watermark becomes Raft's
    /// committed index (`log_config.high_watermark` is overridden).
    pub async fn open(
        cluster: &Cluster,
        dir: impl AsRef<Path>,
        mut log_config: LogConfig,
        group: GroupId,
    ) -> Result<ReplicatedPartition, ReplicationError> {
        log_config.high_watermark = HighWatermarkMode::SetByCaller;
        let log = Log::open(dir, log_config)?;
        // Retention and compaction wait for Raft's purge: what Raft purged before the last
        // close is gone already, and nothing at or after the log start is purged yet.
        log.limit_maintenance(log.offsets().log_start);
        let wanted = log.watch_maintenance_wanted();
        let log = Arc::new(StrataLog::new(log));
        let state_machine = StateMachine::open(Arc::clone(&log))?;
        let config = raft_config().validate().map_err(|e| raft_error(&group, e))?;
        let raft = Raft::new(
            cluster.node_id(),
            Arc::new(config),
            cluster.network_for(&group),
            LogStore::new(Arc::clone(&log)),
            state_machine,
        )
        .await
        .map_err(|e| raft_error(&group, e))?;
        if let Err(e) = cluster.register(group.clone(), raft.clone()) {
            let _ = raft.shutdown().await;
            return Err(e);
        }
        let purger = tokio::spawn(purge_when_wanted(group.clone(), raft.clone(), wanted));
        Ok(ReplicatedPartition { group, cluster: cluster.clone(), raft, log, purger })
    }

    /// Makes `members` (node id → gRPC address) the group's first voters. Called once, on
    /// one node, for a new group; a group that already has a membership refuses it.
    pub async fn initialize(&self, members: BTreeMap<NodeId, String>) -> Result<(), ReplicationError> {
        let nodes: BTreeMap<NodeId, BasicNode> =
            members.into_iter().map(|(id, addr)| (id, BasicNode { addr })).collect();
        self.raft.initialize(nodes).await.map_err(|e| raft_error(&self.group, e))
    }

    /// Adds `node` (at `addr`) as a learner and waits until it has caught up.
    pub async fn add_learner(&self, node: NodeId, addr: String) -> Result<(), ReplicationError> {
        self.raft.add_learner(node, BasicNode { addr }, true).await.map(|_| ()).map_err(|e| self.write_error(e))
    }

    /// Makes `voters` the group's voters (a joint change, committed in two steps). Nodes
    /// that stop being voters stay as learners.
    pub async fn change_membership(&self, voters: BTreeSet<NodeId>) -> Result<(), ReplicationError> {
        self.raft.change_membership(voters, true).await.map(|_| ()).map_err(|e| self.write_error(e))
    }

    /// Proposes `records` and resolves, with their offsets, once a quorum has committed them.
    /// Only the leader accepts proposals ([`ReplicationError::NotLeader`] names the leader).
    ///
    /// openraft 0.9 has no multi-entry write, so each record is its own `client_write`; they
    /// are issued together, and openraft hands them to storage in one append, which writes a
    /// run of one term as one batch.
    pub async fn propose(&self, records: Vec<Record>) -> Result<Vec<u64>, ReplicationError> {
        if records.is_empty() {
            return Err(ReplicationError::EmptyProposal);
        }
        let writes = records.into_iter().map(|record| self.raft.client_write(record));
        let results = futures_util::future::join_all(writes).await;
        results
            .into_iter()
            .map(|result| result.map(|response| response.data).map_err(|e| self.write_error(e)))
            .collect()
    }

    /// A receiver of the committed offset (the high watermark: everything below it is
    /// committed and visible to readers).
    pub fn watch_committed(&self) -> watch::Receiver<u64> {
        self.log.watch_high_watermark()
    }

    /// The committed offset (the high watermark).
    pub fn committed(&self) -> u64 {
        self.log.high_watermark()
    }

    /// The partition log, for readers (they see up to the committed offset).
    pub fn log(&self) -> &Log {
        self.log.log()
    }

    /// The group.
    pub fn group(&self) -> &GroupId {
        &self.group
    }

    /// The leader this replica knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Whether this replica is the leader.
    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.cluster.node_id())
    }

    /// openraft's metrics of the group (term, leader, log and applied indexes, replication).
    pub fn metrics(&self) -> watch::Receiver<RaftMetrics<NodeId, BasicNode>> {
        self.raft.metrics()
    }

    /// Stands for election now: how a partition's preferred leader takes the lead back once
    /// it has caught up. A candidate whose log is behind loses, but still makes the leader
    /// step down for a term, so call it only on an up-to-date replica.
    pub async fn campaign(&self) -> Result<(), ReplicationError> {
        self.raft.trigger().elect().await.map_err(|e| raft_error(&self.group, e))
    }

    /// Waits until this replica knows a leader, for at most `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, ReplicationError> {
        let mut metrics = self.raft.metrics();
        let seen = tokio::time::timeout(timeout, metrics.wait_for(|m| m.current_leader.is_some())).await;
        match seen {
            Ok(Ok(m)) => Ok(m.current_leader.expect("waited for a leader")),
            Ok(Err(_)) => Err(ReplicationError::Raft { group: self.group.clone(), message: "raft stopped".into() }),
            Err(_) => Err(ReplicationError::NoLeader {
                group: self.group.clone(),
                waited_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            }),
        }
    }

    /// Stops this replica: peers no longer reach it, Raft stops, the log closes cleanly.
    pub async fn shutdown(&self) -> Result<(), ReplicationError> {
        self.cluster.deregister(&self.group);
        self.raft.shutdown().await.map_err(|e| raft_error(&self.group, e))?;
        self.log.log().close()?;
        Ok(())
    }

    /// Stops this replica as a crash would: the log stops without flushing, writing its
    /// indexes or its clean-shutdown marker, then Raft stops. For crash tests.
    #[doc(hidden)]
    pub async fn crash_for_tests(&self) {
        self.cluster.deregister(&self.group);
        self.log.log().crash_for_tests();
        let _ = self.raft.shutdown().await;
    }

    /// Makes the next install of a snapshot's segments on this replica stop after `step` as a
    /// crash would: the log is left closed, and Raft stops on the failed install. For crash
    /// tests, which then crash the replica and open it again.
    #[doc(hidden)]
    pub fn crash_next_snapshot_install_for_tests(&self, step: strata_log::InstallStep) {
        self.log.crash_next_install_at(step);
    }

    fn write_error(
        &self,
        e: openraft::error::RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
    ) -> ReplicationError {
        match e {
            openraft::error::RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
                ReplicationError::NotLeader {
                    group: self.group.clone(),
                    leader: forward.leader_id.zip(forward.leader_node.map(|n| n.addr)),
                }
            }
            other => raft_error(&self.group, other),
        }
    }
}

impl Drop for ReplicatedPartition {
    fn drop(&mut self) {
        // The task holds the Raft, whose state machine holds the log that feeds the task.
        self.purger.abort();
    }
}

fn raft_error(group: &GroupId, e: impl std::fmt::Display) -> ReplicationError {
    ReplicationError::Raft { group: group.clone(), message: e.to_string() }
}
