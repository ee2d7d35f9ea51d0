//! Issue 18: no message is lost around SUBSCRIBE and reconnects. Each round two MQTT 5
//! clients connect with Clean Start and subscribe to one topic with No Local at QoS 2; B does
//! not wait for its SUBACK. A publishes QoS 1 on the topic, and B must get exactly one copy.
//! Both then send DISCONNECT 0x00 and close, and the next round starts at once: with the same
//! two client ids every round (the old connections' teardown races the new ones'
//! registration), with fresh ids, and with B reconnecting (CONNECT and SUBSCRIBE in one
//! write, a Session Expiry Interval) while its old connection is still open.
//!
//! The guarantee is that a subscription takes effect when the broker decodes its SUBSCRIBE
//! (docs/mqtt.md). Which of two connections the broker reads first is up to the scheduler,
//! so A publishes only once it knows B's SUBSCRIBE was decoded, without B waiting for
//! anything: B sends a QoS 0 marker right behind its SUBSCRIBE, in the same write, and A
//! (subscribed to the markers) publishes once the marker reaches it. "Exactly one" is
//! observed, not waited out: once B has its message (with nothing appended after it, so a
//! lost wake-up would show), A publishes a fence on the same topic (the same partition, so
//! it comes after), and B counts the copies it got before the fence.
//! Every wait is bounded by the raw client's deadline.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/raw.rs"]
mod raw;

use std::net::SocketAddr;

use broker::ServeProcess;
use raw::{RawClient, id, publish};
use strata_frontend::codec::{
    Ack, Disconnect, Packet, Properties, ProtocolVersion, QoS, ReasonCode, Subscribe, SubscribeFilter,
    SubscriptionOptions,
};

const TOPIC: &str = "issue18/t";
const ROUNDS: usize = 30;
/// B's marker publishes go under here.
const DECODED: &str = "issue18/decoded";

fn subscribe_no_local(packet_id: u16) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: id(packet_id),
        properties: Properties::default(),
        filters: vec![SubscribeFilter {
            filter: TOPIC.into(),
            options: SubscriptionOptions { qos: QoS::ExactlyOnce, no_local: true, ..SubscriptionOptions::default() },
        }],
    })
}

fn session_expiry(seconds: u32) -> Properties {
    let mut properties = Properties::default();
    properties.session_expiry_interval = Some(seconds);
    properties
}

fn disconnect() -> Packet {
    Packet::Disconnect(Disconnect { reason_code: ReasonCode::Success, properties: Properties::default() })
}

/// Reads until A's publish numbered `packet_id` is acknowledged.
async fn puback(client: &mut RawClient, packet_id: u16) {
    loop {
        match client.recv().await {
            Some(Packet::PubAck(ack)) if ack.packet_id == id(packet_id) => return,
            Some(Packet::PubAck(_) | Packet::SubAck(_)) => {}
            other => panic!("A: expected PUBACK {packet_id}, got {other:?}"),
        }
    }
}

/// One round; returns how many copies of `message` B got before `fence`.
/// How B reconnects each round.
#[derive(Clone, Copy, PartialEq)]
enum Reconnect {
    /// After DISCONNECT 0x00 and close, waiting for its CONNACK before it subscribes.
    AfterDisconnect,
    /// While the previous connection is still open (a takeover), with CONNECT, SUBSCRIBE and
    /// the marker in one write, and a Session Expiry Interval: the old connection saves its
    /// session as the new one starts.
    TakingOver,
}

