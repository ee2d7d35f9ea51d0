//! What an MQTT subscriber reads of a replicated partition (`Log::read` and
//! `Fetch::records`, as the frontend reads) is exactly the proposed records at the offsets
//! their proposals returned: Raft's membership and blank entries, control batches in the same
//! log, take offsets but are never seen as records.

mod common;

use common::*;

/// `(offset, value)` of a record.
type Read = (u64, Vec<u8>);

/// Every record below the committed offset, as a subscriber reads them, and the offsets of
/// the control batches the read passed over.
fn as_a_subscriber(node: &TestNode) -> anyhow::Result<(Vec<Read>, Vec<u64>)> {
    let log = node.partition().log();
    let end = node.partition().committed();
    let (mut records, mut controls) = (Vec::new(), Vec::new());
    let mut next = 0;
    // Bounded: each read moves `next` past at least one batch.
    while next < end {
        let fetch = log.read(next, 4096)?;
        anyhow::ensure!(!fetch.batches.is_empty(), "node {}: nothing readable at {next} below {end}", node.id);
        for record in fetch.records(next)? {
            records.push((record.offset, record.value.to_vec()));
        }
        for batch in &fetch.batches {
            if batch.is_control() {
                controls.push(batch.header().base_offset);
            }
            next = batch.header().last_offset() + 1;
        }
    }
    Ok((records, controls))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_reads_only_the_proposed_records_at_their_offsets() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let mut nodes = start_cluster(root.path(), 3).await?;
    let first_leader = wait_for_common_leader(&nodes, None).await?;

    let mut proposed = Vec::new();
    for round in 0..5 {
        let records: Vec<_> = (round * 3..round * 3 + 3).map(record).collect();
        let offsets = node(&nodes, first_leader).partition().propose(records.clone()).await?;
        proposed.extend(offsets.into_iter().zip(records.into_iter().map(|r| r.value.to_vec())));
    }
    // A new leader appends a blank entry of its term: a control batch between user records.
    nodes.iter_mut().find(|n| n.id == first_leader).unwrap().kill().await?;
    let second_leader = wait_for_common_leader(&nodes, Some(first_leader)).await?;
    for round in 5..10 {
        let records: Vec<_> = (round * 3..round * 3 + 3).map(record).collect();
        let offsets = node(&nodes, second_leader).partition().propose(records.clone()).await?;
        proposed.extend(offsets.into_iter().zip(records.into_iter().map(|r| r.value.to_vec())));
    }

    let end = node(&nodes, second_leader).partition().committed();
    let last_proposed = proposed.last().unwrap().0;
    for n in nodes.iter().filter(|n| n.id != first_leader) {
        n.wait_committed(end).await?;
        let (records, controls) = as_a_subscriber(n)?;
        assert_eq!(records, proposed, "node {} shows its subscribers something else", n.id);
        // The control entries are there, taking offsets of their own: the initial
        // membership, the first leader's blank before the proposals, the second's among them.
        assert!(controls.len() >= 3, "node {}: control batches at {controls:?}", n.id);
        assert!(controls.iter().all(|c| proposed.iter().all(|(o, _)| o != c)));
        assert!(
            controls.iter().any(|&c| c > proposed[0].0 && c < last_proposed),
            "node {}: no control batch between the proposals: {controls:?}",
            n.id
        );
    }

    for mut n in nodes {
        n.kill().await?;
    }
    Ok(())
}
