//! `mqtt.max_keep_alive` (Server Keep Alive, MQTT 5): a longer or absent (0) keep alive is
//! lowered to it and CONNACK says so; a shorter one is kept and not announced. The capped
//! keep alive is enforced: silence for 1.5 × it closes with DISCONNECT 0x8D, and each packet
//! received pushes that deadline back.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/raw.rs"]
mod raw;

use broker::ServeProcess;
use raw::RawClient;
use std::time::Duration;
use strata_frontend::codec::{Packet, Properties, ProtocolVersion, ReasonCode};

async fn connack_keep_alive(addr: std::net::SocketAddr, keep_alive: u16) -> (RawClient, Option<u16>) {
    let mut client = RawClient::connect_with(addr, ProtocolVersion::V5, "ska", keep_alive, Properties::default()).await;
    match client.recv().await {
        Some(Packet::ConnAck(connack)) if connack.reason_code == ReasonCode::Success => {
            (client, connack.properties.server_keep_alive)
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keep_alive_is_capped_announced_and_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, "[mqtt]\nmax_keep_alive = 1\n").unwrap();
    let broker = ServeProcess::start_with(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);

    assert_eq!(connack_keep_alive(broker.addr, 1).await.1, None, "within the cap: not announced");
    assert_eq!(connack_keep_alive(broker.addr, 0).await.1, Some(1), "no keep alive: raised to the cap");
    let (mut client, announced) = connack_keep_alive(broker.addr, 600).await;
    assert_eq!(announced, Some(1), "longer: lowered to the cap");
    // Each packet pushes the deadline back: a PINGREQ every 0.5 s keeps the connection up
    // for 3 s, twice the 1.5 s limit.
    for _ in 0..6 {
        client.send(&Packet::PingReq).await;
        match client.recv_within(Duration::from_millis(500)).await {
            Some(Packet::PingResp) => {}
            other => panic!("expected PINGRESP while pinging within the keep alive, got {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Silent: closed after 1.5 s rather than 900 s (the read deadline is 30 s).
    match client.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, ReasonCode::KeepAliveTimeout),
        other => panic!("expected DISCONNECT 0x8D, got {other:?}"),
    }
}
