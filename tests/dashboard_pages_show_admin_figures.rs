//! The dashboard (`/` on the HTTP endpoint, issue 23), loaded in headless chromium against a
//! real broker holding real MQTT data, shows on each page the figures the admin API reports
//! for the same moment (read with the real `strata` CLI): streams and their partitions'
//! offsets, segments and bytes; a partition's segment list; consumers' committed offsets and
//! lag; the Browse table holds what a `$stream` replay from the earliest offset delivers; the
//! overview counts the publishes. Nothing is published while the pages are compared, so
//! "the same moment" holds. Screenshots of every page, laptop- and phone-sized, go to
//! `target/dashboard-screenshots/`.

#[path = "common/admin_cli.rs"]
mod admin_cli;
#[path = "common/broker.rs"]
mod broker;
#[path = "common/browser.rs"]
mod browser;
#[path = "common/streams.rs"]
mod streams;
#[path = "common/v4_session.rs"]
mod v4_session;

use std::collections::BTreeMap;

use browser::{Browser, LAPTOP, PHONE};
use serde_json::{Value, json};
use tokio::time::timeout;

/// `orders`: 3 partitions keyed by `order_id`, 1 KiB segments (so it has several), keeping
/// 10 offsets per partition; `telemetry`: compacted and deleted, one partition. Retention
/// runs only when asked (`strata stream enforce-retention`), so nothing moves while the pages
/// are compared with the admin API.
const CONFIG: &str = "[compaction]\nretention_check_interval_ms = 3600000\n\n\
[[streams]]\nname = \"orders\"\ntopics = [\"orders/#\"]\npartitions = 3\ncompaction_key = \"order_id\"\n\
segment_bytes = 1024\nindex_interval_bytes = 256\nretention_messages = 10\n\n\
[[streams]]\nname = \"telemetry\"\ntopics = [\"sensors/#\"]\ncleanup_policy = \"compact,delete\"\n";
const ORDERS: usize = 60;
const READINGS: usize = 5;

/// Rows of the Browse table, read in one script call: partition, offset, topic, key, payload.
const BROWSE_ROWS: &str = "return [...document.querySelectorAll('#messages tbody tr')].map(tr => {
  const f = (name) => tr.querySelector(`[data-field=\"${name}\"]`).textContent;
  return [Number(tr.dataset.partition), Number(tr.dataset.offset), f('topic'), f('key'), f('payload')];
});";

