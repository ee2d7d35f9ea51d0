//! paho-mqtt (Python) against the real broker: `tests/paho/<scenario>.py <host> <port>` must
//! exit 0. MQTT 3.1.1 QoS 0/1/2 over TCP, MQTT 5 user properties and subscription
//! identifiers, and MQTT over WebSocket (`--ws`, path `/mqtt`). Needs `python3` with
//! `paho-mqtt` (installed by `.ci/run`).

#[path = "common/broker.rs"]
mod broker;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use broker::ServeProcess;

/// Each scenario waits at most 30 s per step; this bounds the whole script.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(120);

fn run_scenario(scenario: &str, addr: SocketAddr) {
    let script = format!("{}/tests/paho/{scenario}.py", env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
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
