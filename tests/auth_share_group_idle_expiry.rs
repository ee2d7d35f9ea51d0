//! Issue 22 (limits): a `$share` group that has had no member for `[mqtt]
//! share_group_idle_expiry` is removed, and its committed offsets are tombstoned in
//! `$offsets`, so it is gone from `strata group list` and stays gone after a restart.

#[path = "common/admin_cli.rs"]
mod admin_cli;
#[path = "common/broker.rs"]
mod broker;
#[path = "common/raw.rs"]
mod raw;

use std::time::{Duration, Instant};

use admin_cli::{strata, text};
use broker::ServeProcess;
use raw::RawClient;
use strata_frontend::codec::{Disconnect, Packet, Properties, ProtocolVersion, QoS, ReasonCode};

/// Whether `strata group list` names the group `name`.
fn listed(grpc: std::net::SocketAddr, name: &str) -> bool {
    let list = strata(grpc, &["group", "list"]);
    assert!(list.status.success(), "strata group list: {}", text(&list.stderr));
    text(&list.stdout).lines().any(|line| line.starts_with(&format!("{name} ")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_an_idle_share_group_is_removed_with_its_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, "[mqtt]\nshare_group_idle_expiry = \"1s\"\n").unwrap();
    let data = dir.path().join("data");
    let args = ["--config", config.to_str().unwrap(), "--grpc", "127.0.0.1:0"];
    let mut broker = ServeProcess::start_with(&data, &args);
    let (addr, grpc) = (broker.addr, broker.grpc_addr());

    let (mut worker, _) = RawClient::connect(addr, ProtocolVersion::V5, "idle-worker").await;
    assert_eq!(
        worker.subscribe(1, &[("$share/idlers/jobs/#", QoS::AtLeastOnce)], Properties::default()).await,
        [ReasonCode::GrantedQos1]
    );
    let (mut publisher, _) = RawClient::connect(addr, ProtocolVersion::V5, "idle-publisher").await;
    publisher.send(&Packet::Publish(raw::publish("jobs/1", QoS::AtLeastOnce, Some(1), "job"))).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    match worker.recv().await {
        Some(Packet::Publish(publish)) => {
            worker.send(&Packet::PubAck(raw::ack(publish.packet_id.expect("QoS 1")))).await;
        }
        other => panic!("the worker expected the job, got {other:?}"),
    }
    // A member holds it: listed, however long it stays (more than the expiry here).
    let held_since = Instant::now();
    while held_since.elapsed() < Duration::from_secs(2) {
        assert!(listed(grpc, "idlers"), "a group with a member was removed");
    }
    // Its last member leaves (the group commits its offsets as it goes).
    worker
        .send(&Packet::Disconnect(Disconnect { reason_code: ReasonCode::Success, properties: Properties::default() }))
        .await;
    assert!(worker.recv().await.is_none());

    let mut polls = 0;
    while listed(grpc, "idlers") {
        polls += 1;
        assert!(polls < 300, "the idle group is still listed after {polls} polls");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Its committed offsets went with it: a restart does not bring it back from `$offsets`.
    assert!(broker.stop().success());
    let broker = ServeProcess::start_with(&data, &args);
    assert!(!listed(broker.grpc_addr(), "idlers"), "the removed group came back from $offsets");
}
