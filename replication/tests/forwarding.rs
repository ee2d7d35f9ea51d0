//! Publish anywhere: `Cluster::propose` on a follower, or on a node with no replica of the
//! group, commits on the leader; when the leader dies mid-stream, proposals go to the new
//! one and nothing acknowledged is lost. And `Cluster::partition_status` is the leader's view
//! wherever it is asked.

mod common;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use common::*;
use strata_replication::{Cluster, NodeId, PartitionStatus, ProposeOptions, ReplicationError};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

fn peers_of(nodes: &[TestNode]) -> BTreeMap<NodeId, String> {
    nodes.iter().map(|n| (n.id, n.addr.to_string())).collect()
}

/// A node of the cluster with no replica of the group: only its endpoint, serving.
struct BareNode {
    cluster: Cluster,
    stop: oneshot::Sender<()>,
    server: JoinHandle<Result<(), ReplicationError>>,
}

async fn bare_node(id: NodeId, peers: BTreeMap<NodeId, String>) -> anyhow::Result<BareNode> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let cluster = Cluster::new(id);
    cluster.set_peers(peers);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(cluster.clone().serve(listener, async move {
        let _ = stopped.await;
    }));
    Ok(BareNode { cluster, stop, server })
}

impl BareNode {
    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.server).await.context("the bare node's server did not stop")???;
        Ok(())
    }
}

