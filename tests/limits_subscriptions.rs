//! Issue 22: `mqtt.max_subscriptions_per_client` bounds how many filters one client holds. A
//! new filter beyond it gets 0x97 Quota exceeded in its SUBACK slot (0x80 in 3.1.1); a filter
//! held already is replaced without counting twice; UNSUBSCRIBE frees a place; `$share`
//! subscriptions count too.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/raw.rs"]
mod raw;

use broker::ServeProcess;
use raw::RawClient;
use strata_frontend::codec::{Packet, Properties, ProtocolVersion, QoS, ReasonCode, Unsubscribe};

/// Issue 22: the third filter is refused at a limit of 2, in both protocol versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_subscriptions_per_client() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, "[mqtt]\nmax_subscriptions_per_client = 2\n").unwrap();
    let broker = ServeProcess::start_with(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    for (version, refused) in
        [(ProtocolVersion::V5, ReasonCode::QuotaExceeded), (ProtocolVersion::V3_1_1, ReasonCode::UnspecifiedError)]
    {
        let (mut client, _) = RawClient::connect(broker.addr, version, &format!("subs-{}", version.is_v5())).await;
        let granted =
            client.subscribe(1, &[("a/#", QoS::AtLeastOnce), ("b", QoS::AtMostOnce)], Properties::default()).await;
        assert_eq!(granted, [ReasonCode::GrantedQos1, ReasonCode::Success]);
        // "a/#" again replaces the one held; "c" and a $share filter would be third.
        let codes = client
            .subscribe(
                2,
                &[("a/#", QoS::AtMostOnce), ("c", QoS::AtMostOnce), ("$share/g/c", QoS::AtMostOnce)],
                Properties::default(),
            )
            .await;
        assert_eq!(codes, [ReasonCode::Success, refused, refused], "{version:?}");
        client
            .send(&Packet::Unsubscribe(Unsubscribe {
                packet_id: raw::id(3),
                properties: Properties::default(),
                filters: vec!["b".into()],
            }))
            .await;
        match client.recv().await {
            Some(Packet::UnsubAck(_)) => {}
            other => panic!("expected UNSUBACK, got {other:?}"),
        }
        let codes = client.subscribe(4, &[("c", QoS::AtMostOnce), ("d", QoS::AtMostOnce)], Properties::default()).await;
        assert_eq!(codes, [ReasonCode::Success, refused], "UNSUBSCRIBE freed one place: {version:?}");
    }
}
