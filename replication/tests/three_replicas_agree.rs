//! Three nodes elect a leader; proposals commit on a quorum; every replica's log holds the
//! same offsets, terms and record bytes, and the committed offset is the high watermark.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_hold_identical_logs() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let nodes = start_cluster(root.path(), 3).await?;
    let leader = wait_for_common_leader(&nodes, None).await?;
    let leader_node = node(&nodes, leader);
    assert!(leader_node.partition().is_leader());

    let mut acknowledged = Vec::new();
    for round in 0..20 {
        let records: Vec<_> = (round * 10..round * 10 + 10).map(record).collect();
        let offsets = leader_node.partition().propose(records.clone()).await?;
        assert_eq!(offsets.len(), 10);
        assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "offsets of one proposal are consecutive: {offsets:?}");
        // Resolved means committed: the leader's high watermark is already past them.
        assert!(leader_node.partition().committed() > *offsets.last().unwrap());
        acknowledged.extend(offsets.into_iter().zip(records));
    }

    let end = leader_node.partition().committed();
    for n in &nodes {
        n.wait_committed(end).await?;
    }
    let logs: Vec<_> = nodes.iter().map(committed_contents).collect::<anyhow::Result<_>>()?;
    for (n, log) in nodes.iter().zip(&logs) {
        assert_eq!(log, &logs[0], "node {} differs from node 1", n.id);
    }
    for (offset, record) in &acknowledged {
        let stored = logs[0].iter().find(|s| s.0 == *offset).expect("an acknowledged offset is stored");
        assert_eq!(stored.2, record.value.to_vec());
        assert_eq!(stored.3.as_deref(), record.key.as_deref());
    }
    // Every user record went in at the leader's term: one term for the whole run.
    let term = leader_node.partition().metrics().borrow().current_term;
    assert!(acknowledged.iter().all(|(o, _)| logs[0].iter().any(|s| s.0 == *o && s.1 == term)));

    // A follower refuses proposals and names the leader.
    let follower = nodes.iter().find(|n| n.id != leader).unwrap();
    match follower.partition().propose(vec![record(999)]).await {
        Err(strata_replication::ReplicationError::NotLeader { leader: Some((id, addr)), .. }) => {
            assert_eq!(id, leader);
            assert_eq!(addr, leader_node.addr.to_string());
        }
        other => panic!("a follower accepted or failed oddly: {other:?}"),
    }
    for mut n in nodes {
        n.kill().await?;
    }
    Ok(())
}
