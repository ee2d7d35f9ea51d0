//! Topic aliases and Receive Maximum with rumqttc v5. The publisher sets aliases and then
//! publishes with an empty topic; the subscriber, which allows 5 aliases, gets every topic
//! right and later messages of a topic arrive aliased. A subscriber with Receive Maximum 2
//! that does not acknowledge gets exactly 2 messages, and one more per PUBACK. Our own
//! Receive Maximum (`mqtt.receive_maximum = 4`) is announced in CONNACK.

#[path = "common/broker.rs"]
mod broker;

use std::time::Duration;

use broker::ServeProcess;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{ConnAckProperties, Packet, Publish, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(30);

fn start(dir: &std::path::Path) -> ServeProcess {
    let config = dir.join("strata.toml");
    std::fs::write(&config, "[mqtt]\nreceive_maximum = 4\n").unwrap();
    ServeProcess::start_with(&dir.join("data"), &["--config", config.to_str().unwrap()])
}

async fn connect(options: &mut MqttOptions) -> (AsyncClient, EventLoop, Option<ConnAckProperties>) {
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(options.clone(), 100);
    let properties = timeout(DEADLINE, async {
        loop {
            if let Event::Incoming(Packet::ConnAck(connack)) = events.poll().await.expect("connects") {
                return connack.properties;
            }
        }
    })
    .await
    .expect("CONNACK in time");
    (client, events, properties)
}

async fn subscribe(client: &AsyncClient, events: &mut EventLoop, filter: &str) {
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    timeout(DEADLINE, async { while !matches!(events.poll().await, Ok(Event::Incoming(Packet::SubAck(_)))) {} })
        .await
        .expect("SUBACK in time");
}

async fn next_publish(events: &mut EventLoop) -> Publish {
    timeout(DEADLINE, async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = events.poll().await.expect("connected") {
                return p;
            }
        }
    })
    .await
    .expect("a PUBLISH in time")
}

/// Polls for `wait`; returns the PUBLISHes that arrived.
async fn publishes_within(events: &mut EventLoop, wait: Duration) -> Vec<Publish> {
    let mut got = Vec::new();
    let _ = timeout(wait, async {
        loop {
            if let Ok(Event::Incoming(Packet::Publish(p))) = events.poll().await {
                got.push(p);
            }
        }
    })
    .await;
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_aliases_work_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path());
    let mut options = MqttOptions::new("alias-sub", "127.0.0.1", broker.port());
    options.set_topic_alias_max(Some(5));
    let (subscriber, mut sub_events, _) = connect(&mut options).await;
    subscribe(&subscriber, &mut sub_events, "alias/#").await;

    let mut options = MqttOptions::new("alias-pub", "127.0.0.1", broker.port());
    let (publisher, mut pub_events, connack) = connect(&mut options).await;
    assert_eq!(connack.as_ref().and_then(|p| p.receive_max), Some(4), "our Receive Maximum is announced");
    assert!(connack.and_then(|p| p.topic_alias_max).is_some_and(|max| max >= 2));
    let aliased = |alias| PublishProperties { topic_alias: Some(alias), ..Default::default() };
    let sends = [("alias/a/long/topic/name", 1, "1"), ("", 1, "2"), ("alias/b", 2, "3"), ("", 1, "4"), ("", 2, "5")];
    for (topic, alias, payload) in sends {
        publisher.publish_with_properties(topic, QoS::AtLeastOnce, false, payload, aliased(alias)).await.unwrap();
    }
    timeout(DEADLINE, async {
        let mut acked = 0;
        while acked < sends.len() {
            if let Event::Incoming(Packet::PubAck(_)) = pub_events.poll().await.expect("publisher connected") {
                acked += 1;
            }
        }
    })
    .await
    .expect("PUBACKs in time");

    // rumqttc hands over the packets as they came, so the aliases the broker sent are resolved
    // here, as the protocol says: a topic with an alias sets it, an empty topic uses it.
    let mut aliases = std::collections::HashMap::new();
    let mut got = Vec::new();
    let mut aliased_deliveries = 0;
    for _ in 0..sends.len() {
        let p = next_publish(&mut sub_events).await;
        let mut topic = String::from_utf8(p.topic.to_vec()).unwrap();
        match p.properties.as_ref().and_then(|p| p.topic_alias) {
            Some(alias) if topic.is_empty() => {
                aliased_deliveries += 1;
                topic = aliases.get(&alias).cloned().expect("an alias is set before it is used");
            }
            Some(alias) => {
                assert!((1..=5).contains(&alias), "within our Topic Alias Maximum: {alias}");
                aliases.insert(alias, topic.clone());
            }
            None => {}
        }
        got.push((topic, String::from_utf8(p.payload.to_vec()).unwrap()));
    }
    let topics: Vec<(&str, &str)> = got.iter().map(|(t, p)| (t.as_str(), p.as_str())).collect();
    assert_eq!(
        topics,
        [
            ("alias/a/long/topic/name", "1"),
            ("alias/a/long/topic/name", "2"),
            ("alias/b", "3"),
            ("alias/a/long/topic/name", "4"),
            ("alias/b", "5"),
        ],
        "inbound aliases resolved, outbound aliases consistent"
    );
    assert_eq!(aliased_deliveries, 3, "repeated topics go out as aliases");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_receive_maximum_bounds_what_it_is_sent_unacknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path());
    let mut options = MqttOptions::new("rm-sub", "127.0.0.1", broker.port());
    options.set_receive_maximum(Some(2));
    options.set_manual_acks(true);
    let (subscriber, mut sub_events, _) = connect(&mut options).await;
    subscribe(&subscriber, &mut sub_events, "rm/#").await;

    let mut options = MqttOptions::new("rm-pub", "127.0.0.1", broker.port());
    let (publisher, mut pub_events, _) = connect(&mut options).await;
    for i in 0..5 {
        publisher.publish("rm/t", QoS::AtLeastOnce, false, format!("{i}")).await.unwrap();
    }
    let keep = tokio::spawn(async move { while pub_events.poll().await.is_ok() {} });

    let first = publishes_within(&mut sub_events, Duration::from_millis(800)).await;
    let payloads: Vec<&[u8]> = first.iter().map(|p| &p.payload[..]).collect();
    assert_eq!(payloads, [b"0", b"1"], "two in flight, no more");
    subscriber.ack(&first[0]).await.unwrap();
    let next = publishes_within(&mut sub_events, Duration::from_millis(800)).await;
    let payloads: Vec<&[u8]> = next.iter().map(|p| &p.payload[..]).collect();
    assert_eq!(payloads, [b"2"], "one PUBACK frees one slot");
    keep.abort();
}
