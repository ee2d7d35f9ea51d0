//! `strata serve --print-config` prints the effective configuration (file, flags, defaults)
//! and exits without starting; `strata config check` accepts what it prints, and a broker
//! started with the printed file runs with the same values.

#[path = "common/broker.rs"]
mod broker;
mod common;

use std::path::Path;

use broker::ServeProcess;
use common::{code, stderr, stdout, strata};

const CONFIG: &str = "\
data_dir = \"ignored: --data-dir wins\"

[mqtt]
max_packet_size = \"256KiB\"
sys_interval_secs = \"1m\"
max_connections = 50

[compaction]
retention_check_interval_ms = \"5m\"
cleaner_threads = 2
cleaner_throttle_bytes_per_sec = \"unlimited\"
cleaner_buffer_bytes = \"1MiB\"

[telemetry]
service_name = \"strata-test\"

[log]
segment_bytes = \"64MiB\"
retention_ms = \"7d\"
flush = \"always\"
ack_timeout = \"2s\"

[[streams]]
name = \"orders\"
topics = [\"orders/#\"]
partitions = 3
cleanup_policy = \"compact,delete\"
compaction_key = \"order_id\"
flush = \"interval\"
flush_interval_ms = \"250ms\"
retention_bytes = \"10GB\"
replication_factor = 3
acks = \"leader\"
min_insync_replicas = 2
replica_assignment = [[1, 2, 3], [2, 3, 1], [3, 1, 2]]
";

fn print_config(config: &Path, data: &Path) -> String {
    let output = strata(&[
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--mqtt",
        "127.0.0.1:0",
        "--print-config",
    ]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    stdout(&output)
}

#[test]
fn the_printed_config_checks_and_serves_with_the_same_values() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let original = dir.path().join("strata.toml");
    std::fs::write(&original, CONFIG).unwrap();
    let printed = print_config(&original, &data);
    // It did not start: nothing was created.
    assert!(!data.exists());
    // The values of the file, the flags and the defaults, with units resolved.
    for line in [
        format!("data_dir = \"{}\"", data.display()),
        "listen = \"127.0.0.1:0\"".to_owned(),
        "max_packet_size = 262144".to_owned(),
        "sys_interval_secs = 60".to_owned(),
        "max_connections = 50".to_owned(),
        "retention_check_interval_ms = 300000".to_owned(),
        "cleaner_throttle_bytes_per_sec = \"unlimited\"".to_owned(),
        "cleaner_buffer_bytes = 1048576".to_owned(),
        "service_name = \"strata-test\"".to_owned(),
        "segment_bytes = 67108864".to_owned(),
        "retention_ms = 604800000".to_owned(),
        "retention_bytes = 10000000000".to_owned(),
        "flush_interval_ms = 250".to_owned(),
        "ack_timeout = 2000".to_owned(),
        "replication_factor = 3".to_owned(),
        "acks = \"leader\"".to_owned(),
        "min_insync_replicas = 2".to_owned(),
        "replica_assignment = \"1,2,3;2,3,1;3,1,2\"".to_owned(),
        "name = \"default\"".to_owned(),
        "receive_maximum = 1024".to_owned(),
    ] {
        assert!(printed.lines().any(|l| l == line), "{line:?} missing from\n{printed}");
    }

    let copy = dir.path().join("printed.toml");
    std::fs::write(&copy, &printed).unwrap();
    let checked = strata(&["config", "check", copy.to_str().unwrap()]);
    assert_eq!(code(&checked), 0, "{}", stderr(&checked));

    // Read back, the printed file gives the same effective configuration, key for key.
    assert_eq!(print_config(&copy, &data), printed);

    // And serve runs with it.
    let mut broker = ServeProcess::start_with(&data, &["--config", copy.to_str().unwrap()]);
    assert!(data.join("orders").join("2").is_dir(), "the three partitions of orders");
    assert!(broker.stop().success());
}
