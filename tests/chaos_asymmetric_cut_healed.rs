//! Issue 21's chaos harness on the single node: an asymmetric partition. Right after the 50th
//! PUBACK of a QoS 1 load, everything the broker sends to the client namespace is dropped
//! (the client still reaches the broker: its publishes arrive, their PUBACKs do not). Healed
//! once both clients have noticed, both resume their persistent sessions; the history checker
//! finds no acknowledged loss (and reports QoS 1 duplicates of publishes whose PUBACK was lost,
//! which at least once allows).

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
fn an_asymmetric_cut_of_the_broker_replies_loses_no_acknowledged_message() {
    let Some(net) = Net::new(1) else { return };
    let CutOutcome { report, dropped, publisher_failures, subscriber_failures, publisher_connects } =
        cut_mid_load_and_heal(&net, |net, node| net.cut_one_way(node, net.client()));
    report.assert_ok();
    eprintln!("{report}");
    // The cut took effect: the broker's answers were dropped and both connections failed, and the
    // publisher came back (a second CONNACK, with its session) and finished the load.
    assert!(dropped > 0, "the broker sent nothing the cut could drop");
    assert!(publisher_failures >= 1 && subscriber_failures >= 1, "{publisher_failures} {subscriber_failures}");
    assert!(publisher_connects >= 2, "the publisher never reconnected");
    assert_eq!(report.acked, MESSAGES, "after the heal every publish is acknowledged: {report}");
}
