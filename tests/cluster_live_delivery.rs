//! Issue 20, "subscribe anywhere", without any failure: a live QoS 1 subscriber on each node
//! gets every acknowledged message of a load published on the partition's leader. Isolates
//! live delivery from a follower's local replica from the failover scenario.

#[path = "common/chaos_clients.rs"]
mod chaos_clients;
#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/history.rs"]
mod history;
#[path = "common/netns.rs"]
mod netns;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chaos_clients::{Connection, Subscriber};
use cluster::{Cluster, Pacing, publish_until_acked, runtime};
use history::Recorder;

#[test]
fn issue20_live_subscribers_on_every_node_get_every_acknowledged_message() {
    let cluster = Cluster::start(3);
    cluster.create_stream(None, "live", 1, "live/#", &[]);
    let leader = cluster.wait_for_leaders("live", 1, Duration::from_secs(30))[&0];
    println!("leader {leader}");
    let recorder = Recorder::new();
    let rt = runtime();
    let connections: Vec<Connection> = cluster.ids().iter().map(|_| Connection::default()).collect();
    let subscribers: Vec<Subscriber> = cluster
        .ids()
        .iter()
        .zip(&connections)
        .map(|(&id, connection)| {
            let options =
                chaos_clients::options(&format!("live-{id}"), cluster.node(id).mqtt, false, Duration::from_secs(10));
            rt.block_on(Subscriber::subscribe(options, "live/#", &[], None, connection))
        })
        .collect();
    let done = AtomicBool::new(false);
    let payloads: Vec<String> = (0..2_000).map(|i| format!("m-{i:05}")).collect();
    let run = rt.block_on(async {
        let publisher = async {
            let run = publish_until_acked(
                &recorder,
                "pub",
                &[cluster.node(leader).mqtt],
                "live/t",
                payloads,
                Pacing { window: 20, rotate_on_refusal: false, deadline: Duration::from_secs(60) },
            )
            .await;
            done.store(true, Ordering::SeqCst);
            run
        };
        let readers = futures_util_join(
            subscribers
                .into_iter()
                .zip(&connections)
                .map(|(s, c)| s.run(&recorder, c, || done.load(Ordering::SeqCst), Duration::from_secs(30)))
                .collect(),
        );
        tokio::join!(publisher, readers).0
    });
    assert!(run.unacked.is_empty(), "not acknowledged: {run:?}");
    let readers: Vec<String> = cluster.ids().iter().map(|id| format!("live-{id}")).collect();
    let readers: Vec<&str> = readers.iter().map(String::as_str).collect();
    let report = recorder.snapshot().check(&readers);
    for reader in &readers {
        let lost = report.lost.iter().filter(|(r, _)| r == reader).count();
        println!("{reader}: {lost} acknowledged messages missing");
    }
    println!("{report}");
    report.assert_ok();
}

/// Runs the futures together (no extra dependency for `join_all`).
async fn futures_util_join<F: std::future::Future<Output = ()>>(futures: Vec<F>) {
    let mut futures: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut done = vec![false; futures.len()];
    std::future::poll_fn(|cx| {
        for (future, done) in futures.iter_mut().zip(done.iter_mut()) {
            if !*done && future.as_mut().poll(cx).is_ready() {
                *done = true;
            }
        }
        if done.iter().all(|d| *d) { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    })
    .await
}
