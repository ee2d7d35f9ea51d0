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
