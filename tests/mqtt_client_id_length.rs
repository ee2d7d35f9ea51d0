//! Issue 22: `mqtt.max_client_id_length` bounds the client id, a key of the session store:
//! a longer one gets CONNACK 0x85 (MQTT 5) or 0x02 (3.1.1) and the connection is closed.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/raw.rs"]
mod raw;

use broker::ServeProcess;
use raw::RawClient;
use strata_frontend::codec::{Packet, Properties, ProtocolVersion, ReasonCode};

/// Issue 22: a client id longer than `mqtt.max_client_id_length` is refused with 0x85 (MQTT 5)
/// or 0x02 (3.1.1); one at the limit is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_id_beyond_max_client_id_length_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, "[mqtt]\nmax_client_id_length = 40\n").unwrap();
    let broker = ServeProcess::start_with(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let at_limit = "c".repeat(40);
        let (_client, connack) = RawClient::connect(broker.addr, version, &at_limit).await;
        assert_eq!(connack.reason_code, ReasonCode::Success);
        let mut client =
            RawClient::connect_with(broker.addr, version, &"c".repeat(41), 60, Properties::default()).await;
        match client.recv().await {
            Some(Packet::ConnAck(connack)) => assert_eq!(connack.reason_code, ReasonCode::ClientIdentifierNotValid),
            other => panic!("expected CONNACK 0x85, got {other:?}"),
        }
        assert!(client.recv().await.is_none(), "the refused connection is closed");
    }
}
