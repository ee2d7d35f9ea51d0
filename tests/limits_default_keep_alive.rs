//! Issue 22: `mqtt.max_keep_alive` has a safe default (an hour), so an MQTT 5 client cannot
//! hold a dead connection open for 18 hours, or for ever with keep alive 0.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/raw.rs"]
mod raw;

use broker::ServeProcess;
use raw::RawClient;
use strata_frontend::codec::{Packet, Properties, ProtocolVersion, ReasonCode};

async fn server_keep_alive(addr: std::net::SocketAddr, keep_alive: u16) -> Option<u16> {
    let mut client = RawClient::connect_with(addr, ProtocolVersion::V5, "ka", keep_alive, Properties::default()).await;
    match client.recv().await {
        Some(Packet::ConnAck(connack)) if connack.reason_code == ReasonCode::Success => {
            connack.properties.server_keep_alive
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// Issue 22: with no configuration, keep alive 0 and 65535 are both lowered to 3600.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_default_max_keep_alive() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(&dir.path().join("data"));
    assert_eq!(server_keep_alive(broker.addr, 0).await, Some(3600), "no keep alive: raised to the default cap");
    assert_eq!(server_keep_alive(broker.addr, 65_535).await, Some(3600), "lowered to the default cap");
    assert_eq!(server_keep_alive(broker.addr, 60).await, None, "within the cap: not announced");
}