/// Polls `cluster`'s status of the group until `done` holds (bounded by [`WAIT`]).
async fn wait_status(
    cluster: &Cluster,
    what: &str,
    done: impl Fn(&PartitionStatus) -> bool,
) -> anyhow::Result<PartitionStatus> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = cluster.partition_status(&group()).await?;
        if done(&status) {
            return Ok(status);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("{what}: not within {WAIT:?}; last status {status:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks that every running node's committed log holds the same entries and that each
/// acknowledged (offset, value) is among them.
async fn check_acknowledged(nodes: &[TestNode], acknowledged: &[(u64, Vec<u8>)]) -> anyhow::Result<()> {
    let running: Vec<&TestNode> = nodes.iter().filter(|n| n.partition.is_some()).collect();
    let leader = wait_for_common_leader(nodes, None).await?;
    let end = node(nodes, leader).partition().committed();
    for n in &running {
        n.wait_committed(end).await?;
    }
    let logs: Vec<_> = running.iter().map(|n| committed_contents(n)).collect::<anyhow::Result<_>>()?;
    for (n, log) in running.iter().zip(&logs) {
        ensure!(log == &logs[0], "node {} differs from node {}", n.id, running[0].id);
    }
    for (n, log) in running.iter().zip(&logs) {
        let by_offset: BTreeMap<u64, &Vec<u8>> = log.iter().map(|s| (s.0, &s.2)).collect();
        for (offset, value) in acknowledged {
            ensure!(
                by_offset.get(offset) == Some(&value),
                "node {}: acknowledged offset {offset} holds {:?}, not {:?}",
                n.id,
                by_offset.get(offset).map(|v| String::from_utf8_lossy(v)),
                String::from_utf8_lossy(value)
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_through_a_follower_commits_on_the_leader() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let nodes = start_cluster(root.path(), 3).await?;
    let leader = wait_for_common_leader(&nodes, None).await?;
    let follower = nodes.iter().find(|n| n.id != leader).unwrap();

    let records: Vec<_> = (0..20).map(record).collect();
    let offsets = follower.cluster.propose(&group(), records.clone(), ProposeOptions::default()).await?;
    assert_eq!(offsets.len(), records.len());
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "offsets in the records' order: {offsets:?}");
    let acknowledged: Vec<_> = offsets.iter().copied().zip(records.iter().map(|r| r.value.to_vec())).collect();
    check_acknowledged(&nodes, &acknowledged).await?;

    // The forward shows in both nodes' figures, and the leader measured the commit.
    let leader_figures = node(&nodes, leader).cluster.figures();
    let follower_figures = follower.cluster.figures();
    assert_eq!(leader_figures.len(), 1);
    assert!(leader_figures[0].is_leader);
    assert_eq!(leader_figures[0].forwarded_in, 20);
    assert_eq!(leader_figures[0].commit_latency.count, 1);
    assert_eq!(follower_figures[0].forwarded_out, 20);
    assert!(!follower_figures[0].is_leader);
    assert_eq!(follower_figures[0].leader, Some(leader));

    // A proposal on the leader itself takes the local path: no forward.
    node(&nodes, leader).cluster.propose(&group(), vec![record(99)], ProposeOptions::default()).await?;
    assert_eq!(node(&nodes, leader).cluster.figures()[0].forwarded_in, 20);
    assert_eq!(node(&nodes, leader).cluster.figures()[0].commit_latency.count, 2);

    for mut n in nodes {
        n.kill().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_replica_forwards_to_the_leader_it_asks_the_peers_for() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let nodes = start_cluster(root.path(), 3).await?;
    let leader = wait_for_common_leader(&nodes, None).await?;
    // Node 4 knows the peers, not the leader, and has no replica.
    let bare = bare_node(4, peers_of(&nodes)).await?;

    let mut acknowledged = Vec::new();
    for round in 0..3 {
        let records: Vec<_> = (round * 5..round * 5 + 5).map(record).collect();
        let offsets = bare.cluster.propose(&group(), records.clone(), ProposeOptions::default()).await?;
        assert_eq!(offsets.len(), 5);
        acknowledged.extend(offsets.into_iter().zip(records.iter().map(|r| r.value.to_vec())));
    }
    check_acknowledged(&nodes, &acknowledged).await?;
    assert_eq!(node(&nodes, leader).cluster.figures()[0].forwarded_in, 15);
    assert!(bare.cluster.figures().is_empty(), "no group is open on node 4");

    // Its status of the group is the leader's.
    let status = bare.cluster.partition_status(&group()).await?;
    assert_eq!(status.leader, Some(leader));
    assert_eq!(status.replicas, vec![1, 2, 3]);

    bare.stop().await?;
    for mut n in nodes {
        n.kill().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_proposals_move_to_the_new_leader_when_the_leader_crashes() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let mut nodes = start_cluster(root.path(), 3).await?;
    let first_leader = wait_for_common_leader(&nodes, None).await?;
    let forwarder = nodes.iter().find(|n| n.id != first_leader).unwrap().cluster.clone();
    let bare = bare_node(4, peers_of(&nodes)).await?;

    // Two streams of proposals, one through a follower, one through a node with no replica;
    // each call waits up to 10 s, through the failover.
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let (progress, mut seen) = tokio::sync::watch::channel(0usize);
    let progress = Arc::new(progress);
    let mut streams = Vec::new();
    for (stream, cluster) in [(0usize, forwarder), (1, bare.cluster.clone())] {
        let acknowledged = Arc::clone(&acknowledged);
        let progress = Arc::clone(&progress);
        streams.push(tokio::spawn(async move {
            let options = ProposeOptions { timeout: Duration::from_secs(10), min_in_sync: 1 };
            for round in 0..40 {
                let records: Vec<_> = (0..5).map(|i| record(stream * 10_000 + round * 5 + i)).collect();
                let offsets = cluster.propose(&group(), records.clone(), options).await?;
                ensure!(offsets.windows(2).all(|w| w[0] < w[1]), "offsets out of order: {offsets:?}");
                let mut acked = acknowledged.lock().unwrap();
                acked.extend(offsets.into_iter().zip(records.iter().map(|r| r.value.to_vec())));
                progress.send_modify(|n| *n += 1);
            }
            anyhow::Ok(())
        }));
    }

    // Crash the leader once both streams are under way.
    tokio::time::timeout(WAIT, seen.wait_for(|n| *n >= 10)).await??;
    nodes.iter_mut().find(|n| n.id == first_leader).unwrap().crash().await?;
    let before_crash = *seen.borrow();

    for stream in streams {
        tokio::time::timeout(Duration::from_secs(60), stream).await.context("a stream hung")???;
    }
    let second_leader = wait_for_common_leader(&nodes, Some(first_leader)).await?;
    assert_ne!(second_leader, first_leader);
    assert_eq!(*seen.borrow(), 80, "every proposal was acknowledged");
    assert!(before_crash < 80, "the crash came mid-stream");

    let acknowledged = acknowledged.lock().unwrap().clone();
    check_acknowledged(&nodes, &acknowledged).await?;
    // Acknowledged proposals were committed in both terms: before and after the crash.
    let new_term = node(&nodes, second_leader).partition().metrics().borrow().current_term;
    let log = committed_contents(node(&nodes, second_leader))?;
    let term_of = |offset: u64| log.iter().find(|s| s.0 == offset).map(|s| s.1);
    assert!(acknowledged.iter().any(|(o, _)| term_of(*o) == Some(new_term)), "none in the new term {new_term}");
    assert!(acknowledged.iter().any(|(o, _)| term_of(*o) < Some(new_term)), "none in the first term");

    bare.stop().await?;
    for mut n in nodes {
        n.kill().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_is_the_leaders_wherever_it_is_asked() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let nodes = start_cluster(root.path(), 3).await?;
    let leader = wait_for_common_leader(&nodes, None).await?;
    let bare = bare_node(4, peers_of(&nodes)).await?;
    let offsets =
        node(&nodes, leader).cluster.propose(&group(), (0..7).map(record).collect(), ProposeOptions::default()).await?;
    let end = offsets.last().unwrap() + 1;
    for n in &nodes {
        n.wait_committed(end).await?;
    }

    // Once every follower has answered and matched everything, all three are in sync.
    let on_leader = wait_status(&node(&nodes, leader).cluster, "all in sync with every log end", |s| {
        s.in_sync == vec![1, 2, 3] && s.log_end.values().all(|e| *e == end)
    })
    .await?;
    assert_eq!(on_leader.leader, Some(leader));
    assert_eq!(on_leader.replicas, vec![1, 2, 3]);
    assert_eq!(on_leader.committed, end);
    assert_eq!(on_leader.log_end, BTreeMap::from([(1, end), (2, end), (3, end)]));

    for n in nodes.iter().filter(|n| n.id != leader) {
        let on_follower = n.cluster.partition_status(&group()).await?;
        assert_eq!(on_follower, on_leader, "node {}'s status", n.id);
    }
    assert_eq!(bare.cluster.partition_status(&group()).await?, on_leader, "node 4's status");

    // The figures agree with the status.
    let figures = node(&nodes, leader).cluster.figures();
    assert_eq!((figures[0].in_sync, figures[0].replicas), (3, 3));
    assert!(figures[0].leader_changes >= 1 && figures[0].elections >= 1, "{figures:?}");
    assert!(figures[0].follower_lag.iter().all(|(_, entries, ms)| (*entries, *ms) == (0, 0)), "{figures:?}");

    bare.stop().await?;
    for mut n in nodes {
        n.kill().await?;
    }
    Ok(())
}
