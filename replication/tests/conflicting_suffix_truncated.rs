//! A leader cut off from its followers appends entries that never commit. A new leader is
//! elected without it and writes other entries at those offsets. When the old leader comes
//! back, its conflicting suffix is cut and replaced: every replica ends up with the same log,
//! and the orphaned records are nowhere.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_leaders_uncommitted_suffix_is_truncated() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let mut nodes = start_cluster(root.path(), 3).await?;
    let old_leader = wait_for_common_leader(&nodes, None).await?;
    node(&nodes, old_leader).partition().propose((0..10).map(record).collect()).await?;
    let committed = node(&nodes, old_leader).partition().committed();
    for n in &nodes {
        n.wait_committed(committed).await?;
    }

    // Cut the leader off: its followers stop.
    let followers: Vec<u64> = nodes.iter().map(|n| n.id).filter(|id| *id != old_leader).collect();
    for n in nodes.iter_mut().filter(|n| n.id != old_leader) {
        n.kill().await?;
    }
    // It appends 5 records it can never commit.
    let leader_metrics = node(&nodes, old_leader).partition().metrics();
    let last_before = leader_metrics.borrow().last_log_index.expect("the leader has a log");
    let orphans: Vec<_> = (1000..1005).map(record).collect();
    {
        let node = nodes.iter().find(|n| n.id == old_leader).unwrap();
        let proposal = node.partition().propose(orphans.clone());
        // Drive the proposal until the leader has appended it, without waiting for commit.
        let mut metrics = leader_metrics.clone();
        tokio::select! {
            result = proposal => panic!("a proposal committed without a quorum: {result:?}"),
            appended = tokio::time::timeout(WAIT, metrics.wait_for(|m| m.last_log_index >= Some(last_before + 5))) => {
                appended??;
            }
        }
    }
    assert_eq!(node(&nodes, old_leader).partition().committed(), committed, "nothing new committed");
    nodes.iter_mut().find(|n| n.id == old_leader).unwrap().kill().await?;

    // The followers come back and elect a new leader, which writes other records.
    for n in nodes.iter_mut().filter(|n| followers.contains(&n.id)) {
        n.restart().await?;
    }
    let new_leader = wait_for_common_leader(&nodes, Some(old_leader)).await?;
    let replacements: Vec<_> = (2000..2008).map(record).collect();
    let offsets = node(&nodes, new_leader).partition().propose(replacements.clone()).await?;
    assert!(
        offsets[0] <= last_before + 5,
        "the new entries ({offsets:?}) reuse the orphans' offsets (up to {})",
        last_before + 5
    );

    // The old leader returns: its suffix conflicts and is replaced.
    nodes.iter_mut().find(|n| n.id == old_leader).unwrap().restart().await?;
    assert_eq!(wait_for_common_leader(&nodes, None).await?, new_leader);
    let end = node(&nodes, new_leader).partition().committed();
    for n in &nodes {
        n.wait_committed(end).await?;
    }
    let logs: Vec<_> = nodes.iter().map(committed_contents).collect::<anyhow::Result<_>>()?;
    for (n, log) in nodes.iter().zip(&logs) {
        assert_eq!(log, &logs[0], "node {} differs from node 1", n.id);
        assert!(
            log.iter().all(|s| orphans.iter().all(|o| s.2 != o.value.to_vec())),
            "node {} still holds an orphaned record",
            n.id
        );
    }
    for (offset, record) in offsets.iter().zip(&replacements) {
        assert!(logs[0].iter().any(|s| s.0 == *offset && s.2 == record.value.to_vec()));
    }
    // Nothing past the commit on the old leader either: its log ends where the others' do.
    let old = node(&nodes, old_leader).partition().log().offsets();
    let new = node(&nodes, new_leader).partition().log().offsets();
    assert_eq!(old.log_end, new.log_end);

    for mut n in nodes {
        n.kill().await?;
    }
    Ok(())
}
