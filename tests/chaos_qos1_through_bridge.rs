//! Issue 21's chaos harness, proved on the single node: a broker in one network namespace and
//! its clients in another, across the bridge. QoS 1 publishes, a live subscriber, a live
//! `$stream` subscriber and a replay from `earliest` (rumqttc, in the client namespace), and
//! a replay by `mosquitto_sub` started there with `ip netns exec`: the history checker finds
//! every acknowledged payload everywhere, offsets in order, one payload per offset.

#[path = "common/chaos_clients.rs"]
mod chaos_clients;
#[path = "common/history.rs"]
mod history;
#[path = "common/netns.rs"]
mod netns;

use std::time::Duration;

use chaos_clients::{Connection, Subscriber, options, publish_qos1, replay};
use history::{Position, Recorder};
use netns::Net;

const MESSAGES: usize = 300;
const DEADLINE: Duration = Duration::from_secs(40);

#[test]
fn qos1_through_the_bridge_loses_nothing() {
    let Some(net) = Net::new(1) else { return };
    let dir = tempfile::tempdir().unwrap();
    let broker = net.serve(net.node(0), &dir.path().join("data"), "");
    let addr = broker.mqtt;
    let recorder = Recorder::new();
    let keep_alive = Duration::from_secs(10);

    let recorder = &recorder;
    net.block_on(net.client(), move || async move {
        let (live, stream, publisher) = (Connection::default(), Connection::default(), Connection::default());
        // Both subscriptions are in effect (SUBACKed) before the first publish.
        let sub = Subscriber::subscribe(options("live", addr, true, keep_alive), "chaos/#", &[], None, &live).await;
        let stream_sub = Subscriber::subscribe(
            options("live-stream", addr, true, keep_alive),
            "$stream/default/chaos/#",
            &[],
            Some("default"),
            &stream,
        )
        .await;
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
            stream_sub.run(recorder, &stream, || publisher.is_finished(), DEADLINE),
        );
        replay(recorder, addr, "replay", "default", DEADLINE).await;
    });

    // The same replay by mosquitto_sub, with each delivery's user properties.
    let earliest = "$stream/default/@earliest";
    let output = net
        .command(net.client(), "mosquitto_sub")
        .args(["-V", "mqttv5", "-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(["-q", "1", "-t", earliest, "-C", &MESSAGES.to_string(), "-W", "30", "-F", "%p|%P"])
        .output()
        .expect("run mosquitto_sub in the client namespace");
    assert!(output.status.success(), "mosquitto_sub: {}", String::from_utf8_lossy(&output.stderr));
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let (payload, properties) = line.split_once('|').unwrap_or((line, ""));
        let property = |name: &str| {
            properties.split(' ').find_map(|p| p.strip_prefix(name)?.strip_prefix(':')?.parse::<u64>().ok())
        };
        let position = property("stream-offset")
            .zip(property("stream-partition"))
            .map(|(offset, partition)| Position { stream: "default".into(), partition: partition as u32, offset });
        recorder.delivered("mosquitto-replay", "chaos/a", payload, position);
    }

    let history = recorder.snapshot();
    let readers = ["live", "live-stream", "replay", "mosquitto-replay"];
    let report = history.check(&readers);
    report.assert_ok();
    // Nothing failed on the way: every publish was acknowledged, each reader saw each one.
    assert_eq!(report.acked, MESSAGES, "{report}");
    for reader in readers {
        assert_eq!(recorder.received_by(reader), MESSAGES, "{reader}: {report}");
    }
    // Positions came through: the $stream readers' deliveries carry offsets.
    let positioned = history.deliveries.iter().filter(|d| d.position.is_some()).count();
    assert!(positioned >= 3 * MESSAGES, "{positioned} deliveries with an offset: {report}");
    // Clients and broker really were in different namespaces, on the bridge's subnet.
    assert!(addr.ip().to_string().starts_with("10.77."), "{addr}");
}
