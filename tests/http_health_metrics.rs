//! `strata serve --http`: `/health` and `/ready` answer 200 with a JSON body once the broker
//! serves, and `/metrics` (Prometheus text) counts exactly the messages published and shows
//! the partition's offsets. The client is a few lines of HTTP/1.1 over a TcpStream.

#[path = "common/broker.rs"]
mod broker;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use broker::ServeProcess;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

const DEADLINE: Duration = Duration::from_secs(30);
const PUBLISHED: usize = 7;

/// GET `path`; returns the status code and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the HTTP endpoint");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a header block");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    (status, body.to_owned())
}

/// The value of the sample whose name and labels are exactly `series`.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{series} not in:\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics_follow_real_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start_with(dir.path(), &["--http", "127.0.0.1:0"]);
    let http = broker.http_addr();

    let (status, body) = tokio::task::spawn_blocking(move || get(http, "/health")).await.unwrap();
    assert_eq!((status, body.trim()), (200, "{\"status\":\"ok\"}"));
    let (status, body) = tokio::task::spawn_blocking(move || get(http, "/ready")).await.unwrap();
    assert_eq!((status, body.trim()), (200, "{\"ready\":true}"));

    let mut options = MqttOptions::new("metrics-pub", "127.0.0.1", broker.port());
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(options, 100);
    for i in 0..PUBLISHED {
        client.publish("metrics/t", QoS::AtLeastOnce, false, format!("message {i}")).await.unwrap();
    }
    tokio::time::timeout(DEADLINE, async {
        let mut acked = 0;
        while acked < PUBLISHED {
            if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.expect("connected") {
                acked += 1;
            }
        }
    })
    .await
    .expect("every PUBACK in time");

    let (status, metrics) = tokio::task::spawn_blocking(move || get(http, "/metrics")).await.unwrap();
    assert_eq!(status, 200, "{metrics}");
    assert_eq!(sample(&metrics, "strata_messages_received_total{qos=\"1\"}"), PUBLISHED as f64);
    assert_eq!(sample(&metrics, "strata_messages_received_total{qos=\"0\"}"), 0.0);
    let payload_bytes: usize = (0..PUBLISHED).map(|i| format!("message {i}").len()).sum();
    assert_eq!(sample(&metrics, "strata_received_payload_bytes_total{qos=\"1\"}"), payload_bytes as f64);
    assert_eq!(sample(&metrics, "strata_publish_ack_latency_seconds_count"), PUBLISHED as f64);
    assert_eq!(sample(&metrics, "strata_connections"), 1.0);
    assert_eq!(sample(&metrics, "strata_connections_total"), 1.0);
    let default = "{internal=\"false\",partition=\"0\",stream=\"default\"}";
    assert_eq!(sample(&metrics, &format!("strata_partition_log_start_offset{default}")), 0.0);
    assert_eq!(sample(&metrics, &format!("strata_partition_log_end_offset{default}")), PUBLISHED as f64);
    assert_eq!(sample(&metrics, &format!("strata_partition_segments{default}")), 1.0);
    assert!(sample(&metrics, &format!("strata_partition_size_bytes{default}")) > payload_bytes as f64);
    let retained = "{internal=\"true\",partition=\"0\",stream=\"$retained\"}";
    assert_eq!(sample(&metrics, &format!("strata_partition_log_end_offset{retained}")), 0.0);
    for name in [
        "# TYPE strata_log_fsync_duration_seconds histogram",
        "# TYPE strata_retention_deleted_bytes_total counter",
        "# TYPE strata_compaction_runs_total counter",
        "# TYPE strata_compaction_duration_seconds_total counter",
        "# TYPE strata_messages_sent_total counter",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
}
