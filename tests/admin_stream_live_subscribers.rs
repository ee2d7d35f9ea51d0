//! Connected subscribers follow streams created and deleted at runtime: a plain `live/#`
//! subscriber that connected before `stream create live` receives what the new stream
//! captures without reconnecting, and deleting the stream while a `$stream/live` replay
//! subscriber and the plain subscriber are connected leaves the broker serving both (the
//! next publish, now to `default`, still arrives). Loopback only, every wait bounded.

#[path = "common/admin_cli.rs"]
mod admin_cli;
#[path = "common/broker.rs"]
mod broker;
#[path = "common/v4_session.rs"]
mod v4_session;

use admin_cli::{json, messages, text};
use broker::ServeProcess;
use rumqttc::{Event, EventLoop, Packet, QoS};
use tokio::time::timeout;
use v4_session::{DEADLINE, client, connack, next_publish};

async fn suback(events: &mut EventLoop) {
    timeout(DEADLINE, async {
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.expect("subscriber connection") {
                return;
            }
        }
    })
    .await
    .expect("SUBACK in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_follow_streams_created_and_deleted_while_they_are_connected() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start_with(dir.path(), &["--grpc", "127.0.0.1:0"]);
    let grpc = broker.grpc_addr();

    let (plain, mut plain_events) = client("live-plain", broker.port(), true);
    timeout(DEADLINE, connack(&mut plain_events)).await.expect("CONNACK");
    plain.subscribe("live/#", QoS::AtLeastOnce).await.unwrap();
    suback(&mut plain_events).await;

    tokio::task::spawn_blocking(move || json(grpc, &["stream", "create", "live", "--topics", "live/#"])).await.unwrap();
    v4_session::publish_all(broker.port(), "live-pub", "live/a", 0..2).await;
    for expected in ["m-0", "m-1"] {
        let publish = timeout(DEADLINE, next_publish(&mut plain_events)).await.expect("a message from the new stream");
        assert_eq!(text(&publish.payload), expected);
        plain.ack(&publish).await.unwrap();
    }
    let described = tokio::task::spawn_blocking(move || json(grpc, &["stream", "describe", "live"])).await.unwrap();
    assert_eq!(messages(&described), 2, "{described}");

    let (replay, mut replay_events) = client("live-replay", broker.port(), true);
    timeout(DEADLINE, connack(&mut replay_events)).await.expect("CONNACK");
    replay.subscribe("$stream/live/@earliest", QoS::AtLeastOnce).await.unwrap();
    suback(&mut replay_events).await;
    for expected in ["m-0", "m-1"] {
        let publish = timeout(DEADLINE, next_publish(&mut replay_events)).await.expect("a replayed message");
        assert_eq!(text(&publish.payload), expected);
        replay.ack(&publish).await.unwrap();
    }

    tokio::task::spawn_blocking(move || json(grpc, &["stream", "delete", "live"])).await.unwrap();
    v4_session::publish_all(broker.port(), "live-pub", "live/a", 2..3).await;
    let publish = timeout(DEADLINE, next_publish(&mut plain_events)).await.expect("the plain subscriber still served");
    assert_eq!(text(&publish.payload), "m-2");
    plain.ack(&publish).await.unwrap();
    let default = tokio::task::spawn_blocking(move || json(grpc, &["stream", "describe", "default"])).await.unwrap();
    assert_eq!(messages(&default), 1, "{default}");
    // The replay subscriber's connection is still up: a ping round trip answers.
    replay.subscribe("other/#", QoS::AtMostOnce).await.unwrap();
    suback(&mut replay_events).await;
}
