//! MQTT 3.1.1 clients replay through the topic form
//! `$stream/<stream>/@[p<n>:]<offset-spec>[/<filter>]` (rumqttc v4).

#[path = "common/broker.rs"]
mod broker;
#[path = "common/streams.rs"]
mod streams;

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeReasonCode};
use strata_frontend::streams::partition_for;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topic_form_replays_for_3_1_1_clients() {
    let dir = tempfile::tempdir().unwrap();
    let broker = streams::start(dir.path(), streams::TWO_STREAMS);
    let port = broker.port();
    tokio::time::timeout(streams::DEADLINE, async {
        streams::publish_all(port, &[("orders/eu", "1", &[]), ("orders/eu", "2", &[]), ("orders/us", "3", &[])]).await;
        let partition = partition_for(b"orders/eu", 3);
        let mut options = MqttOptions::new("v311-replay", "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut events) = AsyncClient::new(options, 100);
        client.subscribe(format!("$stream/orders/@p{partition}:1/orders/eu"), QoS::AtLeastOnce).await.unwrap();
        client.subscribe("$stream/orders/@earliest/orders/us", QoS::AtLeastOnce).await.unwrap();
        client.subscribe("$stream/missing/@earliest", QoS::AtLeastOnce).await.unwrap();
        let mut codes = Vec::new();
        let mut payloads = Vec::new();
        while codes.len() < 3 || payloads.len() < 2 {
            match events.poll().await.expect("connection") {
                Event::Incoming(Packet::SubAck(suback)) => codes.extend(suback.return_codes),
                Event::Incoming(Packet::Publish(publish)) => {
                    payloads.push(String::from_utf8_lossy(&publish.payload).into_owned())
                }
                _ => {}
            }
        }
        assert_eq!(&codes[..2], [SubscribeReasonCode::Success(QoS::AtLeastOnce); 2]);
        assert_eq!(codes[2], SubscribeReasonCode::Failure);
        payloads.sort();
        // Offset 1 of the partition of orders/eu is "2"; "1" (offset 0) is not replayed.
        assert_eq!(payloads, ["2", "3"]);
    })
    .await
    .expect("in time");
}
