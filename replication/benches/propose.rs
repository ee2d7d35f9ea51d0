//! Proposals on a 3-node group on loopback, all in this process (each node with its own data
//! directory and gRPC server): time per proposal of 1 and of 100 records, on the leader and
//! through a follower (forwarded to the leader over gRPC), then a measured
//! run of concurrent proposers reporting proposals/s and commit latency percentiles.
//!
//! cargo bench -p strata-replication --bench propose

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use criterion::{Criterion, Throughput};

struct Setup {
    runtime: tokio::runtime::Runtime,
    _root: tempfile::TempDir,
    nodes: Vec<common::TestNode>,
    leader: u64,
}

fn setup() -> Setup {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let root = tempfile::tempdir().unwrap();
    let (nodes, leader) = runtime.block_on(async {
        let nodes = common::start_cluster(root.path(), 3).await.unwrap();
        let leader = common::wait_for_common_leader(&nodes, None).await.unwrap();
        (nodes, leader)
    });
    Setup { runtime, _root: root, nodes, leader }
}

fn bench_propose(c: &mut Criterion) {
    let setup = setup();
    let leader = common::node(&setup.nodes, setup.leader).partition();
    let mut group = c.benchmark_group("propose_3_nodes");
    for size in [1usize, 100] {
        group.throughput(Throughput::Elements(size as u64));
        group.bench_function(format!("{size}_records"), |b| {
            b.iter(|| {
                let records = (0..size).map(common::record).collect();
                setup.runtime.block_on(leader.propose(records)).unwrap()
            })
        });
    }
    group.finish();
    // The same through a follower: Cluster::propose forwards to the leader over gRPC.
    let follower = setup.nodes.iter().find(|n| n.id != setup.leader).unwrap();
    let mut group = c.benchmark_group("propose_3_nodes_via_follower");
    for size in [1usize, 100] {
        group.throughput(Throughput::Elements(size as u64));
        group.bench_function(format!("{size}_records"), |b| {
            b.iter(|| {
                let records = (0..size).map(common::record).collect();
                let options = strata_replication::ProposeOptions::default();
                setup.runtime.block_on(follower.cluster.propose(&common::group(), records, options)).unwrap()
            })
        });
    }
    group.finish();
    batches_per_record(&setup);
    measured_run(&setup);
    setup.runtime.block_on(async {
        for mut node in setup.nodes {
            node.kill().await.unwrap();
        }
    });
}

/// How openraft's separate `client_write`s of one proposal land in the log: a proposal of
/// 100 records is 100 writes; this counts the batches they became on the leader and on a
/// follower.
fn batches_per_record(setup: &Setup) {
    setup.runtime.block_on(async {
        let leader = common::node(&setup.nodes, setup.leader).partition();
        let mut proposals = 0;
        let start = leader.committed();
        for _ in 0..20 {
            leader.propose((0..100).map(common::record).collect()).await.unwrap();
            proposals += 1;
        }
        let end = leader.committed();
        for node in &setup.nodes {
            node.wait_committed(end).await.unwrap();
            let log = node.partition().log();
            let (mut batches, mut records, mut next) = (0, 0, start);
            while next < end {
                let fetch = log.read(next, 1 << 20).unwrap();
                if fetch.batches.is_empty() {
                    break;
                }
                for batch in &fetch.batches {
                    batches += 1;
                    records += batch.header().record_count;
                    next = batch.header().last_offset() + 1;
                }
            }
            println!(
                "node {}: {proposals} proposals of 100 records became {batches} batches ({:.1} records per batch)",
                node.id,
                f64::from(records) / f64::from(batches)
            );
        }
    });
}

/// `proposers` tasks each propose one record at a time, back to back, for a few seconds.
fn measured_run(setup: &Setup) {
    for proposers in [1usize, 16, 64] {
        let latencies = setup.runtime.block_on(async {
            let leader = common::node(&setup.nodes, setup.leader).partition();
            let deadline = Instant::now() + Duration::from_secs(3);
            let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
            let tasks = (0..proposers).map(|p| {
                let latencies = Arc::clone(&latencies);
                async move {
                    let mut i = 0;
                    while Instant::now() < deadline {
                        let started = Instant::now();
                        leader.propose(vec![common::record(p * 1_000_000 + i)]).await.unwrap();
                        latencies.lock().unwrap().push(started.elapsed());
                        i += 1;
                    }
                }
            });
            let started = Instant::now();
            futures_util::future::join_all(tasks).await;
            let elapsed = started.elapsed();
            let mut latencies = std::mem::take(&mut *latencies.lock().unwrap());
            latencies.sort();
            (latencies, elapsed)
        });
        let (latencies, elapsed) = latencies;
        let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
        println!(
            "3 nodes, {proposers:>2} concurrent proposers of 1 record: {:>7.0} proposals/s, commit latency p50 {:?} p99 {:?} max {:?} ({} proposals)",
            latencies.len() as f64 / elapsed.as_secs_f64(),
            at(0.50),
            at(0.99),
            latencies.last().unwrap(),
            latencies.len()
        );
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args().measurement_time(Duration::from_secs(5));
    bench_propose(&mut criterion);
    criterion.final_summary();
}
