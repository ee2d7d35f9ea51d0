//! Issue 22: the data directory and everything in it are created for the broker's user only:
//! directories 0700, files 0600, whatever the umask of the shell that started it.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/raw.rs"]
mod raw;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use broker::ServeProcess;
use raw::{RawClient, publish};
use strata_frontend::codec::{Packet, ProtocolVersion, QoS};

/// Every path at or below `dir` whose mode lets group or others in, with its mode.
fn open_to_others(dir: &Path) -> Vec<(String, u32)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let metadata = std::fs::symlink_metadata(&path).unwrap();
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            found.push((path.display().to_string(), mode));
        }
        if metadata.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|entry| entry.unwrap().path()));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_is_created_private() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let broker = ServeProcess::start(&data);
    let (mut client, _) = RawClient::connect(broker.addr, ProtocolVersion::V5, "private").await;
    client.send(&Packet::Publish(publish("private/t", QoS::AtLeastOnce, Some(1), "secret"))).await;
    match client.recv().await {
        Some(Packet::PubAck(ack)) => assert!(!ack.reason_code.is_error(), "{ack:?}"),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    // The PUBACK means the segment holding the message exists.
    let segments = std::fs::read_dir(data.join("default").join("0")).unwrap().count();
    assert!(segments > 0);
    assert_eq!(open_to_others(&data), Vec::<(String, u32)>::new());
}
