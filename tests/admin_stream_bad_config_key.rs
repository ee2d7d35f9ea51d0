//! `strata stream create` with a bad `--config` key or value, or a bad partition count or
//! topic filter: exit 2, the message names the key, and nothing is created (no stream, no
//! directory). Loopback only.

#[path = "common/admin_cli.rs"]
mod admin_cli;
#[path = "common/broker.rs"]
mod broker;

use admin_cli::{json, strata, text};
use broker::ServeProcess;

#[test]
fn a_bad_setting_is_named_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start_with(dir.path(), &["--grpc", "127.0.0.1:0"]);
    let grpc = broker.grpc_addr();
    let cases: &[(&[&str], &str)] = &[
        (&["--config", "retention_msx=5"], "retention_msx"),
        (&["--config", "segment_bytes=10"], "segment_bytes"),
        (&["--config", "retention_ms=-1"], "retention_ms"),
        (&["--config", "cleanup_policy=keep"], "cleanup_policy"),
        (&["--config", "retention_ms"], "retention_ms"),
        (&["--partitions", "0"], "partitions"),
        (&["--topics", "a/#/b"], "topics[0]"),
    ];
    for (extra, key) in cases {
        let mut args = vec!["stream", "create", "bad"];
        args.extend_from_slice(extra);
        let output = strata(grpc, &args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        let stderr = text(&output.stderr);
        assert!(stderr.starts_with("error: ") && stderr.contains(key), "{args:?}: {stderr}");
        assert!(!dir.path().join("bad").exists(), "{args:?} left a directory");
    }
    let bad_name = strata(grpc, &["stream", "create", "a+b"]);
    assert!(text(&bad_name.stderr).contains("name"), "{}", text(&bad_name.stderr));
    let list = json(grpc, &["stream", "list"]);
    let names: Vec<&str> = list["streams"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["default"], "{list}");
    // The same settings, valid, are accepted: the failures were the values.
    let created = json(grpc, &["stream", "create", "good", "--config", "segment_bytes=1048576"]);
    assert_eq!(created["settings"]["segment_bytes"], "1048576", "{created}");
}
