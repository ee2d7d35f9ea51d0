//! MQTT 5 Session Expiry (rumqttc v5): with clean_start = 0 and an expiry interval, a session
//! survives a disconnect until the interval has passed, then is discarded; with an interval of
//! 0 it ends at the disconnect.

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
    // The broker checks expiry every second; wait well past 2 s.
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
