//! An invalid inbound Topic Alias closes the connection with DISCONNECT 0x94 Topic Alias
//! Invalid: alias 0, an alias above our Topic Alias Maximum (`mqtt.topic_alias_maximum`),
//! and an alias never set used with an empty topic.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/raw.rs"]
mod raw;

use broker::ServeProcess;
use raw::{RawClient, publish};
use strata_frontend::codec::{Packet, ProtocolVersion, QoS, ReasonCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_aliases_get_0x94() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, "[mqtt]\ntopic_alias_maximum = 5\n").unwrap();
    let broker = ServeProcess::start_with(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);

    for (case, topic, alias) in [("alias 0", "t", 0), ("above the maximum", "t", 6), ("never set", "", 3)] {
        let (mut client, connack) = RawClient::connect(broker.addr, ProtocolVersion::V5, "alias-bad").await;
        assert_eq!(connack.properties.topic_alias_maximum, Some(5));
        let mut p = publish(topic, QoS::AtLeastOnce, Some(1), "x");
        p.properties.topic_alias = Some(alias);
        client.send(&Packet::Publish(p)).await;
        match client.recv().await {
            Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, ReasonCode::TopicAliasInvalid, "{case}"),
            other => panic!("{case}: expected DISCONNECT 0x94, got {other:?}"),
        }
        assert_eq!(client.recv().await, None, "{case}: closed after the DISCONNECT");
    }
}
