//! `$stream` subscriptions that cannot be served are refused with a reason code and a reason
//! string, never silently moved: an unknown stream, a partition out of range, and an offset
//! below the partition's log start (retention deleted it).

#[path = "common/broker.rs"]
mod broker;
#[path = "common/streams.rs"]
mod streams;

use rumqttc::v5::mqttbytes::v5::SubscribeReasonCode;
use strata_log::{Log, LogConfig, Record, RetentionPolicy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_stream_bad_partition_and_below_log_start_are_refused_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    // A `history` partition whose first segments retention already deleted.
    let partition_dir = dir.path().join("data").join("history").join("0");
    let log =
        Log::open(&partition_dir, LogConfig { segment_bytes: 1024, index_interval_bytes: 128, ..Default::default() })
            .unwrap();
    for i in 0..60 {
        let record = Record::new(1_700_000_000_000 + i, vec![b'v'; 60]).with_header("mqtt.topic", "h/1");
        log.append(&[record], 0).unwrap();
    }
    log.enforce_retention(&RetentionPolicy { retention_messages: Some(10), ..Default::default() }, 1_700_000_100_000)
        .unwrap();
    let log_start = log.offsets().log_start;
    log.close().unwrap();
    assert!(log_start > 0);

    let config =
        "[[streams]]\nname = \"history\"\ntopics = [\"h/#\"]\nsegment_bytes = 1024\nindex_interval_bytes = 128\n";
    let broker = streams::start(dir.path(), config);
    let port = broker.port();
    tokio::time::timeout(streams::DEADLINE, async {
        let (_a, _ea, codes, reason) =
            streams::subscribe("refused-unknown", port, "$stream/nope/#", &[("stream-offset", "earliest")]).await;
        assert_eq!(codes, vec![SubscribeReasonCode::TopicFilterInvalid]);
        assert!(reason.as_deref().unwrap_or("").contains("unknown stream \"nope\""), "{reason:?}");

        let (_b, _eb, codes, reason) =
            streams::subscribe("refused-partition", port, "$stream/history", &[("stream-partition", "7")]).await;
        assert_eq!(codes, vec![SubscribeReasonCode::ImplementationSpecific]);
        assert!(reason.as_deref().unwrap_or("").contains("no partition 7"), "{reason:?}");

        let (_c, _ec, codes, reason) =
            streams::subscribe("refused-below", port, "$stream/history", &[("stream-offset", "0")]).await;
        assert_eq!(codes, vec![SubscribeReasonCode::ImplementationSpecific]);
        let reason = reason.unwrap_or_default();
        assert!(reason.contains(&format!("below the log start {log_start}")), "{reason}");

        // At the log start it is served.
        let start = log_start.to_string();
        let (_d, mut events, codes, _) =
            streams::subscribe("served-at-start", port, "$stream/history", &[("stream-offset", &start)]).await;
        assert!(matches!(codes[0], SubscribeReasonCode::Success(_)), "{codes:?}");
        let first = streams::collect(&mut events, 1).await;
        assert_eq!(first[0].property("stream-offset"), Some(start.as_str()));
    })
    .await
    .expect("in time");
}
