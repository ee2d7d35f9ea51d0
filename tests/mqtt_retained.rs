//! Retained messages (MQTT 5, rumqttc) from the compacted internal stream `$retained`: set,
//! replace and clear with an empty payload; delivered at SUBSCRIBE with RETAIN set per Retain
//! Handling 0/1/2; rebuilt from `$retained` after a restart; CONNACK says Retain Available.

#[path = "common/broker.rs"]
mod broker;

use std::collections::BTreeMap;
use std::time::Duration;

use broker::ServeProcess;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, RetainForwardRule};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(30);

fn client(id: &str, port: u16) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    AsyncClient::new(options, 100)
}

/// Publishes `(topic, payload)` retained at QoS 1 and waits for every PUBACK.
async fn publish_retained(port: u16, messages: &[(&str, &str)]) {
    let (publisher, mut events) = client("retained-publisher", port);
    for (topic, payload) in messages {
        publisher.publish(*topic, QoS::AtLeastOnce, true, payload.to_string()).await.unwrap();
    }
    let mut acked = 0;
    timeout(DEADLINE, async {
        while acked < messages.len() {
            match events.poll().await.expect("publisher connection") {
                Event::Incoming(Packet::ConnAck(connack)) => {
                    let available = connack.properties.and_then(|p| p.retain_available);
                    assert_ne!(available, Some(0), "CONNACK announces Retain Available");
                }
                Event::Incoming(Packet::PubAck(_)) => acked += 1,
                _ => {}
            }
        }
    })
    .await
    .expect("PUBACKs in time");
    publisher.disconnect().await.unwrap();
    let _ = timeout(Duration::from_secs(5), async { while events.poll().await.is_ok() {} }).await;
}

/// Subscribes with each filter in turn (one SUBSCRIBE each), then publishes a non-retained
/// `marker` on `marker_topic` and returns every retained message received before it.
async fn retained_seen(
    port: u16,
    id: &str,
    filters: Vec<Filter>,
    marker_topic: &str,
) -> Vec<(String, String, bool, QoS)> {
    let (subscriber, mut events) = client(id, port);
    let mut seen = Vec::new();
    timeout(DEADLINE, async {
        for filter in filters {
            subscriber.subscribe_many(vec![filter]).await.unwrap();
            loop {
                match events.poll().await.expect("subscriber connection") {
                    Event::Incoming(Packet::SubAck(_)) => break,
                    Event::Incoming(Packet::Publish(p)) => seen.push(publish_fields(&p)),
                    _ => {}
                }
            }
        }
        subscriber.subscribe(marker_topic, QoS::AtLeastOnce).await.unwrap();
        subscriber.publish(marker_topic, QoS::AtLeastOnce, false, "marker").await.unwrap();
        loop {
            if let Event::Incoming(Packet::Publish(p)) = events.poll().await.expect("subscriber connection") {
                let fields = publish_fields(&p);
                if fields.0 == marker_topic {
                    break;
                }
                seen.push(fields);
            }
        }
    })
    .await
    .expect("deliveries in time");
    seen
}

fn publish_fields(p: &rumqttc::v5::mqttbytes::v5::Publish) -> (String, String, bool, QoS) {
    (String::from_utf8(p.topic.to_vec()).unwrap(), String::from_utf8(p.payload.to_vec()).unwrap(), p.retain, p.qos)
}

fn filter(path: &str, qos: QoS, rule: RetainForwardRule) -> Filter {
    let mut filter = Filter::new(path, qos);
    filter.retain_forward_rule = rule;
    filter
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_are_set_replaced_cleared_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = ServeProcess::start(dir.path());
    publish_retained(
        broker.port(),
        &[("r/a", "one"), ("r/a", "two"), ("r/b", "bee"), ("r/c", "sea"), ("r/c", ""), ("other/x", "x")],
    )
    .await;

    let expected: BTreeMap<String, String> =
        [("r/a", "two"), ("r/b", "bee")].into_iter().map(|(t, p)| (t.to_owned(), p.to_owned())).collect();
    let check = |seen: Vec<(String, String, bool, QoS)>| {
        assert!(seen.iter().all(|(_, _, retain, _)| *retain), "RETAIN set on retained deliveries: {seen:?}");
        assert!(seen.iter().all(|(_, _, _, qos)| *qos == QoS::AtMostOnce), "granted QoS 0 caps: {seen:?}");
        let got: BTreeMap<String, String> = seen.into_iter().map(|(t, p, _, _)| (t, p)).collect();
        assert_eq!(got, expected);
    };
    let seen = retained_seen(
        broker.port(),
        "retained-sub-1",
        vec![filter("r/#", QoS::AtMostOnce, RetainForwardRule::OnEverySubscribe)],
        "marker/1",
    )
    .await;
    check(seen);

    // Rebuilt from `$retained` after a restart.
    assert!(broker.stop().success());
    let broker = ServeProcess::start(dir.path());
    let seen = retained_seen(
        broker.port(),
        "retained-sub-2",
        vec![filter("r/#", QoS::AtMostOnce, RetainForwardRule::OnEverySubscribe)],
        "marker/2",
    )
    .await;
    check(seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_handling_decides_what_a_subscribe_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(dir.path());
    publish_retained(broker.port(), &[("h/one", "1")]).await;

    // 2: never.
    let seen = retained_seen(
        broker.port(),
        "rh-never",
        vec![filter("h/#", QoS::AtLeastOnce, RetainForwardRule::Never)],
        "marker/never",
    )
    .await;
    assert!(seen.is_empty(), "{seen:?}");

    // 1: only for a new subscription: once for two identical SUBSCRIBEs.
    let seen = retained_seen(
        broker.port(),
        "rh-new",
        vec![
            filter("h/#", QoS::AtLeastOnce, RetainForwardRule::OnNewSubscribe),
            filter("h/#", QoS::AtLeastOnce, RetainForwardRule::OnNewSubscribe),
        ],
        "marker/new",
    )
    .await;
    assert_eq!(seen, vec![("h/one".to_owned(), "1".to_owned(), true, QoS::AtLeastOnce)]);

    // 0: at every SUBSCRIBE.
    let seen = retained_seen(
        broker.port(),
        "rh-every",
        vec![
            filter("h/#", QoS::AtLeastOnce, RetainForwardRule::OnEverySubscribe),
            filter("h/#", QoS::AtLeastOnce, RetainForwardRule::OnEverySubscribe),
        ],
        "marker/every",
    )
    .await;
    assert_eq!(seen.len(), 2, "{seen:?}");
}
