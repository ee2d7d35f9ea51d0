//! `strata-replication`: one openraft group per partition, whose Raft log is the partition's
//! own [`strata_log::Log`] (Raft log index = record offset), and the tonic gRPC network
//! between nodes (`proto/strata/cluster/v1/raft.proto`), which multiplexes every group's RPCs
//! over one connection per peer. With a [`ClusterTls`] ([`Cluster::new_with_tls`]) that
//! network is mutual TLS only.
//!
//! A [`ReplicatedPartition`] resolves [`ReplicatedPartition::propose`] once a quorum has
//! committed the records, and raises the partition's high watermark to Raft's committed
//! index, so readers of the log see only committed records.
//!
//! [`Cluster::propose`] commits records wherever the group's leader is ("publish anywhere"):
//! a node that is not the leader forwards them over gRPC (`forward.proto`) and retries on a
//! new leader until the proposal's timeout, refusing up front when fewer replicas than asked
//! are in sync. [`Cluster::partition_status`] gives the leader's view of a group and
//! [`Cluster::figures`] the numbers behind `/metrics`.
//!
//! ```no_run
//! # async fn example() -> Result<(), strata_replication::ReplicationError> {
//! use std::collections::BTreeMap;
//! use strata_replication::{Cluster, GroupId, ReplicatedPartition};
//! use strata_log::{LogConfig, Record};
//!
//! let cluster = Cluster::new(1);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7101").await.unwrap();
//! tokio::spawn(cluster.clone().serve(listener, std::future::pending()));
//! let group = GroupId::new("sensors", 0);
//! let partition = ReplicatedPartition::open(&cluster, "/tmp/data/sensors/0", LogConfig::default(), group).await?;
//! partition.initialize(BTreeMap::from([(1, "127.0.0.1:7101".to_string())])).await?;
//! partition.wait_for_leader(std::time::Duration::from_secs(5)).await?;
//! let offsets = partition.propose(vec![Record::new(0, "hello")]).await?;
//! assert_eq!(offsets.len(), 1);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod codec;
mod error;
mod forward;
mod log_store;
mod network;
mod partition;
mod snapshot;
mod state_machine;
mod status;
mod tls;
mod types;

pub use error::ReplicationError;
pub use forward::{GroupFigures, PartitionStatus, ProposeOptions};
pub use network::Cluster;
pub use partition::{ReplicatedPartition, raft_config};
pub use status::LatencyHistogram;
pub use tls::{ClusterTls, ClusterTlsFiles};
pub use types::{GroupId, NodeId, TypeConfig};
