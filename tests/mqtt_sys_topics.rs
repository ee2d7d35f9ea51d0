//! `$SYS/broker/...` topics: a subscriber of `$SYS/broker/version` gets the value at once
//! (retained-style) and `$SYS/#` gets refreshes on the interval; a `#` subscriber never sees
//! `$SYS`, and nothing of `$SYS` is written to the stream's log.

#[path = "common/broker.rs"]
mod broker;

use std::time::Duration;

use broker::ServeProcess;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

const DEADLINE: Duration = Duration::from_secs(30);

fn client(id: &str, port: u16) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    AsyncClient::new(options, 100)
}

async fn wait_suback(events: &mut EventLoop) {
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.expect("connected") {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_topics_reach_sys_subscribers_only() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, "[mqtt]\nsys_interval_secs = 1\n").unwrap();
    let data = dir.path().join("data");
    let mut broker = ServeProcess::start_with(&data, &["--config", config.to_str().unwrap()]);

    let (everything, mut everything_events) = client("everything", broker.port());
    everything.subscribe("#", QoS::AtMostOnce).await.unwrap();
    tokio::time::timeout(DEADLINE, wait_suback(&mut everything_events)).await.expect("SUBACK");

    let (version, mut version_events) = client("version", broker.port());
    version.subscribe("$SYS/broker/version", QoS::AtMostOnce).await.unwrap();
    let first = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Event::Incoming(Packet::Publish(publish)) = version_events.poll().await.expect("connected") {
                return publish;
            }
        }
    })
    .await
    .expect("the version at once");
    assert_eq!(first.topic, "$SYS/broker/version");
    assert!(first.retain, "the latest value is sent like a retained message");
    assert!(String::from_utf8_lossy(&first.payload).starts_with("strata version "), "{first:?}");

    // Wait for a refresh on the interval: a live, non-retained `$SYS/broker/uptime`.
    let (all_sys, mut sys_events) = client("all-sys", broker.port());
    all_sys.subscribe("$SYS/#", QoS::AtMostOnce).await.unwrap();
    tokio::time::timeout(DEADLINE, async {
        loop {
            if let Event::Incoming(Packet::Publish(publish)) = sys_events.poll().await.expect("connected")
                && publish.topic == "$SYS/broker/uptime"
                && !publish.retain
            {
                return;
            }
        }
    })
    .await
    .expect("a refresh within the interval");

    // The `#` subscriber sees a user message, and saw no `$SYS` before it.
    let (publisher, mut publisher_events) = client("publisher", broker.port());
    publisher.publish("user/t", QoS::AtLeastOnce, false, "hello").await.unwrap();
    tokio::spawn(async move { while publisher_events.poll().await.is_ok() {} });
    let topics = tokio::time::timeout(DEADLINE, async {
        let mut topics = Vec::new();
        loop {
            if let Event::Incoming(Packet::Publish(publish)) = everything_events.poll().await.expect("connected") {
                let topic = publish.topic.clone();
                topics.push(topic.clone());
                if topic == "user/t" {
                    return topics;
                }
            }
        }
    })
    .await
    .expect("the user message");
    assert_eq!(topics, vec!["user/t".to_owned()]);

    assert!(broker.stop().success());
    let log = strata_log::Log::open(data.join("default").join("0"), strata_log::LogConfig::default()).unwrap();
    assert_eq!(log.offsets().log_end, 1, "only the user message is in the log");
    log.close().unwrap();
}
