//! Issue 18: a compacted partition ends up as a few files near its live data size. 300 keys
//! (topics) get 100 updates each through a real broker, then `strata stream compact`. Before
//! the fix each full input segment became its own output, most of them nearly or wholly
//! empty, and the partition kept 20+ tiny files whose block overhead was most of what was
//! left (804 KiB to 224 KiB in the report). Now the pass merges its small outputs: the
//! partition's allocated size is at most a fifth of what it was, and it has few files. Every
//! key's latest value still reads back.

#[path = "common/admin_cli.rs"]
mod admin_cli;
#[path = "common/broker.rs"]
mod broker;
#[path = "common/raw.rs"]
mod raw;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use admin_cli::{json, strata, text};
use broker::ServeProcess;
use raw::{RawClient, publish};
use strata_frontend::codec::{Packet, ProtocolVersion, QoS};

const KEYS: usize = 300;
const UPDATES: usize = 100;
/// QoS 1 PUBLISHes in flight at once: under the broker's Receive Maximum (1024).
const WINDOW: usize = 1000;

const CONFIG: &str = "[[streams]]\nname = \"devices\"\ntopics = [\"devices/#\"]\ncleanup_policy = \"compact\"\n\
                      segment_bytes = 65536\n";

/// Allocated bytes (st_blocks * 512, as `du` counts) and the number of files under `dir`.
fn on_disk(dir: &Path) -> (u64, usize) {
    let (mut bytes, mut files) = (0, 0);
    for entry in std::fs::read_dir(dir).expect("list the partition") {
        let metadata = entry.expect("a directory entry").metadata().expect("file metadata");
        if metadata.is_file() {
            bytes += metadata.blocks() * 512;
            files += 1;
        }
    }
    (bytes, files)
}

fn topic(key: usize) -> String {
    format!("devices/d{key:03}/state")
}

fn value(key: usize, update: usize) -> String {
    format!("device {key} state {update}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue18_a_compacted_partition_is_a_few_files_near_its_live_size() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let data = dir.path().join("data");
    let mut broker = ServeProcess::start_with(&data, &["--config", config.to_str().unwrap(), "--grpc", "127.0.0.1:0"]);
    let grpc = broker.grpc_addr();

    // One key's updates after the other's, so that every segment holds some key's latest
    // value; WINDOW at a time, each window acknowledged (durable) before the next is sent.
    let (mut client, _) = RawClient::connect(broker.addr, ProtocolVersion::V5, "issue18-devices").await;
    let all: Vec<(usize, usize)> = (0..KEYS).flat_map(|k| (0..UPDATES).map(move |u| (k, u))).collect();
    for window in all.chunks(WINDOW) {
        let packets: Vec<Packet> = window
            .iter()
            .enumerate()
            .map(|(i, &(k, u))| Packet::Publish(publish(&topic(k), QoS::AtLeastOnce, Some(i as u16 + 1), value(k, u))))
            .collect();
        client.send_all(&packets).await;
        for _ in window {
            match client.recv().await {
                Some(Packet::PubAck(ack)) => assert!(!ack.reason_code.is_error(), "{ack:?}"),
                other => panic!("expected PUBACK, got {other:?}"),
            }
        }
    }
    client.send(&Packet::Disconnect(Default::default())).await;

    let partition = data.join("devices").join("0");
    let (before, files_before) = tokio::task::spawn_blocking(move || {
        let described = json(grpc, &["stream", "describe", "devices"]);
        assert_eq!(described["partitions"][0]["log_end"], (KEYS * UPDATES) as u64, "{described}");
        let before = on_disk(&partition);
        let compact = strata(grpc, &["stream", "compact", "devices"]);
        assert!(compact.status.success(), "stream compact: {}", text(&compact.stderr));
        before
    })
    .await
    .unwrap();
    let partition = data.join("devices").join("0");
    let (after, files_after) = on_disk(&partition);
    let report = format!("{before} bytes in {files_before} files before, {after} bytes in {files_after} after");
    assert!(files_before > 20, "the scenario makes many segments: {report}");
    assert!(after * 5 <= before, "at most a fifth of the allocated size is left: {report}");
    // The meta file, and each segment's log and two indexes: the active one and few others.
    assert!(files_after <= 10, "a few files: {report}");

    // Read back with the broker stopped: the latest value of every key is there.
    assert!(broker.stop().success(), "the broker stops cleanly");
    let mut latest: HashMap<String, String> = HashMap::new();
    strata_log::dump_partition(&partition, 0, &mut |batch| {
        for record in batch.records {
            let topic = record.headers.iter().find(|h| h.name == "mqtt.topic").expect("a topic header");
            let topic = String::from_utf8(topic.value.to_vec()).expect("a UTF-8 topic");
            latest.insert(topic, String::from_utf8(record.value.to_vec()).expect("a UTF-8 value"));
        }
        true
    })
    .expect("the compacted partition reads back");
    assert_eq!(latest.len(), KEYS, "every key is still there");
    for key in 0..KEYS {
        assert_eq!(latest.get(&topic(key)), Some(&value(key, UPDATES - 1)), "the latest value of {}", topic(key));
    }
}
