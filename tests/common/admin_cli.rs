//! The real `strata` CLI against a node's gRPC admin API, for the admin tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::process::{Command, Output};

/// Runs `strata <args> --server <grpc>` and returns its output.
pub fn strata(grpc: SocketAddr, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .args(["--server", &grpc.to_string()])
        .env_remove("RUST_LOG")
        .output()
        .expect("run strata")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `strata <args> --output json --server <grpc>`, asserts it succeeded and parses stdout.
pub fn json(grpc: SocketAddr, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let output = strata(grpc, &all);
    assert!(output.status.success(), "strata {args:?}: {}", text(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("strata {args:?}: {e}: {}", text(&output.stdout)))
}

/// Sum of `log_end` over the partitions of a `stream describe --output json`.
pub fn messages(stream: &serde_json::Value) -> u64 {
    stream["partitions"].as_array().expect("partitions").iter().map(|p| p["log_end"].as_u64().unwrap()).sum()
}

/// `strata group describe <client_id> --kind session`, asked again every 50 ms until `done`
/// holds for it, for at most 30 s: what the node's admin API says of a persistent session.
/// Tests wait on this instead of sleeping. Two facts make it a sound barrier: a session is
/// shown disconnected (`members` 0) only once the broker has written its session durably
/// (`connection.rs` saves, then unregisters), and its `committed` offsets are the ones last
/// handed to `$sessions`.
pub fn wait_for_session(
    grpc: SocketAddr,
    client_id: &str,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut last = String::new();
    for _ in 0..600 {
        let output = strata(grpc, &["group", "describe", client_id, "--kind", "session", "--output", "json"]);
        if output.status.success() {
            let session: serde_json::Value = serde_json::from_slice(&output.stdout).expect("describe prints JSON");
            if done(&session) {
                return session;
            }
            last = session.to_string();
        } else {
            // Not known yet: the session is written on its first commit.
            last = text(&output.stderr);
        }
        if std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("session {client_id}: {what} not seen within 30 s; last: {last}");
}

/// The committed offset of `session` (as [`wait_for_session`] returns it) on `stream`'s
/// partition `partition`, if it has one.
pub fn committed(session: &serde_json::Value, stream: &str, partition: u64) -> Option<u64> {
    session["partitions"]
        .as_array()?
        .iter()
        .find(|p| p["stream"] == stream && p["partition"] == partition)
        .and_then(|p| p["committed"].as_u64())
}
