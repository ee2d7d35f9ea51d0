//! Shared by the `$stream` and `[[streams]]` tests: a broker with streams configured, an
//! MQTT 5 publisher that waits for every PUBACK, and a `$stream` subscriber that collects
//! deliveries with their user properties.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::Path;
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties, SubscribeProperties, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};

use super::broker::ServeProcess;

pub const DEADLINE: Duration = Duration::from_secs(30);

/// `orders`: topics `orders/#`, 3 partitions, compaction key `order_id`; `telemetry`:
/// `sensors/#`, 1 partition; `default` gets the rest.
pub const TWO_STREAMS: &str = "[[streams]]\nname = \"orders\"\ntopics = [\"orders/#\"]\npartitions = 3\ncompaction_key = \"order_id\"\n\n[[streams]]\nname = \"telemetry\"\ntopics = [\"sensors/#\"]\n";

/// Starts a broker on `dir/data` with `config` as its config file.
pub fn start(dir: &Path, config: &str) -> ServeProcess {
    let path = dir.join("strata.toml");
    std::fs::write(&path, config).unwrap();
    ServeProcess::start_with(&dir.join("data"), &["--config", path.to_str().unwrap()])
}

pub fn client(id: &str, port: u16) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    AsyncClient::new(options, 1000)
}

/// A message to publish: topic, payload, user properties.
pub type Message<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

/// Publishes each message at QoS 1 and waits for every PUBACK.
pub async fn publish_all(port: u16, messages: &[Message<'_>]) {
    let (publisher, mut events) = client("stream-test-pub", port);
    for (topic, payload, user) in messages {
        let properties = PublishProperties {
            user_properties: user.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            ..Default::default()
        };
        publisher
            .publish_with_properties(*topic, QoS::AtLeastOnce, false, payload.to_string(), properties)
            .await
            .unwrap();
    }
    let mut acked = 0;
    while acked < messages.len() {
        if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.expect("publisher connection") {
            acked += 1;
        }
    }
    publisher.disconnect().await.unwrap();
}

/// One delivery: topic, payload and user properties.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub topic: String,
    pub payload: String,
    pub user_properties: Vec<(String, String)>,
}

impl Delivery {
    pub fn property(&self, name: &str) -> Option<&str> {
        self.user_properties.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Subscribes to `filter` with these SUBSCRIBE user properties; returns the client, its
/// event loop, the reason codes and the SUBACK's reason string.
pub async fn subscribe(
    id: &str,
    port: u16,
    filter: &str,
    user: &[(&str, &str)],
) -> (AsyncClient, EventLoop, Vec<SubscribeReasonCode>, Option<String>) {
    let (subscriber, mut events) = client(id, port);
    let properties = SubscribeProperties {
        id: None,
        user_properties: user.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
    };
    subscriber.subscribe_with_properties(filter, QoS::AtLeastOnce, properties).await.unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(suback)) = events.poll().await.expect("subscriber connection") {
            let reason = suback.properties.and_then(|p| p.reason_string);
            return (subscriber, events, suback.return_codes, reason);
        }
    }
}

/// Collects `n` deliveries.
pub async fn collect(events: &mut EventLoop, n: usize) -> Vec<Delivery> {
    let mut out = Vec::new();
    while out.len() < n {
        if let Event::Incoming(Packet::Publish(publish)) = events.poll().await.expect("subscriber connection") {
            out.push(Delivery {
                topic: String::from_utf8_lossy(&publish.topic).into_owned(),
                payload: String::from_utf8_lossy(&publish.payload).into_owned(),
                user_properties: publish.properties.map(|p| p.user_properties).unwrap_or_default(),
            });
        }
    }
    out
}
