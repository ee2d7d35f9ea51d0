//! A follower that was down while retention deleted what it lacks comes back through a
//! snapshot made of the leader's segment files: afterwards its log holds the leader's
//! (offset, record) list from the leader's log start on, records below the point where it
//! rejoined included, and it goes on from the tail. An install stopped by a crash leaves a
//! readable log (the old one before the install's commit point, the new one after it) that
//! catches up on the next try.

mod common;

use anyhow::{Context, bail};
use common::*;
use strata_log::{HighWatermarkMode, InstallStep, Log, LogConfig, RetentionPolicy};
use strata_replication::NodeId;

/// Small segments, so that a few hundred records roll many of them.
fn config() -> LogConfig {
    LogConfig { segment_bytes: 4096, index_interval_bytes: 512, ..LogConfig::default() }
}

/// Record `i`, its value padded to at least `size` bytes.
fn sized_record(i: usize, size: usize) -> strata_log::Record {
    let mut record = record(i);
    if record.value.len() < size {
        let mut value = record.value.to_vec();
        value.resize(size, b'a' + (i % 26) as u8);
        record.value = value.into();
    }
    record
}

/// Proposes records `range` on the leader, finding it again if leadership moved.
async fn propose(nodes: &[TestNode], range: std::ops::Range<usize>) -> anyhow::Result<()> {
    propose_sized(nodes, range, 0).await
}

async fn propose_sized(nodes: &[TestNode], range: std::ops::Range<usize>, size: usize) -> anyhow::Result<()> {
    let records: Vec<_> = range.map(|i| sized_record(i, size)).collect();
    for _ in 0..5 {
        let leader = wait_for_common_leader(nodes, None).await?;
        match node(nodes, leader).partition().propose(records.clone()).await {
            Ok(_) => return Ok(()),
            Err(e @ strata_replication::ReplicationError::NotLeader { .. }) => eprintln!("retrying: {e}"),
            Err(e) => return Err(e.into()),
        }
    }
    bail!("no leader took the proposal")
}

/// The stored records of a replica from `from` up to its committed offset.
fn contents_from(node: &TestNode, from: u64) -> anyhow::Result<Vec<Stored>> {
    let log = node.partition().log();
    contents_of(log, from, node.partition().committed())
}

