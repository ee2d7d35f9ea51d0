//! Session takeover and assigned client identifiers (MQTT 5, rumqttc): a second CONNECT with
//! the same client id disconnects the first with 0x8E Session Taken Over; an empty client id
//! gets an Assigned Client Identifier.

#[path = "common/broker.rs"]
mod broker;

use std::time::Duration;

use broker::ServeProcess;
use rumqttc::v5::mqttbytes::v5::{DisconnectReasonCode, Packet};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connect_with_the_same_id_takes_the_session_over() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(dir.path());
    let options = MqttOptions::new("same-id", "127.0.0.1", broker.port());
    let (_first_client, mut first) = AsyncClient::new(options.clone(), 10);
    tokio::time::timeout(DEADLINE, async {
        loop {
            if let Event::Incoming(Packet::ConnAck(_)) = first.poll().await.expect("first connects") {
                break;
            }
        }
    })
    .await
    .expect("first CONNACK");

    let (_second_client, mut second) = AsyncClient::new(options, 10);
    let second_task = tokio::spawn(async move {
        loop {
            if let Event::Incoming(Packet::ConnAck(_)) = second.poll().await.expect("second connects") {
                break;
            }
        }
        // Keep the second connection alive while the first is told to go.
        while second.poll().await.is_ok() {}
    });

    let reason: (DisconnectReasonCode, Option<String>) = tokio::time::timeout(DEADLINE, async {
        loop {
            match first.poll().await {
                Ok(_) => {}
                Err(rumqttc::v5::ConnectionError::MqttState(rumqttc::v5::StateError::ServerDisconnect {
                    reason_code,
                    reason_string,
                })) => return (reason_code, reason_string),
                Err(e) => panic!("expected a DISCONNECT before the close, got {e}"),
            }
        }
    })
    .await
    .expect("DISCONNECT in time");
    assert_eq!(reason.0, DisconnectReasonCode::SessionTakenOver);
    assert!(reason.1.is_some_and(|s| s.contains("same-id")), "a reason string naming the client id");
    second_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_client_id_is_assigned_one() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(dir.path());
    let options = MqttOptions::new("", "127.0.0.1", broker.port());
    let (_client, mut events) = AsyncClient::new(options, 10);
    let connack = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Event::Incoming(Packet::ConnAck(connack)) = events.poll().await.expect("connects") {
                return connack;
            }
        }
    })
    .await
    .expect("CONNACK in time");
    let assigned = connack.properties.and_then(|p| p.assigned_client_identifier).expect("an assigned id");
    assert!(assigned.starts_with("strata-"), "{assigned}");
}
