//! Issue 18: deleting a stream must not corrupt a disconnected persistent session. The
//! session has a QoS 1 message in flight from each of two streams when it disconnects; then
//! `strata stream delete` removes the first stream. On reconnect the broker must resend the
//! second stream's message (DUP, its packet identifier) and nothing for the deleted stream,
//! without the connection dying. The change must also reach `$sessions`: after `kill -9` and a
//! restart, with the stream created again under its name, the session holds no position in it
//! and nothing from the new stream goes out as a resend of the old message.

#[path = "common/admin_cli.rs"]
mod admin_cli;
#[path = "common/broker.rs"]
mod broker;
#[path = "common/raw.rs"]
mod raw;

use std::net::SocketAddr;
use std::path::Path;

use admin_cli::json;
use broker::ServeProcess;
use raw::{RawClient, publish};
use strata_frontend::codec::{Disconnect, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS, ReasonCode};

const SESSION: &str = "keeper";

/// Runs the CLI off the async workers.
async fn cli(grpc: SocketAddr, args: &[&str]) -> serde_json::Value {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || json(grpc, &args.iter().map(String::as_str).collect::<Vec<_>>())).await.unwrap()
}

fn start(dir: &Path) -> (ServeProcess, SocketAddr) {
    let broker = ServeProcess::start_with(dir, &["--grpc", "127.0.0.1:0"]);
    let grpc = broker.grpc_addr();
    (broker, grpc)
}

async fn create(grpc: SocketAddr, stream: &str) {
    let topics = format!("{stream}/#");
    cli(grpc, &["stream", "create", stream, "--topics", &topics]).await;
}

/// Publishes `payload` on `topic` at QoS 1 and waits for its PUBACK.
async fn publish_acked(addr: SocketAddr, topic: &str, payload: &str) {
    let (mut publisher, _) = RawClient::connect(addr, ProtocolVersion::V5, "publisher").await;
    publisher.send(&Packet::Publish(publish(topic, QoS::AtLeastOnce, Some(1), payload.to_owned()))).await;
    match publisher.recv().await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.reason_code, ReasonCode::Success),
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

async fn next_publish(client: &mut RawClient) -> Publish {
    match client.recv().await {
        Some(Packet::Publish(publish)) => publish,
        other => panic!("{SESSION}: expected a PUBLISH, got {other:?} (the connection died?)"),
    }
}

/// Sets up streams `first` and `second`, leaves `keeper` disconnected with one unacknowledged
/// message from each in flight, and deletes `first`. Returns the packet identifier of the
/// message from `second`.
async fn disconnect_with_both_in_flight_then_delete_first(addr: SocketAddr, grpc: SocketAddr) -> PacketId {
    create(grpc, "first").await;
    create(grpc, "second").await;
    let (mut session, _) = RawClient::connect_persistent(addr, ProtocolVersion::V5, SESSION).await;
    let granted = session
        .subscribe(1, &[("first/#", QoS::AtLeastOnce), ("second/#", QoS::AtLeastOnce)], Properties::default())
        .await;
    assert_eq!(granted, vec![ReasonCode::GrantedQos1; 2]);
    publish_acked(addr, "first/a", "one").await;
    publish_acked(addr, "second/a", "two").await;
    let mut second_id = None;
    for _ in 0..2 {
        // Not acknowledged: both stay in flight.
        let message = next_publish(&mut session).await;
        if &message.payload[..] == b"two" {
            second_id = message.packet_id;
        }
    }
    let second_id = second_id.expect("the message from second, at QoS 1");
    session
        .send(&Packet::Disconnect(Disconnect { reason_code: ReasonCode::Success, properties: Properties::default() }))
        .await;
    assert!(session.recv().await.is_none(), "the broker closes after DISCONNECT");
    // The session is in the store (disconnected) once the admin API counts no member.
    let mut members = 1;
    for _ in 0..200 {
        members = cli(grpc, &["group", "describe", SESSION, "--kind", "session"]).await["members"].as_u64().unwrap();
        if members == 0 {
            break;
        }
    }
    assert_eq!(members, 0, "the session never showed as disconnected");
    cli(grpc, &["stream", "delete", "first"]).await;
    second_id
}

/// Reconnects `keeper`, expects exactly the resend of `two` under `second_id`, then reads
/// until `fence` (published now on `fence_topic`) and returns what came in between.
async fn resume(addr: SocketAddr, second_id: PacketId, fence_topic: &str) -> Vec<Publish> {
    let (mut session, connack) = RawClient::connect_persistent(addr, ProtocolVersion::V5, SESSION).await;
    assert!(connack.session_present);
    let resent = next_publish(&mut session).await;
    assert_eq!(&resent.payload[..], b"two", "{resent:?}");
    assert!(resent.dup, "a resend has DUP set: {resent:?}");
    assert_eq!(resent.packet_id, Some(second_id), "a resend keeps its packet identifier");
    publish_acked(addr, fence_topic, "fence").await;
    let mut between = Vec::new();
    loop {
        let message = next_publish(&mut session).await;
        if &message.payload[..] == b"fence" {
            return between;
        }
        between.push(message);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue18_deleting_a_stream_keeps_a_disconnected_sessions_resends_right() {
    let dir = tempfile::tempdir().unwrap();
    let (mut broker, grpc) = start(dir.path());
    let second_id = disconnect_with_both_in_flight_then_delete_first(broker.addr, grpc).await;
    let between = resume(broker.addr, second_id, "second/a").await;
    assert!(between.is_empty(), "nothing but the resend before the fence: {between:?}");
    assert!(broker.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue18_deleting_a_stream_is_saved_in_the_session_record() {
    let dir = tempfile::tempdir().unwrap();
    let (mut broker, grpc) = start(dir.path());
    let second_id = disconnect_with_both_in_flight_then_delete_first(broker.addr, grpc).await;
    broker.kill9();
    drop(broker);

    let (mut broker, grpc) = start(dir.path());
    create(grpc, "first").await;
    publish_acked(broker.addr, "first/a", "three").await;
    let described = cli(grpc, &["group", "describe", SESSION, "--kind", "session"]).await;
    let streams: Vec<&str> =
        described["partitions"].as_array().unwrap().iter().map(|p| p["stream"].as_str().unwrap()).collect();
    assert!(!streams.contains(&"first"), "the stored session still has a position in the deleted stream: {described}");
    // The new `first` is a stream the session never saw (docs/mqtt.md, section 4): it
    // starts at its end, and nothing in it is a resend of the old message.
    let between = resume(broker.addr, second_id, "first/a").await;
    assert!(between.is_empty(), "nothing but the resend before the fence: {between:?}");
    assert!(broker.is_running());
}
