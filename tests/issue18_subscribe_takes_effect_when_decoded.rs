//! Issue 18: a subscription takes effect at the partition's log end at the instant its
//! SUBSCRIBE is decoded. A client sends SUBSCRIBE and then, in the same write, a PUBLISH that
//! the new subscription matches: the PUBLISH is decoded after the SUBSCRIBE, so it is
//! appended after the subscription took effect and must come back. This holds for a plain
//! filter, a `$stream` subscription starting at `latest` (the default) and a new consumer
//! group, each decided by the broker before it even sends the SUBACK.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/raw.rs"]
mod raw;

use broker::ServeProcess;
use raw::{RawClient, id, publish};
use strata_frontend::codec::{
    Ack, Packet, Properties, ProtocolVersion, QoS, ReasonCode, Subscribe, SubscribeFilter, SubscriptionOptions,
};

/// Subscribes to `filter` and publishes `payload` on `topic` in one write; returns the
/// payloads received before a second message (the fence) published after the SUBACK.
async fn subscribe_and_publish_at_once(broker: &ServeProcess, client_id: &str, filter: &str, topic: &str) {
    let (mut client, _) = RawClient::connect(broker.addr, ProtocolVersion::V5, client_id).await;
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: id(1),
        properties: Properties::default(),
        filters: vec![SubscribeFilter {
            filter: filter.into(),
            options: SubscriptionOptions { qos: QoS::AtLeastOnce, ..SubscriptionOptions::default() },
        }],
    });
    let first = Packet::Publish(publish(topic, QoS::AtLeastOnce, Some(2), "first"));
    client.send_all(&[subscribe, first]).await;
    // The fence goes out once both were answered: everything before it was decided.
    let mut answered = 0;
    let mut received = Vec::new();
    while answered < 2 {
        match client.recv().await {
            Some(Packet::SubAck(suback)) => {
                assert_eq!(suback.reason_codes, vec![ReasonCode::GrantedQos1], "{filter}");
                answered += 1;
            }
            Some(Packet::PubAck(ack)) if ack.packet_id == id(2) => answered += 1,
            Some(Packet::Publish(message)) => {
                client.send(&Packet::PubAck(Ack::success(message.packet_id.expect("QoS 1")))).await;
                received.push(message.payload);
            }
            other => panic!("{filter}: unexpected {other:?}"),
        }
    }
    client.send(&Packet::Publish(publish(topic, QoS::AtLeastOnce, Some(3), "fence"))).await;
    loop {
        match client.recv().await {
            Some(Packet::PubAck(_)) => {}
            Some(Packet::Publish(message)) => {
                client.send(&Packet::PubAck(Ack::success(message.packet_id.expect("QoS 1")))).await;
                if &message.payload[..] == b"fence" {
                    break;
                }
                received.push(message.payload);
            }
            other => panic!("{filter}: unexpected {other:?}"),
        }
    }
    assert_eq!(received, vec![&b"first"[..]], "{filter}: the publish read right after the SUBSCRIBE, exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue18_a_plain_subscription_takes_effect_when_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(dir.path());
    subscribe_and_publish_at_once(&broker, "plain", "issue18/plain/#", "issue18/plain/a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue18_a_stream_subscription_at_latest_takes_effect_when_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(dir.path());
    subscribe_and_publish_at_once(&broker, "replay", "$stream/default/issue18/replay/#", "issue18/replay/a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue18_a_new_group_takes_effect_when_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(dir.path());
    subscribe_and_publish_at_once(&broker, "member", "$share/issue18/issue18/group/#", "issue18/group/a").await;
}
