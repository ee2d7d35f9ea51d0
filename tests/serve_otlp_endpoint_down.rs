//! With `[telemetry] otlp_endpoint` pointing at a port where no collector listens, the broker
//! still starts, serves publishes, and stops on SIGTERM with exit 0 without waiting on the
//! exporter for long.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/v4_session.rs"]
mod v4_session;

use std::time::{Duration, Instant};

use broker::ServeProcess;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_holds_up_neither_serving_nor_shutdown() {
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, format!("[telemetry]\notlp_endpoint = \"http://127.0.0.1:{closed_port}\"\n")).unwrap();
    let data = dir.path().join("data");
    let mut broker = ServeProcess::start_with(&data, &["--config", config.to_str().unwrap()]);

    v4_session::publish_all(broker.port(), "otlp-down", "telemetry/t", 0..5).await;

    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || broker.stop()).await.unwrap();
    assert!(status.success(), "strata serve exited with {status:?}");
    // The export and shutdown timeouts are 3 s each; far more would mean shutdown blocks.
    assert!(started.elapsed() < Duration::from_secs(15), "stopping took {:?}", started.elapsed());
}
