//! `kill -9` of a real broker while a client publishes QoS 1 messages as fast as it can:
//! after a restart (which runs recovery) and a clean stop, every message that got a PUBACK
//! is in the partition log. Then a persistent subscriber that was offline throughout gets
//! exactly the stored messages, once each, in offset order, and so does a `$stream` replay
//! from `earliest`.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/streams.rs"]
mod streams;
#[path = "common/v4_session.rs"]
mod v4_session;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use broker::ServeProcess;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

/// Messages acknowledged before the broker is killed.
const ACKED_BEFORE_KILL: usize = 300;
/// Messages handed to the client in all (more than will be acknowledged).
const TOTAL: usize = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_publish_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = ServeProcess::start(dir.path());

    // A persistent subscriber that subscribes, then stays away until the end.
    let (subscriber, mut sub_events) = v4_session::client("durable-sub", broker.port(), false);
    subscriber.subscribe("durable/t", QoS::AtLeastOnce).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        while !matches!(sub_events.poll().await, Ok(Event::Incoming(Packet::SubAck(_)))) {}
    })
    .await
    .expect("SUBACK in time");
    subscriber.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), async { while sub_events.poll().await.is_ok() {} }).await;

    let mut options = MqttOptions::new("durable-publisher", "127.0.0.1", broker.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_inflight(100);
    let (client, mut events) = AsyncClient::new(options, 64);
    tokio::spawn(async move {
        for i in 0..TOTAL {
            if client.publish("durable/t", QoS::AtLeastOnce, false, format!("m-{i}")).await.is_err() {
                break;
            }
        }
    });

    // rumqttc reports each publish as Outgoing::Publish(pkid) in the order they were made,
    // so the n-th outgoing publish carries payload m-<n>.
    let mut sent = 0usize;
    let mut in_flight: HashMap<u16, VecDeque<usize>> = HashMap::new();
    let mut acked = HashSet::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match events.poll().await {
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    in_flight.entry(pkid).or_default().push_back(sent);
                    sent += 1;
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    if let Some(n) = in_flight.get_mut(&ack.pkid).and_then(|q| q.pop_front()) {
                        acked.insert(n);
                    }
                    if acked.len() >= ACKED_BEFORE_KILL {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("publisher lost its connection before the kill: {e}"),
            }
        }
    })
    .await
    .expect("acknowledgements in time");

    // Mid-stream: more publishes are in flight (and in the socket) right now.
    broker.kill9();
    // Whatever the client sees after the kill is not an acknowledgement of a stored message.
    drop(events);

    let mut broker = ServeProcess::start(dir.path());
    assert!(broker.stop().success(), "clean stop after recovery");

    let log = strata_log::Log::open(dir.path().join("default/0"), strata_log::LogConfig::default()).unwrap();
    let mut stored = Vec::new();
    let mut offset = 0;
    loop {
        let fetch = log.read(offset, 1 << 20).unwrap();
        let Some(next) = fetch.next_offset() else { break };
        for record in fetch.records(offset).unwrap() {
            stored.push(String::from_utf8(record.value.to_vec()).unwrap());
        }
        offset = next;
    }
    drop(log);
    let unique: HashSet<&String> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "a message stored twice");
    let missing: Vec<usize> = acked.iter().copied().filter(|n| !unique.contains(&format!("m-{n}"))).collect();
    assert!(missing.is_empty(), "acknowledged but lost after kill -9: {missing:?}");

    let broker = ServeProcess::start(dir.path());
    // The persistent subscriber: every stored message once, in offset order, then nothing.
    // rumqttc acknowledges by itself here: manual acks through its bounded request channel
    // stall once a few hundred messages arrive in one read.
    let mut options = MqttOptions::new("durable-sub", "127.0.0.1", broker.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_session(false);
    let (_subscriber, mut sub_events) = AsyncClient::new(options, 100);
    assert!(v4_session::connack(&mut sub_events).await, "the session survived");
    let mut delivered = Vec::new();
    let in_time = tokio::time::timeout(Duration::from_secs(60), async {
        while delivered.len() < stored.len() {
            let publish = v4_session::next_publish(&mut sub_events).await;
            delivered.push(String::from_utf8(publish.payload.to_vec()).unwrap());
        }
    })
    .await;
    assert!(in_time.is_ok(), "{} of {} stored messages delivered in time", delivered.len(), stored.len());
    assert_eq!(delivered, stored, "the persistent subscriber gets the log, once, in offset order");
    let extra = tokio::time::timeout(Duration::from_millis(700), v4_session::next_publish(&mut sub_events)).await;
    assert!(extra.is_err(), "nothing more: {extra:?}");

    // A replay from earliest: the same, with the offsets in order.
    let (_replay, mut replay_events, codes, _) = streams::subscribe(
        "durable-replay",
        broker.port(),
        "$stream/default/durable/t",
        &[("stream-offset", "earliest")],
    )
    .await;
    assert_eq!(codes.len(), 1);
    let replayed = tokio::time::timeout(Duration::from_secs(60), streams::collect(&mut replay_events, stored.len()))
        .await
        .expect("the replay in time");
    let payloads: Vec<String> = replayed.iter().map(|d| d.payload.clone()).collect();
    assert_eq!(payloads, stored, "the replay is the log, once, in offset order");
    let offsets: Vec<u64> = replayed.iter().map(|d| d.property("stream-offset").unwrap().parse().unwrap()).collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "offsets ascend");
}
