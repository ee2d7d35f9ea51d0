//! Persistent sessions (MQTT 3.1.1, rumqttc, clean_session = 0): the session keeps its
//! subscriptions and its committed offset. After a reconnect, QoS 1 messages in flight at the
//! disconnect come again with DUP set, then what was published while it was offline, then
//! live messages; CONNACK says Session Present. The same after a clean broker restart.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/v4_session.rs"]
mod v4_session;

use std::time::Duration;

use broker::ServeProcess;
use rumqttc::{AsyncClient, Event, EventLoop, Packet, Publish, QoS};
use tokio::time::timeout;
use v4_session::{DEADLINE, client, connack, next_publish, publish_all};

/// Subscribes to a throwaway filter and waits for the SUBACK: every packet sent before it
/// (acknowledgements included) has been handled by the broker.
async fn sync(client: &AsyncClient, events: &mut EventLoop, pending: &mut Vec<Publish>) {
    client.subscribe("ps-sync/x", QoS::AtMostOnce).await.unwrap();
    loop {
        match events.poll().await.expect("subscriber connection") {
            Event::Incoming(Packet::SubAck(_)) => return,
            Event::Incoming(Packet::Publish(p)) => pending.push(p),
            _ => {}
        }
    }
}

fn payload(p: &Publish) -> String {
    String::from_utf8(p.payload.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_resumes_from_its_lowest_unacknowledged_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = ServeProcess::start(dir.path());
    let port = broker.port();

    timeout(DEADLINE, async {
        let (subscriber, mut events) = client("ps-sub", port, false);
        assert!(!connack(&mut events).await, "a new session is not present");
        subscriber.subscribe("ps/#", QoS::AtLeastOnce).await.unwrap();
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.unwrap() {
                break;
            }
        }
        publish_all(port, "ps-pub-1", "ps/t", 0..5).await;
        let mut received = Vec::new();
        for _ in 0..5 {
            received.push(next_publish(&mut events).await);
        }
        assert_eq!(received.iter().map(payload).collect::<Vec<_>>(), ["m-0", "m-1", "m-2", "m-3", "m-4"]);
        // Acknowledge the first two only; m-2..m-4 stay in flight.
        subscriber.ack(&received[0]).await.unwrap();
        subscriber.ack(&received[1]).await.unwrap();
        let mut extra = Vec::new();
        sync(&subscriber, &mut events, &mut extra).await;
        assert!(extra.is_empty());
        // Gone without DISCONNECT.
        drop(events);
        drop(subscriber);

        publish_all(port, "ps-pub-2", "ps/t", 5..8).await;

        let (subscriber, mut events) = client("ps-sub", port, false);
        assert!(connack(&mut events).await, "the session is present");
        let mut again = Vec::new();
        for _ in 0..6 {
            let p = next_publish(&mut events).await;
            subscriber.ack(&p).await.unwrap();
            again.push(p);
        }
        let got: Vec<(String, bool)> = again.iter().map(|p| (payload(p), p.dup)).collect();
        assert_eq!(
            got,
            [("m-2", true), ("m-3", true), ("m-4", true), ("m-5", false), ("m-6", false), ("m-7", false)]
                .map(|(p, d)| (p.to_owned(), d))
        );
        let mut extra = Vec::new();
        sync(&subscriber, &mut events, &mut extra).await;
        assert!(extra.is_empty(), "nothing more: {:?}", extra.iter().map(payload).collect::<Vec<_>>());
        // A clean DISCONNECT keeps a 3.1.1 persistent session too.
        subscriber.disconnect().await.unwrap();
        let _ = timeout(Duration::from_secs(5), async { while events.poll().await.is_ok() {} }).await;
    })
    .await
    .expect("first run in time");

    // Across a clean restart: the session, its subscription and its offset come back from
    // `$sessions`.
    assert!(broker.stop().success());
    let broker = ServeProcess::start(dir.path());
    let port = broker.port();
    timeout(DEADLINE, async {
        publish_all(port, "ps-pub-3", "ps/t", 8..10).await;
        let (subscriber, mut events) = client("ps-sub", port, false);
        assert!(connack(&mut events).await, "the session is present after a restart");
        let mut got = Vec::new();
        for _ in 0..2 {
            let p = next_publish(&mut events).await;
            subscriber.ack(&p).await.unwrap();
            got.push((payload(&p), p.dup));
        }
        assert_eq!(got, [("m-8".to_owned(), false), ("m-9".to_owned(), false)]);
        // Live delivery continues.
        publish_all(port, "ps-pub-4", "ps/t", 10..11).await;
        assert_eq!(payload(&next_publish(&mut events).await), "m-10");

        // A clean session discards it.
        drop(events);
        let (_subscriber, mut events) = client("ps-sub", port, true);
        assert!(!connack(&mut events).await);
    })
    .await
    .expect("after restart in time");
}
