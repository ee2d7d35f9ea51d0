//! `$share/<group>/<filter>` is a consumer group: two MQTT 5 members of one group (rumqttc)
//! each receive some of the messages, and together every message exactly once.

#[path = "common/broker.rs"]
mod broker;

use std::collections::BTreeSet;
use std::time::Duration;

use broker::ServeProcess;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use tokio::sync::mpsc;
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(30);
const MESSAGES: usize = 100;

fn client(id: &str, port: u16) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    AsyncClient::new(options, 200)
}

/// Joins the group and forwards every payload it receives, tagged with `member`.
async fn member(port: u16, member: usize, received: mpsc::Sender<(usize, String)>) -> AsyncClient {
    let (client, mut events) = client(&format!("spread-member-{member}"), port);
    client.subscribe("$share/workers/jobs/#", QoS::AtLeastOnce).await.unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(suback)) = events.poll().await.expect("member connects") {
            assert_eq!(suback.return_codes, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
            break;
        }
    }
    tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            if let Event::Incoming(Packet::Publish(publish)) = event {
                let payload = String::from_utf8(publish.payload.to_vec()).unwrap();
                if received.send((member, payload)).await.is_err() {
                    return;
                }
            }
        }
    });
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_share_the_messages_each_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(dir.path());
    let port = broker.port();
    let (tx, mut rx) = mpsc::channel(MESSAGES * 2);
    timeout(DEADLINE, async {
        let _a = member(port, 0, tx.clone()).await;
        let _b = member(port, 1, tx.clone()).await;
        let (publisher, mut pub_events) = client("spread-publisher", port);
        tokio::spawn(async move {
            for i in 0..MESSAGES {
                publisher.publish(format!("jobs/{}", i % 7), QoS::AtLeastOnce, false, i.to_string()).await.unwrap();
            }
            while pub_events.poll().await.is_ok() {}
        });
        let mut per_member = [Vec::new(), Vec::new()];
        for _ in 0..MESSAGES {
            let (member, payload) = rx.recv().await.expect("members run");
            per_member[member].push(payload.parse::<usize>().unwrap());
        }
        for (i, list) in per_member.iter().enumerate() {
            assert!(!list.is_empty(), "member {i} received nothing: {per_member:?}");
        }
        let all: Vec<usize> = per_member.iter().flatten().copied().collect();
        let distinct: BTreeSet<usize> = all.iter().copied().collect();
        assert_eq!(all.len(), distinct.len(), "a message went to both members: {per_member:?}");
        assert_eq!(distinct, (0..MESSAGES).collect(), "every message once");
    })
    .await
    .expect("the group delivers every message in time");
    // No message arrives a second time afterwards (a short look; it can only miss a bug).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rx.try_recv().is_err(), "a message was delivered again");
}
