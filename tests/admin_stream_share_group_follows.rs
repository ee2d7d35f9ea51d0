//! A running `$share` group follows streams created and deleted at runtime: its member,
//! connected before `strata stream create extra`, receives what the new stream captures,
//! exactly once, and `group describe` lists the new partition. After `strata stream delete
//! extra` (with two of its messages still unacknowledged), a late PUBACK is ignored, the
//! group goes on delivering the other streams' messages, and a member joining after the
//! first left gets no redelivery from the deleted stream. Loopback only, every wait bounded.

#[path = "common/admin_cli.rs"]
mod admin_cli;
#[path = "common/broker.rs"]
mod broker;
#[path = "common/v4_session.rs"]
mod v4_session;

use std::net::SocketAddr;
use std::time::Duration;

use admin_cli::{json, text};
use broker::ServeProcess;
use rumqttc::{AsyncClient, Event, Packet, Publish, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use v4_session::{DEADLINE, client, connack};

const FILTER: &str = "$share/g/#";

/// Joins the group; its event loop runs in a task (so acknowledgements go out while the test
/// waits on something else) that forwards every PUBLISH and ends with the connection.
async fn join(id: &str, port: u16) -> (AsyncClient, mpsc::UnboundedReceiver<Publish>, JoinHandle<()>) {
    let (member, mut events) = client(id, port, true);
    timeout(DEADLINE, connack(&mut events)).await.expect("CONNACK");
    member.subscribe(FILTER, QoS::AtLeastOnce).await.unwrap();
    timeout(DEADLINE, async {
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.expect("member connection") {
                return;
            }
        }
    })
    .await
    .expect("SUBACK in time");
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            if let Event::Incoming(Packet::Publish(publish)) = event {
                let _ = tx.send(publish);
            }
        }
    });
    (member, rx, task)
}

async fn receive(received: &mut mpsc::UnboundedReceiver<Publish>, what: &str) -> Publish {
    timeout(DEADLINE, received.recv()).await.unwrap_or_else(|_| panic!("{what} in time")).expect("member connected")
}

async fn cli(grpc: SocketAddr, args: &'static [&'static str]) -> serde_json::Value {
    tokio::task::spawn_blocking(move || json(grpc, args)).await.unwrap()
}

/// The group's partitions of `stream` in `group describe`, as (partition, committed).
fn partitions_of(group: &serde_json::Value, stream: &str) -> Vec<(u64, u64)> {
    group["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .filter(|p| p["stream"] == stream)
        .map(|p| (p["partition"].as_u64().unwrap(), p["committed"].as_u64().unwrap()))
        .collect()
}

/// Describes the group until `done` holds for it.
async fn describe_until(grpc: SocketAddr, what: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let reached = timeout(DEADLINE, async {
        loop {
            last = cli(grpc, &["group", "describe", "g", "--kind", "share"]).await;
            if done(&last) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(reached.is_ok(), "{what}; last described: {last}");
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_share_group_follows_a_stream_created_and_deleted_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = ServeProcess::start_with(dir.path(), &["--grpc", "127.0.0.1:0"]);
    let (port, grpc) = (broker.port(), broker.grpc_addr());

    let (member, mut events, task) = join("follow-a", port).await;
    v4_session::publish_all(port, "follow-pub", "before/t", 0..1).await;
    let first = receive(&mut events, "a message of `default`").await;
    assert_eq!(text(&first.payload), "m-0");
    member.ack(&first).await.unwrap();

    // Published right after the create: the group task follows the new stream on its own
    // (nothing has described the group yet).
    cli(grpc, &["stream", "create", "extra", "--topics", "extra/#"]).await;
    v4_session::publish_and_wait(port, "follow-pub", "extra/t", vec!["x-0".into(), "x-1".into(), "x-2".into()]).await;
    let x0 = receive(&mut events, "x-0 from the new stream").await;
    assert_eq!(text(&x0.payload), "x-0");
    member.ack(&x0).await.unwrap();
    // x-1 and x-2 stay unacknowledged until the stream is gone.
    let x1 = receive(&mut events, "x-1").await;
    let x2 = receive(&mut events, "x-2").await;
    assert_eq!((text(&x1.payload), text(&x2.payload)), ("x-1".to_owned(), "x-2".to_owned()), "in order, once each");
    let described =
        describe_until(grpc, "the ack of x-0 commits offset 1", |g| partitions_of(g, "extra") == [(0, 1)]).await;
    assert_eq!(described["members"], 1, "{described}");
    assert!(events.try_recv().is_err(), "no message came twice");
    let extra = cli(grpc, &["stream", "describe", "extra"]).await;
    assert_eq!(admin_cli::messages(&extra), 3, "each message stored once: {extra}");

    cli(grpc, &["stream", "delete", "extra"]).await;
    describe_until(grpc, "the group drops the deleted stream", |g| partitions_of(g, "extra").is_empty()).await;
    // A PUBACK for a partition the group dropped is ignored.
    member.ack(&x1).await.unwrap();
    v4_session::publish_all(port, "follow-pub", "after/t", 1..2).await;
    let next = receive(&mut events, "a message of `default` after the delete").await;
    assert_eq!(text(&next.payload), "m-1", "nothing of the deleted stream came again");
    member.ack(&next).await.unwrap();

    // Leaving with x-2 unacknowledged: nothing of the deleted stream is redelivered.
    member.disconnect().await.unwrap();
    timeout(DEADLINE, task).await.expect("the first member's connection ends").unwrap();
    describe_until(grpc, "the first member left", |g| g["members"] == 0).await;
    let (second, mut second_events, _task) = join("follow-b", port).await;
    v4_session::publish_all(port, "follow-pub", "extra/t", 2..3).await;
    let fresh = receive(&mut second_events, "a message routed to `default` now").await;
    assert_eq!(text(&fresh.payload), "m-2", "x-2 was not redelivered");
    second.ack(&fresh).await.unwrap();
    describe_until(grpc, "everything of `default` committed", |g| g["lag"] == 0).await;
    assert!(broker.is_running(), "the broker still serves");
}
