//! Real nodes in one test process: each has its own data directory, its own gRPC server on a
//! loopback port and its replica of one partition group.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use strata_log::{LogConfig, Record};
use strata_replication::{Cluster, GroupId, NodeId, ReplicatedPartition, ReplicationError};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

/// Bound on every wait of these tests (a loaded 2-core machine is slow, never this slow).
pub const WAIT: Duration = Duration::from_secs(20);

pub fn group() -> GroupId {
    GroupId::new("sensors", 0)
}

pub struct TestNode {
    pub id: NodeId,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    /// The node's endpoint (forwarding, status, figures).
    pub cluster: Cluster,
    pub partition: Option<ReplicatedPartition>,
    pub config: LogConfig,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), ReplicationError>>>,
}

impl TestNode {
    /// Starts node `id` on `listener` with its data in `dir`.
    pub async fn start(id: NodeId, dir: &Path, listener: TcpListener) -> anyhow::Result<TestNode> {
        TestNode::start_with(Cluster::new(id), dir, listener, LogConfig::default(), |_| {}).await
    }

    /// Starts the node of `cluster` (made with TLS, say) with `config`; `before_serving`
    /// gets its replica before its server answers any peer. [`TestNode::restart`] brings it
    /// back in plaintext.
    pub async fn start_with(
        cluster: Cluster,
        dir: &Path,
        listener: TcpListener,
        config: LogConfig,
        before_serving: impl FnOnce(&ReplicatedPartition),
    ) -> anyhow::Result<TestNode> {
        let addr = listener.local_addr()?;
        let id = cluster.node_id();
        let partition = ReplicatedPartition::open(&cluster, dir, config.clone(), group()).await?;
        before_serving(&partition);
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(cluster.clone().serve(listener, async move {
            let _ = stopped.await;
        }));
        Ok(TestNode {
            id,
            addr,
            dir: dir.to_path_buf(),
            cluster,
            config,
            partition: Some(partition),
            stop: Some(stop),
            server: Some(server),
        })
    }

    pub fn partition(&self) -> &ReplicatedPartition {
        self.partition.as_ref().expect("the node is running")
    }

    /// Stops the node as a dead node looks to its peers: its Raft stops, its server closes
    /// its connections, its log closes.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(partition) = self.partition.take() {
            partition.shutdown().await?;
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(WAIT, server).await.context("the gRPC server did not stop")???;
        }
        Ok(())
    }

    /// Stops the node as `kill -9` would, as far as its files are concerned: no flush, no
    /// index files, no clean-shutdown marker.
    pub async fn crash(&mut self) -> anyhow::Result<()> {
        if let Some(partition) = self.partition.take() {
            partition.crash_for_tests().await;
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(WAIT, server).await.context("the gRPC server did not stop")???;
        }
        Ok(())
    }

    /// Starts the node again from its files, on its address.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.restart_with(|_| {}).await
    }

    /// Starts the node again from its files, on its address; `before_serving` gets its
    /// replica before its server answers any peer.
    pub async fn restart_with(&mut self, before_serving: impl FnOnce(&ReplicatedPartition)) -> anyhow::Result<()> {
        let listener = TcpListener::bind(self.addr).await?;
        *self = TestNode::start_with(
            Cluster::new(self.id),
            &self.dir.clone(),
            listener,
            self.config.clone(),
            before_serving,
        )
        .await?;
        Ok(())
    }

    /// Waits until this replica has committed everything below `offset`.
    pub async fn wait_committed(&self, offset: u64) -> anyhow::Result<()> {
        let mut committed = self.partition().watch_committed();
        tokio::time::timeout(WAIT, committed.wait_for(|c| *c >= offset))
            .await
            .with_context(|| format!("node {} did not commit up to {offset}", self.id))??;
        Ok(())
    }
}

/// Three nodes on loopback, node 1 initialising the group with all three as voters.
pub async fn start_cluster(root: &Path, count: u64) -> anyhow::Result<Vec<TestNode>> {
    start_cluster_with(root, count, LogConfig::default()).await
}

/// [`start_cluster`] with every node's log opened with `config`.
pub async fn start_cluster_with(root: &Path, count: u64, config: LogConfig) -> anyhow::Result<Vec<TestNode>> {
    let mut listeners = Vec::new();
    for _ in 0..count {
        listeners.push(TcpListener::bind("127.0.0.1:0").await?);
    }
    let members: BTreeMap<NodeId, String> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| Ok((i as u64 + 1, l.local_addr()?.to_string())))
        .collect::<anyhow::Result<_>>()?;
    let mut nodes = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        nodes.push(
            TestNode::start_with(Cluster::new(id), &root.join(format!("node{id}")), listener, config.clone(), |_| {})
                .await?,
        );
    }
    nodes[0].partition().initialize(members).await?;
    Ok(nodes)
}

/// Waits until every running node knows the same leader, other than `not`; returns it.
pub async fn wait_for_common_leader(nodes: &[TestNode], not: Option<NodeId>) -> anyhow::Result<NodeId> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let running: Vec<&TestNode> = nodes.iter().filter(|n| n.partition.is_some()).collect();
    let mut watches: Vec<_> = running.iter().map(|n| n.partition().metrics()).collect();
    loop {
        let leaders: Vec<Option<NodeId>> = watches.iter().map(|w| w.borrow().current_leader).collect();
        if let Some(Some(leader)) = leaders.first()
            && leaders.iter().all(|l| *l == Some(*leader))
            && Some(*leader) != not
            && running.iter().any(|n| n.id == *leader)
        {
            return Ok(*leader);
        }
        // Wake on any node's metrics change, bounded by the deadline.
        let changed = futures_util::future::select_all(watches.iter_mut().map(|w| Box::pin(w.changed())));
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            bail!("no common leader within {WAIT:?}: {leaders:?}");
        }
    }
}

pub fn node(nodes: &[TestNode], id: NodeId) -> &TestNode {
    nodes.iter().find(|n| n.id == id).expect("a node of the cluster")
}

pub fn record(i: usize) -> Record {
    Record::new(1_700_000_000_000 + i as i64, format!("payload-{i}")).with_key(format!("key-{}", i % 7))
}

/// One stored offset: its offset, the term in its batch header, and its record's bytes.
pub type Stored = (u64, u64, Vec<u8>, Option<Vec<u8>>, Vec<(Vec<u8>, Vec<u8>)>);

/// Everything below the committed offset of a replica's log, read back through strata-log.
pub fn committed_contents(node: &TestNode) -> anyhow::Result<Vec<Stored>> {
    let log = node.partition().log();
    let end = node.partition().committed();
    let mut out = Vec::new();
    let mut next = 0;
    while next < end {
        let fetch = log.read(next, 1 << 20)?;
        if fetch.batches.is_empty() {
            bail!("node {}: nothing readable at {next} below the committed offset {end}", node.id);
        }
        for batch in &fetch.batches {
            let term = batch.header().leader_term;
            for record in batch.records()? {
                let record = record?;
                out.push((
                    record.offset,
                    term,
                    record.value.to_vec(),
                    record.key.map(|k| k.to_vec()),
                    record.headers.iter().map(|h| (h.name.to_vec(), h.value.to_vec())).collect(),
                ));
            }
            next = batch.header().last_offset() + 1;
        }
    }
    Ok(out)
}
