//! `mqtt.max_topic_length` and `mqtt.max_topic_levels`: a SUBSCRIBE filter beyond them gets
//! 0x8F Topic Filter Invalid in its SUBACK slot (0x80 in 3.1.1) while the others are
//! granted; a PUBLISH topic beyond them gets DISCONNECT 0x90 Topic Name Invalid.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/raw.rs"]
mod raw;

use broker::ServeProcess;
use raw::{RawClient, publish};
use strata_frontend::codec::{Packet, Properties, ProtocolVersion, QoS, ReasonCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_beyond_the_limits_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, "[mqtt]\nmax_topic_length = 16\nmax_topic_levels = 3\n").unwrap();
    let broker = ServeProcess::start_with(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    let long = "x".repeat(17);

    let (mut v5, _) = RawClient::connect(broker.addr, ProtocolVersion::V5, "limits-v5").await;
    let codes = v5
        .subscribe(
            1,
            &[("a/b/c", QoS::AtLeastOnce), ("a/b/c/d", QoS::AtLeastOnce), (&long, QoS::AtMostOnce)],
            Properties::default(),
        )
        .await;
    assert_eq!(codes, vec![ReasonCode::GrantedQos1, ReasonCode::TopicFilterInvalid, ReasonCode::TopicFilterInvalid]);

    let (mut v3, _) = RawClient::connect(broker.addr, ProtocolVersion::V3_1_1, "limits-v3").await;
    let codes = v3.subscribe(1, &[("a/+/c/#", QoS::AtMostOnce), ("a/b", QoS::AtMostOnce)], Properties::default()).await;
    // 3.1.1 has a single failure code, 0x80, which decodes as Unspecified Error.
    assert_eq!(codes, vec![ReasonCode::UnspecifiedError, ReasonCode::GRANTED_QOS_0]);

    for (case, topic) in [("too many levels", "a/b/c/d"), ("too long", long.as_str())] {
        let (mut client, _) = RawClient::connect(broker.addr, ProtocolVersion::V5, "limits-pub").await;
        client.send(&Packet::Publish(publish(topic, QoS::AtLeastOnce, Some(1), "x"))).await;
        match client.recv().await {
            Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, ReasonCode::TopicNameInvalid, "{case}"),
            other => panic!("{case}: expected DISCONNECT 0x90, got {other:?}"),
        }
    }
    // Within the limits a publish is acknowledged.
    let (mut client, _) = RawClient::connect(broker.addr, ProtocolVersion::V5, "limits-ok").await;
    client.send(&Packet::Publish(publish("a/b/c", QoS::AtLeastOnce, Some(1), "x"))).await;
    assert!(matches!(client.recv().await, Some(Packet::PubAck(_))));
}
