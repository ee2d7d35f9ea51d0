//! A QoS 1 subscriber with a Receive Maximum of 3 that acknowledges one message only when 3
//! are in flight: each PUBACK frees one slot, and the broker refills it from what it already
//! read ahead of the window. Every message still arrives once, in log order, skipping what
//! the subscription does not match, with QoS 0 messages kept in order behind a full window.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/raw.rs"]
mod raw;

use std::collections::VecDeque;

use broker::ServeProcess;
use raw::{RawClient, ack, publish};
use strata_frontend::codec::{Packet, Properties, ProtocolVersion, QoS, ReasonCode};

const MESSAGES: u32 = 600;
const WINDOW: u16 = 3;

/// The topic and QoS of message `seq`: `win/a` at QoS 1 and `win/c` at QoS 0 are
/// subscribed, `win/b` is not.
fn topic_of(seq: u32) -> (&'static str, QoS) {
    match seq % 3 {
        0 => ("win/a", QoS::AtLeastOnce),
        1 => ("win/b", QoS::AtLeastOnce),
        _ => ("win/c", QoS::AtMostOnce),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_window_refills_one_ack_at_a_time_in_log_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(dir.path());
    let addr = broker.addr;

    let mut properties = Properties::default();
    properties.receive_maximum = Some(WINDOW);
    let (mut subscriber, _) = RawClient::connect_props(addr, ProtocolVersion::V5, "window-sub", properties).await;
    let granted = subscriber
        .subscribe(1, &[("win/a", QoS::AtLeastOnce), ("win/c", QoS::AtLeastOnce)], Properties::default())
        .await;
    assert_eq!(granted, vec![ReasonCode::GrantedQos1, ReasonCode::GrantedQos1]);

    // Everything is in the log before the subscriber acknowledges anything.
    let (mut publisher, _) = RawClient::connect(addr, ProtocolVersion::V3_1_1, "window-pub").await;
    for chunk in (0..MESSAGES).collect::<Vec<_>>().chunks(10) {
        let packets: Vec<Packet> = chunk
            .iter()
            .map(|&seq| {
                let (topic, qos) = topic_of(seq);
                let packet_id = (qos == QoS::AtLeastOnce).then_some((seq % 10) as u16 + 1);
                Packet::Publish(publish(topic, qos, packet_id, seq.to_be_bytes().to_vec()))
            })
            .collect();
        client_send_and_await_acks(&mut publisher, &packets).await;
    }

    let expected: Vec<u32> = (0..MESSAGES).filter(|seq| seq % 3 != 1).collect();
    let mut received = Vec::new();
    let mut unacked = VecDeque::new();
    while received.len() < expected.len() {
        match subscriber.recv().await {
            Some(Packet::Publish(p)) => {
                let seq = u32::from_be_bytes(p.payload[..].try_into().expect("4-byte sequence number"));
                assert_eq!(p.qos, topic_of(seq).1, "message {seq} at its published QoS");
                assert!(!p.dup, "no redelivery without a reconnect");
                received.push(seq);
                if let Some(packet_id) = p.packet_id {
                    unacked.push_back(packet_id);
                    assert!(unacked.len() <= usize::from(WINDOW), "more in flight than the Receive Maximum");
                }
                if unacked.len() == usize::from(WINDOW) {
                    let oldest = unacked.pop_front().expect("window is full");
                    subscriber.send(&Packet::PubAck(ack(oldest))).await;
                }
            }
            other => panic!("subscriber: unexpected {other:?}"),
        }
    }
    assert_eq!(received, expected, "every matching message once, in log order");

    // Nothing more arrives: a PINGREQ is answered before any late duplicate could be.
    for packet_id in unacked.drain(..) {
        subscriber.send(&Packet::PubAck(ack(packet_id))).await;
    }
    subscriber.send(&Packet::PingReq).await;
    assert_eq!(subscriber.recv().await, Some(Packet::PingResp));
}

/// Sends `packets` and waits for the PUBACK of each QoS 1 one among them.
async fn client_send_and_await_acks(client: &mut RawClient, packets: &[Packet]) {
    client.send_all(packets).await;
    let qos1 = packets.iter().filter(|p| matches!(p, Packet::Publish(p) if p.qos == QoS::AtLeastOnce)).count();
    for _ in 0..qos1 {
        match client.recv().await {
            Some(Packet::PubAck(puback)) => assert_eq!(puback.reason_code, ReasonCode::Success),
            other => panic!("publisher: unexpected {other:?}"),
        }
    }
}
