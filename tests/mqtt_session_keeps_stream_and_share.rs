//! A persistent MQTT 5 session (rumqttc v5) keeps its `$stream` replay and its `$share`
//! group membership: after a clean disconnect, more traffic, a `kill -9` and a restart, the
//! client reconnects without subscribing again and gets exactly what it had not received,
//! the replay continuing at the next offset.

#[path = "common/admin_cli.rs"]
mod admin_cli;
#[path = "common/broker.rs"]
mod broker;
#[path = "common/streams.rs"]
mod streams;

use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, SubscribeProperties};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use streams::{DEADLINE, Delivery};
use tokio::time::timeout;

const CONFIG: &str = "[[streams]]\nname = \"ledger\"\ntopics = [\"ledger/#\"]\n";

/// Connects the persistent client "keeper"; returns it with CONNACK's Session Present.
async fn keeper(port: u16) -> (AsyncClient, EventLoop, bool) {
    let mut options = MqttOptions::new("keeper", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_start(false);
    options.set_session_expiry_interval(Some(3600));
    let (client, mut events) = AsyncClient::new(options, 100);
    let present = timeout(DEADLINE, async {
        loop {
            if let Event::Incoming(Packet::ConnAck(connack)) = events.poll().await.expect("keeper connects") {
                return connack.session_present;
            }
        }
    })
    .await
    .expect("CONNACK in time");
    (client, events, present)
}

async fn collect(events: &mut EventLoop, n: usize, what: &str) -> Vec<Delivery> {
    let mut got = Vec::new();
    let collected = timeout(DEADLINE, async {
        while got.len() < n {
            got.extend(streams::collect(events, 1).await);
        }
    })
    .await;
    let summary: Vec<(&str, &str)> = got.iter().map(|d| (d.topic.as_str(), d.payload.as_str())).collect();
    assert!(collected.is_ok(), "{what}: {n} deliveries expected in time, got {summary:?}");
    got
}

/// Nothing more arrives within a moment.
async fn assert_quiet(events: &mut EventLoop) {
    let extra = timeout(Duration::from_millis(800), async {
        loop {
            if let Ok(Event::Incoming(Packet::Publish(p))) = events.poll().await {
                return p;
            }
        }
    })
    .await;
    if let Ok(extra) = extra {
        panic!("nothing more expected, got {:?} {:?}", extra.topic, extra.payload);
    }
}

async fn disconnect(client: AsyncClient, mut events: EventLoop) {
    client.disconnect().await.unwrap();
    let _ = timeout(Duration::from_secs(5), async { while events.poll().await.is_ok() {} }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_and_share_subscriptions_resume_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = streams::start(dir.path(), CONFIG);
    let history: Vec<String> = (1..=5).map(|i| format!("entry-{i}")).collect();
    let messages: Vec<streams::Message> = history.iter().map(|p| ("ledger/acct", p.as_str(), &[][..])).collect();
    streams::publish_all(broker.port(), &messages).await;

    let (client, mut events, present) = keeper(broker.port()).await;
    assert!(!present);
    let earliest = SubscribeProperties { id: None, user_properties: vec![("stream-offset".into(), "earliest".into())] };
    client.subscribe_with_properties("$stream/ledger", QoS::AtLeastOnce, earliest).await.unwrap();
    client.subscribe("$share/workers/jobs/#", QoS::AtLeastOnce).await.unwrap();
    let replayed = collect(&mut events, 5, "the replay").await;
    assert_eq!(replayed.iter().map(|d| d.payload.clone()).collect::<Vec<_>>(), history);
    // The PUBACKs (rumqttc sends them itself) must be handled before the clean disconnect
    // writes the session: the admin API shows the replay's committed offset past all five.
    let grpc = broker.grpc_addr();
    tokio::task::spawn_blocking(move || {
        admin_cli::wait_for_session(grpc, "keeper", "the five replayed messages acknowledged", |session| {
            admin_cli::committed(session, "ledger", 0) == Some(5)
        })
    })
    .await
    .expect("the admin API poll");
    disconnect(client, events).await;

    let later: Vec<String> = (6..=8).map(|i| format!("entry-{i}")).collect();
    let mut messages: Vec<streams::Message> = later.iter().map(|p| ("ledger/acct", p.as_str(), &[][..])).collect();
    messages.extend([("jobs/a", "job-a", &[][..]), ("jobs/b", "job-b", &[][..])]);
    streams::publish_all(broker.port(), &messages).await;
    broker.kill9();

    let broker = streams::start(dir.path(), CONFIG);
    let (_client, mut events, present) = keeper(broker.port()).await;
    assert!(present, "the session survived the restart");
    let resumed = collect(&mut events, 5, "after the restart").await;
    let ledger: Vec<&Delivery> = resumed.iter().filter(|d| d.topic == "ledger/acct").collect();
    assert_eq!(ledger.iter().map(|d| d.payload.clone()).collect::<Vec<_>>(), later, "the replay goes on");
    let offsets: Vec<Option<&str>> = ledger.iter().map(|d| d.property("stream-offset")).collect();
    assert_eq!(offsets, [Some("5"), Some("6"), Some("7")]);
    let mut jobs: Vec<&str> = resumed.iter().filter(|d| d.topic.starts_with("jobs/")).map(|d| &d.payload[..]).collect();
    jobs.sort_unstable();
    assert_eq!(jobs, ["job-a", "job-b"], "the group membership came back");
    assert_quiet(&mut events).await;
}
