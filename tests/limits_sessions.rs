//! Issue 22: `mqtt.max_sessions` bounds the persistent sessions stored. A CONNECT that would
//! start one more gets CONNACK 0x97 (3.1.1: 0x03); resuming a stored session, and a session
//! that ends with its connection, still get in.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/metrics.rs"]
mod metrics;
#[path = "common/raw.rs"]
mod raw;

use broker::ServeProcess;
use raw::RawClient;
use strata_frontend::codec::{Connect, Disconnect, Packet, Properties, ProtocolVersion, QoS, ReasonCode};

/// A persistent session that subscribes (which stores it) and disconnects cleanly.
async fn store_session(addr: std::net::SocketAddr, version: ProtocolVersion, client_id: &str) -> bool {
    let (mut client, connack) = RawClient::connect_persistent(addr, version, client_id).await;
    client.subscribe(1, &[("s/#", QoS::AtLeastOnce)], Properties::default()).await;
    client
        .send(&Packet::Disconnect(Disconnect { reason_code: ReasonCode::Success, properties: Properties::default() }))
        .await;
    assert!(client.recv().await.is_none(), "closed after DISCONNECT");
    connack.session_present
}

/// The CONNACK reason code of a persistent (clean start 0) CONNECT.
async fn persistent_connack(addr: std::net::SocketAddr, version: ProtocolVersion, client_id: &str) -> ReasonCode {
    let mut properties = Properties::default();
    if version.is_v5() {
        properties.session_expiry_interval = Some(3600);
    }
    let connect = Connect {
        protocol: version,
        client_id: client_id.into(),
        clean_start: false,
        keep_alive: 60,
        will: None,
        username: None,
        password: None,
        properties,
    };
    let mut client = RawClient::connect_raw(addr, connect).await;
    match client.recv().await {
        Some(Packet::ConnAck(connack)) => connack.reason_code,
        other => panic!("{client_id}: expected CONNACK, got {other:?}"),
    }
}

/// Issue 22: two sessions stored at `max_sessions = 2`; a third is refused in both versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_max_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, "[mqtt]\nmax_sessions = 2\n").unwrap();
    let broker = ServeProcess::start_with(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    assert!(!store_session(broker.addr, ProtocolVersion::V5, "sess-1").await);
    assert!(!store_session(broker.addr, ProtocolVersion::V3_1_1, "sess-2").await);
    assert_eq!(persistent_connack(broker.addr, ProtocolVersion::V5, "sess-3").await, ReasonCode::QuotaExceeded);
    // 3.1.1's return code 0x03 Server unavailable.
    let refused_311 = persistent_connack(broker.addr, ProtocolVersion::V3_1_1, "sess-3").await;
    assert_eq!(refused_311, ReasonCode::ServerUnavailable);
    // Resuming either stored session works, and a clean session needs no room.
    assert!(store_session(broker.addr, ProtocolVersion::V5, "sess-1").await, "sess-1 resumed");
    assert!(store_session(broker.addr, ProtocolVersion::V3_1_1, "sess-2").await, "sess-2 resumed");
    let (_clean, connack) = RawClient::connect(broker.addr, ProtocolVersion::V5, "sess-clean").await;
    assert_eq!(connack.reason_code, ReasonCode::Success);
}

/// Issue 22: many persistent CONNECTs arriving together, each from its own thread, do not
/// pass `max_sessions`: the check and the room it holds are one step in the session store.
/// Exactly `max_sessions` get in; the others are refused, as `/metrics` counts.
#[test]
fn limits_max_sessions_holds_under_simultaneous_connects() {
    const MAX: usize = 3;
    const CLIENTS: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, format!("[mqtt]\nmax_sessions = {MAX}\n")).unwrap();
    let broker = ServeProcess::start_with(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    let addr = broker.addr;
    // Every thread holds its connection open until all have their CONNACK, so that no
    // session is stored (at a disconnect) before the last CONNECT was decided.
    let connacked = std::sync::Arc::new(std::sync::Barrier::new(CLIENTS));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let connacked = std::sync::Arc::clone(&connacked);
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                runtime.block_on(async {
                    let mut properties = Properties::default();
                    properties.session_expiry_interval = Some(3600);
                    let connect = Connect {
                        protocol: ProtocolVersion::V5,
                        client_id: format!("burst-{n}").into(),
                        clean_start: false,
                        keep_alive: 60,
                        will: None,
                        username: None,
                        password: None,
                        properties,
                    };
                    let mut client = RawClient::connect_raw(addr, connect).await;
                    let code = match client.recv().await {
                        Some(Packet::ConnAck(connack)) => connack.reason_code,
                        other => panic!("burst-{n}: expected CONNACK, got {other:?}"),
                    };
                    // Its own thread and runtime: nothing else waits on this one.
                    connacked.wait();
                    if code == ReasonCode::Success {
                        let disconnect =
                            Disconnect { reason_code: ReasonCode::Success, properties: Properties::default() };
                        client.send(&Packet::Disconnect(disconnect)).await;
                        assert!(client.recv().await.is_none(), "closed after DISCONNECT");
                    }
                    code
                })
            })
        })
        .collect();
    let codes: Vec<ReasonCode> = threads.into_iter().map(|t| t.join().expect("client thread")).collect();
    let accepted = codes.iter().filter(|c| **c == ReasonCode::Success).count();
    let refused = codes.iter().filter(|c| **c == ReasonCode::QuotaExceeded).count();
    assert_eq!((accepted, refused), (MAX, CLIENTS - MAX), "{codes:?}");
    let refused_total = "strata_connections_refused_total{limit=\"max_sessions\"}";
    assert_eq!(metrics::counter(broker.http_addr(), refused_total), (CLIENTS - MAX) as u64);
    // The sessions let in are stored, and still fill the room.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let late = runtime.block_on(persistent_connack(addr, ProtocolVersion::V5, "burst-late"));
    assert_eq!(late, ReasonCode::QuotaExceeded);
}
