//! This node's place in a cluster (issue 20): the inter-node gRPC endpoint, where each
//! partition's replicas are placed, and the metadata group.
//!
//! - **Endpoint.** `[cluster] listen` serves every Raft group's RPCs (and forwarded
//!   publishes) over one tonic server; peers are dialled at the addresses `[cluster] peers`
//!   gives.
//! - **Metadata group.** `$streams` is one Raft group whose voters are every node of `peers`
//!   (KRaft-like, no etcd). The stream definitions are its records, and each definition
//!   carries its partitions' replica sets; every node applies it (`stream_definitions.rs`)
//!   and opens, alters or closes its replicas to match ([`reconcile`]).
//! - **Placement.** Round-robin by default ([`placement`]); the first replica of a partition
//!   is its preferred leader.
//! - **Learners.** A node outside a partition's replica set follows it as a Raft learner, so
//!   it can serve its own subscribers from a local copy; learners never count toward the
//!   quorum nor `min_insync_replicas`. The leader of each group adds the missing ones
//!   ([`ClusterNode::add_learners`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use strata_replication::{Cluster, ClusterTls, ClusterTlsFiles, NodeId, ReplicationError};

use crate::error::BrokerError;
use crate::tls::TlsConfig;

/// `[cluster]`: who this node is and who its peers are. Every node of a cluster is started
/// with the same `peers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node's id, unique in the cluster and > 0.
    pub node_id: u64,
    /// The inter-node gRPC listener (Raft and forwarding).
    pub listen: SocketAddr,
    /// Every node of the cluster, this one included: its id and the address peers dial.
    pub peers: std::collections::BTreeMap<u64, String>,
    /// The CA every node's certificate chains to, for the inter-node mutual TLS that `[tls]`
    /// turns on; `None`: `tls.client_ca_file`.
    pub ca_file: Option<std::path::PathBuf>,
}

/// The cluster as this node takes part in it.
pub(crate) struct ClusterNode {
    config: ClusterConfig,
    endpoint: Cluster,
    /// Stops the gRPC server (taken at shutdown).
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    local_addr: SocketAddr,
    tls: Option<ClusterTls>,
}

/// Loads the inter-node TLS from `[tls]`'s certificate and key and the cluster's CA; an
/// error names the key of the file at fault.
fn load_tls(config: &ClusterConfig, tls: &TlsConfig) -> Result<ClusterTls, BrokerError> {
    let (ca_key, ca_file) = match (&config.ca_file, &tls.client_ca_file) {
        (Some(file), _) => ("cluster.ca_file", file.clone()),
        (None, Some(file)) => ("tls.client_ca_file", file.clone()),
        (None, None) => {
            return Err(BrokerError::TlsIncomplete {
                key: "cluster.ca_file",
                needs: "the CA the nodes' certificates chain to (or tls.client_ca_file)",
            });
        }
    };
    let files = ClusterTlsFiles { cert_file: tls.cert_file.clone(), key_file: tls.key_file.clone(), ca_file };
    ClusterTls::load(files).map_err(|source| {
        let key = match &source {
            ReplicationError::TlsFile { what: "certificate", .. } => "tls.cert_file",
            ReplicationError::TlsFile { what: "private key", .. } => "tls.key_file",
            _ => ca_key,
        };
        BrokerError::ClusterTls { key, source }
    })
}

impl ClusterNode {
    /// Binds `[cluster] listen` and serves the Raft RPCs of this node's groups on it.
    /// With `tls` (`[tls]`), peers talk mutual TLS only, with `[cluster] ca_file` (else
    /// `tls.client_ca_file`) as the CA.
    pub(crate) async fn start(config: &ClusterConfig, tls: Option<&TlsConfig>) -> Result<ClusterNode, BrokerError> {
        let transport_tls = tls.map(|tls| load_tls(config, tls)).transpose()?;
        let listen_error = |reason: String| BrokerError::ClusterListen { addr: config.listen, reason };
        let listener = tokio::net::TcpListener::bind(config.listen).await.map_err(|e| listen_error(e.to_string()))?;
        let local_addr = listener.local_addr().map_err(|e| listen_error(e.to_string()))?;
        let endpoint = match &transport_tls {
            Some(tls) => Cluster::new_with_tls(config.node_id, tls.clone()),
            None => Cluster::new(config.node_id),
        };
        endpoint.set_peers(config.peers.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = endpoint.clone();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stopped.await;
            };
            if let Err(error) = server.serve(listener, stopped).await {
                tracing::error!(%error, "the cluster listener stopped");
            }
        });
        Ok(ClusterNode {
            config: config.clone(),
            endpoint,
            stop: Mutex::new(Some(stop)),
            local_addr,
            tls: transport_tls,
        })
    }

    /// The inter-node TLS, when `[tls]` is set: SIGHUP reloads it.
    pub(crate) fn tls(&self) -> Option<&ClusterTls> {
        self.tls.as_ref()
    }

    /// The inter-node endpoint.
    pub(crate) fn endpoint(&self) -> &Cluster {
        &self.endpoint
    }

    /// This node's id.
    pub(crate) fn node_id(&self) -> NodeId {
        self.config.node_id
    }

    /// Every node, with the address peers dial.
    pub(crate) fn peers(&self) -> &BTreeMap<NodeId, String> {
        &self.config.peers
    }

    /// The address the inter-node listener is bound to.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `ids` with their addresses (ids `peers` does not know are left out).
    pub(crate) fn addresses(&self, ids: &[NodeId]) -> BTreeMap<NodeId, String> {
        ids.iter().filter_map(|id| Some((*id, self.config.peers.get(id)?.clone()))).collect()
    }

    /// On the leader of `replica`'s group: adds every node that is neither a voter nor a
    /// learner yet as a learner (in the background; each catches up on its own).
    pub(crate) fn add_learners(&self, replica: &Arc<strata_replication::ReplicatedPartition>) {
        if !replica.is_leader() {
            return;
        }
        let known: BTreeSet<NodeId> =
            replica.metrics().borrow().membership_config.membership().nodes().map(|(id, _)| *id).collect();
        for (id, addr) in &self.config.peers {
            if known.contains(id) {
                continue;
            }
            let (replica, id, addr) = (Arc::clone(replica), *id, addr.clone());
            tokio::spawn(async move {
                if let Err(error) = replica.add_learner(id, addr).await {
                    tracing::debug!(group = %replica.group(), node = id, %error, "adding a learner");
                }
            });
        }
    }

    /// Stops serving peers.
    pub(crate) fn stop(&self) {
        if let Some(stop) = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = stop.send(());
        }
    }
}

