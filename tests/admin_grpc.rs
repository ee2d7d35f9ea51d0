//! `strata serve --grpc` and the CLI that calls it: after real QoS 1 publishes, the real
//! `strata stream list` and `strata stream describe default --output json` show the stream and
//! its offsets; an unknown stream or group, and a node that is not there, exit 2 with a
//! message naming what is wrong. Loopback only, every wait bounded.

#[path = "common/admin_cli.rs"]
mod admin_cli;
#[path = "common/broker.rs"]
mod broker;
#[path = "common/v4_session.rs"]
mod v4_session;

use std::time::Duration;

use admin_cli::{strata, text};
use broker::ServeProcess;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

const DEADLINE: Duration = Duration::from_secs(30);
const PUBLISHED: u64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_list_and_describe_show_the_published_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start_with(dir.path(), &["--grpc", "127.0.0.1:0"]);
    let grpc = broker.grpc_addr();

    let payloads = (0..PUBLISHED).map(|i| format!("message {i}")).collect();
    v4_session::publish_and_wait(broker.port(), "admin-pub", "admin/t", payloads).await;

    // A consumer group with one member: `$share/admin-group/admin/#`.
    let mut options = MqttOptions::new("admin-member", "127.0.0.1", broker.port());
    options.set_keep_alive(Duration::from_secs(30));
    let (member, mut member_events) = AsyncClient::new(options, 100);
    member.subscribe("$share/admin-group/admin/#", QoS::AtLeastOnce).await.unwrap();
    tokio::time::timeout(DEADLINE, async {
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = member_events.poll().await.expect("member connected") {
                break;
            }
        }
    })
    .await
    .expect("SUBACK in time");
    // Keep the member's connection polled while the CLI runs.
    let member_task = tokio::spawn(async move { while member_events.poll().await.is_ok() {} });

    let checks = tokio::task::spawn_blocking(move || {
        let list = strata(grpc, &["stream", "list"]);
        assert!(list.status.success(), "stream list: {}", text(&list.stderr));
        let stdout = text(&list.stdout);
        let default_row = stdout.lines().find(|l| l.starts_with("default ")).unwrap_or_else(|| panic!("{stdout}"));
        let cells: Vec<&str> = default_row.split_whitespace().collect();
        // STREAM PARTITIONS POLICY MESSAGES ...
        assert_eq!(&cells[..4], &["default", "1", "delete", &PUBLISHED.to_string()], "{stdout}");

        let describe = strata(grpc, &["stream", "describe", "default", "--output", "json"]);
        assert!(describe.status.success(), "stream describe: {}", text(&describe.stderr));
        let json: serde_json::Value = serde_json::from_slice(&describe.stdout).expect("JSON from --output json");
        assert_eq!(json["name"], "default");
        let partition = &json["partitions"][0];
        assert_eq!(partition["log_end"], PUBLISHED, "{json}");
        assert_eq!(partition["high_watermark"], PUBLISHED, "{json}");
        assert_eq!(partition["log_start"], 0, "{json}");
        assert!(partition["size_bytes"].as_u64().unwrap() > 0, "{json}");
        assert!(partition["segment_count"].as_u64().unwrap() >= 1, "{json}");

        let unknown = strata(grpc, &["stream", "describe", "no-such-stream"]);
        assert_eq!(unknown.status.code(), Some(2), "{unknown:?}");
        assert!(text(&unknown.stderr).contains("no-such-stream"), "{}", text(&unknown.stderr));

        let group = strata(grpc, &["group", "describe", "admin-group", "--output", "json"]);
        assert!(group.status.success(), "group describe: {}", text(&group.stderr));
        let json: serde_json::Value = serde_json::from_slice(&group.stdout).expect("JSON from --output json");
        assert_eq!(
            (&json["name"], &json["filter"], &json["members"]),
            (&"admin-group".into(), &"admin/#".into(), &1.into())
        );
        let default =
            json["partitions"].as_array().unwrap().iter().find(|p| p["stream"] == "default").expect("default");
        // The group started at the end of the log: nothing to consume, no lag.
        assert_eq!(
            (&default["committed"], &default["log_end"], &default["lag"]),
            (&PUBLISHED.into(), &PUBLISHED.into(), &0.into()),
            "{json}"
        );
        let list = strata(grpc, &["group", "list"]);
        assert!(text(&list.stdout).lines().any(|l| l.starts_with("admin-group ")), "{}", text(&list.stdout));

        let unknown = strata(grpc, &["group", "describe", "no-such-group"]);
        assert_eq!(unknown.status.code(), Some(2), "{unknown:?}");
        assert!(text(&unknown.stderr).contains("no-such-group"), "{}", text(&unknown.stderr));

        // A delete-policy stream is not compacted on demand: refused, exit 2, reason given.
        let compact = strata(grpc, &["stream", "compact", "default"]);
        assert_eq!(compact.status.code(), Some(2), "{compact:?}");
        assert!(text(&compact.stderr).contains("cleanup_policy"), "{}", text(&compact.stderr));
    });
    tokio::time::timeout(Duration::from_secs(120), checks).await.expect("the CLI in time").unwrap();
    member_task.abort();
}

#[test]
fn a_node_that_is_not_there_exits_2() {
    // Bind and drop a loopback port so nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let output = strata(port, &["stream", "list"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(text(&output.stderr).contains("cannot reach the admin API"), "{}", text(&output.stderr));
}
