//! A compacted stream's segment map marks as "compacted" exactly the segments the cleaner has
//! passed: those wholly below the partition's cleaned-up-to offset that `strata stream
//! describe` reports after `strata stream compact`. Headless chromium against a real broker.

#[path = "common/admin_cli.rs"]
mod admin_cli;
#[path = "common/broker.rs"]
mod broker;
#[path = "common/browser.rs"]
mod browser;
#[path = "common/streams.rs"]
mod streams;

use browser::Browser;
use serde_json::json;

const CONFIG: &str = "[[streams]]\nname = \"devices\"\ntopics = [\"devices/#\"]\ncleanup_policy = \"compact\"\n\
                      segment_bytes = 1024\nindex_interval_bytes = 256\n";
const KEYS: usize = 10;
const ROUNDS: usize = 10;

/// The segment table's rows: next offset and whether the state says compacted.
const SEGMENTS: &str =
    "return [...document.querySelectorAll('#segments[data-stream=\"devices\"] tbody tr')].map(tr => [
  Number(tr.querySelector('[data-field=\"base_offset\"]').dataset.value),
  Number(tr.querySelector('[data-field=\"next_offset\"]').dataset.value),
  tr.querySelector('[data-field=\"state\"]').textContent.includes('compacted')]);";

#[test]
fn the_segments_below_cleaned_up_to_show_as_compacted() {
    if !browser::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = streams::start(dir.path(), CONFIG);
    let (port, grpc) = (broker.port(), broker.grpc_addr());
    // Each round updates every key once and is acknowledged before the next, so the 1 KiB
    // segments roll and the older ones hold superseded values.
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        for round in 0..ROUNDS {
            let topics: Vec<String> = (0..KEYS).map(|k| format!("devices/d{k}")).collect();
            let payloads: Vec<String> = (0..KEYS).map(|k| format!("device {k} state {round}")).collect();
            let messages: Vec<streams::Message> =
                topics.iter().zip(&payloads).map(|(t, p)| (t.as_str(), p.as_str(), &[][..])).collect();
            streams::publish_all(port, &messages).await;
        }
    });
    let compact = admin_cli::strata(grpc, &["stream", "compact", "devices"]);
    assert!(compact.status.success(), "{}", admin_cli::text(&compact.stderr));
    let described = admin_cli::json(grpc, &["stream", "describe", "devices"]);
    let partition = &described["partitions"][0];
    let cleaned_up_to = partition["cleaned_up_to"].as_u64().unwrap();
    assert!(cleaned_up_to > partition["log_start"].as_u64().unwrap(), "the cleaner passed something: {described}");

    let browser = Browser::start();
    browser.goto(&format!("http://{}/#/streams/devices/0", broker.http_addr()));
    let row = "#partitions tr[data-stream=\"devices\"][data-partition=\"0\"]";
    assert_eq!(browser.cell(row, "cleaned_up_to"), cleaned_up_to);
    assert_eq!(browser.cell(row, "segment_count"), partition["segment_count"].as_u64().unwrap());
    browser.wait_for("#segments[data-stream=\"devices\"] tbody tr");
    let segments = browser.execute(SEGMENTS, json!([]));
    let segments: Vec<(u64, u64, bool)> = segments
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s[0].as_u64().unwrap(), s[1].as_u64().unwrap(), s[2].as_bool().unwrap()))
        .collect();
    assert_eq!(segments.len() as u64, partition["segment_count"].as_u64().unwrap(), "{segments:?}");
    for &(base, next, compacted) in &segments {
        let below = next <= cleaned_up_to && next > base;
        assert_eq!(compacted, below, "segment {base}..{next}, cleaned up to {cleaned_up_to}: {segments:?}");
    }
    assert!(segments.iter().any(|s| s.2), "some segment shows as compacted: {segments:?}");
    browser.screenshot("segment-map-compacted-laptop");
}
