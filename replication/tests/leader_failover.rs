//! The leader dies: a new one is elected, proposals continue, nothing acknowledged is lost;
//! the old leader restarts from its files, catches up and agrees with the others.

mod common;

use std::time::Instant;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_takes_over_and_the_old_one_catches_up() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let mut nodes = start_cluster(root.path(), 3).await?;
    let first_leader = wait_for_common_leader(&nodes, None).await?;

    let mut acknowledged = Vec::new();
    for round in 0..10 {
        let records: Vec<_> = (round * 10..round * 10 + 10).map(record).collect();
        let offsets = node(&nodes, first_leader).partition().propose(records.clone()).await?;
        acknowledged.extend(offsets.into_iter().zip(records));
    }

    let killed_at = Instant::now();
    nodes.iter_mut().find(|n| n.id == first_leader).unwrap().kill().await?;
    let second_leader = wait_for_common_leader(&nodes, Some(first_leader)).await?;
    println!("new leader {second_leader} after {:?} (kill included)", killed_at.elapsed());
    assert_ne!(second_leader, first_leader);

    for round in 10..20 {
        let records: Vec<_> = (round * 10..round * 10 + 10).map(record).collect();
        let offsets = node(&nodes, second_leader).partition().propose(records.clone()).await?;
        acknowledged.extend(offsets.into_iter().zip(records));
    }
    let new_term = node(&nodes, second_leader).partition().metrics().borrow().current_term;

    nodes.iter_mut().find(|n| n.id == first_leader).unwrap().restart().await?;
    // Once restarted it follows: it learns the leader and catches up to the commit.
    let leader = wait_for_common_leader(&nodes, None).await?;
    assert_eq!(leader, second_leader, "the restarted node did not join the new leader");
    let end = node(&nodes, second_leader).partition().committed();
    for n in &nodes {
        n.wait_committed(end).await?;
    }

    let logs: Vec<_> = nodes.iter().map(committed_contents).collect::<anyhow::Result<_>>()?;
    for (n, log) in nodes.iter().zip(&logs) {
        assert_eq!(log.len(), logs[0].len(), "node {} holds a different number of entries", n.id);
        assert_eq!(log, &logs[0], "node {} differs from node 1", n.id);
    }
    // No acknowledged record is lost, at its acknowledged offset, on any replica.
    for (offset, record) in &acknowledged {
        let stored = logs[0].iter().find(|s| s.0 == *offset).expect("an acknowledged offset is stored");
        assert_eq!(stored.2, record.value.to_vec(), "offset {offset}");
    }
    // The second half was written in the new, higher term.
    let (last_offset, _) = acknowledged.last().unwrap();
    let last = logs[0].iter().find(|s| s.0 == *last_offset).unwrap();
    assert_eq!(last.1, new_term);
    assert!(logs[0].iter().any(|s| s.1 < new_term), "the first half is in the older term");

    for mut n in nodes {
        n.kill().await?;
    }
    Ok(())
}
