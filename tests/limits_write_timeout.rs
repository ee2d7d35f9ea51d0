//! Issue 22: `mqtt.write_timeout` closes the connection of a subscriber that stops reading:
//! once its socket buffers are full, a write that makes no progress for that long ends it.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/metrics.rs"]
mod metrics;
#[path = "common/raw.rs"]
mod raw;

use std::time::{Duration, Instant};

use broker::ServeProcess;
use raw::RawClient;
use strata_frontend::codec::{Packet, Properties, ProtocolVersion, QoS, ReasonCode};

/// `strata_connections` now.
async fn connections(http: std::net::SocketAddr) -> f64 {
    tokio::task::spawn_blocking(move || metrics::scrape(http, "strata_connections")).await.unwrap().expect("gauge")
}

/// Issue 22: with `write_timeout = "1s"`, a raw TCP subscriber that never reads is closed
/// while a publisher sends it 200 KiB messages; the publisher stays connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_write_timeout_closes_a_subscriber_that_stops_reading() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, "[mqtt]\nwrite_timeout = \"1s\"\n").unwrap();
    let broker = ServeProcess::start_with(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    let http = broker.http_addr();
    let (mut stalled, _) = RawClient::connect(broker.addr, ProtocolVersion::V5, "stalled").await;
    // QoS 0: no in-flight window stops the broker writing; only the full socket does.
    assert_eq!(stalled.subscribe(1, &[("w/#", QoS::AtMostOnce)], Properties::default()).await, [ReasonCode::Success]);
    // From here on `stalled` reads nothing.
    let (mut publisher, _) = RawClient::connect(broker.addr, ProtocolVersion::V5, "pub").await;
    // Counted just after its CONNACK is written: wait until both are.
    let mut both = false;
    for _ in 0..100 {
        both = connections(http).await == 2.0;
        if both {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(both, "two connections counted");
    let started = Instant::now();
    let mut closed = false;
    // At most 60 MiB, far beyond both sockets' buffers, then wait: the broker's write is stuck.
    for n in 0..300u16 {
        let publish = raw::publish("w/big", QoS::AtLeastOnce, Some(n + 1), vec![7u8; 200 << 10]);
        publisher.send(&Packet::Publish(publish)).await;
        match publisher.recv().await {
            Some(Packet::PubAck(ack)) => assert_eq!(ack.reason_code, ReasonCode::Success),
            other => panic!("expected PUBACK, got {other:?}"),
        }
        if n % 10 == 9 && connections(http).await == 1.0 {
            closed = true;
            break;
        }
    }
    for _ in 0..300 {
        if closed || started.elapsed() > Duration::from_secs(30) {
            break;
        }
        closed = connections(http).await == 1.0;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(closed, "the subscriber that stopped reading is still connected after {:?}", started.elapsed());
    // The publisher, which reads, is not touched.
    publisher.send(&Packet::PingReq).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PingResp)));
    drop(stalled);
}
