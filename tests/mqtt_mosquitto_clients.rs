//! `mosquitto_pub` and `mosquitto_sub` (apt `mosquitto-clients`) against a real `strata
//! serve`, speaking MQTT 3.1.1 and 5.0, at QoS 0, 1 and 2.

#[path = "common/broker.rs"]
mod broker;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use broker::ServeProcess;

fn round_trip(port: u16, version: &str) {
    let topic = format!("mosq/{version}");
    let port = port.to_string();
    // -d prints "received SUBACK", so we publish only once the subscription exists (stdbuf
    // makes its piped stdout line-buffered); -C and -W bound the run.
    let mut sub = Command::new("stdbuf")
        .args([
            "-oL",
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            version,
            "-q",
            "2",
            "-t",
            &format!("{topic}/#"),
        ])
        .args(["-d", "-v", "-C", "3", "-W", "30", "-i", &format!("sub-{version}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto_sub is installed (apt mosquitto-clients)");
    let stdout = sub.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        let line = rx.recv_timeout(Duration::from_secs(30)).expect("SUBACK from the broker");
        if line.contains("received SUBACK") {
            break;
        }
    }
    for qos in 0..3 {
        let status = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port, "-V", version, "-q", &qos.to_string()])
            .args(["-t", &format!("{topic}/q{qos}"), "-m", &format!("hello at qos {qos}")])
            .status()
            .expect("run mosquitto_pub");
        assert!(status.success(), "mosquitto_pub -q {qos} failed");
    }
    let mut messages = Vec::new();
    while messages.len() < 3 {
        let line = rx.recv_timeout(Duration::from_secs(30)).expect("message from the broker");
        if !line.starts_with("Client ") && !line.starts_with("Subscribed ") {
            messages.push(line);
        }
    }
    let status = sub.wait().unwrap();
    assert!(status.success(), "mosquitto_sub exits 0 after -C 3");
    assert_eq!(
        messages,
        vec![
            format!("{topic}/q0 hello at qos 0"),
            format!("{topic}/q1 hello at qos 1"),
            format!("{topic}/q2 hello at qos 2"),
        ]
    );
}

#[test]
fn mosquitto_clients_publish_and_subscribe_v311_and_v5() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(dir.path());
    round_trip(broker.port(), "mqttv311");
    round_trip(broker.port(), "mqttv5");
}
