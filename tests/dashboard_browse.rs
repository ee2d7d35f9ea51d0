//! The dashboard's Browse page reads a stream from an offset, from a time, or tails it: the
//! rows are the stored messages from that point (offset, time, topic, payload), new messages
//! appear while tailing, and payloads show as hex on request. Headless chromium against a
//! real broker fed by a real MQTT client.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/browser.rs"]
mod browser;
#[path = "common/v4_session.rs"]
mod v4_session;

use broker::ServeProcess;
use browser::Browser;
use serde_json::json;

/// The Browse table's rows: offset, timestamp, topic, payload.
const ROWS: &str = "return [...document.querySelectorAll('#messages tbody tr')].map(tr => [
  Number(tr.dataset.offset),
  Number(tr.querySelector('[data-field=\"timestamp\"]').dataset.value),
  tr.querySelector('[data-field=\"topic\"]').textContent,
  tr.querySelector('[data-field=\"payload\"]').textContent]);";

fn rows(browser: &Browser) -> Vec<(u64, i64, String, String)> {
    let rows = browser.execute(ROWS, json!([]));
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[0].as_u64().unwrap(),
                r[1].as_i64().unwrap(),
                r[2].as_str().unwrap().into(),
                r[3].as_str().unwrap().into(),
            )
        })
        .collect()
}

#[test]
fn browse_reads_from_an_offset_from_a_time_and_tails() {
    if !browser::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(dir.path());
    let port = broker.port();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(v4_session::publish_all(port, "browse-pub", "plant/line-1", 0..10));
    let base = format!("http://{}/", broker.http_addr());
    let browser = Browser::start();

    // From the earliest offset: everything, in order.
    browser.goto(&format!("{base}#/browse?stream=default&from=earliest"));
    browser.wait_for_text("#browse-message", |t| t.starts_with("10 message(s) from earliest"));
    let all = rows(&browser);
    let expected: Vec<(u64, String, String)> = (0..10).map(|i| (i, "plant/line-1".into(), format!("m-{i}"))).collect();
    let shown: Vec<(u64, String, String)> = all.iter().map(|(o, _, t, p)| (*o, t.clone(), p.clone())).collect();
    assert_eq!(shown, expected);

    // From an offset.
    browser.goto(&format!("{base}#/browse?stream=default&from=4"));
    browser.wait_for_text("#browse-message", |t| t.starts_with("6 message(s) from 4"));
    let offsets: Vec<u64> = rows(&browser).iter().map(|r| r.0).collect();
    assert_eq!(offsets, (4..10).collect::<Vec<_>>());

    // From a time: the first message stored at or after it, and all after.
    let time = all[6].1;
    browser.goto(&format!("{base}#/browse?stream=default&from=timestamp:{time}"));
    browser.wait_for_text("#browse-message", |t| t.contains(&format!("from timestamp:{time}")));
    let offsets: Vec<u64> = rows(&browser).iter().map(|r| r.0).collect();
    let first = all.iter().find(|r| r.1 >= time).unwrap().0;
    assert_eq!(offsets, (first..10).collect::<Vec<_>>(), "messages from {time} ms on");

    // Payloads as hex.
    browser.goto(&format!("{base}#/browse?stream=default&from=0"));
    browser.wait_for_text("#browse-message", |t| t.starts_with("10 message(s) from 0"));
    browser.click(&browser.wait_for("#browse-hex"));
    browser.wait_for_text("#messages tr[data-offset=\"0\"] [data-field=\"payload\"]", |t| t == "6d 2d 30");

    // Tail: what is stored now, then what arrives.
    browser.goto(&format!("{base}#/browse?stream=default&from=tail"));
    browser.wait_for_text("#browse-message", |t| t.starts_with("Tailing default: 10 message(s)"));
    runtime.block_on(v4_session::publish_all(port, "browse-pub", "plant/line-2", 10..13));
    browser.wait_for_text("#messages tr[data-offset=\"12\"] [data-field=\"payload\"]", |t| t == "m-12");
    let tail = rows(&browser);
    assert_eq!(tail.iter().map(|r| r.0).collect::<Vec<_>>(), (0..13).collect::<Vec<_>>(), "{tail:?}");
    assert_eq!(tail[12].2, "plant/line-2");
    browser.screenshot("browse-tail-laptop");
}
