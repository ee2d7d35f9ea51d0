//! Issue 20, "a follower restarts and catches up".
//!
//! - `issue20_follower_killed_and_restarted_catches_up`: a follower gets `kill -9`, the leader
//!   takes more messages, the follower comes back on its data and ports; its log end reaches
//!   the leader's and its `$stream` replay from `earliest` equals the leader's.
//! - `issue20_follower_behind_retention_catches_up_from_a_segment_snapshot`: the follower is
//!   down while retention deletes, on the others, segments it never got; it comes back
//!   through a segment snapshot (needs segment-snapshot catch-up).
//!
//! Every test runs its history through the checker.

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/history.rs"]
mod history;
#[path = "common/netns.rs"]
mod netns;

use std::time::Duration;

use cluster::{Cluster, Pacing, poll_until, publish_until_acked, replay_until, runtime, text};
use history::Recorder;

fn payloads(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:05}-{}", "x".repeat(64))).collect()
}

/// Publishes `payloads` to the partition's leader and asserts every one was acknowledged.
fn publish(
    cluster: &Cluster,
    recorder: &Recorder,
    rt: &tokio::runtime::Runtime,
    via: u64,
    id: &str,
    payloads: Vec<String>,
) {
    let run = rt.block_on(publish_until_acked(
        recorder,
        id,
        &[cluster.node(via).mqtt],
        "catch/up",
        payloads,
        Pacing { window: 20, rotate_on_refusal: false, deadline: Duration::from_secs(60) },
    ));
    assert!(run.unacked.is_empty(), "{id}: {} payloads never acknowledged by node {via}", run.unacked.len());
}

/// Replays the stream on `leader` and `follower` up to `marker` and asserts both replays give
/// the same (offset, payload) list; then checks the history with both replays as complete
/// readers.
fn replays_agree(
    cluster: &Cluster,
    recorder: &Recorder,
    rt: &tokio::runtime::Runtime,
    stream: &str,
    leader: u64,
    follower: u64,
    marker: &str,
) {
    let markers = vec![marker.to_owned()];
    let mut replays = Vec::new();
    for id in [leader, follower] {
        let reader = format!("replay-{id}");
        let entries = rt.block_on(replay_until(
            recorder,
            cluster.node(id).mqtt,
            &reader,
            stream,
            &markers,
            Duration::from_secs(60),
        ));
        replays.push((reader, entries));
    }
    assert_eq!(
        replays[0].1.len(),
        replays[1].1.len(),
        "leader {leader} and follower {follower} replay different counts"
    );
    cluster::assert_same_entries(&replays[0].0, &replays[0].1, &replays[1].0, &replays[1].1);
    let report = recorder.snapshot().check(&[&replays[0].0, &replays[1].0]);
    println!("{report}");
    report.assert_ok();
}

#[test]
fn issue20_follower_killed_and_restarted_catches_up() {
    let mut cluster = Cluster::start(3);
    cluster.create_stream(None, "catch", 1, "catch/#", &[]);
    let leader = cluster.wait_for_leaders("catch", 1, Duration::from_secs(30))[&0];
    let follower = cluster.ids().into_iter().find(|&id| id != leader).expect("a follower");
    let recorder = Recorder::new();
    let rt = runtime();

    publish(&cluster, &recorder, &rt, leader, "before", payloads("before", 200));
    cluster.wait_caught_up("catch", 0, Duration::from_secs(30));
    cluster.kill_9(follower);
    publish(&cluster, &recorder, &rt, leader, "while-down", payloads("while-down", 500));
    let behind = cluster.partitions(leader, "catch").expect("leader's status")[&0].clone();
    println!("with follower {follower} down: {behind}");
    let committed = behind["committed"].as_u64().expect("committed");
    let follower_end = behind["log_end"][follower.to_string()].as_u64().unwrap_or(0);
    assert!(follower_end < committed, "follower {follower} is behind while down: {behind}");

    cluster.restart(follower);
    let end = cluster.wait_caught_up("catch", 0, Duration::from_secs(30));
    println!("follower {follower} caught up to {end}");
    publish(&cluster, &recorder, &rt, leader, "marker", vec!["marker".to_owned()]);
    replays_agree(&cluster, &recorder, &rt, "catch", leader, follower, "marker");
}

