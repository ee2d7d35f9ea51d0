//! rumqttc (MQTT 3.1.1 and 5.0) against a real `strata serve`: QoS 0, 1 and 2 publish →
//! subscribe round trips, and overlapping subscriptions delivered once at the highest QoS
//! with every matching Subscription Identifier.

#[path = "common/broker.rs"]
mod broker;

use std::time::Duration;

use broker::ServeProcess;
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(30);

mod v4 {
    use super::*;
    use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

    pub fn client(id: &str, port: u16) -> (AsyncClient, EventLoop) {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        AsyncClient::new(options, 100)
    }

    /// Polls until the SUBACK arrives; returns its return codes.
    pub async fn wait_suback(events: &mut EventLoop) -> Vec<rumqttc::SubscribeReasonCode> {
        loop {
            if let Event::Incoming(Packet::SubAck(suback)) = events.poll().await.expect("subscriber connection") {
                return suback.return_codes;
            }
        }
    }

    pub async fn round_trip(port: u16, qos: QoS) {
        let tag = format!("v4-q{}", qos as u8);
        let (subscriber, mut sub_events) = client(&format!("{tag}-sub"), port);
        subscriber.subscribe(format!("{tag}/#"), QoS::ExactlyOnce).await.unwrap();
        let codes = timeout(DEADLINE, wait_suback(&mut sub_events)).await.expect("SUBACK in time");
        assert_eq!(codes, vec![rumqttc::SubscribeReasonCode::Success(QoS::ExactlyOnce)]);

        let (publisher, mut pub_events) = client(&format!("{tag}-pub"), port);
        let publishing = tokio::spawn(async move {
            for i in 0..20 {
                publisher.publish(format!("{tag}/t"), qos, false, format!("message {i}")).await.unwrap();
            }
            // Drive the publisher until every message is acknowledged.
            let mut acked = 0;
            while acked < if qos == QoS::AtMostOnce { 0 } else { 20 } {
                match pub_events.poll().await.expect("publisher connection") {
                    Event::Incoming(Packet::PubAck(_)) | Event::Incoming(Packet::PubComp(_)) => acked += 1,
                    _ => {}
                }
            }
            // QoS 0 has no acknowledgement: keep the connection going until the test ends.
            loop {
                if pub_events.poll().await.is_err() {
                    break;
                }
            }
        });

        let received = timeout(DEADLINE, async {
            let mut received = Vec::new();
            while received.len() < 20 {
                if let Event::Incoming(Packet::Publish(publish)) = sub_events.poll().await.expect("subscriber") {
                    assert_eq!(publish.qos, qos, "delivered at min(granted, published)");
                    received.push(String::from_utf8(publish.payload.to_vec()).unwrap());
                }
            }
            received
        })
        .await
        .expect("all messages in time");
        let expected: Vec<String> = (0..20).map(|i| format!("message {i}")).collect();
        assert_eq!(received, expected);
        publishing.abort();
    }
}