/// The status of partition `number` of `stream`, as its leader sees it (asked over gRPC when
/// it is elsewhere); this replica's own view, without a leader, when none answers.
pub(crate) async fn partition_status(
    cluster: &ClusterNode,
    stream: &str,
    number: u32,
    replica: &strata_replication::ReplicatedPartition,
) -> crate::cluster_status::PartitionStatus {
    let status = match cluster.endpoint.partition_status(replica.group()).await {
        Ok(status) => status,
        Err(error) => {
            tracing::debug!(group = %replica.group(), %error, "asking the leader for a partition's status");
            let metrics = replica.metrics().borrow().clone();
            strata_replication::PartitionStatus {
                leader: None,
                replicas: metrics.membership_config.membership().voter_ids().collect(),
                in_sync: Vec::new(),
                log_end: BTreeMap::from([(metrics.id, metrics.last_log_index.map_or(0, |i| i + 1))]),
                committed: replica.committed(),
            }
        }
    };
    crate::cluster_status::PartitionStatus {
        stream: stream.to_owned(),
        partition: number,
        leader: status.leader,
        replicas: status.replicas,
        in_sync: status.in_sync,
        log_end: status.log_end,
        committed: status.committed,
    }
}

/// The replica sets of a stream's `partitions` partitions over `nodes`, `factor` replicas
/// each (capped at the node count): partition `p` starts at node `(shift + p) mod n` and
/// takes the next ones in id order (`shift` is the stream name's hash, `streams.rs`). Consecutive partitions start on consecutive
/// nodes, so preferred leaders (each set's first) spread evenly, and the stream's name
/// shifts where the first one lands so that many one-partition streams do not all prefer
/// the same node.
pub(crate) fn placement(shift: u32, partitions: u32, factor: usize, nodes: &BTreeSet<NodeId>) -> Vec<Vec<NodeId>> {
    let nodes: Vec<NodeId> = nodes.iter().copied().collect();
    if nodes.is_empty() {
        return vec![Vec::new(); partitions as usize];
    }
    let n = nodes.len();
    let factor = factor.clamp(1, n);
    let shift = shift as usize;
    (0..partitions as usize).map(|p| (0..factor).map(|i| nodes[(shift % n + p + i) % n]).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_spreads_preferred_leaders_and_replicas_round_robin() {
        let nodes = BTreeSet::from([1, 2, 3]);
        let sets = placement(7, 3, 3, &nodes);
        assert_eq!(sets.len(), 3);
        let leaders: BTreeSet<NodeId> = sets.iter().map(|set| set[0]).collect();
        assert_eq!(leaders, nodes, "one preferred leader per node: {sets:?}");
        for set in &sets {
            assert_eq!(set.iter().copied().collect::<BTreeSet<_>>(), nodes, "every node holds every partition");
        }
        // Each set continues round-robin from its leader.
        for set in &sets {
            let at = |id: NodeId| (id - 1) as usize;
            assert_eq!(at(set[1]), (at(set[0]) + 1) % 3);
        }
    }

    #[test]
    fn placement_caps_the_factor_and_is_stable() {
        let nodes = BTreeSet::from([1, 2, 3, 4, 5]);
        let sets = placement(11, 5, 3, &nodes);
        assert!(sets.iter().all(|set| set.len() == 3 && set.iter().collect::<BTreeSet<_>>().len() == 3));
        let mut load = BTreeMap::new();
        for set in &sets {
            for id in set {
                *load.entry(*id).or_insert(0) += 1;
            }
        }
        assert!(load.values().all(|n| *n == 3), "five partitions x 3 replicas spread 3 per node: {load:?}");
        assert_eq!(placement(11, 5, 3, &nodes), sets, "the same input places the same way");
        assert_eq!(placement(11, 2, 7, &BTreeSet::from([4, 9])), placement(11, 2, 2, &BTreeSet::from([4, 9])));
        assert_eq!(placement(11, 1, 3, &BTreeSet::new()), vec![Vec::<NodeId>::new()]);
    }
}
