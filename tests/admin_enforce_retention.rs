//! `strata stream enforce-retention NAME` runs retention on that stream only: two streams with
//! the same small segments and a 10-message limit, the background pass held off, and only the
//! named one loses its old segments.

#[path = "common/admin_cli.rs"]
mod admin_cli;
#[path = "common/broker.rs"]
mod broker;
#[path = "common/v4_session.rs"]
mod v4_session;

use admin_cli::json;
use broker::ServeProcess;

const CONFIG: &str = "[compaction]\nretention_check_interval_ms = \"1h\"\n\n\
[log]\nsegment_bytes = \"1KiB\"\nindex_interval_bytes = 256\nretention_messages = 10\n\n\
[[streams]]\nname = \"trim\"\ntopics = [\"trim/#\"]\n\n\
[[streams]]\nname = \"keep\"\ntopics = [\"keep/#\"]\n";

fn log_start(stream: &serde_json::Value) -> u64 {
    stream["partitions"][0]["log_start"].as_u64().unwrap_or_else(|| panic!("log_start in {stream}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_runs_on_the_named_stream_only() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let broker = ServeProcess::start_with(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap(), "--grpc", "127.0.0.1:0"],
    );
    let grpc = broker.grpc_addr();
    for topic in ["trim/t", "keep/t"] {
        // About 100 bytes each: many 1 KiB segments.
        let payloads = (0..100).map(|i| format!("{i:0>90}")).collect();
        v4_session::publish_and_wait(broker.port(), "retention-pub", topic, payloads).await;
    }
    let describe = |name: &'static str| tokio::task::spawn_blocking(move || json(grpc, &["stream", "describe", name]));
    assert_eq!(log_start(&describe("trim").await.unwrap()), 0);
    assert_eq!(log_start(&describe("keep").await.unwrap()), 0);

    let outcome =
        tokio::task::spawn_blocking(move || json(grpc, &["stream", "enforce-retention", "trim"])).await.unwrap();
    assert!(outcome["segments_deleted"].as_u64().is_some_and(|n| n > 0), "{outcome}");
    let trimmed = log_start(&describe("trim").await.unwrap());
    assert!(trimmed > 0 && trimmed <= 90, "retention keeps at least the last 10 messages: log_start {trimmed}");
    assert_eq!(log_start(&describe("keep").await.unwrap()), 0, "the other stream is untouched");
}
