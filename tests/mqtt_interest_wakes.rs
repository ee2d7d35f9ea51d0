//! Appends wake only the connections whose plain subscriptions match the topic, and those
//! connections jump over what matched none of their filters (`frontend/src/interest.rs`).
//! Checked here with a real broker: a quiet subscriber on a busy stream gets exactly its
//! own messages in order; a filter added later does not receive what was published before
//! it; a resumed session still gets what arrived while it was away, even with other topics
//! published in between.

#[path = "common/admin_cli.rs"]
mod admin_cli;
#[path = "common/broker.rs"]
mod broker;
#[path = "common/raw.rs"]
mod raw;

use std::{net::SocketAddr, time::Duration};

use broker::ServeProcess;
use bytes::Bytes;
use raw::{RawClient, ack, publish};
use strata_frontend::codec::{Packet, Properties, ProtocolVersion, QoS};

const V4: ProtocolVersion = ProtocolVersion::V3_1_1;
/// How long "nothing more arrives" is watched for, once every expected message has come. It
/// can only miss an extra message, never fail a correct broker.
const QUIET: Duration = Duration::from_millis(500);

/// Connects `client_id` (clean session) subscribed to `filter` at QoS 1.
async fn subscribed(addr: SocketAddr, client_id: &str, filter: &str) -> RawClient {
    let (mut client, _) = RawClient::connect(addr, V4, client_id).await;
    client.subscribe(1, &[(filter, QoS::AtLeastOnce)], Properties::default()).await;
    client
}

/// Publishes `messages` (topic, payload) at QoS 1 in batches and waits for every PUBACK, so
/// that each is in the log when this returns.
async fn publish_all(publisher: &mut RawClient, messages: &[(String, String)], first_id: u16) {
    for (batch_index, batch) in messages.chunks(50).enumerate() {
        let packets: Vec<Packet> = batch
            .iter()
            .enumerate()
            .map(|(i, (topic, payload))| {
                let id = first_id + (batch_index * 50 + i) as u16;
                Packet::Publish(publish(topic, QoS::AtLeastOnce, Some(id), Bytes::from(payload.clone())))
            })
            .collect();
        publisher.send_all(&packets).await;
        for _ in batch {
            match publisher.recv().await {
                Some(Packet::PubAck(_)) => {}
                other => panic!("expected PUBACK, got {other:?}"),
            }
        }
    }
}

