//! `strata bench` against a real `strata serve`: a short, count-bounded QoS 1 run finishes with
//! exit 0 and a RESULT line in which every published message was delivered exactly once.

#[path = "common/broker.rs"]
mod broker;

use std::process::Command;

use broker::ServeProcess;

#[test]
fn bench_qos1_delivers_every_message_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = ServeProcess::start(&dir.path().join("data"));
    let target = broker.addr.to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["bench", "--target", &target, "--duration", "2", "--publishers", "1", "--subscribers", "1"])
        .args(["--qos", "1", "--payload", "64", "--max-messages", "2000"])
        .env_remove("RUST_LOG")
        .output()
        .expect("run strata bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "strata bench failed\nstdout:\n{stdout}\nstderr:\n{stderr}");

    let json = stdout
        .lines()
        .find_map(|line| line.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line in:\n{stdout}"));
    let result: serde_json::Value = serde_json::from_str(json).expect("RESULT is JSON");
    let field = |name: &str| result[name].as_u64().unwrap_or_else(|| panic!("RESULT lacks {name}: {json}"));
    let published = field("published");
    assert!(published > 0, "nothing was published: {json}");
    assert!(published <= 2000, "--max-messages was not respected: {json}");
    assert_eq!(field("lost"), 0, "{json}");
    assert_eq!(field("duplicates"), 0, "{json}");
    assert_eq!(field("delivered"), published, "{json}");
    assert_eq!(field("acked"), published, "{json}");
    assert!(result["errors"].as_array().is_some_and(|e| e.is_empty()), "{json}");
}

#[test]
fn bench_refuses_a_remote_target() {
    let output = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["bench", "--target", "192.0.2.1:1883", "--duration", "1"])
        .env_remove("RUST_LOG")
        .output()
        .expect("run strata bench");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("--allow-remote"), "{output:?}");
}
