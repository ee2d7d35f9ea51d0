//! A live QoS 0 subscriber that stops reading its socket falls behind; with
//! `mqtt.qos0_max_lag = 1000` it skips ahead instead of lagging without bound. Every offset is
//! either delivered or counted as skipped on `/metrics`, and what it gets is in order.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/metrics.rs"]
mod metrics;
#[path = "common/raw.rs"]
mod raw;

use broker::ServeProcess;
use raw::{RawClient, publish};
use strata_frontend::codec::{Packet, ProtocolVersion, QoS};

const MESSAGES: u32 = 30_000;
const PAYLOAD: usize = 1024;
const MAX_LAG: u64 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_qos0_subscriber_skips_ahead_and_the_skip_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, format!("[mqtt]\nqos0_max_lag = {MAX_LAG}\n")).unwrap();
    let broker = ServeProcess::start_with(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap(), "--http", "127.0.0.1:0"],
    );
    let http = broker.http_addr();

    let (mut subscriber, _) = RawClient::connect(broker.addr, ProtocolVersion::V3_1_1, "lag-sub").await;
    subscriber.subscribe(1, &[("lag/#", QoS::AtMostOnce)], Default::default()).await;

    // The subscriber reads nothing while 30 MB go by: its socket buffers fill and its reader
    // stops far behind the high watermark.
    let (mut publisher, _) = RawClient::connect(broker.addr, ProtocolVersion::V3_1_1, "lag-pub").await;
    for chunk in (0..MESSAGES).collect::<Vec<_>>().chunks(500) {
        let packets: Vec<Packet> = chunk
            .iter()
            .map(|seq| {
                let mut payload = vec![0u8; PAYLOAD];
                payload[..4].copy_from_slice(&seq.to_be_bytes());
                Packet::Publish(publish("lag/t", QoS::AtMostOnce, None, payload))
            })
            .collect();
        publisher.send_all(&packets).await;
    }
    // QoS 1 after them, on the same partition: its PUBACK means all were appended.
    publisher.send(&Packet::Publish(publish("lag/end", QoS::AtLeastOnce, Some(1), "end"))).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));

    let mut received = Vec::new();
    loop {
        match subscriber.recv().await {
            Some(Packet::Publish(p)) if &p.topic[..] == "lag/end" => break,
            Some(Packet::Publish(p)) => received.push(u32::from_be_bytes(p.payload[..4].try_into().unwrap())),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(received.windows(2).all(|w| w[0] < w[1]), "in order, each once");
    assert!((received.len() as u32) < MESSAGES, "the stalled subscriber skipped some");

    let skips = metrics::counter(http, "strata_qos0_lag_skips_total");
    let skipped = metrics::counter(http, "strata_qos0_skipped_offsets_total");
    assert!(skips >= 1, "a skip is counted");
    // Offsets 0..MESSAGES carry lag/t; "lag/end" was delivered. Every one was delivered or skipped.
    assert_eq!(received.len() as u64 + skipped, u64::from(MESSAGES), "delivered + skipped = published");
}
