//! Altering a stream's retention from the dashboard changes what `strata stream describe`
//! shows: the Settings form of a stream's page, behind a confirmation dialog, reached and
//! answered with the keyboard alone. Cancelling changes nothing. Headless chromium against a
//! real broker; the CLI reads the result through the gRPC admin API.

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

const CONFIG: &str = "[[streams]]\nname = \"orders\"\ntopics = [\"orders/#\"]\n";
const TAB: &str = "\u{E004}";
const ENTER: &str = "\u{E007}";

fn retention_ms(grpc: std::net::SocketAddr) -> Option<String> {
    let stream = admin_cli::json(grpc, &["stream", "describe", "orders"]);
    stream["settings"]["retention_ms"].as_str().map(str::to_owned)
}

#[test]
fn a_retention_change_confirmed_on_the_page_shows_in_stream_describe() {
    if !browser::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = streams::start(dir.path(), CONFIG);
    let grpc = broker.grpc_addr();
    assert_eq!(retention_ms(grpc), None, "no time limit to start with");

    let browser = Browser::start();
    browser.goto(&format!("http://{}/#/streams/orders", broker.http_addr()));
    browser.wait_for("#settings [data-setting=\"segment_bytes\"]");

    // A new setting, reviewed, then cancelled: nothing changes.
    browser.click(&browser.wait_for("#new-setting-key option[value=\"retention_ms\"]"));
    browser.type_text(&browser.wait_for("#new-setting-value"), "3600000");
    browser.click(&browser.wait_for("#settings-review"));
    browser.wait_for("#confirm[open]");
    let changes = browser.wait_for_text("#confirm-changes", |t| !t.is_empty());
    assert!(changes.contains("retention_ms") && changes.contains("3600000"), "the dialog shows the change: {changes}");
    browser.screenshot("alter-confirm-laptop");
    browser.click(&browser.wait_for("#confirm-cancel"));
    browser.wait_for_text("#settings-message", |t| t.starts_with("Cancelled"));
    assert_eq!(retention_ms(grpc), None, "a cancelled change is not made");

    // The same change with the keyboard only: Enter on the review button opens the dialog
    // with the focus on Cancel; Tab moves to Apply; Enter applies.
    browser.execute("document.getElementById('settings-review').focus()", json!([]));
    browser.press_keys(ENTER);
    browser.wait_for("#confirm[open]");
    let focused = browser.execute("return document.activeElement.id", json!([]));
    assert_eq!(focused, "confirm-cancel", "the dialog starts on the harmless answer");
    browser.press_keys(TAB);
    browser.press_keys(ENTER);
    browser.wait_for_text("#settings-message", |t| t.starts_with("Saved"));
    assert_eq!(retention_ms(grpc).as_deref(), Some("3600000"), "the page's change is the admin API's");

    // An existing setting edited in place.
    let input = browser.wait_for("#settings [data-setting=\"retention_ms\"]");
    assert_eq!(browser.attribute(&input, "value").as_deref(), Some("3600000"), "the form shows the new value");
    browser.clear(&input);
    browser.type_text(&input, "7200000");
    browser.click(&browser.wait_for("#settings-review"));
    browser.wait_for("#confirm[open]");
    browser.click(&browser.wait_for("#confirm-ok"));
    browser.wait_for_text("#settings-message", |t| t.starts_with("Saved"));
    assert_eq!(retention_ms(grpc).as_deref(), Some("7200000"));
    browser.screenshot("alter-saved-laptop");

    // A value the admin API refuses is reported on the page, naming the key; nothing changes.
    let input = browser.wait_for("#settings [data-setting=\"retention_ms\"]");
    browser.clear(&input);
    browser.type_text(&input, "soon");
    browser.click(&browser.wait_for("#settings-review"));
    browser.wait_for("#confirm[open]");
    browser.click(&browser.wait_for("#confirm-ok"));
    let refused = browser.wait_for_text("#settings-message", |t| t.starts_with("Not changed"));
    assert!(refused.contains("retention_ms"), "{refused}");
    assert_eq!(retention_ms(grpc).as_deref(), Some("7200000"));
}
