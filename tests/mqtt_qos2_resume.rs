//! Outbound QoS 2 across a reconnect and across a broker restart, for MQTT 3.1.1 and 5: a
//! persistent subscriber receives three messages and leaves each at a different stage. On
//! resume the broker sends PUBREL again for the one whose PUBREC it had (not the PUBLISH),
//! resends the unacknowledged one with DUP set under its original packet identifier, and
//! never sends the completed one again.

#[path = "common/admin_cli.rs"]
mod admin_cli;
#[path = "common/broker.rs"]
mod broker;
#[path = "common/raw.rs"]
mod raw;

use std::net::SocketAddr;
use std::time::Duration;

use broker::ServeProcess;
use raw::{RawClient, ack, publish};
use strata_frontend::codec::{Packet, PacketId, ProtocolVersion, Publish, QoS};

/// Each subscriber has its own topic, so one's messages never reach the other's session.
fn topic(client_id: &str) -> String {
    format!("resume/{client_id}")
}

/// Publishes `payload` to `client_id`'s topic at QoS 2 and completes the exchange.
async fn publish_qos2(addr: SocketAddr, version: ProtocolVersion, client_id: &str, payload: &str) {
    let (mut client, _) = RawClient::connect(addr, version, "resume-publisher").await;
    client.send(&Packet::Publish(publish(&topic(client_id), QoS::ExactlyOnce, Some(1), payload.to_owned()))).await;
    match client.recv().await {
        Some(Packet::PubRec(rec)) => client.send(&Packet::PubRel(ack(rec.packet_id))).await,
        other => panic!("expected PUBREC, got {other:?}"),
    }
    assert!(matches!(client.recv().await, Some(Packet::PubComp(_))));
    client.send(&Packet::Disconnect(Default::default())).await;
}

