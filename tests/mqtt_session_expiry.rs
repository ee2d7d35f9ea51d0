//! MQTT 5 Session Expiry (rumqttc v5): with clean_start = 0 and an expiry interval, a session
//! survives a disconnect until the interval has passed, then is discarded; with an interval of
//! 0 it ends at the disconnect. An expired session is removed by the broker itself, without
//! waiting for its client to come back.

#[path = "common/admin_cli.rs"]
mod admin_cli;
#[path = "common/broker.rs"]
mod broker;

use std::time::Duration;

use broker::ServeProcess;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(30);

/// Connects, subscribes, disconnects cleanly; returns CONNACK's Session Present.
async fn session(port: u16, id: &str, expiry: Option<u32>) -> bool {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_start(false);
    options.set_session_expiry_interval(expiry);
    let (client, mut events): (AsyncClient, EventLoop) = AsyncClient::new(options, 10);
    timeout(DEADLINE, async {
        let present = loop {
            if let Event::Incoming(Packet::ConnAck(connack)) = events.poll().await.expect("connects") {
                break connack.session_present;
            }
        };
        client.subscribe("se/#", QoS::AtLeastOnce).await.unwrap();
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.expect("connection") {
                break;
            }
        }
        client.disconnect().await.unwrap();
        let _ = timeout(Duration::from_secs(5), async { while events.poll().await.is_ok() {} }).await;
        present
    })
    .await
    .expect("session in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_lives_until_its_expiry_interval_has_passed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(dir.path());
    assert!(!session(broker.port(), "se-2s", Some(2)).await);
    assert!(session(broker.port(), "se-2s", Some(2)).await, "resumed within the interval");
    // Well past 2 s: the expiry is checked against the wall clock at CONNECT.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert!(!session(broker.port(), "se-2s", Some(2)).await, "expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_interval_of_zero_ends_the_session_at_disconnect() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(dir.path());
    assert!(!session(broker.port(), "se-0", None).await);
    assert!(!session(broker.port(), "se-0", None).await);
}

/// The persistent sessions `strata group list` reports, by client id.
async fn listed_sessions(grpc: std::net::SocketAddr) -> Vec<String> {
    let list = tokio::task::spawn_blocking(move || admin_cli::json(grpc, &["group", "list"])).await.unwrap();
    list["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter(|g| g["kind"] == "session")
        .map(|g| g["name"].as_str().expect("name").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_removed_without_its_client_coming_back() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start_with(dir.path(), &["--grpc", "127.0.0.1:0"]);
    let grpc = broker.grpc_addr();
    // One that expires and one that does not, stored the other way round.
    assert!(!session(broker.port(), "se-kept", Some(3600)).await);
    assert!(!session(broker.port(), "se-1s", Some(1)).await);
    let disconnected = std::time::Instant::now();
    let listed = listed_sessions(grpc).await;
    assert!(listed.contains(&"se-1s".to_owned()) && listed.contains(&"se-kept".to_owned()), "{listed:?}");
    // The broker sleeps until the expiry: the session goes about a second after the
    // disconnect, with nobody connecting.
    let gone = timeout(Duration::from_secs(10), async {
        while listed_sessions(grpc).await.contains(&"se-1s".to_owned()) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "se-1s still listed 10 s after its 1 s expiry");
    let after = disconnected.elapsed();
    assert!(after >= Duration::from_millis(900), "removed after {after:?}, before its expiry");
    assert_eq!(listed_sessions(grpc).await, vec!["se-kept".to_owned()]);
}
