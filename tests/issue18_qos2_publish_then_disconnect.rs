//! Issue 18: an inbound QoS 2 packet id counts as stored only once its append succeeded, but
//! a message that was appended must still be stored exactly once. A persistent MQTT 5 client
//! sends a QoS 2 PUBLISH and DISCONNECT in one write, so the connection ends before its
//! PUBREC goes out. The session record must keep the id: when the client reconnects and
//! resends the PUBLISH (DUP), it gets PUBREC and the message is not appended again. A
//! subscriber counts the copies up to a fence published after.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/raw.rs"]
mod raw;

use broker::ServeProcess;
use raw::{RawClient, ack, id, publish};
use strata_frontend::codec::{Ack, Disconnect, Packet, Properties, ProtocolVersion, Publish, QoS, ReasonCode};

const TOPIC: &str = "issue18/qos2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue18_a_qos2_publish_cut_off_by_disconnect_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(dir.path());
    let (mut subscriber, _) = RawClient::connect(broker.addr, ProtocolVersion::V5, "counter").await;
    assert_eq!(
        subscriber.subscribe(1, &[(TOPIC, QoS::AtLeastOnce)], Properties::default()).await,
        vec![ReasonCode::GrantedQos1]
    );

    let (mut publisher, _) = RawClient::connect_persistent(broker.addr, ProtocolVersion::V5, "qos2-pub").await;
    let once = publish(TOPIC, QoS::ExactlyOnce, Some(7), "once");
    let disconnect = Disconnect { reason_code: ReasonCode::Success, properties: Properties::default() };
    publisher.send_all(&[Packet::Publish(once.clone()), Packet::Disconnect(disconnect)]).await;
    // The broker may or may not have sent the PUBREC before it closed.
    while let Some(packet) = publisher.recv().await {
        assert!(matches!(packet, Packet::PubRec(_)), "expected PUBREC or the close, got {packet:?}");
    }

    let (mut publisher, connack) = RawClient::connect_persistent(broker.addr, ProtocolVersion::V5, "qos2-pub").await;
    assert!(connack.session_present);
    publisher.send(&Packet::Publish(Publish { dup: true, ..once })).await;
    match publisher.recv().await {
        Some(Packet::PubRec(rec)) => assert_eq!((rec.packet_id, rec.reason_code), (id(7), ReasonCode::Success)),
        other => panic!("expected PUBREC for the resend, got {other:?}"),
    }
    publisher.send(&Packet::PubRel(ack(id(7)))).await;
    match publisher.recv().await {
        Some(Packet::PubComp(comp)) => assert_eq!((comp.packet_id, comp.reason_code), (id(7), ReasonCode::Success)),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    publisher.send(&Packet::Publish(publish(TOPIC, QoS::AtLeastOnce, Some(8), "fence"))).await;

    let mut copies = 0;
    loop {
        let Some(Packet::Publish(message)) = subscriber.recv().await else {
            panic!("the subscriber lost its connection")
        };
        subscriber.send(&Packet::PubAck(Ack::success(message.packet_id.expect("QoS 1")))).await;
        match &message.payload[..] {
            b"once" => copies += 1,
            b"fence" => break,
            other => panic!("unexpected {:?}", String::from_utf8_lossy(other)),
        }
    }
    assert_eq!(copies, 1, "the QoS 2 message, appended before the disconnect, stored exactly once");
}
