//! Issue 21's chaos harness on the single node: 20% of the packets on the broker's link are
//! dropped, each way, for a whole bounded QoS 1 load (connects and subscribes included). TCP
//! retransmits; every acknowledged message reaches the subscriber and the replay, and the
//! history checker passes.

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

const MESSAGES: usize = 150;
const LOSS_PERCENT: u32 = 20;
const DEADLINE: Duration = Duration::from_secs(60);

#[test]
fn twenty_percent_packet_loss_loses_no_acknowledged_message() {
    let Some(net) = Net::new(1) else { return };
    let node = net.node(0);
    let dir = tempfile::tempdir().unwrap();
    let broker = net.serve(node, &dir.path().join("data"), "");
    let addr = broker.mqtt;
    let recorder = Recorder::new();
    // Long enough that retransmissions alone do not end a connection.
    let keep_alive = Duration::from_secs(10);

    net.drop_percent(node, LOSS_PERCENT);
    let recorder_ref = &recorder;
    net.block_on(net.client(), move || async move {
        let recorder = recorder_ref;
        let (live, publisher) = (Connection::default(), Connection::default());
        let sub = Subscriber::subscribe(options("live", addr, true, keep_alive), "chaos/#", &[], None, &live).await;
        let payloads = (0..MESSAGES).map(|i| format!("m{i}")).collect();
        tokio::join!(
            publish_qos1(
                recorder,
                options("pub", addr, true, keep_alive),
                "chaos/a",
                payloads,
                &publisher,
                DEADLINE,
                &|_| {}
            ),
            sub.run(recorder, &live, || publisher.is_finished(), DEADLINE),
        );
        replay(recorder, addr, "replay", "default", DEADLINE).await;
    });
    let dropped = net.dropped_packets(node);
    net.heal_all();

    let report = recorder.snapshot().check(&["live", "replay"]);
    eprintln!("{dropped} packets dropped; {report}");
    report.assert_ok();
    assert!(dropped > 0, "the loss rule dropped nothing");
    assert!(report.acked > 0, "nothing was acknowledged under loss: {report}");
}