fn contents_of(log: &Log, from: u64, end: u64) -> anyhow::Result<Vec<Stored>> {
    let mut out = Vec::new();
    let mut next = from;
    while next < end {
        let fetch = log.read(next, 1 << 20)?;
        if fetch.batches.is_empty() {
            bail!("{}: nothing readable at {next} below {end}", log.dir().display());
        }
        for batch in &fetch.batches {
            let term = batch.header().leader_term;
            for record in batch.records()? {
                let record = record?;
                // A read returns the whole batch that holds `from`.
                if record.offset < from {
                    continue;
                }
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

/// Runs retention (delete every closed segment) on `node` until its log starts after
/// `beyond`. A pass held back by Raft asks it to purge (a snapshot, then the purge); the next
/// pass, once Raft's purge point shows it, deletes.
async fn retain_beyond(node: &TestNode, beyond: u64) -> anyhow::Result<u64> {
    let everything = RetentionPolicy { retention_ms: None, retention_bytes: Some(0), retention_messages: None };
    let log = node.partition().log();
    let mut metrics = node.partition().metrics();
    for _ in 0..20 {
        log.enforce_retention(&everything, 0)?;
        let log_start = log.offsets().log_start;
        if log_start > beyond {
            return Ok(log_start);
        }
        let wanted = *log.watch_maintenance_wanted().borrow();
        let purged = tokio::time::timeout(WAIT, metrics.wait_for(|m| m.purged.is_some_and(|p| p.index + 1 >= wanted)))
            .await
            .with_context(|| format!("node {}: Raft did not purge up to {wanted}", node.id))?;
        purged.with_context(|| format!("node {}: Raft stopped", node.id))?;
    }
    bail!("node {}: retention did not get past offset {beyond}", node.id)
}

/// Three replicas; `lagging` (a follower) is stopped after a first load, the others take a
/// larger one and retention deletes every segment it lacks. Returns the lagging node's id and
/// its log end when it stopped.
async fn leave_a_follower_behind(nodes: &mut [TestNode], size: usize) -> anyhow::Result<(NodeId, u64)> {
    let leader = wait_for_common_leader(nodes, None).await?;
    for round in 0..5 {
        propose(nodes, round * 20..round * 20 + 20).await?;
    }
    let end = node(nodes, leader).partition().committed();
    for n in nodes.iter() {
        n.wait_committed(end).await?;
    }
    let lagging = nodes.iter_mut().find(|n| n.id != leader).expect("a follower");
    let lagging_id = lagging.id;
    let lagging_end = lagging.partition().log().offsets().log_end;
    lagging.kill().await?;
    for round in 5..45 {
        propose_sized(nodes, round * 20..round * 20 + 20, size).await?;
    }
    for n in nodes.iter().filter(|n| n.partition.is_some()) {
        let log_start = retain_beyond(n, lagging_end).await?;
        assert!(log_start > lagging_end, "node {}: the lagging follower's entries are gone", n.id);
    }
    Ok((lagging_id, lagging_end))
}

/// Waits until every node committed what the leader has, then checks that each holds the
/// leader's (offset, record) list from the leader's log start on.
async fn assert_all_agree(nodes: &[TestNode]) -> anyhow::Result<()> {
    let leader = wait_for_common_leader(nodes, None).await?;
    let leader = node(nodes, leader);
    let end = leader.partition().committed();
    // Retention ran on each replica: compare from the latest log start.
    let start = nodes.iter().map(|n| n.partition().log().offsets().log_start).max().unwrap_or(0);
    let expected = contents_from(leader, start)?;
    assert!(expected.len() > 100, "the comparison covers many records");
    for n in nodes {
        n.wait_committed(end).await?;
        let held: Vec<Stored> = contents_from(n, start)?.into_iter().filter(|s| s.0 < end).collect();
        assert_same(&held, &expected, &format!("node {} against the leader {}", n.id, leader.id));
    }
    Ok(())
}

/// Compares two (offset, record) lists, naming the first difference rather than printing
/// megabytes of payload.
fn assert_same(held: &[Stored], expected: &[Stored], what: &str) {
    let summary = |s: &Stored| (s.0, s.1, s.2.len(), String::from_utf8_lossy(&s.2[..s.2.len().min(16)]).into_owned());
    if let Some(i) = (0..held.len().min(expected.len())).find(|&i| held[i] != expected[i]) {
        panic!("{what}: entry {i} differs: {:?} against {:?}", summary(&held[i]), summary(&expected[i]));
    }
    assert_eq!(
        held.len(),
        expected.len(),
        "{what}: {} entries against {} (last {:?} against {:?})",
        held.len(),
        expected.len(),
        held.last().map(summary),
        expected.last().map(summary)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_leaders_log_start_catches_up_through_a_segment_snapshot() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    // Segments of 64 KiB and records of 2 KB: the snapshot is about 1.5 MiB, more than one
    // chunk (1 MiB).
    let config = LogConfig { segment_bytes: 64 << 10, index_interval_bytes: 4096, ..LogConfig::default() };
    let mut nodes = start_cluster_with(root.path(), 3, config).await?;
    let (lagging_id, lagging_end) = leave_a_follower_behind(&mut nodes, 2000).await?;

    nodes.iter_mut().find(|n| n.id == lagging_id).unwrap().restart().await?;
    let leader = wait_for_common_leader(&nodes, None).await?;
    let leader_start = node(&nodes, leader).partition().log().offsets().log_start;
    let leader_bytes = node(&nodes, leader).partition().log().size_bytes();
    assert!(leader_bytes > 1 << 20, "the snapshot takes several chunks ({leader_bytes} bytes)");
    let end = node(&nodes, leader).partition().committed();
    let lagging = node(&nodes, lagging_id);
    lagging.wait_committed(end).await?;

    // It took the leader's segments: its log starts where the leader's does, far past where
    // its own ended, and holds the records below the snapshot point, not just a tail.
    // openraft reports the install (its applied and snapshot log ids) after the log moved.
    let mut metrics = lagging.partition().metrics();
    let reported = metrics.wait_for(|m| m.last_applied.is_some_and(|a| a.index + 1 >= end) && m.snapshot.is_some());
    let snapshot = tokio::time::timeout(WAIT, reported).await.context("openraft reported no install")??.snapshot;
    let snapshot = snapshot.context("the follower installed a snapshot")?;
    assert!(snapshot.index > leader_start, "the snapshot reaches past the leader's log start");
    assert_eq!(lagging.partition().log().offsets().log_start, leader_start);
    assert!(leader_start > lagging_end);
    let held = contents_from(lagging, leader_start)?;
    let below_snapshot = held.into_iter().filter(|s| s.0 < snapshot.index).count();
    assert!(below_snapshot > 50, "the follower holds {below_snapshot} records below the snapshot point");

    // And it goes on from the tail.
    for round in 45..50 {
        propose(&nodes, round * 20..round * 20 + 20).await?;
    }
    assert_all_agree(&nodes).await?;
    for mut n in nodes {
        n.kill().await?;
    }
    Ok(())
}

/// The install on the lagging follower stops at `step` as a crash would; the follower is then
/// crashed, its files opened as they are, and it is started again.
async fn crash_during_install(step: InstallStep) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let mut nodes = start_cluster_with(root.path(), 3, config()).await?;
    let (lagging_id, lagging_end) = leave_a_follower_behind(&mut nodes, 0).await?;
    let leader = wait_for_common_leader(&nodes, None).await?;
    let leader_start = node(&nodes, leader).partition().log().offsets().log_start;
    let leader_contents = contents_from(node(&nodes, leader), leader_start)?;

    let lagging = nodes.iter_mut().find(|n| n.id == lagging_id).unwrap();
    // Opened as the replica opens it: the high watermark is Raft's, not the log end.
    let log_config = LogConfig { high_watermark: HighWatermarkMode::SetByCaller, ..config() };
    let before: Vec<Stored> = {
        let log = Log::open(&lagging.dir, log_config.clone())?;
        let contents = contents_of(&log, 0, log.offsets().high_watermark)?;
        log.close()?;
        contents
    };
    lagging.restart_with(|p| p.crash_next_snapshot_install_for_tests(step)).await?;
    let mut metrics = lagging.partition().metrics();
    // The failed install stops the follower's Raft.
    let stopped = tokio::time::timeout(WAIT, metrics.wait_for(|m| m.running_state.is_err())).await;
    stopped.with_context(|| format!("the install did not stop at {step:?}"))?.ok();
    lagging.crash().await?;

    // What the crash left is a readable log: the old one, or the leader's segments.
    {
        let log = Log::open(&lagging.dir, log_config)?;
        let offsets = log.offsets();
        if step == InstallStep::Verified {
            assert_eq!(offsets.log_end, lagging_end, "before the commit point the old log stays");
            let now = contents_of(&log, 0, offsets.high_watermark)?;
            assert_same(&now, &before[..now.len()], "the old log after the crash");
        } else {
            assert_eq!(offsets.log_start, leader_start, "after the commit point the leader's segments are the log");
            assert!(offsets.high_watermark > lagging_end);
            let now = contents_of(&log, leader_start, offsets.high_watermark)?;
            assert!(now.len() > 100);
            assert_same(&now, &leader_contents[..now.len()], "the installed segments against the leader's");
        }
        log.close()?;
    }

    lagging.restart().await?;
    propose(&nodes, 900..920).await?;
    assert_all_agree(&nodes).await?;
    let lagging = node(&nodes, lagging_id);
    assert_eq!(lagging.partition().log().offsets().log_start, leader_start, "it came back through a snapshot");
    for mut n in nodes {
        n.kill().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_installs_commit_point_reopens_as_the_leaders_segments() -> anyhow::Result<()> {
    crash_during_install(InstallStep::StagingRenamed).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_the_installs_commit_point_keeps_the_old_log_and_the_next_try_succeeds() -> anyhow::Result<()> {
    crash_during_install(InstallStep::Verified).await
}
