//! `strata group reset-offsets` on a `$share` group: refused while a member is connected;
//! once the last member left, `--to-earliest` moves the committed offsets back and the next
//! member receives everything again. Loopback only, every wait bounded.

#[path = "common/admin_cli.rs"]
mod admin_cli;
#[path = "common/broker.rs"]
mod broker;
#[path = "common/v4_session.rs"]
mod v4_session;

use std::net::SocketAddr;
use std::time::Duration;

use admin_cli::{json, strata, text};
use broker::ServeProcess;
use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};
use tokio::time::timeout;
use v4_session::{DEADLINE, client, connack, next_publish};

const FILTER: &str = "$share/resetters/jobs/#";

async fn join(port: u16) -> (AsyncClient, EventLoop) {
    let (member, mut events) = client("reset-member", port, true);
    timeout(DEADLINE, connack(&mut events)).await.expect("CONNACK");
    member.subscribe(FILTER, QoS::AtLeastOnce).await.unwrap();
    timeout(DEADLINE, async {
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.unwrap() {
                return;
            }
        }
    })
    .await
    .expect("SUBACK");
    (member, events)
}

async fn receive_all(member: &AsyncClient, events: &mut EventLoop, count: usize) -> Vec<String> {
    let mut payloads = Vec::new();
    while payloads.len() < count {
        let publish = timeout(DEADLINE, next_publish(events)).await.expect("a group message");
        payloads.push(text(&publish.payload));
        member.ack(&publish).await.unwrap();
    }
    payloads.sort();
    payloads
}

async fn describe(grpc: SocketAddr) -> serde_json::Value {
    tokio::task::spawn_blocking(move || json(grpc, &["group", "describe", "resetters", "--kind", "share"]))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_group_without_members_is_reset_and_consumes_again() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start_with(dir.path(), &["--grpc", "127.0.0.1:0"]);
    let grpc = broker.grpc_addr();

    let (member, mut events) = join(broker.port()).await;
    v4_session::publish_all(broker.port(), "reset-pub", "jobs/a", 0..3).await;
    let expected = vec!["m-0".to_owned(), "m-1".to_owned(), "m-2".to_owned()];
    assert_eq!(receive_all(&member, &mut events, 3).await, expected);

    let refused =
        tokio::task::spawn_blocking(move || strata(grpc, &["group", "reset-offsets", "resetters", "--to-earliest"]))
            .await
            .unwrap();
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(text(&refused.stderr).contains("connected member"), "{}", text(&refused.stderr));

    member.disconnect().await.unwrap();
    let _ = timeout(DEADLINE, async { while events.poll().await.is_ok() {} }).await;
    let left = timeout(DEADLINE, async {
        loop {
            let group = describe(grpc).await;
            if group["members"] == 0 && group["lag"] == 0 {
                return group;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the member left and everything is committed");
    assert_eq!(left["kind"], "share", "{left}");

    let reset = tokio::task::spawn_blocking(move || {
        json(grpc, &["group", "reset-offsets", "resetters", "--stream", "default", "--partition", "0", "--to-earliest"])
    })
    .await
    .unwrap();
    assert_eq!(reset["lag"], 3, "{reset}");

    let (member, mut events) = join(broker.port()).await;
    assert_eq!(receive_all(&member, &mut events, 3).await, expected, "everything again");
}
