//! A retained message sent at SUBSCRIBE and not yet acknowledged is sent again when the
//! persistent session resumes, as MQTT requires of every unacknowledged PUBLISH: under its
//! packet identifier, with DUP set, across a broker restart too. If the topic's retained
//! message was replaced meanwhile, the old one is not resent; the new one arrives through the
//! stream like any publish. MQTT 3.1.1, rumqttc with manual acks.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/v4_session.rs"]
mod v4_session;

use broker::ServeProcess;
use rumqttc::{AsyncClient, Event, EventLoop, Packet, Publish, QoS};
use tokio::time::timeout;
use v4_session::{DEADLINE, client, connack, next_publish, publish_retained};

/// Subscribes to a throwaway filter and waits for its SUBACK, so that everything sent
/// before (acknowledgements included) has been handled; returns the PUBLISHes that came
/// meanwhile.
async fn sync(client: &AsyncClient, events: &mut EventLoop) -> Vec<Publish> {
    client.subscribe("rr-sync/x", QoS::AtMostOnce).await.unwrap();
    let mut extra = Vec::new();
    loop {
        match events.poll().await.expect("subscriber connection") {
            Event::Incoming(Packet::SubAck(_)) => return extra,
            Event::Incoming(Packet::Publish(p)) => extra.push(p),
            _ => {}
        }
    }
}

/// Subscribes to `cfg/#` at QoS 1 and returns the retained messages that come, by topic.
async fn subscribe_and_take_retained(subscriber: &AsyncClient, events: &mut EventLoop, count: usize) -> Vec<Publish> {
    subscriber.subscribe("cfg/#", QoS::AtLeastOnce).await.unwrap();
    let mut retained = Vec::new();
    while retained.len() < count {
        retained.push(next_publish(events).await);
    }
    retained.sort_by(|a, b| a.topic.cmp(&b.topic));
    retained
}

fn text(p: &Publish) -> String {
    String::from_utf8_lossy(&p.payload).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_retained_message_is_sent_again_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = ServeProcess::start(dir.path());
    let port = broker.port();
    let pkid = timeout(DEADLINE, async {
        publish_retained(port, "rr-pub-1", "cfg/a", "a-1").await;
        publish_retained(port, "rr-pub-2", "cfg/b", "b-1").await;
        let (subscriber, mut events) = client("rr-sub", port, false);
        assert!(!connack(&mut events).await);
        let retained = subscribe_and_take_retained(&subscriber, &mut events, 2).await;
        let got: Vec<(String, String, bool)> = retained.iter().map(|p| (p.topic.clone(), text(p), p.retain)).collect();
        assert_eq!(got, [("cfg/a".into(), "a-1".into(), true), ("cfg/b".into(), "b-1".into(), true)]);
        // Acknowledge cfg/b only; cfg/a stays in flight. Then gone without DISCONNECT.
        subscriber.ack(&retained[1]).await.unwrap();
        assert!(sync(&subscriber, &mut events).await.is_empty());
        retained[0].pkid
    })
    .await
    .expect("first connection in time");

    // Across a clean restart: the session record holds the retained message's place.
    assert!(broker.stop().success());
    let broker = ServeProcess::start(dir.path());
    let port = broker.port();
    timeout(DEADLINE, async {
        let (subscriber, mut events) = client("rr-sub", port, false);
        assert!(connack(&mut events).await, "the session is present");
        let again = next_publish(&mut events).await;
        assert_eq!(
            (again.topic.as_str(), text(&again).as_str(), again.dup, again.retain, again.pkid, again.qos),
            ("cfg/a", "a-1", true, true, pkid, QoS::AtLeastOnce),
            "the unacknowledged retained message, resent as it went out"
        );
        subscriber.ack(&again).await.unwrap();
        let extra = sync(&subscriber, &mut events).await;
        assert!(extra.is_empty(), "only cfg/a again: {:?}", extra.iter().map(text).collect::<Vec<_>>());
        drop(events);
    })
    .await
    .expect("resumed connection in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_message_replaced_while_offline_is_not_resent() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(dir.path());
    let port = broker.port();
    timeout(DEADLINE, async {
        publish_retained(port, "rr-pub-1", "cfg/a", "a-1").await;
        let (subscriber, mut events) = client("rr-sub-2", port, false);
        assert!(!connack(&mut events).await);
        let retained = subscribe_and_take_retained(&subscriber, &mut events, 1).await;
        assert_eq!(text(&retained[0]), "a-1");
        assert!(sync(&subscriber, &mut events).await.is_empty());
        drop(events);
        drop(subscriber);

        // Replaced while the session is offline: the new value is a publish like any other.
        publish_retained(port, "rr-pub-2", "cfg/a", "a-2").await;
        let (subscriber, mut events) = client("rr-sub-2", port, false);
        assert!(connack(&mut events).await, "the session is present");
        let next = next_publish(&mut events).await;
        assert_eq!((text(&next).as_str(), next.dup), ("a-2", false), "the new value, not a-1 again");
        subscriber.ack(&next).await.unwrap();
        let extra = sync(&subscriber, &mut events).await;
        assert!(extra.is_empty(), "nothing more: {:?}", extra.iter().map(text).collect::<Vec<_>>());
    })
    .await
    .expect("in time");
}
