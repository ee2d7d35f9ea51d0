//! The leader crashes (no flush, no clean-shutdown marker, its partition.meta holding an old
//! high watermark) while proposals flow. A new leader takes over; the crashed node recovers
//! from its files, rejoins as a follower and ends with the same log; nothing acknowledged is
//! lost.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_leader_recovers_from_its_files_and_agrees() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let mut nodes = start_cluster(root.path(), 3).await?;
    let first_leader = wait_for_common_leader(&nodes, None).await?;

    let mut acknowledged = Vec::new();
    for round in 0..10 {
        let records: Vec<_> = (round * 10..round * 10 + 10).map(record).collect();
        let offsets = node(&nodes, first_leader).partition().propose(records.clone()).await?;
        acknowledged.extend(offsets.into_iter().zip(records));
    }
    nodes.iter_mut().find(|n| n.id == first_leader).unwrap().crash().await?;

    let second_leader = wait_for_common_leader(&nodes, Some(first_leader)).await?;
    for round in 10..15 {
        let records: Vec<_> = (round * 10..round * 10 + 10).map(record).collect();
        let offsets = node(&nodes, second_leader).partition().propose(records.clone()).await?;
        acknowledged.extend(offsets.into_iter().zip(records));
    }

    let crashed = nodes.iter_mut().find(|n| n.id == first_leader).unwrap();
    crashed.restart().await?;
    assert!(!crashed.partition().log().recovery_report().clean_shutdown, "the restart went through crash recovery");
    assert_eq!(wait_for_common_leader(&nodes, None).await?, second_leader);
    let end = node(&nodes, second_leader).partition().committed();
    for n in &nodes {
        n.wait_committed(end).await?;
    }
    let logs: Vec<_> = nodes.iter().map(committed_contents).collect::<anyhow::Result<_>>()?;
    for (n, log) in nodes.iter().zip(&logs) {
        assert_eq!(log, &logs[0], "node {} differs from node 1", n.id);
    }
    for (offset, record) in &acknowledged {
        let stored = logs[0].iter().find(|s| s.0 == *offset).expect("an acknowledged offset is stored");
        assert_eq!(stored.2, record.value.to_vec(), "offset {offset}");
    }
    for mut n in nodes {
        n.kill().await?;
    }
    Ok(())
}
