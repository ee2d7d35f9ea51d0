//! `stream create` opens the partitions before it records the stream in `$streams`, so a
//! crash in between leaves a directory with no definition. When that directory holds no
//! record, creating the stream again clears it and succeeds; when it holds records, the
//! create is refused, names the directory, and leaves every file as it was. The crash is
//! staged on disk: a stream's directory from one node is copied into the data directory of
//! another node that never defined it. Loopback only, every wait bounded.

#[path = "common/admin_cli.rs"]
mod admin_cli;
#[path = "common/broker.rs"]
mod broker;
#[path = "common/files.rs"]
mod files;
#[path = "common/v4_session.rs"]
mod v4_session;

use std::path::{Path, PathBuf};

use admin_cli::{json, messages, strata, text};
use broker::ServeProcess;
use files::copy_dir;

/// Creates stream `ghost` on a node over `data`, publishes `published` messages to it, and
/// kills the node with SIGKILL.
async fn stage_ghost(data: &Path, published: usize) {
    let mut broker = ServeProcess::start_with(data, &["--grpc", "127.0.0.1:0"]);
    let grpc = broker.grpc_addr();
    tokio::task::spawn_blocking(move || json(grpc, &["stream", "create", "ghost", "--topics", "ghost/#"]))
        .await
        .unwrap();
    if published > 0 {
        v4_session::publish_all(broker.port(), "ghost-pub", "ghost/a", 0..published).await;
    }
    broker.kill9();
}

/// A data directory, in a temporary directory, holding `ghost`'s directory (with
/// `published` messages in it) from another node and no definition of `ghost`: what a crash
/// after opening the partitions and before the `$streams` record leaves.
async fn data_dir_with_undefined_ghost(published: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = dir.path().join("elsewhere");
    let data = dir.path().join("data");
    stage_ghost(&elsewhere, published).await;
    let mut broker = ServeProcess::start_with(&data, &["--grpc", "127.0.0.1:0"]);
    broker.kill9();
    copy_dir(&elsewhere.join("ghost"), &data.join("ghost"));
    (dir, data)
}

fn segment_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for partition in std::fs::read_dir(dir).unwrap() {
        let partition = partition.unwrap().path();
        for file in std::fs::read_dir(&partition).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_some_and(|e| e == "log") {
                files.push((path.display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_cut_short_before_its_record_can_be_made_again() {
    let (_dir, data) = data_dir_with_undefined_ghost(0).await;
    let broker = ServeProcess::start_with(&data, &["--grpc", "127.0.0.1:0"]);
    let grpc = broker.grpc_addr();
    let created = tokio::task::spawn_blocking(move || {
        json(grpc, &["stream", "create", "ghost", "--topics", "ghost/#", "--partitions", "2"]);
        json(grpc, &["stream", "describe", "ghost"])
    })
    .await
    .unwrap();
    assert_eq!(created["partitions"].as_array().unwrap().len(), 2, "created as asked: {created}");
    assert_eq!(messages(&created), 0, "created empty: {created}");
    v4_session::publish_all(broker.port(), "ghost-pub", "ghost/a", 0..2).await;
    let described = tokio::task::spawn_blocking(move || json(grpc, &["stream", "describe", "ghost"])).await.unwrap();
    assert_eq!(messages(&described), 2, "the new stream takes publishes: {described}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_holding_records_is_not_cleared_by_a_create() {
    let (_dir, data) = data_dir_with_undefined_ghost(3).await;
    let before = segment_bytes(&data.join("ghost"));
    assert!(before.iter().any(|(_, bytes)| bytes.iter().any(|&b| b != 0)), "the staged directory holds records");

    let broker = ServeProcess::start_with(&data, &["--grpc", "127.0.0.1:0"]);
    let grpc = broker.grpc_addr();
    let output =
        tokio::task::spawn_blocking(move || strata(grpc, &["stream", "create", "ghost", "--topics", "ghost/#"]))
            .await
            .unwrap();
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "a create over records is refused");
    let ghost_dir = data.join("ghost");
    assert!(stderr.contains(&ghost_dir.display().to_string()), "the refusal names the directory: {stderr}");
    assert!(stderr.contains("holds data"), "the refusal says why: {stderr}");
    assert_eq!(segment_bytes(&ghost_dir), before, "every segment is left as it was");
    let list = tokio::task::spawn_blocking(move || json(grpc, &["stream", "list"])).await.unwrap();
    assert!(!list["streams"].as_array().unwrap().iter().any(|s| s["name"] == "ghost"), "no stream defined: {list}");
}