#[test]
fn every_page_shows_what_the_admin_api_reports() {
    if !browser::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = streams::start(dir.path(), CONFIG);
    let (port, grpc, http) = (broker.port(), broker.grpc_addr(), broker.http_addr());
    let runtime = tokio::runtime::Runtime::new().unwrap();

    // A persistent session on the telemetry topics, offline while readings arrive: it lags.
    let replayed = runtime.block_on(async {
        let (subscriber, mut events) = v4_session::client("dash-sub", port, false);
        timeout(v4_session::DEADLINE, v4_session::connack(&mut events)).await.expect("CONNACK");
        subscriber.subscribe("sensors/#", rumqttc::QoS::AtLeastOnce).await.unwrap();
        subscriber.disconnect().await.unwrap();
        let _ = timeout(v4_session::DEADLINE, async { while events.poll().await.is_ok() {} }).await;

        let orders: Vec<(String, String, String)> = (0..ORDERS)
            .map(|i| (format!("orders/eu/{}", i % 4), format!("order {i}: {}", "x".repeat(60)), format!("o-{}", i % 7)))
            .collect();
        // `Message` borrows its user properties: they are built first.
        let props: Vec<[(&str, &str); 1]> = orders.iter().map(|(_, _, k)| [("order_id", k.as_str())]).collect();
        let messages: Vec<streams::Message> =
            orders.iter().zip(&props).map(|((t, p, _), props)| (t.as_str(), p.as_str(), &props[..])).collect();
        // In rounds, each acknowledged before the next: every round appends a batch per
        // partition, so the 1 KiB segments roll and each partition has sealed segments.
        for round in messages.chunks(10) {
            streams::publish_all(port, round).await;
        }
        v4_session::publish_all(port, "dash-pub", "sensors/room-1", 0..READINGS).await;

        // What a `$stream` replay of `orders` from the earliest offset delivers.
        let (replay, mut events, codes, reason) =
            streams::subscribe("dash-replay", port, "$stream/orders/#", &[("stream-offset", "earliest")]).await;
        assert_eq!(codes.len(), 1, "{reason:?}");
        let deliveries = timeout(v4_session::DEADLINE, streams::collect(&mut events, ORDERS)).await.expect("replay");
        replay.disconnect().await.unwrap();
        let _ = timeout(v4_session::DEADLINE, async { while events.poll().await.is_ok() {} }).await;
        deliveries
    });
    let session = admin_cli::wait_for_session(grpc, "dash-sub", "a lag of the readings", |s| {
        s["members"] == 0 && s["partitions"].as_array().is_some_and(|p| p.iter().any(|p| p["lag"] == READINGS as u64))
    });

    // The admin API's figures, now; nothing is published from here on.
    let listed = admin_cli::json(grpc, &["stream", "list"]);
    let described: BTreeMap<String, Value> = ["default", "orders", "telemetry"]
        .into_iter()
        .map(|name| (name.to_owned(), admin_cli::json(grpc, &["stream", "describe", name])))
        .collect();
    let groups = admin_cli::json(grpc, &["group", "list"]);
    assert!(described["orders"]["partitions"][0]["segment_count"].as_u64().unwrap() > 1, "orders has 1 KiB segments");

    let browser = Browser::start();
    let base = format!("http://{http}/");

    // Streams: every stream's totals and every partition's offsets, segments and bytes.
    browser.goto(&format!("{base}#/streams"));
    browser.wait_for("#partitions tr[data-stream=\"orders\"][data-partition=\"2\"]");
    let shown: Vec<Value> = browser
        .execute("return [...document.querySelectorAll('#streams tbody tr')].map(r => r.dataset.stream)", json!([]))
        .as_array()
        .unwrap()
        .clone();
    let names: Vec<Value> = listed["streams"].as_array().unwrap().iter().map(|s| s["name"].clone()).collect();
    assert_eq!(shown, names, "the Streams page lists the streams `strata stream list` lists, in order");
    for stream in listed["streams"].as_array().unwrap() {
        let row = format!("#streams tr[data-stream={}]", stream["name"]);
        assert_eq!(browser.cell(&row, "messages"), stream["offset_span"].as_u64().unwrap(), "{row}");
        assert_eq!(browser.cell(&row, "size_bytes"), stream["size_bytes"].as_u64().unwrap(), "{row}");
        assert_eq!(browser.cell(&row, "partitions"), stream["partitions"].as_u64().unwrap(), "{row}");
    }
    for (name, stream) in &described {
        for partition in stream["partitions"].as_array().unwrap() {
            let row = format!("#partitions tr[data-stream=\"{name}\"][data-partition=\"{}\"]", partition["partition"]);
            for field in ["log_start", "cleaned_up_to", "high_watermark", "log_end", "segment_count", "size_bytes"] {
                assert_eq!(browser.cell(&row, field), partition[field].as_u64().unwrap(), "{row} {field}");
            }
        }
    }
    browser.screenshot("streams-laptop");

    // One partition's segment map: its segments add up to what describe reports.
    let mut condemned = BTreeMap::new();
    for partition in described["orders"]["partitions"].as_array().unwrap() {
        let number = partition["partition"].as_u64().unwrap();
        browser.goto(&format!("{base}#/streams/orders/{number}"));
        let segments: Vec<Value> = loop_until_rows(&browser, number, partition["segment_count"].as_u64().unwrap());
        let sizes: u64 = segments.iter().map(|s| s[1].as_u64().unwrap()).sum();
        assert_eq!(sizes, partition["size_bytes"].as_u64().unwrap(), "partition {number}: segment bytes");
        assert_eq!(segments[0][0], partition["log_start"], "partition {number}: the first segment starts at log_start");
        let row = format!("#partitions tr[data-stream=\"orders\"][data-partition=\"{number}\"]");
        assert_eq!(browser.cell(&row, "log_end"), partition["log_end"].as_u64().unwrap());
        assert!(browser.find("#settings [data-setting=\"segment_bytes\"]").is_some(), "the settings are shown");
        // What the page says retention deletes next, for the check at the end.
        let doomed = browser.execute(
            "return [...document.querySelectorAll('#segments tbody tr')]
               .filter(tr => tr.querySelector('[data-field=\"state\"]').textContent.includes('deleted next'))
               .map(tr => Number(tr.querySelector('[data-field=\"next_offset\"]').dataset.value))",
            json!([]),
        );
        condemned.insert(number, doomed.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).max());
        if number == 0 {
            browser.screenshot("segment-map-laptop");
        }
    }

    // Consumers: the lagging session's committed offset and lag per partition.
    browser.goto(&format!("{base}#/consumers"));
    for group in groups["groups"].as_array().unwrap() {
        let (name, kind) = (group["name"].as_str().unwrap(), group["kind"].as_str().unwrap());
        let detail = admin_cli::json(grpc, &["group", "describe", name, "--kind", kind]);
        for p in detail["partitions"].as_array().unwrap() {
            let row = format!(
                "#groups tr[data-group=\"{name}\"][data-kind=\"{kind}\"][data-stream={}][data-partition=\"{}\"]",
                p["stream"], p["partition"]
            );
            for field in ["committed", "high_watermark", "lag"] {
                assert_eq!(browser.cell(&row, field), p[field].as_u64().unwrap(), "{row} {field}");
            }
        }
    }
    let row = "#groups tr[data-group=\"dash-sub\"][data-kind=\"session\"][data-stream=\"telemetry\"]";
    assert_eq!(browser.cell(row, "lag"), READINGS as u64);
    assert_eq!(
        browser.cell(row, "committed"),
        admin_cli::committed(&session, "telemetry", 0).expect("the session's position in telemetry")
    );
    browser.screenshot("consumers-laptop");

    // Browse: the rows are what the `$stream` replay delivered (partition, offset, topic,
    // key, payload).
    browser.goto(&format!("{base}#/browse?stream=orders&from=earliest"));
    browser.wait_for_text("#browse-message", |t| t.starts_with(&format!("{ORDERS} message(s)")));
    let rows = browser.execute(BROWSE_ROWS, json!([]));
    let mut shown: Vec<(u64, u64, String, String, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let text = |i: usize| r[i].as_str().unwrap().to_owned();
            (r[0].as_u64().unwrap(), r[1].as_u64().unwrap(), text(2), text(3), text(4))
        })
        .collect();
    let mut expected: Vec<(u64, u64, String, String, String)> = replayed
        .iter()
        .map(|d| {
            let number = |name: &str| d.property(name).and_then(|v| v.parse().ok()).expect(name);
            let key = d.property("stream-key").expect("stream-key").to_owned();
            (number("stream-partition"), number("stream-offset"), d.topic.clone(), key, d.payload.clone())
        })
        .collect();
    shown.sort();
    expected.sort();
    assert_eq!(shown, expected, "Browse shows what a $stream replay from the earliest offset delivers");
    browser.screenshot("browse-laptop");

    // Overview: the publishes counted, the streams and partitions, health.
    browser.goto(&format!("{base}#/overview"));
    browser.wait_for("[data-figure=\"health\"].ok");
    let figure = |name: &str| -> u64 {
        let element = browser.wait_for(&format!("[data-figure=\"{name}\"]"));
        browser.attribute(&element, "data-value").unwrap().parse().unwrap()
    };
    assert_eq!(figure("messages_received"), (ORDERS + READINGS) as u64, "every PUBLISH received");
    assert_eq!(figure("streams"), listed["streams"].as_array().unwrap().len() as u64);
    let partitions: u64 = listed["streams"].as_array().unwrap().iter().map(|s| s["partitions"].as_u64().unwrap()).sum();
    assert_eq!(figure("partitions"), partitions);
    let stream_bytes: u64 =
        listed["streams"].as_array().unwrap().iter().map(|s| s["size_bytes"].as_u64().unwrap()).sum();
    assert!(figure("disk_bytes") >= stream_bytes, "bytes on disk count the streams' segments");
    assert_eq!(figure("nodes"), 1, "a single node until clustering");
    // Three samples draw the live chart's first lines.
    browser.wait_for("#view[data-loaded=\"3\"] .chart polyline.in");
    browser.screenshot("overview-laptop");

    // The same pages on a phone's screen.
    browser.set_window_size(PHONE);
    browser.goto(&format!("{base}#/streams"));
    browser.wait_for("#partitions tr[data-stream=\"orders\"]");
    browser.screenshot("streams-phone");
    browser.goto(&format!("{base}#/browse?stream=orders&from=earliest"));
    browser.wait_for_text("#browse-message", |t| t.starts_with(&format!("{ORDERS} message(s)")));
    browser.screenshot("browse-phone");
    browser.goto(&format!("{base}#/overview"));
    browser.wait_for("#view[data-loaded=\"3\"] .chart polyline.in");
    let overflow = browser.execute("return document.documentElement.scrollWidth - window.innerWidth", json!([]));
    assert!(overflow.as_i64().unwrap() <= 0, "the overview fits a phone's width (wider by {overflow} px)");
    browser.screenshot("overview-phone");
    browser.set_window_size(LAPTOP);

    // What the segment map marked "deleted next" is what retention then deletes: each
    // partition's log start moves to the end of its last marked segment, or stays.
    assert!(condemned.values().any(Option::is_some), "orders keeps 10 offsets: some segment is due: {condemned:?}");
    let enforced = admin_cli::strata(grpc, &["stream", "enforce-retention", "orders"]);
    assert!(enforced.status.success(), "{}", admin_cli::text(&enforced.stderr));
    let after = admin_cli::json(grpc, &["stream", "describe", "orders"]);
    for (partition, before) in described["orders"]["partitions"].as_array().unwrap().iter().enumerate() {
        let start = after["partitions"][partition]["log_start"].as_u64().unwrap();
        let expected = condemned[&(partition as u64)].unwrap_or(before["log_start"].as_u64().unwrap());
        assert_eq!(start, expected, "partition {partition}: the log start after retention");
    }
}

/// The rows (base offset, bytes) of the segment table of `orders` partition `partition`, once
/// it has `count` of them.
fn loop_until_rows(browser: &Browser, partition: u64, count: u64) -> Vec<Value> {
    let script = "return [...document.querySelectorAll(`#segments[data-stream=\"orders\"][data-partition=\"${arguments[0]}\"] tbody tr`)].map(tr => [
        Number(tr.querySelector('[data-field=\"base_offset\"]').dataset.value),
        Number(tr.querySelector('[data-field=\"size_bytes\"]').dataset.value)])";
    let deadline = std::time::Instant::now() + browser::PAGE_DEADLINE;
    loop {
        let rows = browser.execute(script, json!([partition])).as_array().cloned().unwrap_or_default();
        if rows.len() as u64 == count {
            return rows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the segment table has {} rows, describe says {count}",
            rows.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
