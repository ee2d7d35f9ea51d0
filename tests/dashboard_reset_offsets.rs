//! Resetting a consumer's offsets from the dashboard's Consumers page, behind a confirmation,
//! moves them as `strata group reset-offsets` would: an offline persistent session that lags
//! by five readings is reset to `latest` and `strata group describe` then shows it caught up.

#[path = "common/admin_cli.rs"]
mod admin_cli;
#[path = "common/broker.rs"]
mod broker;
#[path = "common/browser.rs"]
mod browser;
#[path = "common/v4_session.rs"]
mod v4_session;

use broker::ServeProcess;
use browser::Browser;
use tokio::time::timeout;

const READINGS: usize = 5;

#[test]
fn a_confirmed_reset_moves_the_committed_offset() {
    if !browser::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(dir.path());
    let (port, grpc) = (broker.port(), broker.grpc_addr());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let (subscriber, mut events) = v4_session::client("reset-sub", port, false);
        timeout(v4_session::DEADLINE, v4_session::connack(&mut events)).await.expect("CONNACK");
        subscriber.subscribe("sensors/#", rumqttc::QoS::AtLeastOnce).await.unwrap();
        subscriber.disconnect().await.unwrap();
        let _ = timeout(v4_session::DEADLINE, async { while events.poll().await.is_ok() {} }).await;
        v4_session::publish_all(port, "reset-pub", "sensors/a", 0..READINGS).await;
    });
    let lag = |s: &serde_json::Value| s["partitions"][0]["lag"].as_u64();
    let before = admin_cli::wait_for_session(grpc, "reset-sub", "a lag of five", |s| {
        s["members"] == 0 && lag(s) == Some(READINGS as u64)
    });
    let start = admin_cli::committed(&before, "default", 0).unwrap();

    let browser = Browser::start();
    browser.goto(&format!("http://{}/#/consumers", broker.http_addr()));
    let row = "#groups tr[data-group=\"reset-sub\"][data-kind=\"session\"][data-stream=\"default\"]";
    assert_eq!(browser.cell(row, "lag"), READINGS as u64);
    assert_eq!(browser.cell(row, "committed"), start);

    let to = browser.wait_for("form[data-reset=\"reset-sub\"] #reset-to");
    browser.clear(&to);
    browser.type_text(&to, "latest");
    browser.click(&browser.wait_for("form[data-reset=\"reset-sub\"] button[type=\"submit\"]"));
    browser.wait_for("#confirm[open]");
    let asked = browser.wait_for_text("#confirm-body", |t| !t.is_empty());
    assert!(
        asked.contains("reset-sub") && asked.contains("latest"),
        "the dialog names the session and target: {asked}"
    );
    browser.screenshot("reset-confirm-laptop");
    // Nothing moved while the dialog waits.
    let waiting = admin_cli::json(grpc, &["group", "describe", "reset-sub", "--kind", "session"]);
    assert_eq!(admin_cli::committed(&waiting, "default", 0), Some(start));
    browser.click(&browser.wait_for("#confirm-ok"));
    browser.wait_for_text("form[data-reset=\"reset-sub\"] p[role=\"status\"]", |t| t == "Offsets reset.");

    let after = admin_cli::json(grpc, &["group", "describe", "reset-sub", "--kind", "session"]);
    assert_eq!(admin_cli::committed(&after, "default", 0), Some(start + READINGS as u64), "{after}");
    assert_eq!(lag(&after), Some(0), "{after}");
    // The page, loaded again, shows it too.
    browser.refresh();
    assert_eq!(browser.cell(row, "lag"), 0);
}