mod v5 {
    use super::*;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::{Filter, Packet, SubscribeProperties};
    use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};

    pub fn client(id: &str, port: u16) -> (AsyncClient, EventLoop) {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        AsyncClient::new(options, 100)
    }

    pub async fn wait_suback(events: &mut EventLoop) -> Vec<rumqttc::v5::mqttbytes::v5::SubscribeReasonCode> {
        loop {
            if let Event::Incoming(Packet::SubAck(suback)) = events.poll().await.expect("subscriber connection") {
                return suback.return_codes;
            }
        }
    }

    fn spawn_publisher(client: AsyncClient, mut events: EventLoop, messages: Vec<(String, QoS, String)>) {
        tokio::spawn(async move {
            for (topic, qos, payload) in messages {
                client.publish(topic, qos, false, payload).await.unwrap();
            }
            while events.poll().await.is_ok() {}
        });
    }

    pub async fn round_trip(port: u16, qos: QoS) {
        let tag = format!("v5-q{}", qos as u8);
        let (subscriber, mut sub_events) = client(&format!("{tag}-sub"), port);
        subscriber.subscribe(format!("{tag}/#"), QoS::ExactlyOnce).await.unwrap();
        timeout(DEADLINE, wait_suback(&mut sub_events)).await.expect("SUBACK in time");
        let (publisher, pub_events) = client(&format!("{tag}-pub"), port);
        let messages = (0..20).map(|i| (format!("{tag}/t"), qos, format!("message {i}"))).collect();
        spawn_publisher(publisher, pub_events, messages);
        let received = timeout(DEADLINE, async {
            let mut received = Vec::new();
            while received.len() < 20 {
                if let Event::Incoming(Packet::Publish(publish)) = sub_events.poll().await.expect("subscriber") {
                    assert_eq!(publish.qos, qos);
                    received.push(String::from_utf8(publish.payload.to_vec()).unwrap());
                }
            }
            received
        })
        .await
        .expect("all messages in time");
        let expected: Vec<String> = (0..20).map(|i| format!("message {i}")).collect();
        assert_eq!(received, expected);
    }

    pub async fn overlapping(port: u16) {
        let (subscriber, mut sub_events) = client("v5-overlap-sub", port);
        subscriber
            .subscribe_with_properties(
                "ov/#",
                QoS::AtMostOnce,
                SubscribeProperties { id: Some(7), user_properties: vec![] },
            )
            .await
            .unwrap();
        subscriber
            .subscribe_with_properties(
                "ov/+",
                QoS::ExactlyOnce,
                SubscribeProperties { id: Some(9), user_properties: vec![] },
            )
            .await
            .unwrap();
        subscriber.subscribe_many([Filter::new("ov/a", QoS::AtLeastOnce)]).await.unwrap();
        for _ in 0..3 {
            timeout(DEADLINE, wait_suback(&mut sub_events)).await.expect("SUBACK in time");
        }
        let (publisher, pub_events) = client("v5-overlap-pub", port);
        spawn_publisher(
            publisher,
            pub_events,
            vec![
                ("ov/a".into(), QoS::ExactlyOnce, "both".into()),
                ("ov/b/c".into(), QoS::ExactlyOnce, "hash only".into()),
                ("ov/end".into(), QoS::AtLeastOnce, "end".into()),
            ],
        );
        let received = timeout(DEADLINE, async {
            let mut received = Vec::new();
            loop {
                if let Event::Incoming(Packet::Publish(publish)) = sub_events.poll().await.expect("subscriber") {
                    let payload = String::from_utf8(publish.payload.to_vec()).unwrap();
                    let mut ids = publish.properties.map(|p| p.subscription_identifiers).unwrap_or_default();
                    ids.sort();
                    let done = payload == "end";
                    received.push((payload, publish.qos, ids));
                    if done {
                        return received;
                    }
                }
            }
        })
        .await
        .expect("messages in time");
        assert_eq!(
            received,
            vec![
                ("both".to_string(), QoS::ExactlyOnce, vec![7, 9]),
                ("hash only".to_string(), QoS::AtMostOnce, vec![7]),
                ("end".to_string(), QoS::AtLeastOnce, vec![7, 9]),
            ]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_subscribe_round_trips_at_every_qos_v4_and_v5() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(dir.path());
    let port = broker.port();
    for qos in [rumqttc::QoS::AtMostOnce, rumqttc::QoS::AtLeastOnce, rumqttc::QoS::ExactlyOnce] {
        v4::round_trip(port, qos).await;
    }
    use rumqttc::v5::mqttbytes::QoS as Q5;
    for qos in [Q5::AtMostOnce, Q5::AtLeastOnce, Q5::ExactlyOnce] {
        v5::round_trip(port, qos).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_subscriptions_deliver_once_at_the_highest_qos() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(dir.path());
    v5::overlapping(broker.port()).await;
}
