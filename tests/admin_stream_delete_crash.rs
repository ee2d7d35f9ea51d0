//! `stream delete` writes its `$streams` tombstone before it removes the directory, so a
//! crash in between leaves a directory the next start removes: the stream stays deleted,
//! and the name can be created again, empty. The crash is staged on disk: the stream's files
//! are copied aside before the delete and put back after a `kill -9`, which is the state a
//! crash right after the tombstone leaves. Loopback only, every wait bounded.

#[path = "common/admin_cli.rs"]
mod admin_cli;
#[path = "common/broker.rs"]
mod broker;
#[path = "common/files.rs"]
mod files;
#[path = "common/v4_session.rs"]
mod v4_session;

use admin_cli::{json, messages};
use broker::ServeProcess;
use files::copy_dir;

fn listed(list: &serde_json::Value, name: &str) -> bool {
    list["streams"].as_array().unwrap().iter().any(|s| s["name"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_cut_short_by_a_crash_is_finished_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let aside = dir.path().join("aside");
    let mut broker = ServeProcess::start_with(&data, &["--grpc", "127.0.0.1:0"]);
    let grpc = broker.grpc_addr();
    tokio::task::spawn_blocking(move || json(grpc, &["stream", "create", "ghost", "--topics", "ghost/#"]))
        .await
        .unwrap();
    v4_session::publish_all(broker.port(), "ghost-pub", "ghost/a", 0..3).await;
    copy_dir(&data.join("ghost"), &aside);
    tokio::task::spawn_blocking(move || json(grpc, &["stream", "delete", "ghost"])).await.unwrap();
    assert!(!data.join("ghost").exists(), "a completed delete removes the directory");
    broker.kill9();
    // What a crash after the tombstone and before the removal leaves on disk.
    copy_dir(&aside, &data.join("ghost"));

    let broker = ServeProcess::start_with(&data, &["--grpc", "127.0.0.1:0"]);
    let grpc = broker.grpc_addr();
    let list = tokio::task::spawn_blocking(move || json(grpc, &["stream", "list"])).await.unwrap();
    assert!(!listed(&list, "ghost"), "the stream stays deleted: {list}");
    assert!(!data.join("ghost").exists(), "the start finished the delete");
    let created = tokio::task::spawn_blocking(move || {
        json(grpc, &["stream", "create", "ghost", "--topics", "ghost/#"]);
        json(grpc, &["stream", "describe", "ghost"])
    })
    .await
    .unwrap();
    assert_eq!(messages(&created), 0, "created again, empty: {created}");
}
