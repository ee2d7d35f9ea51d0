//! Issue 21's chaos harness on the single node: an asymmetric partition. Right after the 50th
//! PUBACK of a QoS 1 load, everything the broker sends to the client namespace is dropped
//! (the client still reaches the broker: its publishes arrive, their PUBACKs do not). Healed
//! once both clients have noticed, both resume their persistent sessions; the history checker
//! finds no acknowledged loss (and reports QoS 1 duplicates of publishes whose PUBACK was lost,
//! which at least once allows).

#[path = "common/chaos_clients.rs"]
mod chaos_clients;
#[path = "common/history.rs"]
mod history;
#[path = "common/netns.rs"]
mod netns;

use std::time::Duration;

use chaos_clients::{Connection, Subscriber, options, publish_qos1, replay};
use history::Recorder;
use netns::Net;
use tokio::time::Instant;

const MESSAGES: usize = 200;
const CUT_AFTER: usize = 50;
const DEADLINE: Duration = Duration::from_secs(60);

#[test]
fn an_asymmetric_cut_of_the_broker_replies_loses_no_acknowledged_message() {
    let Some(net) = Net::new(1) else { return };
    let node = net.node(0);
    let dir = tempfile::tempdir().unwrap();
    let broker = net.serve(node, &dir.path().join("data"), "");
    let addr = broker.mqtt;
    let recorder = Recorder::new();
    // Short, so each side notices the cut within seconds.
    let keep_alive = Duration::from_secs(5);
    let dropped = std::sync::Mutex::new(0);

    let (recorder, net_ref, dropped_ref) = (&recorder, &net, &dropped);
    let (publisher_failures, subscriber_failures, publisher_connects) =
        net.block_on(net.client(), move || async move {
            let (live, publisher) = (Connection::default(), Connection::default());
            let sub = Subscriber::subscribe(options("live", addr, true, keep_alive), "chaos/#", &[], None, &live).await;
            let payloads = (0..MESSAGES).map(|i| format!("m{i}")).collect();
            let cut = |acked: usize| {
                if acked == CUT_AFTER {
                    net_ref.cut_one_way(node, net_ref.client());
                }
            };
            // Heal once both clients have seen their connection fail.
            let healer = async {
                let end = Instant::now() + Duration::from_secs(30);
                while !(publisher.failures() >= 1 && live.failures() >= 1) {
                    assert!(
                        Instant::now() < end,
                        "the clients did not notice the cut within 30 s: {} publisher and {} subscriber failures",
                        publisher.failures(),
                        live.failures()
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                *dropped_ref.lock().unwrap() = net_ref.dropped_packets(node);
                net_ref.heal(node);
            };
            tokio::join!(
                publish_qos1(
                    recorder,
                    options("pub", addr, true, keep_alive),
                    "chaos/a",
                    payloads,
                    &publisher,
                    DEADLINE,
                    &cut
                ),
                sub.run(recorder, &live, || publisher.is_finished(), DEADLINE),
                healer,
            );
            replay(recorder, addr, "replay", "default", DEADLINE).await;
            (publisher.failures(), live.failures(), publisher.connects())
        });

    let report = recorder.snapshot().check(&["live", "replay"]);
    report.assert_ok();
    eprintln!("{report}");
    // The cut took effect: the broker's answers were dropped and both connections failed, and the
    // publisher came back (a second CONNACK, with its session) and finished the load.
    assert!(*dropped.lock().unwrap() > 0, "the broker sent nothing the cut could drop");
    assert!(publisher_failures >= 1 && subscriber_failures >= 1, "{publisher_failures} {subscriber_failures}");
    assert!(publisher_connects >= 2, "the publisher never reconnected");
    assert_eq!(report.acked, MESSAGES, "after the heal every publish is acknowledged: {report}");
}
