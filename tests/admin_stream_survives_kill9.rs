//! A stream created and altered at runtime survives `kill -9`: after the restart it is still
//! listed with its topics and settings, its data is still there, and publishes still route
//! to it. Loopback only, every wait bounded.

#[path = "common/admin_cli.rs"]
mod admin_cli;
#[path = "common/broker.rs"]
mod broker;
#[path = "common/v4_session.rs"]
mod v4_session;

use admin_cli::{json, messages};
use broker::ServeProcess;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_stream_is_still_there_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = ServeProcess::start_with(dir.path(), &["--grpc", "127.0.0.1:0"]);
    let grpc = broker.grpc_addr();
    tokio::task::spawn_blocking(move || {
        json(grpc, &["stream", "create", "telemetry", "--partitions", "3", "--topics", "tele/#"]);
        json(grpc, &["stream", "alter", "telemetry", "--config", "retention_bytes=1048576"]);
    })
    .await
    .unwrap();
    v4_session::publish_all(broker.port(), "kill9-pub", "tele/a", 0..5).await;
    broker.kill9();

    let broker = ServeProcess::start_with(dir.path(), &["--grpc", "127.0.0.1:0"]);
    let grpc = broker.grpc_addr();
    let (list, described) = tokio::task::spawn_blocking(move || {
        (json(grpc, &["stream", "list"]), json(grpc, &["stream", "describe", "telemetry"]))
    })
    .await
    .unwrap();
    assert!(list["streams"].as_array().unwrap().iter().any(|s| s["name"] == "telemetry"), "{list}");
    assert_eq!(described["topics"], serde_json::json!(["tele/#"]), "{described}");
    assert_eq!(described["settings"]["retention_bytes"], "1048576", "{described}");
    assert_eq!(described["partitions"].as_array().unwrap().len(), 3, "{described}");
    assert_eq!(messages(&described), 5, "{described}");

    v4_session::publish_all(broker.port(), "kill9-pub", "tele/a", 5..6).await;
    let described =
        tokio::task::spawn_blocking(move || json(grpc, &["stream", "describe", "telemetry"])).await.unwrap();
    assert_eq!(messages(&described), 6, "{described}");
}
