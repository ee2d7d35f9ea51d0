//! The cut-and-heal scenario two chaos tests share (issue 21): a QoS 1 load from a persistent
//! publisher to a persistent live subscriber, a fault applied to the broker's node right after
//! the `CUT_AFTER`th PUBACK, healed once both clients have seen their connection fail, then a
//! replay of the stream from the start. Each test supplies the fault and asserts on what this
//! returns.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::chaos_clients::{Connection, Subscriber, options, publish_qos1, replay};
use super::history::{Recorder, Report};
use super::netns::{Host, Net};

/// Messages the publisher sends.
pub const MESSAGES: usize = 200;
/// The fault is applied right after this many PUBACKs.
const CUT_AFTER: usize = 50;
const DEADLINE: Duration = Duration::from_secs(60);

/// What the scenario saw: the history check over the live subscriber and the replay, the
/// packets the fault's rules dropped, and the clients' failures and (re)connections.
pub struct CutOutcome {
    pub report: Report,
    pub dropped: u64,
    pub publisher_failures: usize,
    pub subscriber_failures: usize,
    pub publisher_connects: usize,
}

/// Runs the scenario on `net`'s node 0 (a broker with default settings), applying `fault`
/// to it mid-load.
pub fn cut_mid_load_and_heal(net: &Net, fault: impl Fn(&Net, Host) + Sync) -> CutOutcome {
    let node = net.node(0);
    let dir = tempfile::tempdir().unwrap();
    let broker = net.serve(node, &dir.path().join("data"), "");
    let addr = broker.mqtt;
    let recorder = Recorder::new();
    // Short, so each side notices the cut within seconds.
    let keep_alive = Duration::from_secs(5);
    let dropped = Mutex::new(0);

    let (recorder_ref, dropped_ref, fault) = (&recorder, &dropped, &fault);
    let (publisher_failures, subscriber_failures, publisher_connects) =
        net.block_on(net.client(), move || async move {
            let (live, publisher) = (Connection::default(), Connection::default());
            let sub = Subscriber::subscribe(options("live", addr, true, keep_alive), "chaos/#", &[], None, &live).await;
            let payloads = (0..MESSAGES).map(|i| format!("m{i}")).collect();
            let cut = |acked: usize| {
                if acked == CUT_AFTER {
                    fault(net, node);
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
                *dropped_ref.lock().unwrap() = net.dropped_packets(node);
                net.heal(node);
            };
            tokio::join!(
                publish_qos1(
                    recorder_ref,
                    options("pub", addr, true, keep_alive),
                    "chaos/a",
                    payloads,
                    &publisher,
                    DEADLINE,
                    &cut
                ),
                sub.run(recorder_ref, &live, || publisher.is_finished(), DEADLINE),
                healer,
            );
            replay(recorder_ref, addr, "replay", "default", DEADLINE).await;
            (publisher.failures(), live.failures(), publisher.connects())
        });

    let report = recorder.snapshot().check(&["live", "replay"]);
    let dropped = dropped.into_inner().unwrap();
    CutOutcome { report, dropped, publisher_failures, subscriber_failures, publisher_connects }
}
