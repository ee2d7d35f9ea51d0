//! `mqtt.max_connections`: beyond it a client is refused with CONNACK 0x97 Quota Exceeded
//! (MQTT 5) or return code 0x03 Server Unavailable (MQTT 3.1.1) and closed; a slot freed by a
//! disconnect can be used again.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/metrics.rs"]
mod metrics;
#[path = "common/raw.rs"]
mod raw;

use std::time::Duration;

use broker::ServeProcess;
use raw::RawClient;
use strata_frontend::codec::{Packet, Properties, ProtocolVersion, ReasonCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_maximum_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, "[mqtt]\nmax_connections = 2\n").unwrap();
    let broker = ServeProcess::start_with(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);

    let (_first, _) = RawClient::connect(broker.addr, ProtocolVersion::V5, "mc-1").await;
    let (mut second, _) = RawClient::connect(broker.addr, ProtocolVersion::V3_1_1, "mc-2").await;

    for (version, expected) in
        [(ProtocolVersion::V5, ReasonCode::QuotaExceeded), (ProtocolVersion::V3_1_1, ReasonCode::ServerUnavailable)]
    {
        let mut third = RawClient::connect_with(broker.addr, version, "mc-3", 60, Properties::default()).await;
        match third.recv().await {
            Some(Packet::ConnAck(connack)) => assert_eq!(connack.reason_code, expected, "{version:?}"),
            other => panic!("{version:?}: expected a refusing CONNACK, got {other:?}"),
        }
        assert_eq!(third.recv().await, None, "{version:?}: closed after the CONNACK");
    }

    // A disconnect frees its slot (once that connection's task has ended).
    second.send(&Packet::Disconnect(Default::default())).await;
    assert_eq!(second.recv().await, None);
    for attempt in 0.. {
        let mut again =
            RawClient::connect_with(broker.addr, ProtocolVersion::V5, "mc-4", 60, Properties::default()).await;
        match again.recv().await {
            Some(Packet::ConnAck(connack)) if connack.reason_code == ReasonCode::Success => break,
            Some(Packet::ConnAck(connack)) if connack.reason_code == ReasonCode::QuotaExceeded && attempt < 100 => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("expected the freed slot to be usable, got {other:?}"),
        }
    }
}

/// Issue 22: connections count from accept, so sockets that never send CONNECT hold slots
/// too; closing one frees its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_without_connect_counts_against_the_maximum() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, "[mqtt]\nmax_connections = 1\n").unwrap();
    let broker = ServeProcess::start_with(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    let http = broker.http_addr();

    // The silent socket connects first, but under load the broker may start the client's
    // task before the silent one's: then the client holds the slot, and the round is tried
    // again with a new silent socket, a bounded number of times.
    let mut silent = None;
    for _ in 0..50 {
        let socket = tokio::net::TcpStream::connect(broker.addr).await.unwrap();
        let mut client =
            RawClient::connect_with(broker.addr, ProtocolVersion::V5, "after-silent", 60, Properties::default()).await;
        match client.recv().await {
            Some(Packet::ConnAck(connack)) if connack.reason_code == ReasonCode::QuotaExceeded => {
                silent = Some(socket);
                break;
            }
            Some(Packet::ConnAck(connack)) if connack.reason_code == ReasonCode::Success => {
                client.send(&Packet::Disconnect(Default::default())).await;
                assert_eq!(client.recv().await, None);
            }
            other => panic!("expected a CONNACK, got {other:?}"),
        }
    }
    let silent = silent.expect("in 50 rounds, a socket that sent no CONNECT never held the slot");
    assert!(metrics::counter(http, "strata_connections_refused_total{limit=\"max_connections\"}") >= 1);

    drop(silent);
    for attempt in 0.. {
        let mut again =
            RawClient::connect_with(broker.addr, ProtocolVersion::V5, "after-close", 60, Properties::default()).await;
        match again.recv().await {
            Some(Packet::ConnAck(connack)) if connack.reason_code == ReasonCode::Success => break,
            Some(Packet::ConnAck(connack)) if connack.reason_code == ReasonCode::QuotaExceeded && attempt < 100 => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("expected the freed slot to be usable, got {other:?}"),
        }
    }
}
