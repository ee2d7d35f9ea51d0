//! `$stream` replay from a numeric `stream-offset` within one `stream-partition`, and from
//! `timestamp:<unix-ms>`: it starts exactly there, never earlier.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/streams.rs"]
mod streams;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::SubscribeReasonCode;
use strata_frontend::streams::partition_for;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offset_in_one_partition_and_a_timestamp_start_exactly_there() {
    let dir = tempfile::tempdir().unwrap();
    let broker = streams::start(dir.path(), streams::TWO_STREAMS);
    let port = broker.port();
    let partition = partition_for(b"orders/eu", 3);
    tokio::time::timeout(streams::DEADLINE, async {
        let first: Vec<String> = (0..5).map(|i| format!("a{i}")).collect();
        let batch: Vec<streams::Message<'_>> = first.iter().map(|p| ("orders/eu", p.as_str(), &[][..])).collect();
        streams::publish_all(port, &batch).await;
        let p = partition.to_string();
        let (_c, mut events, codes, _) = streams::subscribe(
            "replay-offset",
            port,
            "$stream/orders/orders/eu",
            &[("stream-offset", "2"), ("stream-partition", &p)],
        )
        .await;
        assert_eq!(codes, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
        let got = streams::collect(&mut events, 3).await;
        let payloads: Vec<&str> = got.iter().map(|d| d.payload.as_str()).collect();
        assert_eq!(payloads, ["a2", "a3", "a4"]);
        let offsets: Vec<&str> = got.iter().map(|d| d.property("stream-offset").unwrap()).collect();
        assert_eq!(offsets, ["2", "3", "4"]);
        assert!(got.iter().all(|d| d.property("stream-partition") == Some(p.as_str())));

        // A timestamp after the first batch starts at the second one.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let cut = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        streams::publish_all(port, &[("orders/eu", "b0", &[]), ("orders/eu", "b1", &[])]).await;
        let (_c2, mut events2, codes, _) = streams::subscribe(
            "replay-timestamp",
            port,
            "$stream/orders",
            &[("stream-offset", &format!("timestamp:{cut}"))],
        )
        .await;
        assert_eq!(codes, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
        let got = streams::collect(&mut events2, 2).await;
        let payloads: Vec<&str> = got.iter().map(|d| d.payload.as_str()).collect();
        assert_eq!(payloads, ["b0", "b1"]);
        assert_eq!(got[0].property("stream-offset"), Some("5"));
    })
    .await
    .expect("in time");
}
