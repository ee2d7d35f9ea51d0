//! SIGTERM stops `strata serve` gracefully: an MQTT 5 client gets DISCONNECT 0x8B (Server
//! shutting down), the process exits 0, and every partition it wrote carries a clean-shutdown
//! marker, so the next open skips the recovery scan.

#[path = "common/broker.rs"]
mod broker;

use std::time::Duration;

use broker::ServeProcess;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{DisconnectReasonCode, Packet};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_disconnects_v5_clients_and_closes_every_log_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = ServeProcess::start(dir.path());
    let options = MqttOptions::new("graceful", "127.0.0.1", broker.port());
    let (client, mut events) = AsyncClient::new(options, 10);
    client.publish("graceful/t", QoS::AtLeastOnce, true, "kept").await.unwrap();
    tokio::time::timeout(DEADLINE, async {
        loop {
            if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.expect("connected") {
                break;
            }
        }
    })
    .await
    .expect("PUBACK in time");

    let stopping = tokio::task::spawn_blocking(move || broker.stop());
    let reason = tokio::time::timeout(DEADLINE, async {
        loop {
            match events.poll().await {
                Ok(_) => {}
                Err(rumqttc::v5::ConnectionError::MqttState(rumqttc::v5::StateError::ServerDisconnect {
                    reason_code,
                    ..
                })) => return reason_code,
                Err(e) => panic!("expected a DISCONNECT before the close, got {e}"),
            }
        }
    })
    .await
    .expect("DISCONNECT in time");
    assert_eq!(reason, DisconnectReasonCode::ServerShuttingDown);
    let status = stopping.await.unwrap();
    assert!(status.success(), "strata serve exited with {status:?}");

    for stream in ["default", "$retained", "$sessions"] {
        let partition = dir.path().join(stream).join("0");
        let log = strata_log::Log::open(&partition, strata_log::LogConfig::default()).expect("reopen");
        assert!(log.recovery_report().clean_shutdown, "{stream}: {:?}", log.recovery_report());
        assert_eq!(log.recovery_report().scanned_bytes, 0, "{stream}: no recovery scan");
        if stream != "$sessions" {
            assert_eq!(log.offsets().log_end, 1, "{stream}: the acknowledged publish is there");
        }
        log.close().unwrap();
    }
}
