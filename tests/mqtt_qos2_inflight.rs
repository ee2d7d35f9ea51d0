//! QoS 2 under load: an MQTT 3.1.1 and an MQTT 5 publisher each keep 100 QoS 2 messages in
//! flight (100 sent without waiting, then one more per PUBCOMP) for 1,000 messages, and a
//! QoS 2 subscriber receives every message exactly once, in order per publisher.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/raw.rs"]
mod raw;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use broker::ServeProcess;
use raw::{RawClient, ack, publish};
use strata_frontend::codec::{Packet, Properties, ProtocolVersion, QoS, ReasonCode};

const MESSAGES: u32 = 1_000;
const IN_FLIGHT: u32 = 100;

/// Publishes `MESSAGES` QoS 2 messages to `topic`, `IN_FLIGHT` at a time; returns the most
/// that were ever in flight at once.
async fn publish_all(addr: SocketAddr, version: ProtocolVersion, client_id: &str, topic: &str) -> u32 {
    let (mut client, _) = RawClient::connect(addr, version, client_id).await;
    // Packet ids 1..=IN_FLIGHT are reused as their exchanges complete.
    let message = |seq: u32| {
        let packet_id = (seq % IN_FLIGHT) as u16 + 1;
        Packet::Publish(publish(topic, QoS::ExactlyOnce, Some(packet_id), seq.to_be_bytes().to_vec()))
    };
    let first: Vec<Packet> = (0..IN_FLIGHT).map(message).collect();
    client.send_all(&first).await;
    let (mut next, mut completed, mut in_flight, mut most) = (IN_FLIGHT, 0, IN_FLIGHT, IN_FLIGHT);
    let mut seq_of: HashMap<u16, u32> = (0..IN_FLIGHT).map(|seq| ((seq % IN_FLIGHT) as u16 + 1, seq)).collect();
    while completed < MESSAGES {
        match client.recv().await {
            Some(Packet::PubRec(rec)) => {
                assert_eq!(rec.reason_code, ReasonCode::Success, "{client_id}: PUBREC {rec:?}");
                client.send(&Packet::PubRel(ack(rec.packet_id))).await;
            }
            Some(Packet::PubComp(comp)) => {
                assert!(seq_of.remove(&comp.packet_id.get()).is_some(), "{client_id}: PUBCOMP for an unknown id");
                completed += 1;
                in_flight -= 1;
                if next < MESSAGES {
                    seq_of.insert((next % IN_FLIGHT) as u16 + 1, next);
                    client.send(&message(next)).await;
                    next += 1;
                    in_flight += 1;
                    most = most.max(in_flight);
                }
            }
            other => panic!("{client_id}: unexpected {other:?}"),
        }
    }
    client.send(&Packet::Disconnect(Default::default())).await;
    most
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_publishers_with_100_in_flight_are_delivered_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(dir.path());
    let addr = broker.addr;

    let (mut subscriber, _) = RawClient::connect(addr, ProtocolVersion::V5, "qos2-subscriber").await;
    let granted = subscriber.subscribe(1, &[("load/#", QoS::ExactlyOnce)], Properties::default()).await;
    assert_eq!(granted, vec![ReasonCode::GrantedQos2]);

    let v3 = tokio::spawn(publish_all(addr, ProtocolVersion::V3_1_1, "qos2-pub-v311", "load/v311"));
    let v5 = tokio::spawn(publish_all(addr, ProtocolVersion::V5, "qos2-pub-v5", "load/v5"));

    // Exactly once: every (topic, sequence number) arrives once, in order per topic. The
    // subscriber's side of each exchange is completed (PUBREC, then PUBCOMP on PUBREL).
    let mut next_expected: HashMap<String, u32> = HashMap::new();
    let mut awaiting_pubrel: HashSet<u16> = HashSet::new();
    let mut received = 0;
    while received < 2 * MESSAGES || !awaiting_pubrel.is_empty() {
        match subscriber.recv().await {
            Some(Packet::Publish(p)) => {
                assert_eq!(p.qos, QoS::ExactlyOnce, "delivered at the granted QoS");
                assert!(!p.dup, "no redelivery without a reconnect");
                let seq = u32::from_be_bytes(p.payload[..].try_into().expect("4-byte sequence number"));
                let expected = next_expected.entry(p.topic.to_string()).or_insert(0);
                assert_eq!(seq, *expected, "{}: message {seq} out of order or repeated", p.topic);
                *expected += 1;
                received += 1;
                let packet_id = p.packet_id.expect("QoS 2 has a packet id");
                assert!(awaiting_pubrel.insert(packet_id.get()), "packet id {packet_id} reused before PUBCOMP");
                subscriber.send(&Packet::PubRec(ack(packet_id))).await;
            }
            Some(Packet::PubRel(rel)) => {
                assert!(awaiting_pubrel.remove(&rel.packet_id.get()), "PUBREL for an unknown id");
                subscriber.send(&Packet::PubComp(ack(rel.packet_id))).await;
            }
            other => panic!("subscriber: unexpected {other:?}"),
        }
    }
    assert_eq!(next_expected.get("load/v311"), Some(&MESSAGES));
    assert_eq!(next_expected.get("load/v5"), Some(&MESSAGES));
    assert_eq!(v3.await.unwrap(), IN_FLIGHT, "the 3.1.1 publisher kept 100 in flight");
    assert_eq!(v5.await.unwrap(), IN_FLIGHT, "the MQTT 5 publisher kept 100 in flight");

    // Nothing more arrives: a PINGREQ is answered before any late duplicate could be.
    subscriber.send(&Packet::PingReq).await;
    assert_eq!(subscriber.recv().await, Some(Packet::PingResp));
}
