//! A persistent session after `kill -9` of the broker: its committed offset was written to
//! `$sessions` on the commit interval, so after a restart it is served from there. Messages
//! acknowledged before the last commit are not redelivered; messages in flight at the crash
//! are, then what was published after the restart.

#[path = "common/admin_cli.rs"]
mod admin_cli;
#[path = "common/broker.rs"]
mod broker;
#[path = "common/v4_session.rs"]
mod v4_session;

use broker::ServeProcess;
use rumqttc::{Event, EventLoop, Packet, Publish, QoS};
use tokio::time::timeout;
use v4_session::{DEADLINE, client, connack, next_publish, publish_all};

async fn suback(events: &mut EventLoop) {
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.expect("subscriber connection") {
            return;
        }
    }
}

fn payload(p: &Publish) -> String {
    String::from_utf8(p.payload.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_continues_from_its_committed_offset_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = ServeProcess::start(dir.path());
    let port = broker.port();
    let (subscriber, mut events) = client("k9-sub", port, false);
    timeout(DEADLINE, async {
        connack(&mut events).await;
        subscriber.subscribe("k9/#", QoS::AtLeastOnce).await.unwrap();
        suback(&mut events).await;
        publish_all(port, "k9-pub-1", "k9/t", 0..5).await;
        for _ in 0..5 {
            let p = next_publish(&mut events).await;
            subscriber.ack(&p).await.unwrap();
        }
        // A SUBACK after the acknowledgements: the broker has handled them.
        subscriber.subscribe("k9-sync/x", QoS::AtMostOnce).await.unwrap();
        suback(&mut events).await;
    })
    .await
    .expect("first deliveries in time");
    // The acknowledgements are committed on the 1 s commit interval: wait until the admin API
    // shows the committed offset past the five. It shows the session as handed to
    // `$sessions`'s writer, which appends it at once (a kill -9 loses no written page).
    let grpc = broker.grpc_addr();
    tokio::task::spawn_blocking(move || {
        admin_cli::wait_for_session(grpc, "k9-sub", "the five acknowledgements committed", |session| {
            admin_cli::committed(session, "default", 0) == Some(5)
        })
    })
    .await
    .expect("the admin API poll");
    timeout(DEADLINE, async {
        publish_all(port, "k9-pub-2", "k9/t", 5..8).await;
        // Received, never acknowledged: in flight at the crash.
        for i in 5..8 {
            assert_eq!(payload(&next_publish(&mut events).await), format!("m-{i}"));
        }
    })
    .await
    .expect("in-flight deliveries in time");

    broker.kill9();
    drop(events);
    drop(subscriber);

    let broker = ServeProcess::start(dir.path());
    let port = broker.port();
    timeout(DEADLINE, async {
        publish_all(port, "k9-pub-3", "k9/t", 8..10).await;
        let (subscriber, mut events) = client("k9-sub", port, false);
        assert!(connack(&mut events).await, "the session survived kill -9");
        let mut got = Vec::new();
        for _ in 0..5 {
            let p = next_publish(&mut events).await;
            subscriber.ack(&p).await.unwrap();
            got.push(payload(&p));
        }
        assert_eq!(got, ["m-5", "m-6", "m-7", "m-8", "m-9"]);
        subscriber.subscribe("k9-sync/x", QoS::AtMostOnce).await.unwrap();
        loop {
            match events.poll().await.expect("subscriber connection") {
                Event::Incoming(Packet::SubAck(_)) => break,
                Event::Incoming(Packet::Publish(p)) => panic!("unexpected redelivery of {}", payload(&p)),
                _ => {}
            }
        }
    })
    .await
    .expect("after the restart in time");
}
