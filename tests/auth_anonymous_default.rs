//! `[auth] allow_anonymous` defaults to true only while every MQTT listener is on loopback.
//! With a listener bound to 0.0.0.0 (here the WebSocket one; the tests connect only through
//! 127.0.0.1) and nothing said, anonymous clients get CONNACK 0x87 (5.0) / 0x05 (3.1.1), and
//! the start-up line says why; `allow_anonymous = true` lets them in again.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/raw.rs"]
mod raw;

use broker::ServeProcess;
use raw::RawClient;
use strata_frontend::codec::{Packet, ProtocolVersion, ReasonCode};

async fn anonymous(addr: std::net::SocketAddr, version: ProtocolVersion) -> ReasonCode {
    let mut client = RawClient::connect_login(addr, version, "anonymous", None, None).await;
    match client.recv().await {
        Some(Packet::ConnAck(connack)) => connack.reason_code,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

fn start(dir: &std::path::Path, config: &str) -> ServeProcess {
    let path = dir.join("strata.toml");
    std::fs::write(&path, config).unwrap();
    ServeProcess::start_with(&dir.join("data"), &["--config", path.to_str().unwrap()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_clients_are_refused_by_default_once_a_listener_leaves_loopback() {
    use ProtocolVersion::{V3_1_1, V5};

    let loopback = tempfile::tempdir().unwrap();
    let broker = start(loopback.path(), "");
    let mode = broker.line_after("strata: authentication: ");
    assert_eq!(mode, "no password file; anonymous clients allowed (every MQTT listener is on loopback)");
    assert_eq!(anonymous(broker.addr, V5).await, ReasonCode::Success);
    drop(broker);

    let exposed = tempfile::tempdir().unwrap();
    let broker = start(exposed.path(), "[mqtt]\nws_listen = \"0.0.0.0:0\"\n");
    let mode = broker.line_after("strata: authentication: ");
    assert_eq!(mode, "no password file; anonymous clients refused (an MQTT listener is not on loopback)");
    assert_eq!(anonymous(broker.addr, V5).await, ReasonCode::NotAuthorized);
    assert_eq!(anonymous(broker.addr, V3_1_1).await, ReasonCode::NotAuthorized);
    drop(broker);

    let allowed = tempfile::tempdir().unwrap();
    let broker = start(allowed.path(), "[mqtt]\nws_listen = \"0.0.0.0:0\"\n[auth]\nallow_anonymous = true\n");
    let mode = broker.line_after("strata: authentication: ");
    assert_eq!(mode, "no password file; anonymous clients allowed (auth.allow_anonymous = true)");
    assert_eq!(anonymous(broker.addr, V5).await, ReasonCode::Success);
    assert_eq!(anonymous(broker.addr, V3_1_1).await, ReasonCode::Success);
}

#[test]
fn a_bad_password_file_stops_the_start_naming_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    std::fs::write(&passwd, "# users\nalice:plaintext\n").unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, format!("[auth]\npassword_file = {:?}\n", passwd.to_str().unwrap())).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["config", "check"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("auth.password_file"), "{stderr}");
    assert!(stderr.contains(&format!("{}:2:", passwd.display())), "{stderr}");
    assert!(!stderr.contains("plaintext"), "the line leaked: {stderr}");
}