/// One round; returns how many copies of `message` B got before `fence`. With
/// [`Reconnect::TakingOver`], B's connection is left open in `open`.
async fn round(
    addr: SocketAddr,
    (a_id, b_id): (&str, &str),
    reconnect: Reconnect,
    (message, fence): (&str, &str),
    open: &mut Option<RawClient>,
) -> usize {
    let (mut a, _) = RawClient::connect(addr, ProtocolVersion::V5, a_id).await;
    a.send(&subscribe_no_local(1)).await;
    match a.recv().await {
        Some(Packet::SubAck(suback)) => assert_eq!(suback.reason_codes, vec![ReasonCode::GrantedQos2]),
        other => panic!("A: expected SUBACK, got {other:?}"),
    }
    a.send(&Packet::Subscribe(Subscribe {
        packet_id: id(2),
        properties: Properties::default(),
        filters: vec![SubscribeFilter {
            filter: format!("{DECODED}/#").into(),
            options: SubscriptionOptions::default(),
        }],
    }))
    .await;
    match a.recv().await {
        Some(Packet::SubAck(suback)) => assert_eq!(suback.reason_codes, vec![ReasonCode::GRANTED_QOS_0]),
        other => panic!("A: expected SUBACK, got {other:?}"),
    }

    let mut b = match reconnect {
        Reconnect::AfterDisconnect => RawClient::connect(addr, ProtocolVersion::V5, b_id).await.0,
        Reconnect::TakingOver => RawClient::connect_with(addr, ProtocolVersion::V5, b_id, 60, session_expiry(60)).await,
    };
    // B does not wait for its SUBACK (nor, taking over, for its CONNACK).
    let decoded = format!("{DECODED}/{message}");
    b.send_all(&[subscribe_no_local(1), Packet::Publish(publish(&decoded, QoS::AtMostOnce, None, "marker"))]).await;
    match a.recv().await {
        Some(Packet::Publish(marker)) if marker.topic == decoded.as_str() => {}
        other => panic!("A: expected B's marker on {decoded}, got {other:?}"),
    }
    a.send(&Packet::Publish(publish(TOPIC, QoS::AtLeastOnce, Some(1), message.to_owned()))).await;
    puback(&mut a, 1).await;

    // First B must get the message with nothing appended after it: a reader woken only by a
    // later append (a lost wake-up) would wait here until the raw client's deadline.
    let mut copies = 0;
    let mut fenced = false;
    while !fenced {
        match b.recv().await {
            Some(Packet::ConnAck(connack)) if reconnect == Reconnect::TakingOver => {
                assert_eq!(connack.reason_code, ReasonCode::Success);
                assert!(!connack.session_present, "Clean Start");
            }
            Some(Packet::SubAck(suback)) => assert_eq!(suback.reason_codes, vec![ReasonCode::GrantedQos2]),
            Some(Packet::Publish(received)) => {
                if let Some(packet_id) = received.packet_id {
                    b.send(&Packet::PubAck(Ack::success(packet_id))).await;
                }
                match &received.payload[..] {
                    payload if payload == message.as_bytes() => copies += 1,
                    payload if payload == fence.as_bytes() => fenced = true,
                    other => panic!("B: unexpected message {:?}", String::from_utf8_lossy(other)),
                }
                // Then the fence, to count any second copy without waiting one out.
                if copies == 1 && !fenced && received.payload == message.as_bytes() {
                    a.send(&Packet::Publish(publish(TOPIC, QoS::AtLeastOnce, Some(2), fence.to_owned()))).await;
                    puback(&mut a, 2).await;
                }
            }
            other => panic!("B: expected SUBACK or PUBLISH, got {other:?}"),
        }
    }
    a.send(&disconnect()).await;
    match reconnect {
        Reconnect::AfterDisconnect => b.send(&disconnect()).await,
        // Taken over by the next round's B (told with DISCONNECT 0x8E, not read here).
        Reconnect::TakingOver => *open = Some(b),
    }
    copies
}

async fn rounds(fixed_ids: bool, reconnect: Reconnect) {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(dir.path());
    let mut wrong = Vec::new();
    let mut open = None;
    for n in 0..ROUNDS {
        let ids = if fixed_ids { ("A".to_owned(), "B".to_owned()) } else { (format!("A{n}"), format!("B{n}")) };
        let texts = (format!("m-{n}"), format!("fence-{n}"));
        let copies = round(broker.addr, (&ids.0, &ids.1), reconnect, (&texts.0, &texts.1), &mut open).await;
        if copies != 1 {
            wrong.push((n, copies));
        }
    }
    assert!(wrong.is_empty(), "rounds where B did not get exactly one copy (round, copies): {wrong:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue18_same_ids_reconnecting_every_round_get_every_message_once() {
    rounds(true, Reconnect::AfterDisconnect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue18_fresh_ids_every_round_get_every_message_once() {
    rounds(false, Reconnect::AfterDisconnect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue18_same_id_taking_over_with_subscribe_in_the_connect_write_gets_every_message_once() {
    rounds(true, Reconnect::TakingOver).await;
}
