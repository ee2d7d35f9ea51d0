//! MQTT 5 Message Expiry (rumqttc v5): a message that expires while a persistent subscriber
//! is offline is not delivered to it, one still live goes out with the remaining interval, a
//! message without one has none, and an expired retained message is not sent at SUBSCRIBE.

#[path = "common/broker.rs"]
mod broker;

use std::time::Duration;

use broker::ServeProcess;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(30);

fn client(port: u16, id: &str, persistent: bool) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_start(!persistent);
    options.set_session_expiry_interval(persistent.then_some(3600));
    AsyncClient::new(options, 100)
}

async fn until_suback(events: &mut EventLoop) {
    timeout(DEADLINE, async {
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.expect("connected") {
                return;
            }
        }
    })
    .await
    .expect("SUBACK in time");
}

/// Publishes (topic, expiry, retain) at QoS 1 and waits for every PUBACK.
async fn publish_all(port: u16, messages: &[(&str, Option<u32>, bool)]) {
    let (publisher, mut events) = client(port, "expiry-pub", false);
    for (topic, expiry, retain) in messages {
        let properties = PublishProperties { message_expiry_interval: *expiry, ..Default::default() };
        publisher
            .publish_with_properties(topic.to_string(), QoS::AtLeastOnce, *retain, topic.to_string(), properties)
            .await
            .unwrap();
    }
    timeout(DEADLINE, async {
        let mut acked = 0;
        while acked < messages.len() {
            if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.expect("publisher connected") {
                acked += 1;
            }
        }
    })
    .await
    .expect("PUBACKs in time");
}

/// (topic, Message Expiry Interval) of each PUBLISH until `marker`.
async fn received_until(events: &mut EventLoop, marker: &str) -> Vec<(String, Option<u32>)> {
    timeout(DEADLINE, async {
        let mut got = Vec::new();
        loop {
            if let Event::Incoming(Packet::Publish(p)) = events.poll().await.expect("subscriber connected") {
                let topic = String::from_utf8(p.topic.to_vec()).unwrap();
                if topic == marker {
                    return got;
                }
                got.push((topic, p.properties.and_then(|p| p.message_expiry_interval)));
            }
        }
    })
    .await
    .expect("the marker in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_messages_are_not_delivered_and_live_ones_carry_the_remaining_interval() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(dir.path());
    let port = broker.port();

    let (subscriber, mut events) = client(port, "expiry-sub", true);
    subscriber.subscribe("exp/#", QoS::AtLeastOnce).await.unwrap();
    until_suback(&mut events).await;
    subscriber.disconnect().await.unwrap();
    let _ = timeout(Duration::from_secs(5), async { while events.poll().await.is_ok() {} }).await;

    publish_all(port, &[("exp/short", Some(1), false), ("exp/long", Some(600), false), ("exp/none", None, false)])
        .await;
    publish_all(port, &[("ret/short", Some(1), true), ("ret/long", Some(600), true)]).await;
    // Past the 1 s interval.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    publish_all(port, &[("exp/marker", None, false)]).await;

    let (_subscriber, mut events) = client(port, "expiry-sub", true);
    let got = received_until(&mut events, "exp/marker").await;
    let topics: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(topics, ["exp/long", "exp/none"], "the expired message is dropped");
    let remaining = got[0].1.expect("the remaining interval is forwarded");
    assert!((590..=598).contains(&remaining), "about 600 - 2.5 s remain, got {remaining}");
    assert_eq!(got[1].1, None, "no interval stays none");

    // Retained: the expired one is gone, the live one comes with its remaining interval.
    let (watcher, mut events) = client(port, "expiry-retained", false);
    watcher.subscribe("ret/#", QoS::AtLeastOnce).await.unwrap();
    watcher.subscribe("exp/marker2", QoS::AtLeastOnce).await.unwrap();
    // Retained messages follow the first SUBACK, maybe before the second.
    let mut got = timeout(DEADLINE, async {
        let (mut got, mut subacks) = (Vec::new(), 0);
        while subacks < 2 {
            match events.poll().await.expect("watcher connected") {
                Event::Incoming(Packet::SubAck(_)) => subacks += 1,
                Event::Incoming(Packet::Publish(p)) => got.push((
                    String::from_utf8(p.topic.to_vec()).unwrap(),
                    p.properties.and_then(|p| p.message_expiry_interval),
                )),
                _ => {}
            }
        }
        got
    })
    .await
    .expect("SUBACKs in time");
    publish_all(port, &[("exp/marker2", None, false)]).await;
    got.extend(received_until(&mut events, "exp/marker2").await);
    assert_eq!(got.len(), 1, "only the live retained message: {got:?}");
    assert_eq!(got[0].0, "ret/long");
    assert!(got[0].1.is_some_and(|r| r <= 598));
}
