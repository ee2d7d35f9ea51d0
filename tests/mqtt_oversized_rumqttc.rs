//! Maximum Packet Size with rumqttc, both ways. Ours (`mqtt.max_packet_size = 65536`) is
//! announced in the MQTT 5 CONNACK, and a 3.1.1 client that sends a larger PUBLISH is cut
//! off without the message being stored, while other clients carry on. The client's own
//! (MQTT 5 CONNECT) makes the broker skip messages too large for it, and only for it.

#[path = "common/broker.rs"]
mod broker;

use std::time::Duration;

use broker::ServeProcess;
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(30);
const OUR_MAX: usize = 65_536;

fn start(dir: &std::path::Path) -> ServeProcess {
    let config = dir.join("strata.toml");
    std::fs::write(&config, format!("[mqtt]\nmax_packet_size = {OUR_MAX}\n")).unwrap();
    ServeProcess::start_with(&dir.join("data"), &["--config", config.to_str().unwrap()])
}

mod v5 {
    use super::*;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};

    /// Connects; returns the client, its event loop and the broker's announced maximum.
    pub async fn connect(port: u16, id: &str, our_max: Option<u32>) -> (AsyncClient, EventLoop, Option<u32>) {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(our_max);
        let (client, mut events) = AsyncClient::new(options, 100);
        let announced = timeout(DEADLINE, async {
            loop {
                if let Event::Incoming(Packet::ConnAck(connack)) = events.poll().await.expect("connects") {
                    return connack.properties.and_then(|p| p.max_packet_size);
                }
            }
        })
        .await
        .expect("CONNACK in time");
        (client, events, announced)
    }

    pub async fn subscribe(client: &AsyncClient, events: &mut EventLoop, filter: &str) {
        client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        timeout(DEADLINE, async { while !matches!(events.poll().await, Ok(Event::Incoming(Packet::SubAck(_)))) {} })
            .await
            .expect("SUBACK in time");
    }

    /// Payload sizes received until the 1-byte marker.
    pub async fn sizes_until_marker(events: &mut EventLoop) -> Vec<usize> {
        timeout(DEADLINE, async {
            let mut sizes = Vec::new();
            loop {
                if let Event::Incoming(Packet::Publish(p)) = events.poll().await.expect("connected") {
                    if p.payload.len() == 1 {
                        return sizes;
                    }
                    sizes.push(p.payload.len());
                }
            }
        })
        .await
        .expect("the marker in time")
    }

    pub async fn publish_and_wait(client: &AsyncClient, events: &mut EventLoop, topic: &str, sizes: &[usize]) {
        for &size in sizes {
            client.publish(topic, QoS::AtLeastOnce, false, vec![b'x'; size]).await.unwrap();
        }
        timeout(DEADLINE, async {
            let mut acked = 0;
            while acked < sizes.len() {
                if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.expect("publisher connected") {
                    acked += 1;
                }
            }
        })
        .await
        .expect("PUBACKs in time");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_maximum_packet_size_skips_only_what_is_too_large_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path());
    let (small, mut small_events, announced) = v5::connect(broker.port(), "max-small", Some(2048)).await;
    assert_eq!(announced, Some(OUR_MAX as u32), "our maximum is announced in CONNACK");
    v5::subscribe(&small, &mut small_events, "sizes/#").await;
    let (large, mut large_events, _) = v5::connect(broker.port(), "max-large", None).await;
    v5::subscribe(&large, &mut large_events, "sizes/#").await;

    let (publisher, mut publisher_events, _) = v5::connect(broker.port(), "max-pub", None).await;
    v5::publish_and_wait(&publisher, &mut publisher_events, "sizes/t", &[100, 4096, 200, 1]).await;
    assert_eq!(v5::sizes_until_marker(&mut small_events).await, [100, 200], "the 4 KiB message is skipped");
    assert_eq!(v5::sizes_until_marker(&mut large_events).await, [100, 4096, 200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_3_1_1_client_sending_more_than_our_maximum_is_cut_off_and_nothing_is_stored() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path());
    let (watcher, mut watcher_events, _) = v5::connect(broker.port(), "max-watcher", None).await;
    v5::subscribe(&watcher, &mut watcher_events, "big/#").await;

    let mut options = MqttOptions::new("max-offender", "127.0.0.1", broker.port());
    options.set_keep_alive(Duration::from_secs(30));
    // rumqttc would refuse to send it otherwise.
    options.set_max_packet_size(1 << 22, 1 << 22);
    let (offender, mut events) = AsyncClient::new(options, 10);
    offender.publish("big/t", QoS::AtLeastOnce, false, vec![b'x'; OUR_MAX + 1]).await.unwrap();
    let outcome = timeout(DEADLINE, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => return "acknowledged",
                Ok(_) => {}
                Err(_) => return "cut off",
            }
        }
    })
    .await
    .expect("an outcome in time");
    assert_eq!(outcome, "cut off");

    // The others carry on, and the oversized message was never stored or delivered.
    let (publisher, mut publisher_events, _) = v5::connect(broker.port(), "max-pub-2", None).await;
    v5::publish_and_wait(&publisher, &mut publisher_events, "big/t", &[10, 1]).await;
    assert_eq!(v5::sizes_until_marker(&mut watcher_events).await, [10]);
}
