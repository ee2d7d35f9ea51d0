//! paho-mqtt (Python) against the real broker: `tests/paho/<scenario>.py <host> <port>` must
//! exit 0. MQTT 3.1.1 QoS 0/1/2 over TCP, MQTT 5 user properties and subscription
//! identifiers, MQTT over WebSocket (`--ws`, path `/mqtt`), and MQTT and WebSocket over TLS
//! with client certificates. Needs `python3` with `paho-mqtt` (installed by `.ci/run`).

#[path = "common/broker.rs"]
mod broker;
#[path = "common/tls.rs"]
mod tls;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use broker::ServeProcess;

/// Each scenario waits at most 30 s per step; this bounds the whole script.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(120);

fn run_scenario(scenario: &str, addr: SocketAddr) {
    run_scenario_with(scenario, addr, &[]);
}

/// `python3 tests/paho/<scenario>.py <host> <port> <more...>`.
fn run_scenario_with(scenario: &str, addr: SocketAddr, more: &[&str]) {
    let script = format!("{}/tests/paho/{scenario}.py", env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .args(more)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3 (is it installed?)");
    let mut waited = Duration::ZERO;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for python3") {
            break status;
        }
        if waited >= SCRIPT_DEADLINE {
            let _ = child.kill();
            let output = child.wait_with_output().expect("collect output");
            panic!("{scenario}.py did not finish: {}", String::from_utf8_lossy(&output.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
        waited += Duration::from_millis(50);
    };
    let output = child.wait_with_output().expect("collect output");
    assert!(
        status.success(),
        "{scenario}.py failed ({status}):\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn paho_v311_qos_0_1_2_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(dir.path());
    run_scenario("v311_qos", broker.addr);
}

#[test]
fn paho_v5_user_properties_and_subscription_identifier() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(dir.path());
    run_scenario("v5_properties", broker.addr);
}

#[test]
fn paho_over_websocket() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start_with(dir.path(), &["--ws", "127.0.0.1:0"]);
    let ws = broker.ws_addr();
    run_scenario("websocket", ws);
}

/// Issue 22: paho over MQTT-over-TLS and WebSocket-over-TLS, with client certificates whose
/// CN is the user while anonymous clients are refused.
#[test]
fn paho_over_tls_and_websocket_over_tls_with_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = tls::Ca::new(dir.path(), "main");
    let server = ca.server(dir.path(), "server");
    let client = ca.client(dir.path(), "paho", Some("paho"));
    let config = dir.path().join("strata.toml");
    std::fs::write(
        &config,
        format!(
            "[mqtt]\ntls_listen = \"127.0.0.1:0\"\nwss_listen = \"127.0.0.1:0\"\n{}\
             [auth]\nallow_anonymous = false\nuse_identity_as_username = true\n",
            tls::tls_section(&server, Some(&ca.file))
        ),
    )
    .unwrap();
    let broker = ServeProcess::start_with(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    let wss_port = broker.wss_addr().port().to_string();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    run_scenario_with("tls", broker.tls_addr(), &[&wss_port, &path(&ca.file), &path(&client.cert), &path(&client.key)]);
}
