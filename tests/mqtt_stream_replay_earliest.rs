//! `$stream/<stream>` with `stream-offset: earliest` replays every partition from its log
//! start, each PUBLISH carrying `stream-offset`, `stream-partition`, `stream-timestamp` and
//! (for a keyed record) `stream-key`; then it continues live.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/streams.rs"]
mod streams;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::SubscribeReasonCode;
use strata_frontend::streams::partition_for;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn earliest_replays_everything_with_stream_properties_then_goes_live() {
    let dir = tempfile::tempdir().unwrap();
    let broker = streams::start(dir.path(), streams::TWO_STREAMS);
    let port = broker.port();
    tokio::time::timeout(streams::DEADLINE, async {
        streams::publish_all(
            port,
            &[
                ("orders/eu", "1", &[]),
                ("orders/us", "2", &[("order_id", "X-9")]),
                ("orders/eu", "3", &[]),
                ("sensors/t", "not in orders", &[]),
            ],
        )
        .await;
        let (_client, mut events, codes, _) =
            streams::subscribe("replay-earliest", port, "$stream/orders", &[("stream-offset", "earliest")]).await;
        assert_eq!(codes, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
        let mut got = streams::collect(&mut events, 3).await;
        got.sort_by_key(|d| d.payload.clone());
        let payloads: Vec<&str> = got.iter().map(|d| d.payload.as_str()).collect();
        assert_eq!(payloads, ["1", "2", "3"]);
        for delivery in &got {
            let partition: u32 = delivery.property("stream-partition").unwrap().parse().unwrap();
            let key = delivery.property("order_id").unwrap_or(&delivery.topic);
            assert_eq!(partition, partition_for(key.as_bytes(), 3), "{delivery:?}");
            delivery.property("stream-offset").unwrap().parse::<u64>().unwrap();
            let timestamp: i64 = delivery.property("stream-timestamp").unwrap().parse().unwrap();
            assert!(timestamp > 1_600_000_000_000, "{delivery:?}");
        }
        assert_eq!(got[1].property("stream-key"), Some("X-9"));
        assert_eq!(got[0].property("stream-key"), None);
        // Same-partition records come in offset order: "1" then "3" (same topic).
        let live = async {
            streams::publish_all(port, &[("orders/eu", "4", &[])]).await;
        };
        live.await;
        let next = streams::collect(&mut events, 1).await;
        assert_eq!(next[0].payload, "4");
        assert_eq!(next[0].topic, "orders/eu");
    })
    .await
    .expect("in time");
}
