//! rumqttc 3.1.1 helpers shared by the persistent-session tests: clients with manual acks,
//! a publisher that waits for every PUBACK, and waits for CONNACK and PUBLISH.
#![allow(dead_code)] // each test binary uses a different subset

use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS};
use tokio::time::timeout;

pub const DEADLINE: Duration = Duration::from_secs(30);

/// A 3.1.1 client that acknowledges by hand, so a test decides what stays in flight.
pub fn client(id: &str, port: u16, clean: bool) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_session(clean);
    options.set_manual_acks(true);
    AsyncClient::new(options, 100)
}

/// Publishes `m-<i>` for each `i` in `range` to `topic` at QoS 1 and waits for every PUBACK.
pub async fn publish_all(port: u16, id: &str, topic: &str, range: std::ops::Range<usize>) {
    publish_and_wait(port, id, topic, range.map(|i| format!("m-{i}")).collect()).await;
}

/// Publishes each payload to `topic` at QoS 1 from a fresh clean session and waits for every
/// PUBACK.
pub async fn publish_and_wait(port: u16, id: &str, topic: &str, payloads: Vec<String>) {
    publish_with_retain_and_wait(port, id, topic, payloads, false).await;
}

/// [`publish_and_wait`] of one payload with RETAIN set.
pub async fn publish_retained(port: u16, id: &str, topic: &str, payload: &str) {
    publish_with_retain_and_wait(port, id, topic, vec![payload.to_owned()], true).await;
}

async fn publish_with_retain_and_wait(port: u16, id: &str, topic: &str, payloads: Vec<String>, retain: bool) {
    let (publisher, mut events) = client(id, port, true);
    let count = payloads.len();
    for payload in payloads {
        publisher.publish(topic, QoS::AtLeastOnce, retain, payload).await.unwrap();
    }
    let mut acked = 0;
    timeout(DEADLINE, async {
        while acked < count {
            if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.expect("publisher connection") {
                acked += 1;
            }
        }
    })
    .await
    .expect("PUBACKs in time");
}

/// Waits for CONNACK and returns its Session Present flag.
pub async fn connack(events: &mut EventLoop) -> bool {
    loop {
        if let Event::Incoming(Packet::ConnAck(connack)) = events.poll().await.expect("connects") {
            return connack.session_present;
        }
    }
}

/// Waits for the next PUBLISH.
pub async fn next_publish(events: &mut EventLoop) -> Publish {
    loop {
        if let Event::Incoming(Packet::Publish(p)) = events.poll().await.expect("subscriber connection") {
            return p;
        }
    }
}