/// Receives `count` PUBLISHes (acknowledging QoS 1), each within the harness's deadline,
/// then watches `QUIET` for one too many; returns their (topic, payload). Counting, rather
/// than reading until a silence, keeps a slow broker on a loaded machine from ending the
/// read early.
async fn receive(subscriber: &mut RawClient, count: usize) -> Vec<(String, String)> {
    let mut received = Vec::new();
    while received.len() < count {
        match subscriber.recv().await {
            Some(Packet::Publish(message)) => {
                if let Some(id) = message.packet_id {
                    subscriber.send(&Packet::PubAck(ack(id))).await;
                }
                received.push((message.topic.to_string(), String::from_utf8(message.payload.to_vec()).unwrap()));
            }
            Some(_) => {}
            None => panic!("the connection closed after {} of {count} messages: {received:?}", received.len()),
        }
    }
    while let Some(packet) = subscriber.recv_within(QUIET).await {
        if let Packet::Publish(message) = packet {
            panic!("one more than the {count} expected: {:?} after {received:?}", message.topic);
        }
    }
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_subscriber_on_a_busy_stream_gets_exactly_its_own_messages() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(&dir.path().join("data"));
    let mut quiet = subscribed(broker.addr, "quiet", "quiet/1").await;
    let mut busy = subscribed(broker.addr, "busy", "busy/#").await;
    let (mut publisher, _) = RawClient::connect(broker.addr, V4, "publisher").await;

    let quiet_at = [0, 250, 500, 750, 999];
    let messages: Vec<(String, String)> = (0..1000)
        .map(|i| match quiet_at.iter().position(|&at| at == i) {
            Some(n) => ("quiet/1".to_string(), format!("q{n}")),
            None => ("busy/x".to_string(), format!("b{i}")),
        })
        .collect();
    publish_all(&mut publisher, &messages, 1).await;

    let (quiet_got, busy_got) = tokio::join!(receive(&mut quiet, 5), receive(&mut busy, 995));
    let expected: Vec<(String, String)> = (0..5).map(|n| ("quiet/1".to_string(), format!("q{n}"))).collect();
    assert_eq!(quiet_got, expected, "the quiet subscriber: its five, in order, nothing else");
    let busy_expected: Vec<(String, String)> = messages.iter().filter(|(t, _)| t == "busy/x").cloned().collect();
    assert_eq!(busy_got, busy_expected, "the busy subscriber: every busy message, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_added_later_does_not_receive_what_was_published_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(&dir.path().join("data"));
    let mut subscriber = subscribed(broker.addr, "late", "a").await;
    let (mut publisher, _) = RawClient::connect(broker.addr, V4, "publisher").await;

    // The subscriber is woken for "a" only; the "b" messages around it are not its concern.
    let mut before: Vec<(String, String)> = (0..100).map(|i| ("b".to_string(), format!("old{i}"))).collect();
    before.push(("a".to_string(), "a1".to_string()));
    publish_all(&mut publisher, &before, 1).await;
    assert_eq!(receive(&mut subscriber, 1).await, vec![("a".to_string(), "a1".to_string())]);
    // Not woken for these: its cursor stays behind them.
    let after: Vec<(String, String)> = (100..150).map(|i| ("b".to_string(), format!("old{i}"))).collect();
    publish_all(&mut publisher, &after, 101).await;

    // Now it subscribes to "b" too: the 150 earlier "b" messages must not arrive.
    subscriber.subscribe(2, &[("b", QoS::AtLeastOnce)], Properties::default()).await;
    publish_all(&mut publisher, &[("b".to_string(), "new".to_string())], 200).await;
    assert_eq!(receive(&mut subscriber, 1).await, vec![("b".to_string(), "new".to_string())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_gets_what_arrived_while_it_was_away() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(&dir.path().join("data"));
    let (mut subscriber, _) = RawClient::connect_persistent(broker.addr, V4, "away").await;
    subscriber.subscribe(1, &[("p", QoS::AtLeastOnce)], Properties::default()).await;
    drop(subscriber);
    // The broker has seen the connection go and saved the session once the admin API shows
    // the session with no connection.
    let grpc = broker.grpc_addr();
    tokio::task::spawn_blocking(move || {
        admin_cli::wait_for_session(grpc, "away", "saved at the disconnect", |session| session["members"] == 0)
    })
    .await
    .expect("the admin API poll");

    let (mut publisher, _) = RawClient::connect(broker.addr, V4, "publisher").await;
    let mut away: Vec<(String, String)> = Vec::new();
    for i in 0..30 {
        away.push(("p".to_string(), format!("p{i}")));
        away.extend((0..10).map(|j| ("other".to_string(), format!("o{i}-{j}"))));
    }
    publish_all(&mut publisher, &away, 1).await;

    let (mut subscriber, connack) = RawClient::connect_persistent(broker.addr, V4, "away").await;
    assert!(connack.session_present);
    // A message after the resume wakes the connection with a lowest offset past the ones it
    // missed: it must still read those first, not jump over them.
    publish_all(&mut publisher, &[("p".to_string(), "after".to_string())], 1000).await;
    let got = receive(&mut subscriber, 31).await;
    let mut expected: Vec<(String, String)> = (0..30).map(|i| ("p".to_string(), format!("p{i}"))).collect();
    expected.push(("p".to_string(), "after".to_string()));
    assert_eq!(got, expected);
}
