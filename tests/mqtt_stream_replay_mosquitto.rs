//! `mosquitto_sub -V mqttv5 -D subscribe user-property stream-offset earliest` replays a
//! stream with a stock client.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/streams.rs"]
mod streams;

use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_sub_replays_from_earliest() {
    // No silent skip: CI installs mosquitto-clients, and a missing client must fail loudly.
    Command::new("mosquitto_sub").arg("--help").output().expect("mosquitto_sub is installed (apt mosquitto-clients)");
    let dir = tempfile::tempdir().unwrap();
    let broker = streams::start(dir.path(), streams::TWO_STREAMS);
    let port = broker.port();
    tokio::time::timeout(
        streams::DEADLINE,
        streams::publish_all(port, &[("sensors/a", "one", &[]), ("sensors/b", "two", &[])]),
    )
    .await
    .expect("publish in time");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .args(["20", "mosquitto_sub", "-h", "127.0.0.1", "-p", &port.to_string(), "-V", "mqttv5", "-q", "1"])
            .args(["-t", "$stream/telemetry", "-C", "2", "-v"])
            .args(["-D", "subscribe", "user-property", "stream-offset", "earliest"])
            .output()
            .expect("run mosquitto_sub")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout.lines().collect::<Vec<_>>(), ["sensors/a one", "sensors/b two"], "{stdout}");
}
