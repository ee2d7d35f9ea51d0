//! Issue 21's chaos harness on the single node: the broker's namespace is cut off in the
//! middle of a QoS 1 load (right after the 50th PUBACK, with more publishes in flight), and
//! healed once both clients have noticed. Both resume their persistent sessions, and the
//! history checker finds no acknowledged loss.

#[path = "common/chaos_clients.rs"]
mod chaos_clients;
#[path = "common/chaos_cut.rs"]
mod chaos_cut;
#[path = "common/history.rs"]
mod history;
#[path = "common/netns.rs"]
mod netns;

use chaos_cut::{CutOutcome, MESSAGES, cut_mid_load_and_heal};
use netns::Net;

#[test]
fn a_broker_cut_off_mid_load_loses_no_acknowledged_message() {
    let Some(net) = Net::new(1) else { return };
    let CutOutcome { report, dropped, publisher_failures, subscriber_failures, publisher_connects } =
        cut_mid_load_and_heal(&net, |net, node| net.cut(node));
    report.assert_ok();
    // The cut took effect: packets were dropped and both connections failed, and the
    // publisher came back (a second CONNACK, with its session) and finished the load.
    assert!(dropped > 0, "the cut dropped nothing");
    assert!(publisher_failures >= 1 && subscriber_failures >= 1, "{publisher_failures} {subscriber_failures}");
    assert!(publisher_connects >= 2, "the publisher never reconnected");
    assert_eq!(report.acked, MESSAGES, "after the heal every publish is acknowledged: {report}");
}
