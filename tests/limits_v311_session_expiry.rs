//! Issue 22: an MQTT 3.1.1 persistent session (clean session 0) expires after
//! `mqtt.v311_session_expiry`, as an MQTT 5 session with that Session Expiry Interval would;
//! before it had no default and lived for ever.

#[path = "common/admin_cli.rs"]
mod admin_cli;
#[path = "common/broker.rs"]
mod broker;
#[path = "common/raw.rs"]
mod raw;

use std::time::{Duration, Instant};

use broker::ServeProcess;
use raw::RawClient;
use strata_frontend::codec::{Disconnect, Packet, Properties, ProtocolVersion, QoS, ReasonCode};

/// Issue 22: with `v311_session_expiry = "2s"` the broker removes the disconnected 3.1.1
/// session by itself, and the client's next CONNECT finds no session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_v311_session_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, "[mqtt]\nv311_session_expiry = \"2s\"\n").unwrap();
    let broker = ServeProcess::start_with(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap(), "--grpc", "127.0.0.1:0"],
    );
    let grpc = broker.grpc_addr();
    let (mut client, connack) = RawClient::connect_persistent(broker.addr, ProtocolVersion::V3_1_1, "v311-exp").await;
    assert!(!connack.session_present);
    client.subscribe(1, &[("exp/#", QoS::AtLeastOnce)], Properties::default()).await;
    // Before the DISCONNECT: the broker's own disconnect time is later still.
    let disconnected = Instant::now();
    client
        .send(&Packet::Disconnect(Disconnect { reason_code: ReasonCode::Success, properties: Properties::default() }))
        .await;
    assert!(client.recv().await.is_none(), "closed after DISCONNECT");
    // Stored and shown disconnected first: the session outlives its connection.
    tokio::task::spawn_blocking(move || {
        admin_cli::wait_for_session(grpc, "v311-exp", "disconnected", |s| s["members"] == 0)
    })
    .await
    .unwrap();
    // Then removed by the broker, with nobody connecting, within a bounded wait.
    let mut gone = false;
    for _ in 0..200 {
        let list = tokio::task::spawn_blocking(move || admin_cli::json(grpc, &["group", "list"])).await.unwrap();
        let listed = list["groups"].as_array().expect("groups").iter().any(|g| g["name"] == "v311-exp");
        if !listed {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the 3.1.1 session is still listed long after its 2 s expiry");
    assert!(disconnected.elapsed() >= Duration::from_millis(1900), "removed before its expiry");
    let (_client, connack) = RawClient::connect_persistent(broker.addr, ProtocolVersion::V3_1_1, "v311-exp").await;
    assert!(!connack.session_present, "the expired session is not resumed");
}
