//! A member of a consumer group that stops acknowledging QoS 1 messages and then drops its
//! connection without DISCONNECT: what it left unacknowledged goes to the other member of
//! the group, with DUP set, so together they saw every message and the other one got all.

#[path = "common/broker.rs"]
mod broker;

use std::collections::BTreeSet;
use std::time::Duration;

use broker::ServeProcess;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use tokio::sync::mpsc;
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(30);
const MESSAGES: usize = 40;
const FILTER: &str = "$share/billing/invoices/+";

fn client(id: &str, port: u16, manual_acks: bool) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_manual_acks(manual_acks);
    AsyncClient::new(options, 200)
}

async fn join(client: &AsyncClient, events: &mut EventLoop) {
    client.subscribe(FILTER, QoS::AtLeastOnce).await.unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.expect("member connects") {
            return;
        }
    }
}

/// Polls `events`, forwarding each PUBLISH as (payload, dup).
fn forward(mut events: EventLoop, to: mpsc::Sender<(usize, bool)>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = event {
                let seq = String::from_utf8(p.payload.to_vec()).unwrap().parse().unwrap();
                if to.send((seq, p.dup)).await.is_err() {
                    return;
                }
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_messages_of_a_member_that_vanishes_go_to_the_other_member() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(dir.path());
    let port = broker.port();
    timeout(DEADLINE, async {
        // The silent member never acknowledges (manual acks, never given).
        let (silent, mut silent_events) = client("redeliver-silent", port, true);
        join(&silent, &mut silent_events).await;
        let (worker, mut worker_events) = client("redeliver-worker", port, false);
        join(&worker, &mut worker_events).await;
        let (silent_tx, mut silent_rx) = mpsc::channel(MESSAGES * 2);
        let (worker_tx, mut worker_rx) = mpsc::channel(MESSAGES * 2);
        let silent_task = forward(silent_events, silent_tx);
        let _worker_task = forward(worker_events, worker_tx);

        let (publisher, mut pub_events) = client("redeliver-publisher", port, false);
        tokio::spawn(async move {
            for i in 0..MESSAGES {
                publisher.publish(format!("invoices/{}", i % 3), QoS::AtLeastOnce, false, i.to_string()).await.unwrap();
            }
            while pub_events.poll().await.is_ok() {}
        });

        // Every message reached one of the two.
        let (mut held, mut done) = (BTreeSet::new(), BTreeSet::new());
        while held.len() + done.len() < MESSAGES {
            tokio::select! {
                Some((seq, _)) = silent_rx.recv() => assert!(held.insert(seq), "{seq} twice to the silent member"),
                Some((seq, dup)) = worker_rx.recv() => {
                    assert!(!dup, "{seq}: nothing to redeliver yet");
                    assert!(done.insert(seq), "{seq} twice to the worker");
                }
            }
        }
        assert!(!held.is_empty() && !done.is_empty(), "the group spreads: {held:?} / {done:?}");
        assert!(held.is_disjoint(&done));

        // The silent member vanishes: its socket closes, no DISCONNECT.
        silent_task.abort();
        let _ = silent_task.await;
        drop(silent);

        let mut redelivered = BTreeSet::new();
        while redelivered.len() < held.len() {
            let (seq, dup) = worker_rx.recv().await.expect("worker runs");
            assert!(held.contains(&seq), "{seq} was not left unacknowledged");
            assert!(dup, "{seq}: a redelivery has DUP set");
            redelivered.insert(seq);
        }
        done.extend(redelivered);
        assert_eq!(done, (0..MESSAGES).collect(), "the worker ends up with every message");
    })
    .await
    .expect("redelivery in time");
}
