//! `kill -9` of a real broker while a client publishes QoS 1 messages as fast as it can:
//! after a restart (which runs recovery) and a clean stop, every message that got a PUBACK
//! is in the partition log.

#[path = "common/broker.rs"]
mod broker;

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
    let mut stored = HashSet::new();
    let mut offset = 0;
    loop {
        let fetch = log.read(offset, 1 << 20).unwrap();
        let Some(next) = fetch.next_offset() else { break };
        for record in fetch.records(offset).unwrap() {
            let payload = String::from_utf8(record.value.to_vec()).unwrap();
            assert!(stored.insert(payload.clone()), "{payload} stored twice");
        }
        offset = next;
    }
    let missing: Vec<usize> = acked.iter().copied().filter(|n| !stored.contains(&format!("m-{n}"))).collect();
    assert!(missing.is_empty(), "acknowledged but lost after kill -9: {missing:?}");
    assert!(stored.len() >= acked.len());
}