#[test]
fn issue20_follower_behind_retention_catches_up_from_a_segment_snapshot() {
    // Small segments, and retention that keeps only the last few: what the follower missed
    // is deleted on the others before it comes back.
    let mut cluster = Cluster::start(3);
    cluster.create_stream(None, "snap", 1, "catch/#", &["segment_bytes=4096", "retention_bytes=16384"]);
    let leader = cluster.wait_for_leaders("snap", 1, Duration::from_secs(30))[&0];
    let follower = cluster.ids().into_iter().find(|&id| id != leader).expect("a follower");
    let recorder = Recorder::new();
    let rt = runtime();

    publish(&cluster, &recorder, &rt, leader, "before", payloads("before", 50));
    cluster.wait_caught_up("snap", 0, Duration::from_secs(30));
    cluster.kill_9(follower);
    publish(&cluster, &recorder, &rt, leader, "while-down", payloads("while-down", 1_000));
    let follower_end =
        cluster.partitions(leader, "snap").expect("status")[&0]["log_end"][follower.to_string()].as_u64().unwrap_or(0);

    // Retention now, on each running node, until the leader's log starts past what the
    // follower has.
    let mut log_start = 0;
    let deleted = poll_until(Duration::from_secs(30), Duration::from_millis(200), || {
        for id in cluster.running() {
            let output = cluster.cli(id, &["stream", "enforce-retention", "snap"]);
            assert!(output.status.success(), "enforce-retention on node {id}: {}", text(&output.stderr));
        }
        let output = cluster.cli(leader, &["stream", "describe", "snap", "--output", "json"]);
        let Ok(described) = serde_json::from_slice::<serde_json::Value>(&output.stdout) else { return false };
        log_start = described["partitions"][0]["log_start"].as_u64().unwrap_or(0);
        log_start > follower_end
    });
    assert!(deleted, "retention never deleted past the follower's end {follower_end} (log start {log_start})");
    println!("follower {follower} ends at {follower_end}; the leader's log now starts at {log_start}");

    cluster.restart(follower);
    let end = cluster.wait_caught_up("snap", 0, Duration::from_secs(60));
    println!("follower {follower} caught up to {end} through a snapshot");
    publish(&cluster, &recorder, &rt, leader, "marker", vec!["marker".to_owned()]);
    // Each replay starts at its node's log start, and retention runs on each node by itself,
    // so their starts may differ: the follower must hold everything from the leader's log
    // start on, and where both hold an offset they hold the same payload.
    let markers = vec!["marker".to_owned()];
    let mut replays = Vec::new();
    for id in [leader, follower] {
        let reader = format!("replay-{id}");
        // Readers here do not have every acknowledged payload (retention took the oldest), so
        // they stop at the marker alone; see replay_tail.
        replays.push((reader.clone(), rt.block_on(replay_tail(&cluster, &recorder, id, &reader, &markers))));
    }
    let (leader_entries, follower_entries) = (&replays[0].1, &replays[1].1);
    let leader_start = leader_entries.first().map(|e| e.1).expect("the leader replays something");
    assert!(leader_start >= log_start, "the leader's replay starts at {leader_start}, below its log start {log_start}");
    let from_leader_start: Vec<cluster::Entry> =
        follower_entries.iter().filter(|e| e.1 >= leader_start).cloned().collect();
    cluster::assert_same_entries(&replays[0].0, leader_entries, &replays[1].0, &from_leader_start);
    // Everything acknowledged after the follower went down and still within retention is
    // on the follower.
    let expected: Vec<&String> = leader_entries.iter().map(|e| &e.2).collect();
    assert!(expected.iter().any(|p| p.starts_with("while-down-")), "the leader kept some of what the follower missed");
    println!(
        "leader {leader} replays {}..{}, follower {follower} {}..{}",
        leader_start,
        leader_entries.last().map_or(0, |e| e.1),
        follower_entries.first().map_or(0, |e| e.1),
        follower_entries.last().map_or(0, |e| e.1)
    );
    let report = recorder.snapshot().check(&[]);
    println!("{report}");
    report.assert_ok();
}

/// A replay of `snap` from `earliest` up to the markers, without requiring the payloads
/// retention deleted.
async fn replay_tail(
    cluster: &Cluster,
    recorder: &Recorder,
    id: u64,
    reader: &str,
    markers: &[String],
) -> Vec<cluster::Entry> {
    // replay_until also waits for every acknowledged payload; a scratch recorder that knows
    // only the marker keeps that to the marker, then the deliveries go into the real one.
    let scratch = Recorder::new();
    let entries = replay_until(&scratch, cluster.node(id).mqtt, reader, "snap", markers, Duration::from_secs(60)).await;
    for (partition, offset, payload) in &entries {
        recorder.delivered(
            reader,
            "catch/up",
            payload,
            Some(history::Position { stream: "snap".into(), partition: *partition, offset: *offset }),
        );
    }
    entries
}