async fn next_publish(client: &mut RawClient) -> Publish {
    match client.recv().await {
        Some(Packet::Publish(publish)) => publish,
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

/// Leaves "a" awaiting PUBCOMP, "b" awaiting PUBREC and "c" complete; returns the packet
/// identifiers of "a" and "b".
async fn leave_three_stages(addr: SocketAddr, version: ProtocolVersion, client_id: &str) -> (PacketId, PacketId) {
    let (mut subscriber, _) = RawClient::connect_persistent(addr, version, client_id).await;
    let filter = topic(client_id);
    assert_eq!(subscriber.subscribe(1, &[(&filter, QoS::ExactlyOnce)], Default::default()).await.len(), 1);
    for payload in ["a", "b", "c"] {
        publish_qos2(addr, version, client_id, payload).await;
    }
    let (a, b, c) =
        (next_publish(&mut subscriber).await, next_publish(&mut subscriber).await, next_publish(&mut subscriber).await);
    assert_eq!([&a.payload[..], &b.payload[..], &c.payload[..]], [b"a", b"b", b"c"]);
    let (a_id, b_id, c_id) = (a.packet_id.unwrap(), b.packet_id.unwrap(), c.packet_id.unwrap());
    subscriber.send_all(&[Packet::PubRec(ack(a_id)), Packet::PubRec(ack(c_id))]).await;
    for _ in 0..2 {
        match subscriber.recv().await {
            Some(Packet::PubRel(rel)) if rel.packet_id == c_id => {
                subscriber.send(&Packet::PubComp(ack(c_id))).await;
            }
            Some(Packet::PubRel(rel)) => assert_eq!(rel.packet_id, a_id),
            other => panic!("expected PUBREL, got {other:?}"),
        }
    }
    // The PUBCOMP of "c" must be handled before the connection drops (no DISCONNECT: a crash
    // of the client). The broker handles a connection's packets in order, PINGREQ included,
    // so its PINGRESP says the PUBCOMP before it was handled.
    subscriber.send(&Packet::PingReq).await;
    match subscriber.recv().await {
        Some(Packet::PingResp) => {}
        other => panic!("expected PINGRESP, got {other:?}"),
    }
    drop(subscriber);
    (a_id, b_id)
}

/// Resumes and checks exactly what comes back, then that the session goes on normally.
async fn resume_and_check(addr: SocketAddr, version: ProtocolVersion, client_id: &str, a_id: PacketId, b_id: PacketId) {
    let (mut subscriber, connack) = RawClient::connect_persistent(addr, version, client_id).await;
    assert!(connack.session_present, "{version:?}: the session must be present");
    let mut pubrel_a = false;
    let mut resent_b = false;
    while !(pubrel_a && resent_b) {
        match subscriber.recv().await {
            Some(Packet::PubRel(rel)) => {
                assert_eq!(rel.packet_id, a_id, "{version:?}: PUBREL for the message whose PUBREC arrived");
                assert!(!pubrel_a, "{version:?}: one PUBREL");
                pubrel_a = true;
                subscriber.send(&Packet::PubComp(ack(a_id))).await;
            }
            Some(Packet::Publish(publish)) => {
                assert_eq!(&publish.payload[..], b"b", "{version:?}: only the unacknowledged message is resent");
                assert!(publish.dup, "{version:?}: a resend has DUP set");
                assert_eq!(publish.packet_id, Some(b_id), "{version:?}: a resend keeps its packet identifier");
                assert_eq!(publish.qos, QoS::ExactlyOnce);
                resent_b = true;
                subscriber.send(&Packet::PubRec(ack(b_id))).await;
            }
            other => panic!("{version:?}: unexpected {other:?}"),
        }
    }
    match subscriber.recv().await {
        Some(Packet::PubRel(rel)) => {
            assert_eq!(rel.packet_id, b_id);
            subscriber.send(&Packet::PubComp(ack(b_id))).await;
        }
        other => panic!("{version:?}: expected PUBREL for b, got {other:?}"),
    }
    publish_qos2(addr, version, client_id, "d").await;
    let d = next_publish(&mut subscriber).await;
    assert_eq!(&d.payload[..], b"d");
    assert!(!d.dup);
    subscriber.send(&Packet::PubRec(ack(d.packet_id.unwrap()))).await;
    assert!(matches!(subscriber.recv().await, Some(Packet::PubRel(_))));
    subscriber.send(&Packet::PubComp(ack(d.packet_id.unwrap()))).await;
    // Nothing else: "a", "b" and "c" are done.
    if let Some(extra) = subscriber.recv_within(Duration::from_millis(700)).await {
        panic!("{version:?}: nothing more expected, got {extra:?}");
    }
    subscriber.send(&Packet::Disconnect(Default::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_resends_pubrel_and_only_the_unacknowledged_publish() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(dir.path());
    for (version, client_id) in [(ProtocolVersion::V3_1_1, "q2-resume-v4"), (ProtocolVersion::V5, "q2-resume-v5")] {
        let (a_id, b_id) = leave_three_stages(broker.addr, version, client_id).await;
        resume_and_check(broker.addr, version, client_id, a_id, b_id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_and_restart_resends_pubrel_and_only_the_unacknowledged_publish() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = ServeProcess::start(dir.path());
    let mut stages = Vec::new();
    for (version, client_id) in [(ProtocolVersion::V3_1_1, "q2-crash-v4"), (ProtocolVersion::V5, "q2-crash-v5")] {
        stages.push((version, client_id, leave_three_stages(broker.addr, version, client_id).await));
    }
    // The broker writes each session durably when it sees the connection drop; the admin API
    // shows it with no connection only after that.
    let grpc = broker.grpc_addr();
    tokio::task::spawn_blocking(move || {
        for client_id in ["q2-crash-v4", "q2-crash-v5"] {
            admin_cli::wait_for_session(grpc, client_id, "saved at the drop", |session| session["members"] == 0);
        }
    })
    .await
    .expect("the admin API poll");
    broker.kill9();
    let broker = ServeProcess::start(dir.path());
    for (version, client_id, (a_id, b_id)) in stages {
        resume_and_check(broker.addr, version, client_id, a_id, b_id).await;
    }
}
