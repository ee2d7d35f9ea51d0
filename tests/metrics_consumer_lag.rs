//! `/metrics` shows consumer lag: the persistent sessions' `strata_session_lag_messages` (summed
//! per partition; client ids are never labels, issue 22) grows with every message published
//! while the one session here is offline, and falls to 0 once it has reconnected and caught up. Scraped over HTTP; loopback only, every wait bounded.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/metrics.rs"]
mod metrics;
#[path = "common/v4_session.rs"]
mod v4_session;

use std::net::SocketAddr;
use std::time::Duration;

use broker::ServeProcess;
use metrics::scrape;
use rumqttc::QoS;
use tokio::time::timeout;
use v4_session::{DEADLINE, client, connack, next_publish};

const SERIES: &str = "strata_session_lag_messages{partition=\"0\",stream=\"default\"}";

/// Waits until `series` reads `value`.
async fn wait_for(addr: SocketAddr, value: f64) {
    let mut last = None;
    let reached = timeout(DEADLINE, async {
        loop {
            last = tokio::task::spawn_blocking(move || scrape(addr, SERIES)).await.unwrap();
            if last == Some(value) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(reached.is_ok(), "{SERIES} stayed at {last:?}, expected {value}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_grows_while_a_session_is_offline_and_falls_to_zero_once_it_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start_with(dir.path(), &["--http", "127.0.0.1:0"]);
    let http = broker.http_addr();

    let (subscriber, mut events) = client("lag-sub", broker.port(), false);
    timeout(DEADLINE, connack(&mut events)).await.expect("CONNACK");
    subscriber.subscribe("lag/#", QoS::AtLeastOnce).await.unwrap();
    subscriber.disconnect().await.unwrap();
    let _ = timeout(DEADLINE, async { while events.poll().await.is_ok() {} }).await;
    wait_for(http, 0.0).await;

    v4_session::publish_all(broker.port(), "lag-pub", "lag/x", 0..3).await;
    wait_for(http, 3.0).await;
    v4_session::publish_all(broker.port(), "lag-pub", "lag/x", 3..5).await;
    wait_for(http, 5.0).await;

    let (subscriber, mut events) = client("lag-sub", broker.port(), false);
    assert!(timeout(DEADLINE, connack(&mut events)).await.expect("CONNACK"), "the session was kept");
    let caught_up = timeout(DEADLINE, async move {
        for _ in 0..5 {
            let publish = next_publish(&mut events).await;
            subscriber.ack(&publish).await.unwrap();
        }
        // Keep the connection served while the commit goes out.
        loop {
            if events.poll().await.is_err() {
                break;
            }
        }
    });
    let polling = tokio::spawn(caught_up);
    wait_for(http, 0.0).await;
    polling.abort();
}
