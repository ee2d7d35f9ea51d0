//! Issue 21, "Retained messages on any node": `$retained` is a Raft group over every node, so
//! a retained message set (or cleared) through any node is served by every node, and a node
//! killed with `kill -9` serves the same after its restart. Real `strata serve` processes and
//! mosquitto_pub/mosquitto_sub.

#[path = "common/chaos_clients.rs"]
mod chaos_clients;
#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/history.rs"]
mod history;
#[path = "common/netns.rs"]
mod netns;

use std::process::Command;
use std::time::Duration;

use cluster::{Cluster, poll_until};

/// Sets `payload` retained on `topic` through `node`, QoS 1 (mosquitto_pub waits for the
/// PUBACK); an empty payload clears it.
fn retain(cluster: &Cluster, node: u64, topic: &str, payload: &str) {
    let port = cluster.node(node).mqtt.port().to_string();
    let mut args = vec!["-h", "127.0.0.1", "-p", &port, "-q", "1", "-r", "-t", topic];
    if payload.is_empty() {
        args.push("-n");
    } else {
        args.extend(["-m", payload]);
    }
    // A publish refused while `$retained` elects a leader (a node was just killed) is sent
    // again: setting a retained message twice leaves the same state.
    let mut last_error = String::new();
    let acked = poll_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let output = Command::new("mosquitto_pub").args(&args).output().expect("mosquitto_pub is installed");
        last_error = String::from_utf8_lossy(&output.stderr).into_owned();
        output.status.success()
    });
    assert!(acked, "mosquitto_pub via node {node} never acknowledged: {last_error}");
}

/// The retained messages `node` hands a new subscriber to `filter`, as "topic payload" lines,
/// sorted: mosquitto_sub with `--retained-only` ends after 2 s without a message.
fn retained_on(cluster: &Cluster, node: u64, filter: &str) -> Vec<String> {
    let port = cluster.node(node).mqtt.port().to_string();
    let output = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port, "-t", filter, "-v", "--retained-only", "-W", "2"])
        .output()
        .expect("mosquitto_sub is installed");
    let mut lines: Vec<String> = String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

/// Waits (bounded) until every node in `nodes` serves exactly `expected` for `filter`.
fn every_node_serves(cluster: &Cluster, nodes: &[u64], filter: &str, expected: &[&str]) {
    for &node in nodes {
        let mut last = Vec::new();
        let served = poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
            last = retained_on(cluster, node, filter);
            last == expected
        });
        assert!(served, "node {node} serves {last:?} for {filter}, not {expected:?}");
    }
}

#[test]
fn issue21_a_retained_message_set_through_any_node_is_served_by_every_node() {
    let mut cluster = Cluster::start(3);
    cluster.wait_for_leaders("$retained", 1, Duration::from_secs(30));
    let all = cluster.ids();

    retain(&cluster, 1, "issue21/a", "from-1");
    retain(&cluster, 2, "issue21/b", "from-2");
    every_node_serves(&cluster, &all, "issue21/#", &["issue21/a from-1", "issue21/b from-2"]);

    // Replaced through node 3, cleared through node 1.
    retain(&cluster, 3, "issue21/a", "again-from-3");
    retain(&cluster, 1, "issue21/b", "");
    every_node_serves(&cluster, &all, "issue21/#", &["issue21/a again-from-3"]);

    // A node killed and restarted rebuilds the same messages from its replica, and one set
    // while it was down reaches it once it has caught up.
    cluster.kill_9(2);
    retain(&cluster, 1, "issue21/c", "while-2-was-down");
    cluster.restart(2);
    every_node_serves(&cluster, &all, "issue21/#", &["issue21/a again-from-3", "issue21/c while-2-was-down"]);
}
