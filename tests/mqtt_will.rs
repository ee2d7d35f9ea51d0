//! Wills (MQTT 5, rumqttc v5): published through the normal path when a connection ends
//! without DISCONNECT, suppressed by DISCONNECT 0x00, held for the Will Delay Interval and
//! cancelled when the session reconnects within it, also across a `kill -9` and restart.

#[path = "common/admin_cli.rs"]
mod admin_cli;
#[path = "common/broker.rs"]
mod broker;

use std::time::Duration;

use broker::ServeProcess;
use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{LastWill, LastWillProperties, Packet};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(30);

/// Connects a client with a will on `will/<id>`; returns it once CONNACK arrived.
async fn with_will(port: u16, id: &str, delay: Option<u32>, expiry: Option<u32>) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_start(false);
    options.set_session_expiry_interval(expiry);
    let properties = delay.map(|d| LastWillProperties {
        delay_interval: Some(d),
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        user_properties: Vec::new(),
    });
    options.set_last_will(LastWill {
        topic: Bytes::from(format!("will/{id}")),
        message: Bytes::from(format!("{id} is gone")),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties,
    });
    let (client, mut events) = AsyncClient::new(options, 10);
    timeout(DEADLINE, async {
        loop {
            if let Event::Incoming(Packet::ConnAck(_)) = events.poll().await.expect("connects") {
                break;
            }
        }
    })
    .await
    .expect("CONNACK in time");
    (client, events)
}

/// A subscriber to `will/#` and `marker/#`.
async fn watcher(port: u16, id: &str) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(options, 10);
    client.subscribe("will/#", QoS::AtLeastOnce).await.unwrap();
    client.subscribe("marker/#", QoS::AtLeastOnce).await.unwrap();
    timeout(DEADLINE, async {
        let mut subacks = 0;
        while subacks < 2 {
            if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.expect("watcher connects") {
                subacks += 1;
            }
        }
    })
    .await
    .expect("SUBACKs in time");
    (client, events)
}

/// The topics the watcher receives until `marker/<tag>` (which it publishes itself).
async fn topics_until_marker(client: &AsyncClient, events: &mut EventLoop, tag: &str) -> Vec<String> {
    client.publish(format!("marker/{tag}"), QoS::AtLeastOnce, false, "m").await.unwrap();
    let mut topics = Vec::new();
    timeout(DEADLINE, async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = events.poll().await.expect("watcher connection") {
                let topic = String::from_utf8(p.topic.to_vec()).unwrap();
                if topic == format!("marker/{tag}") {
                    return;
                }
                topics.push(topic);
            }
        }
    })
    .await
    .expect("marker in time");
    topics
}

async fn next_topic(events: &mut EventLoop) -> String {
    timeout(DEADLINE, async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = events.poll().await.expect("watcher connection") {
                return String::from_utf8(p.topic.to_vec()).unwrap();
            }
        }
    })
    .await
    .expect("a publish in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_will_goes_out_on_a_lost_connection_and_not_on_disconnect() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(dir.path());
    let (watch, mut watch_events) = watcher(broker.port(), "will-watcher-1").await;

    // DISCONNECT 0x00: no will.
    let (client, mut events) = with_will(broker.port(), "w-clean", None, None).await;
    client.disconnect().await.unwrap();
    let _ = timeout(Duration::from_secs(5), async { while events.poll().await.is_ok() {} }).await;
    assert!(topics_until_marker(&watch, &mut watch_events, "1").await.is_empty());

    // The socket closes without DISCONNECT: the will.
    let (client, events) = with_will(broker.port(), "w-lost", None, None).await;
    drop(events);
    drop(client);
    assert_eq!(next_topic(&mut watch_events).await, "will/w-lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_will_waits_and_a_reconnect_cancels_it() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(dir.path());
    let (watch, mut watch_events) = watcher(broker.port(), "will-watcher-2").await;

    // Reconnecting within the delay cancels the will.
    let (client, events) = with_will(broker.port(), "w-cancel", Some(2), Some(60)).await;
    drop(events);
    drop(client);
    let (_client, mut events) = with_will(broker.port(), "w-cancel", Some(2), Some(60)).await;
    let keep = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    // Past the 2 s delay.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(topics_until_marker(&watch, &mut watch_events, "2").await.is_empty());
    keep.abort();

    // Not reconnecting: the will goes out once the delay has passed.
    let (client, events) = with_will(broker.port(), "w-delayed", Some(1), Some(60)).await;
    drop(events);
    drop(client);
    assert_eq!(next_topic(&mut watch_events).await, "will/w-delayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_will_survives_kill_9_and_goes_out_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = ServeProcess::start(dir.path());
    // Two sessions end with a 3 s will delay pending; one will come back in time.
    let mut gone_at = Vec::new();
    for id in ["w-restart", "w-restart-back"] {
        let (client, events) = with_will(broker.port(), id, Some(3), Some(60)).await;
        drop(events);
        drop(client);
        gone_at.push(std::time::Instant::now());
    }
    // The broker saves each session (with its will) durably when it sees the socket close;
    // the admin API shows it with no connection only after that.
    let grpc = broker.grpc_addr();
    tokio::task::spawn_blocking(move || {
        for client_id in ["w-restart", "w-restart-back"] {
            admin_cli::wait_for_session(grpc, client_id, "saved at the close", |session| session["members"] == 0);
        }
    })
    .await
    .expect("the admin API poll");
    broker.kill9();

    let mut broker = ServeProcess::start(dir.path());
    let (watch, mut watch_events) = watcher(broker.port(), "will-watcher-3").await;
    let (_back, mut back_events) = with_will(broker.port(), "w-restart-back", Some(3), Some(60)).await;
    let keep = tokio::spawn(async move { while back_events.poll().await.is_ok() {} });
    assert_eq!(next_topic(&mut watch_events).await, "will/w-restart");
    // Millisecond clocks: allow the rounding.
    assert!(gone_at[0].elapsed() >= Duration::from_millis(2990), "not before its delay");
    // Past the other will's delay: it was cancelled by the reconnect.
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(gone_at[1].elapsed())).await;
    assert!(topics_until_marker(&watch, &mut watch_events, "3").await.is_empty());
    keep.abort();

    // Sent once: another restart does not send it again.
    assert!(broker.stop().success());
    let broker = ServeProcess::start(dir.path());
    let (watch, mut watch_events) = watcher(broker.port(), "will-watcher-4").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(topics_until_marker(&watch, &mut watch_events, "4").await.is_empty());
}
