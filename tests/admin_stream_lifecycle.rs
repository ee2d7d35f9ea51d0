//! The whole life of a stream made at runtime, through the real CLI against a real node:
//! `stream create` (its topics capture publishes at once), `stream describe` shows the
//! offsets, a persistent session consumes and leaves, `group reset-offsets --to-earliest`
//! makes it receive everything again after it reconnects, `stream alter` changes retention,
//! `stream delete` removes the stream and its directory, and `default` cannot be deleted.
//! Loopback only, every wait bounded.

#[path = "common/admin_cli.rs"]
mod admin_cli;
#[path = "common/broker.rs"]
mod broker;
#[path = "common/v4_session.rs"]
mod v4_session;

use std::net::SocketAddr;
use std::time::Duration;

use admin_cli::{json, messages, strata, text};
use broker::ServeProcess;
use rumqttc::{AsyncClient, EventLoop, QoS};
use tokio::time::timeout;
use v4_session::{DEADLINE, client, connack, next_publish};

const PUBLISHED: usize = 6;

/// Runs a CLI call off the async workers (the brokers' clients keep being polled).
async fn cli(grpc: SocketAddr, args: &[&str]) -> serde_json::Value {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || json(grpc, &args.iter().map(String::as_str).collect::<Vec<_>>())).await.unwrap()
}

/// Receives `count` messages, acknowledging each, and returns their payloads.
async fn receive(subscriber: &AsyncClient, events: &mut EventLoop, count: usize) -> Vec<String> {
    timeout(DEADLINE, async {
        let mut payloads = Vec::new();
        while payloads.len() < count {
            let publish = next_publish(events).await;
            payloads.push(text(&publish.payload));
            subscriber.ack(&publish).await.unwrap();
        }
        payloads
    })
    .await
    .expect("messages in time")
}

/// Disconnects cleanly and drives the event loop until the connection is gone.
async fn leave(subscriber: AsyncClient, mut events: EventLoop) {
    subscriber.disconnect().await.unwrap();
    let _ = timeout(DEADLINE, async { while events.poll().await.is_ok() {} }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_created_consumed_reset_altered_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start_with(dir.path(), &["--grpc", "127.0.0.1:0"]);
    let grpc = broker.grpc_addr();

    let created = cli(
        grpc,
        &[
            "stream",
            "create",
            "orders",
            "--partitions",
            "2",
            "--topics",
            "orders/#,shop/+/order",
            "--config",
            "retention_ms=3600000",
        ],
    )
    .await;
    assert_eq!(created["name"], "orders", "{created}");
    assert_eq!(created["partitions"].as_array().unwrap().len(), 2, "{created}");
    assert_eq!(created["topics"], serde_json::json!(["orders/#", "shop/+/order"]), "{created}");
    assert_eq!(created["settings"]["retention_ms"], "3600000", "{created}");
    assert!(dir.path().join("orders").join("1").is_dir());

    // A persistent session subscribes, then the publishes come.
    let (subscriber, mut events) = client("lifecycle-sub", broker.port(), false);
    assert!(!timeout(DEADLINE, connack(&mut events)).await.expect("CONNACK"));
    subscriber.subscribe("orders/#", QoS::AtLeastOnce).await.unwrap();
    timeout(DEADLINE, async {
        loop {
            if let rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) = events.poll().await.unwrap() {
                break;
            }
        }
    })
    .await
    .expect("SUBACK");
    v4_session::publish_all(broker.port(), "lifecycle-pub", "orders/eu", 0..PUBLISHED).await;

    let described = cli(grpc, &["stream", "describe", "orders"]).await;
    assert_eq!(messages(&described), PUBLISHED as u64, "{described}");
    let default = cli(grpc, &["stream", "describe", "default"]).await;
    assert_eq!(messages(&default), 0, "the new stream captured them: {default}");

    let expected: Vec<String> = (0..PUBLISHED).map(|i| format!("m-{i}")).collect();
    assert_eq!(receive(&subscriber, &mut events, PUBLISHED).await, expected);
    leave(subscriber, events).await;

    // Once the session is disconnected and has committed everything, reset it.
    let consumed = timeout(DEADLINE, async {
        loop {
            let group = cli(grpc, &["group", "describe", "lifecycle-sub"]).await;
            if group["members"] == 0 && group["lag"] == 0 {
                return group;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the session is disconnected and caught up");
    assert_eq!(consumed["kind"], "session", "{consumed}");
    let list = cli(grpc, &["group", "list"]).await;
    assert!(
        list["groups"].as_array().unwrap().iter().any(|g| g["name"] == "lifecycle-sub" && g["kind"] == "session"),
        "{list}"
    );

    let reset = cli(grpc, &["group", "reset-offsets", "lifecycle-sub", "--stream", "orders", "--to-earliest"]).await;
    let orders: Vec<&serde_json::Value> =
        reset["partitions"].as_array().unwrap().iter().filter(|p| p["stream"] == "orders").collect();
    assert_eq!(orders.len(), 2, "{reset}");
    assert!(orders.iter().all(|p| p["committed"] == 0), "{reset}");
    assert_eq!(reset["lag"], PUBLISHED as u64, "{reset}");

    let (subscriber, mut events) = client("lifecycle-sub", broker.port(), false);
    assert!(timeout(DEADLINE, connack(&mut events)).await.expect("CONNACK"), "the session is still there");
    // Connected: a reset is refused, exit 2 with the reason.
    let refused =
        tokio::task::spawn_blocking(move || strata(grpc, &["group", "reset-offsets", "lifecycle-sub", "--to-latest"]))
            .await
            .unwrap();
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(text(&refused.stderr).contains("connected"), "{}", text(&refused.stderr));
    assert_eq!(receive(&subscriber, &mut events, PUBLISHED).await, expected, "everything again, in order");
    leave(subscriber, events).await;

    let altered = cli(grpc, &["stream", "alter", "orders", "--config", "retention_ms=60000"]).await;
    assert_eq!(altered["settings"]["retention_ms"], "60000", "{altered}");
    assert_eq!(altered["at_restart"], serde_json::json!([]), "{altered}");
    let described = cli(grpc, &["stream", "describe", "orders"]).await;
    assert_eq!(described["settings"]["retention_ms"], "60000", "{described}");
    assert_eq!(messages(&described), PUBLISHED as u64, "{described}");

    let deleted = cli(grpc, &["stream", "delete", "orders"]).await;
    assert_eq!(deleted, serde_json::json!({"deleted": "orders", "in_config_file": false}));
    assert!(!dir.path().join("orders").exists(), "the stream's directory is gone");
    let checks = tokio::task::spawn_blocking(move || {
        let gone = strata(grpc, &["stream", "describe", "orders"]);
        assert_eq!(gone.status.code(), Some(2), "{gone:?}");
        assert!(text(&gone.stderr).contains("unknown stream \"orders\""), "{}", text(&gone.stderr));
        let default = strata(grpc, &["stream", "delete", "default"]);
        assert_eq!(default.status.code(), Some(2), "{default:?}");
        assert!(text(&default.stderr).contains("cannot be deleted"), "{}", text(&default.stderr));
        let internal = strata(grpc, &["stream", "delete", "$sessions"]);
        assert_eq!(internal.status.code(), Some(2), "{internal:?}");
    });
    checks.await.unwrap();

    // Publishes to its topics go to `default` now, and the broker still serves.
    v4_session::publish_all(broker.port(), "lifecycle-pub", "orders/eu", 0..1).await;
    let default = cli(grpc, &["stream", "describe", "default"]).await;
    assert_eq!(messages(&default), 1, "{default}");
}
