//! Issue 20, "no split brain", with network namespaces (tests/common/netns.rs): three nodes,
//! each in its own namespace on one bridge, the test's clients in a fourth. The partition's
//! leader is cut off from the two other nodes (nftables drops in both directions) while the
//! clients still reach it. Then:
//!
//! - the majority elects a new leader and acknowledges publishes;
//! - the old leader acknowledges nothing: QoS 1 publishes to it get no successful PUBACK;
//! - after healing, every node replays the same (offset, payload) list, none of them has
//!   what the old leader was sent while cut off, `strata log dump` of the old leader's
//!   partition equals the others', and the history checker passes.
//!
//! Needs root, `ip` and `nft`; without them it prints SKIPPED and passes (fails under
//! `CI=true`), like the chaos tests (docs/testing.md).

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/history.rs"]
mod history;
#[path = "common/netns.rs"]
mod netns;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::{Cluster, Pacing, poll_until, publish_once_v5, publish_until_acked, replay_until};
use history::Recorder;
use netns::Net;

const STREAM: &str = "brain";

#[test]
fn issue20_a_leader_cut_off_acknowledges_nothing_and_rejoins_with_the_same_log() {
    let Some(net) = Net::new(3) else { return };
    let net = Arc::new(net);
    let mut cluster = Cluster::start_in_namespaces(net.clone(), 3);
    cluster.create_stream(None, STREAM, 1, "brain/#", &[]);
    let old = cluster.wait_for_leaders(STREAM, 1, Duration::from_secs(30))[&0];
    let majority: Vec<u64> = cluster.ids().into_iter().filter(|&id| id != old).collect();
    println!("leader {old}; majority {majority:?}");
    let mqtt = |id: u64| cluster.node(id).mqtt;
    let (old_mqtt, majority_mqtt) = (mqtt(old), majority.iter().map(|&id| mqtt(id)).collect::<Vec<_>>());
    let recorder = Recorder::new();

    let old_addrs = [old_mqtt];
    let before: Vec<String> = (0..50).map(|i| format!("before-{i:03}")).collect();
    let run = net.block_on(net.client(), || {
        publish_until_acked(
            &recorder,
            "pub-before",
            &old_addrs,
            "brain/t",
            before,
            Pacing { window: 10, rotate_on_refusal: false, deadline: Duration::from_secs(30) },
        )
    });
    assert!(run.unacked.is_empty(), "before the cut: {run:?}");
    cluster.wait_caught_up(STREAM, 0, Duration::from_secs(30));

    // The cut: the old leader and the majority no longer reach each other; the clients reach
    // everyone.
    let host = |id: u64| net.node(id as usize - 1);
    for &id in &majority {
        net.partition(host(old), host(id));
    }
    let cut_at = Instant::now();
    let mut new_leader = None;
    let elected = poll_until(Duration::from_secs(30), Duration::from_millis(20), || {
        new_leader = majority.iter().find_map(|&id| {
            let leader = cluster.partitions(id, STREAM)?.get(&0)?["leader"].as_u64()?;
            majority.contains(&leader).then_some(leader)
        });
        new_leader.is_some()
    });
    assert!(elected, "the majority {majority:?} elected no leader within 30 s of the cut");
    let new_leader = new_leader.expect("elected");
    println!("the majority named node {new_leader} leader {} ms after the cut", cut_at.elapsed().as_millis());
    assert!(net.dropped_packets(host(old)) > 0, "the cut dropped nothing: it did not take effect");

    // The majority takes publishes (on its leader, or forwarded by the other member)...
    let during: Vec<String> = (0..50).map(|i| format!("during-{i:03}")).collect();
    let run = net.block_on(net.client(), || {
        publish_until_acked(
            &recorder,
            "pub-majority",
            &majority_mqtt,
            "brain/t",
            during,
            Pacing { window: 10, rotate_on_refusal: true, deadline: Duration::from_secs(30) },
        )
    });
    assert!(run.unacked.is_empty(), "the majority did not acknowledge: {run:?}");

    // ...and the old leader, whatever it believes, acknowledges nothing.
    let old_view = cluster.partitions(old, STREAM).map(|v| v[&0].clone());
    println!("the old leader's view while cut off: {old_view:?}");
    let codes = net.block_on(net.client(), || async {
        let mut codes = Vec::new();
        for i in 0..3 {
            let id = format!("pub-old-{i}");
            let payload = format!("cut-off-{i}");
            codes.push(publish_once_v5(&recorder, old_mqtt, &id, "brain/t", &payload, Duration::from_secs(15)).await);
        }
        codes
    });
    println!("PUBACKs from the cut-off old leader: {codes:02x?}");
    for (i, code) in codes.iter().enumerate() {
        assert!(code.is_none_or(|c| c >= 0x80), "cut-off-{i}: the old leader acknowledged it (PUBACK {code:02x?})");
    }

    net.heal_all();
    cluster.wait_for_leaders(STREAM, 1, Duration::from_secs(30));
    let marker = vec!["after-heal".to_owned()];
    let all_mqtt: Vec<_> = cluster.ids().iter().map(|&id| mqtt(id)).collect();
    let run = net.block_on(net.client(), || {
        publish_until_acked(
            &recorder,
            "pub-after",
            &all_mqtt,
            "brain/t",
            marker.clone(),
            Pacing { window: 1, rotate_on_refusal: true, deadline: Duration::from_secs(30) },
        )
    });
    assert!(run.unacked.is_empty(), "after healing: {run:?}");
    cluster.wait_caught_up(STREAM, 0, Duration::from_secs(30));

    let mut replays = Vec::new();
    for id in cluster.ids() {
        let reader = format!("replay-{id}");
        let addr = mqtt(id);
        let entries = net.block_on(net.client(), || {
            replay_until(&recorder, addr, &reader, STREAM, &marker, Duration::from_secs(30))
        });
        assert!(
            !entries.iter().any(|(_, _, p)| p.starts_with("cut-off-")),
            "node {id} has a payload sent to the cut-off leader: {entries:?}"
        );
        replays.push((id, reader, entries));
    }
    for (_, reader, entries) in &replays[1..] {
        cluster::assert_same_entries(&replays[0].1, &replays[0].2, reader, entries);
    }
    let readers: Vec<&str> = replays.iter().map(|(_, r, _)| r.as_str()).collect();
    let report = recorder.snapshot().check(&readers);
    println!("{report}");
    report.assert_ok();

    for id in cluster.ids() {
        cluster.kill_9(id);
    }
    // The old leader's log equals the new leader's and the other member's.
    let third = majority.iter().copied().find(|&id| id != new_leader).expect("a third node");
    let dumps = cluster.log_dumps(&[new_leader, old, third], STREAM, 0);
    cluster::assert_same_records(&dumps);
    cluster::assert_same_terms(&dumps);
}
