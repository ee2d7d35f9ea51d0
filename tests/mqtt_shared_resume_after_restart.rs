//! A consumer group's committed offsets live in `$offsets`: a group whose only member left
//! resumes, after a clean broker restart, with what was published while nobody consumed,
//! and not with what its member had already acknowledged.

#[path = "common/broker.rs"]
mod broker;

use std::time::Duration;

use broker::ServeProcess;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(30);
const FILTER: &str = "$share/audit/events/#";

fn client(id: &str, port: u16) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    AsyncClient::new(options, 100)
}

async fn join(port: u16) -> (AsyncClient, EventLoop) {
    let (member, mut events) = client("resume-member", port);
    member.subscribe(FILTER, QoS::AtLeastOnce).await.unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.expect("member connects") {
            return (member, events);
        }
    }
}

async fn publish(port: u16, range: std::ops::Range<usize>) {
    let (publisher, mut events) = client("resume-publisher", port);
    let count = range.len();
    for i in range {
        publisher.publish("events/e", QoS::AtLeastOnce, false, i.to_string()).await.unwrap();
    }
    let mut acked = 0;
    while acked < count {
        if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.expect("publisher connection") {
            acked += 1;
        }
    }
}

/// Receives `count` messages (acknowledged automatically), then disconnects cleanly.
async fn receive(member: AsyncClient, mut events: EventLoop, count: usize) -> Vec<usize> {
    let mut got = Vec::new();
    while got.len() < count {
        if let Event::Incoming(Packet::Publish(p)) = events.poll().await.expect("member connection") {
            got.push(String::from_utf8(p.payload.to_vec()).unwrap().parse().unwrap());
        }
    }
    member.disconnect().await.unwrap();
    while !matches!(events.poll().await, Err(_) | Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))) {}
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_resumes_from_its_committed_offset_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = ServeProcess::start(dir.path());
    let port = broker.port();
    timeout(DEADLINE, async {
        let (member, events) = join(port).await;
        publish(port, 0..10).await;
        assert_eq!(receive(member, events, 10).await, (0..10).collect::<Vec<_>>());
        // Nobody consumes these.
        publish(port, 10..15).await;
    })
    .await
    .expect("first run in time");
    assert!(broker.stop().success());

    let broker = ServeProcess::start(dir.path());
    let port = broker.port();
    timeout(DEADLINE, async {
        let (member, events) = join(port).await;
        publish(port, 15..20).await;
        assert_eq!(receive(member, events, 10).await, (10..20).collect::<Vec<_>>());
    })
    .await
    .expect("second run in time");
}
