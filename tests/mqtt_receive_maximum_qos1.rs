//! Receive Maximum for inbound QoS 1: a client that sends more unacknowledged QoS 1
//! messages than our Receive Maximum (`mqtt.receive_maximum`, announced in CONNACK) gets
//! DISCONNECT 0x93 Receive Maximum Exceeded. A QoS 1 message counts until its PUBACK is sent,
//! which happens only once it is durable.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/raw.rs"]
mod raw;

use broker::ServeProcess;
use raw::{RawClient, publish};
use strata_frontend::codec::{Packet, ProtocolVersion, QoS, ReasonCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_unacknowledged_qos1_messages_get_0x93() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, "[mqtt]\nreceive_maximum = 10\n").unwrap();
    let broker = ServeProcess::start_with(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);

    // Within the limit: 10 in flight, all acknowledged.
    let (mut polite, connack) = RawClient::connect(broker.addr, ProtocolVersion::V5, "rm-polite").await;
    assert_eq!(connack.properties.receive_maximum, Some(10));
    let ten: Vec<Packet> =
        (1..=10).map(|i| Packet::Publish(publish("rm/polite", QoS::AtLeastOnce, Some(i), "x"))).collect();
    polite.send_all(&ten).await;
    for _ in 0..10 {
        assert!(matches!(polite.recv().await, Some(Packet::PubAck(_))), "PUBACK within the limit");
    }

    // Far beyond it, all in one write: the broker decodes them faster than they become
    // durable and acknowledged.
    let (mut client, _) = RawClient::connect(broker.addr, ProtocolVersion::V5, "rm-greedy").await;
    let flood: Vec<Packet> = (1..=1000u16)
        .map(|i| Packet::Publish(publish("rm/greedy", QoS::AtLeastOnce, Some(i), vec![0u8; 16])))
        .collect();
    client.send_all(&flood).await;
    loop {
        match client.recv().await {
            Some(Packet::PubAck(_)) => {}
            Some(Packet::Disconnect(d)) => {
                assert_eq!(d.reason_code, ReasonCode::ReceiveMaximumExceeded);
                break;
            }
            other => panic!("expected PUBACKs then DISCONNECT 0x93, got {other:?}"),
        }
    }
}
