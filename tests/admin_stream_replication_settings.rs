//! The per-stream replication settings (issue 20) through the admin CLI on a node without
//! `[cluster]`: `stream create --config` takes them, `stream describe` shows them, `alter`
//! changes `acks`, `min_insync_replicas` and `ack_timeout` but refuses a new replica set
//! naming the key, and they survive `kill -9` (kept in `$streams` as a version 2
//! definition). On a single node they change nothing else. A config file's `[log]` and
//! `[[streams]]` give them too. Loopback only.

#[path = "common/admin_cli.rs"]
mod admin_cli;
#[path = "common/broker.rs"]
mod broker;

use admin_cli::{json, strata, text};
use broker::ServeProcess;

#[test]
fn replication_settings_are_kept_shown_and_guarded_by_alter() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = ServeProcess::start_with(dir.path(), &["--grpc", "127.0.0.1:0"]);
    let grpc = broker.grpc_addr();
    let created = json(
        grpc,
        &[
            "stream",
            "create",
            "placed",
            "--partitions",
            "2",
            "--config",
            "replication_factor=3",
            "--config",
            "acks=leader",
            "--config",
            "ack_timeout=2s",
            "--config",
            "replica_assignment=1,2,3;2,3,1",
        ],
    );
    let settings = &created["settings"];
    assert_eq!(settings["replication_factor"], "3", "{created}");
    assert_eq!(settings["acks"], "leader", "{created}");
    assert_eq!(settings["ack_timeout"], "2000", "{created}");
    assert_eq!(settings["replica_assignment"], "1,2,3;2,3,1", "{created}");
    assert!(settings.get("min_insync_replicas").is_none(), "{created}");

    let altered =
        json(grpc, &["stream", "alter", "placed", "--config", "acks=quorum", "--config", "min_insync_replicas=3"]);
    assert_eq!(altered["settings"]["acks"], "quorum", "{altered}");
    assert_eq!(altered["settings"]["min_insync_replicas"], "3", "{altered}");

    let refused: &[(&[&str], &str)] = &[
        (&["--config", "replication_factor=4", "--config", "replica_assignment=1,2,3,4;2,3,4,1"], "replication_factor"),
        (&["--config", "replica_assignment=3,2,1;2,3,1"], "replica_assignment"),
        (&["--partitions", "3"], "replica_assignment"),
        (&["--config", "min_insync_replicas=4"], "min_insync_replicas"),
        (&["--config", "acks=all"], "acks"),
    ];
    for (extra, key) in refused {
        let mut args = vec!["stream", "alter", "placed"];
        args.extend_from_slice(extra);
        let output = strata(grpc, &args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        let stderr = text(&output.stderr);
        assert!(stderr.starts_with("error: ") && stderr.contains(key), "{args:?}: {stderr}");
        if key.starts_with("replica") {
            assert!(stderr.contains("membership change") || stderr.contains("partitions"), "{args:?}: {stderr}");
        }
    }
    // The assignment given again unchanged, and grown with the partitions, is accepted.
    let grown = json(
        grpc,
        &["stream", "alter", "placed", "--partitions", "3", "--config", "replica_assignment=1,2,3;2,3,1;3,1,2"],
    );
    assert_eq!(grown["settings"]["replica_assignment"], "1,2,3;2,3,1;3,1,2", "{grown}");
    assert_eq!(grown["partitions"].as_array().map(Vec::len), Some(3), "{grown}");

    broker.kill9();
    let broker = ServeProcess::start_with(dir.path(), &["--grpc", "127.0.0.1:0"]);
    let described = json(broker.grpc_addr(), &["stream", "describe", "placed"]);
    let settings = &described["settings"];
    assert_eq!(settings["replication_factor"], "3", "{described}");
    assert_eq!(settings["acks"], "quorum", "{described}");
    assert_eq!(settings["min_insync_replicas"], "3", "{described}");
    assert_eq!(settings["ack_timeout"], "2000", "{described}");
    assert_eq!(settings["replica_assignment"], "1,2,3;2,3,1;3,1,2", "{described}");
    // A stream without replication settings shows the defaults.
    let default = json(broker.grpc_addr(), &["stream", "describe", "default"]);
    assert_eq!(default["settings"]["acks"], "quorum", "{default}");
    assert_eq!(default["settings"]["ack_timeout"], "5000", "{default}");
    assert!(default["settings"].get("replication_factor").is_none(), "{default}");
}

#[test]
fn the_config_file_gives_replication_settings_and_log_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(
        &config,
        "[log]\nacks = \"leader\"\nack_timeout = \"750ms\"\n\
         [[streams]]\nname = \"placed\"\ntopics = [\"placed/#\"]\npartitions = 2\nreplication_factor = 2\n\
         acks = \"quorum\"\nreplica_assignment = [[2, 1], [1, 2]]\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let broker = ServeProcess::start_with(&data, &["--config", config.to_str().unwrap(), "--grpc", "127.0.0.1:0"]);
    let grpc = broker.grpc_addr();
    let placed = json(grpc, &["stream", "describe", "placed"]);
    let settings = &placed["settings"];
    assert_eq!(settings["replication_factor"], "2", "{placed}");
    assert_eq!(settings["acks"], "quorum", "{placed}");
    assert_eq!(settings["ack_timeout"], "750", "{placed}");
    assert_eq!(settings["replica_assignment"], "2,1;1,2", "{placed}");
    // `default` and a stream created now start from [log].
    let default = json(grpc, &["stream", "describe", "default"]);
    assert_eq!((&default["settings"]["acks"], &default["settings"]["ack_timeout"]), (&"leader".into(), &"750".into()));
    let created = json(grpc, &["stream", "create", "later", "--config", "min_insync_replicas=1"]);
    assert_eq!(created["settings"]["acks"], "leader", "{created}");
    assert_eq!(created["settings"]["min_insync_replicas"], "1", "{created}");
    assert!(created["settings"].get("replica_assignment").is_none(), "{created}");
}
