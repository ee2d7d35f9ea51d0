//! Refusals of `Cluster::propose`: too few replicas in sync (fast, nothing appended), and no
//! quorum (a timeout, within about the proposal's timeout).

mod common;

use std::time::{Duration, Instant};

use anyhow::bail;
use common::*;
use strata_replication::{Cluster, PartitionStatus, ProposeOptions, ReplicationError};

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

fn options(timeout_ms: u64, min_in_sync: usize) -> ProposeOptions {
    ProposeOptions { timeout: Duration::from_millis(timeout_ms), min_in_sync }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_few_in_sync_replicas_refuse_fast_and_append_nothing() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let mut nodes = start_cluster(root.path(), 3).await?;
    let leader = wait_for_common_leader(&nodes, None).await?;
    let leader_cluster = node(&nodes, leader).cluster.clone();
    wait_status(&leader_cluster, "all three in sync", |s| s.in_sync.len() == 3).await?;
    leader_cluster.propose(&group(), vec![record(0)], options(5000, 3)).await?;

    let down = nodes.iter().find(|n| n.id != leader).unwrap().id;
    let other = nodes.iter().find(|n| n.id != leader && n.id != down).unwrap().cluster.clone();
    nodes.iter_mut().find(|n| n.id == down).unwrap().crash().await?;
    let status = wait_status(&leader_cluster, "the crashed follower out of sync", |s| s.in_sync.len() == 2).await?;
    assert!(!status.in_sync.contains(&down), "{status:?}");
    let log_end = status.log_end[&leader];

    // On the leader and through the other follower alike: refused at once.
    for (via, cluster) in [("the leader", &leader_cluster), ("a follower", &other)] {
        let started = Instant::now();
        match cluster.propose(&group(), vec![record(1), record(2)], options(5000, 3)).await {
            Err(ReplicationError::NotEnoughReplicas { in_sync: 2, required: 3, .. }) => {}
            other => panic!("through {via}: expected NotEnoughReplicas, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(2), "through {via}: refused after {:?}", started.elapsed());
    }
    let status = leader_cluster.partition_status(&group()).await?;
    assert_eq!(status.log_end[&leader], log_end, "a refused proposal appended something");

    // Two in sync are enough for min_in_sync = 2.
    let offsets = other.propose(&group(), vec![record(3), record(4)], options(5000, 2)).await?;
    assert_eq!(offsets, vec![log_end, log_end + 1]);

    for mut n in nodes {
        n.kill().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_without_a_quorum_times_out() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let mut nodes = start_cluster(root.path(), 3).await?;
    let leader = wait_for_common_leader(&nodes, None).await?;
    for n in nodes.iter_mut().filter(|n| n.id != leader) {
        n.crash().await?;
    }
    let started = Instant::now();
    let result = node(&nodes, leader).cluster.propose(&group(), vec![record(0)], options(1500, 1)).await;
    let took = started.elapsed();
    match result {
        Err(ReplicationError::Timeout { waited_ms, .. }) => assert!(waited_ms >= 1500, "waited {waited_ms} ms"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_millis(3000), "took {took:?}");
    for mut n in nodes {
        n.kill().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_left_alone_times_out() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let mut nodes = start_cluster(root.path(), 3).await?;
    let leader = wait_for_common_leader(&nodes, None).await?;
    let survivor = nodes.iter().find(|n| n.id != leader).unwrap().id;
    for n in nodes.iter_mut().filter(|n| n.id != survivor) {
        n.crash().await?;
    }
    let started = Instant::now();
    let result = node(&nodes, survivor).cluster.propose(&group(), vec![record(0)], options(1500, 1)).await;
    let took = started.elapsed();
    match result {
        Err(ReplicationError::Timeout { waited_ms, .. }) => assert!(waited_ms >= 1500, "waited {waited_ms} ms"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_millis(3000), "took {took:?}");
    for mut n in nodes {
        n.kill().await?;
    }
    Ok(())
}
