//! Issue 21's chaos harness on the single node: latency. A client reaches the broker through
//! the harness's delaying proxy, which holds every chunk 200 ms each way; the client observes
//! it: CONNECT to CONNACK and each QoS 1 PUBLISH to its PUBACK take at least twice the delay.
//! (A lower bound only: a loaded machine may add any amount.)

#[path = "common/netns.rs"]
mod netns;

use std::time::Duration;

use netns::{DelayProxy, Net};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::time::{Instant, timeout};

const DELAY: Duration = Duration::from_millis(200);
const PUBLISHES: usize = 3;

#[test]
fn the_proxy_delays_every_round_trip() {
    let Some(net) = Net::new(1) else { return };
    let dir = tempfile::tempdir().unwrap();
    let broker = net.serve(net.node(0), &dir.path().join("data"), "");
    let proxy = DelayProxy::start(&net, net.client(), broker.mqtt, DELAY);
    let proxy_addr = proxy.addr;

    let (connect, round_trips) = net.block_on(net.client(), move || async move {
        let mut options = MqttOptions::new("slow", proxy_addr.ip().to_string(), proxy_addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut events) = AsyncClient::new(options, 10);
        let start = Instant::now();
        let mut next = async || {
            timeout(Duration::from_secs(30), events.poll())
                .await
                .expect("no event within 30 s")
                .expect("connection through the proxy")
        };
        while !matches!(next().await, Event::Incoming(Packet::ConnAck(_))) {}
        let connect = start.elapsed();
        let mut round_trips = Vec::new();
        for i in 0..PUBLISHES {
            let sent = Instant::now();
            client.publish("slow/t", QoS::AtLeastOnce, false, format!("p{i}")).await.unwrap();
            while !matches!(next().await, Event::Incoming(Packet::PubAck(_))) {}
            round_trips.push(sent.elapsed());
        }
        (connect, round_trips)
    });

    assert!(connect >= 2 * DELAY, "CONNECT to CONNACK took {connect:?}, under twice the {DELAY:?} delay");
    assert_eq!(round_trips.len(), PUBLISHES);
    for rtt in round_trips {
        assert!(rtt >= 2 * DELAY, "a PUBACK came back after {rtt:?}, under twice the {DELAY:?} delay");
    }
}
