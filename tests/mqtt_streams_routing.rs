//! `[[streams]]` routing: a PUBLISH goes to the first stream whose topic filter matches, else
//! to `default`; within a stream the partition is fnv1a_32(key) % partitions, the key being
//! the `compaction_key` user property when present, else the topic. Checked on disk with
//! strata-log after the broker stops.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/streams.rs"]
mod streams;

use std::path::Path;

use strata_frontend::streams::partition_for;
use strata_log::{Log, LogConfig};

/// (topic, payload) of every message in a partition directory.
fn messages(dir: &Path) -> Vec<(String, String)> {
    let log = Log::open(dir, LogConfig::default()).expect("open partition");
    let records = log.read(0, 1 << 20).unwrap().records(0).unwrap();
    log.close().unwrap();
    records
        .iter()
        .map(|r| {
            let topic = r.headers.iter().find(|h| &h.name[..] == b"mqtt.topic").expect("topic header");
            (String::from_utf8_lossy(&topic.value).into_owned(), String::from_utf8_lossy(&r.value).into_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_land_in_their_stream_and_keyed_partition() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = streams::start(dir.path(), streams::TWO_STREAMS);
    let port = broker.port();
    type Owned = (String, String, Vec<(&'static str, &'static str)>);
    let mut messages_sent: Vec<Owned> = Vec::new();
    for i in 0..12 {
        messages_sent.push((format!("orders/{}", i % 5), format!("o{i}"), vec![]));
    }
    for i in 0..6 {
        messages_sent.push((
            "orders/keyed".into(),
            format!("k{i}"),
            vec![("order_id", if i % 2 == 0 { "A-1" } else { "B-2" })],
        ));
    }
    messages_sent.push(("sensors/t1".into(), "s0".into(), vec![]));
    messages_sent.push(("other/x".into(), "d0".into(), vec![]));
    let borrowed: Vec<streams::Message<'_>> =
        messages_sent.iter().map(|(t, p, u)| (t.as_str(), p.as_str(), u.as_slice())).collect();
    tokio::time::timeout(streams::DEADLINE, streams::publish_all(port, &borrowed)).await.expect("publish in time");
    assert!(broker.stop().success());

    let data = dir.path().join("data");
    let mut orders = Vec::new();
    for partition in 0..3u32 {
        for (topic, payload) in messages(&data.join("orders").join(partition.to_string())) {
            let key = if topic == "orders/keyed" {
                if payload[1..].parse::<u32>().unwrap() % 2 == 0 { "A-1" } else { "B-2" }
            } else {
                topic.as_str()
            };
            assert_eq!(partition_for(key.as_bytes(), 3), partition, "{topic} {payload} in partition {partition}");
            orders.push((topic, payload));
        }
    }
    assert_eq!(orders.len(), 18);
    // Order per topic holds: each topic's payloads come in publish order.
    for i in 0..5 {
        let topic = format!("orders/{i}");
        let got: Vec<&str> = orders.iter().filter(|(t, _)| *t == topic).map(|(_, p)| p.as_str()).collect();
        let sent: Vec<String> = (0..12).filter(|n| n % 5 == i).map(|n| format!("o{n}")).collect();
        assert_eq!(got, sent, "{topic}");
    }
    assert_eq!(messages(&data.join("telemetry").join("0")), vec![("sensors/t1".into(), "s0".into())]);
    assert_eq!(messages(&data.join("default").join("0")), vec![("other/x".into(), "d0".into())]);
    assert!(!data.join("telemetry").join("1").exists());
}
