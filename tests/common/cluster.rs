//! A cluster of real `strata serve` processes on loopback for the issue 20 tests: N nodes, each
//! with its own data directory and fixed ports (MQTT, HTTP, admin gRPC, cluster gRPC) chosen
//! free at creation, so [`Cluster::restart`] brings a node back on the same ports with the same
//! data. Nodes are named by their `node_id` (1..=N), as `/cluster/status` names them.
//!
//! Everything waits on observables only: a node's start-up lines, `GET /cluster/status`,
//! `GET /ready`, a bound cluster port. Every wait is bounded in time. Every node is killed
//! (SIGKILL) when the [`Cluster`] is dropped, also when a test panics.
//!
//! MQTT helpers record into a [`Recorder`] (tests/common/history.rs), so each test ends with
//! [`History::check`](super::history::History::check): a publisher that follows every payload
//! to a successful PUBACK across refusals and reconnects (to the next node), and a `$stream`
//! replay from `earliest` that reads up to given marker payloads.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, SubscribeProperties, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::Value;

use super::history::{Position, Recorder};
use super::netns::Net;

/// How long a node may take to print its start-up lines: the contract gives it 60 s to join.
pub const START: Duration = Duration::from_secs(75);

/// One node's fixed addresses and files.
pub struct Node {
    pub id: u64,
    pub mqtt: SocketAddr,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub cluster: SocketAddr,
    pub data_dir: PathBuf,
    config: PathBuf,
    child: Option<Child>,
    /// Start-up and later stdout lines of the running process.
    lines: Option<mpsc::Receiver<String>>,
}

impl Node {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// `<data_dir>/<stream>/<partition>`: where this node keeps its replica.
    pub fn partition_dir(&self, stream: &str, partition: u32) -> PathBuf {
        self.data_dir.join(stream).join(partition.to_string())
    }
}

/// N nodes; killed on drop.
pub struct Cluster {
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
    /// Set when the nodes run in network namespaces ([`Cluster::start_in_namespaces`]).
    net: Option<Arc<Net>>,
}

/// Ports handed out by [`free_ports`] in this process, never handed out twice.
static TAKEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

/// `n` distinct free loopback ports, below the kernel's ephemeral range (32768 and up), so
/// neither a port-0 bind nor an outgoing connection (of these nodes, or of other tests on
/// the machine) takes one between now and the node's bind, nor before a restart.
fn free_ports(n: usize) -> Vec<u16> {
    let mut taken = TAKEN.lock().unwrap_or_else(|p| p.into_inner());
    let seed = std::process::id() as usize * 7919 + taken.len() * 104_729;
    let mut ports = Vec::new();
    for i in 0..20_000 {
        if ports.len() == n {
            break;
        }
        let port = (12_000 + (seed + i * 31) % 20_000) as u16;
        if taken.contains(&port) || TcpListener::bind(loopback(port)).is_err() {
            continue;
        }
        taken.push(port);
        ports.push(port);
    }
    assert_eq!(ports.len(), n, "{n} free ports between 12000 and 32000");
    ports
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The `[cluster]`-carrying config file of node `id`.
fn config_text(node: &Node, peers: &str, extra: &str) -> String {
    format!(
        "data_dir = {data:?}\n{extra}\n[mqtt]\nlisten = \"{mqtt}\"\n\n[http]\nlisten = \"{http}\"\n\n[grpc]\nlisten = \"{grpc}\"\n\n\
         [auth]\nallow_anonymous = true\n\n[cluster]\nnode_id = {id}\nlisten = \"{cluster}\"\npeers = [{peers}]\n",
        data = node.data_dir.to_str().expect("temp paths are UTF-8"),
        mqtt = node.mqtt,
        http = node.http,
        grpc = node.grpc,
        id = node.id,
        cluster = node.cluster,
    )
}

impl Cluster {
    /// `n` nodes, started together, each waited for until it prints its start-up lines.
    pub fn start(n: usize) -> Cluster {
        Self::start_with(n, "")
    }

    /// As [`Cluster::start`]; `extra` goes at the top of every node's config file (top-level
    /// keys, or whole sections such as `[[streams]]` or `[log]`).
    pub fn start_with(n: usize, extra: &str) -> Cluster {
        let order: Vec<u64> = (1..=n as u64).collect();
        let cluster = Self::create(n, extra);
        cluster.launch(&order)
    }

    /// `n` nodes started one after another in `order` (node ids): each is spawned once the
    /// previous one has bound its cluster port, before any has a leader.
    pub fn start_in_order(n: usize, order: &[u64]) -> Cluster {
        let cluster = Self::create(n, "");
        cluster.launch(order)
    }

    /// `n` nodes, node i in `net`'s node namespace i-1 (`net` has at least `n` nodes): MQTT
    /// and the cluster listener on the node's address (ports 1883 and 7101), HTTP and the
    /// admin API on the namespace's own loopback (9090, 7070). Reach them from the test with
    /// [`Cluster::status`] and [`Cluster::cli`] (which enter the node's namespace) and MQTT
    /// clients run with `net.block_on(net.client(), ...)`.
    pub fn start_in_namespaces(net: Arc<Net>, n: usize) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let nodes = (0..n)
            .map(|i| {
                let ip = net.addr(net.node(i));
                Node {
                    id: i as u64 + 1,
                    mqtt: SocketAddr::from((ip, 1883)),
                    http: loopback(9090),
                    grpc: loopback(7070),
                    cluster: SocketAddr::from((ip, 7101)),
                    data_dir: dir.path().join(format!("n{}", i + 1)),
                    config: dir.path().join(format!("n{}.toml", i + 1)),
                    child: None,
                    lines: None,
                }
            })
            .collect();
        let order: Vec<u64> = (1..=n as u64).collect();
        Self::configure(dir, nodes, "", Some(net)).launch(&order)
    }

    fn create(n: usize, extra: &str) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = free_ports(4 * n);
        let nodes: Vec<Node> = (0..n)
            .map(|i| Node {
                id: i as u64 + 1,
                mqtt: loopback(ports[4 * i]),
                http: loopback(ports[4 * i + 1]),
                grpc: loopback(ports[4 * i + 2]),
                cluster: loopback(ports[4 * i + 3]),
                data_dir: dir.path().join(format!("n{}", i + 1)),
                config: dir.path().join(format!("n{}.toml", i + 1)),
                child: None,
                lines: None,
            })
            .collect();
        Self::configure(dir, nodes, extra, None)
    }

    fn configure(dir: tempfile::TempDir, mut nodes: Vec<Node>, extra: &str, net: Option<Arc<Net>>) -> Cluster {
        let peers = nodes.iter().map(|n| format!("\"{}@{}\"", n.id, n.cluster)).collect::<Vec<_>>().join(", ");
        for node in &mut nodes {
            std::fs::write(&node.config, config_text(node, &peers, extra)).expect("write a node's config");
        }
        Cluster { dir, nodes, net }
    }

    /// Runs `f` where node `id`'s loopback listeners are reachable: here, or on a thread in
    /// its namespace.
    fn at_node<T: Send>(&self, id: u64, f: impl FnOnce() -> T + Send) -> T {
        match &self.net {
            None => f(),
            Some(net) => net.run_in(net.node(id as usize - 1), f),
        }
    }

    /// A command run where node `id` runs (in its namespace, if any).
    fn command_at(&self, id: u64, program: &str) -> Command {
        match &self.net {
            None => Command::new(program),
            Some(net) => net.command(net.node(id as usize - 1), program),
        }
    }

    fn launch(mut self, order: &[u64]) -> Cluster {
        for (i, &id) in order.iter().enumerate() {
            self.spawn(id);
            if i + 1 < order.len() {
                let cluster = self.node(id).cluster;
                wait_until(Duration::from_secs(30), &format!("node {id} to bind its cluster port {cluster}"), || {
                    self.at_node(id, || TcpStream::connect_timeout(&cluster, Duration::from_millis(200)).is_ok())
                });
            }
        }
        for &id in order {
            self.wait_started(id);
        }
        self
    }

    fn spawn(&mut self, id: u64) {
        // In a namespace, `ip netns exec` replaces itself with strata: the child is the node.
        let mut command = self.command_at(id, env!("CARGO_BIN_EXE_strata"));
        let node = self.node_mut(id);
        assert!(node.child.is_none(), "node {id} is already running");
        let mut child = command
            .args(["serve", "--config", node.config.to_str().expect("temp paths are UTF-8")])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start strata serve");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining so the node never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        node.child = Some(child);
        node.lines = Some(rx);
    }

    /// Waits for node `id`'s start-up lines, up to its cluster gRPC line (the last one), and
    /// checks they name the configured addresses.
    fn wait_started(&mut self, id: u64) {
        let node = self.node_mut(id);
        let deadline = Instant::now() + START;
        let lines = node.lines.as_ref().expect("node was spawned");
        let mut seen = Vec::new();
        loop {
            match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if line.starts_with("strata: cluster gRPC listening on ") {
                        assert!(line.ends_with(&node.cluster.to_string()), "node {id}: {line}");
                        break;
                    }
                    seen.push(line);
                }
                Err(error) => {
                    let status = node.child.take().map(|mut child| {
                        let _ = child.kill();
                        child.wait()
                    });
                    let what = match error {
                        mpsc::RecvTimeoutError::Timeout => format!("did not print its start-up lines within {START:?}"),
                        mpsc::RecvTimeoutError::Disconnected => {
                            format!("exited ({status:?}) before its start-up lines")
                        }
                    };
                    panic!("node {id} {what}; it printed {seen:?} (its stderr is above)");
                }
            }
        }
        let mqtt = format!("strata: MQTT listening on {}", node.mqtt);
        assert!(seen.iter().any(|l| l.starts_with(&mqtt)), "node {id}: no {mqtt:?} in {seen:?}");
        for line in
            [format!("strata: HTTP listening on {}", node.http), format!("strata: gRPC listening on {}", node.grpc)]
        {
            assert!(seen.contains(&line), "node {id}: no {line:?} in {seen:?}");
        }
    }

    pub fn node(&self, id: u64) -> &Node {
        self.nodes.iter().find(|n| n.id == id).unwrap_or_else(|| panic!("no node {id}"))
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.id == id).unwrap_or_else(|| panic!("no node {id}"))
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// The ids of the nodes running now.
    pub fn running(&self) -> Vec<u64> {
        self.nodes.iter().filter(|n| n.is_running()).map(|n| n.id).collect()
    }

    /// SIGKILL to node `id`, and waits for it to be gone.
    pub fn kill_9(&mut self, id: u64) {
        let node = self.node_mut(id);
        let mut child = node.child.take().unwrap_or_else(|| panic!("node {id} is not running"));
        let _ = child.kill();
        let _ = child.wait();
        node.lines = None;
    }

    /// Starts node `id` again on its ports with its data, and waits for its start-up lines.
    pub fn restart(&mut self, id: u64) {
        self.spawn(id);
        self.wait_started(id);
    }

    /// `GET /cluster/status` of node `id`, `None` when it does not answer 200 with JSON.
    pub fn status(&self, id: u64) -> Option<Value> {
        let http = self.node(id).http;
        let (code, body) = self.at_node(id, || http_get(http, "/cluster/status"))?;
        if code != 200 {
            return None;
        }
        serde_json::from_str(&body).ok()
    }

    /// `GET /ready` of node `id`: its status code, `None` when it does not answer.
    pub fn ready(&self, id: u64) -> Option<u16> {
        let http = self.node(id).http;
        self.at_node(id, || http_get(http, "/ready")).map(|(code, _)| code)
    }

    /// `stream`'s partitions in node `id`'s status, by partition number.
    pub fn partitions(&self, id: u64, stream: &str) -> Option<BTreeMap<u32, Value>> {
        let status = self.status(id)?;
        Some(
            status["partitions"]
                .as_array()?
                .iter()
                .filter(|p| p["stream"] == stream)
                .filter_map(|p| Some((p["partition"].as_u64()? as u32, p.clone())))
                .collect(),
        )
    }

    /// The leader of each of `stream`'s partitions `0..partitions`, once every running node
    /// names the same running node as leader of each; panics after `within`.
    pub fn wait_for_leaders(&self, stream: &str, partitions: u32, within: Duration) -> BTreeMap<u32, u64> {
        let mut last = String::new();
        let mut found = None;
        let agreed = poll_until(within, Duration::from_millis(50), || match self.agreed_leaders(stream, partitions) {
            Ok(leaders) => {
                found = Some(leaders);
                true
            }
            Err(why) => {
                last = why;
                false
            }
        });
        assert!(
            agreed,
            "no leader for each of {stream}'s {partitions} partitions on every node within {within:?}: {last}"
        );
        found.expect("set when the wait succeeded")
    }

    /// The leaders every running node agrees on, or why not.
    fn agreed_leaders(&self, stream: &str, partitions: u32) -> Result<BTreeMap<u32, u64>, String> {
        let running = self.running();
        let mut agreed: Option<BTreeMap<u32, u64>> = None;
        for &id in &running {
            let view = self.partitions(id, stream).ok_or_else(|| format!("node {id}: no status"))?;
            let mut leaders = BTreeMap::new();
            for p in 0..partitions {
                let leader = view
                    .get(&p)
                    .and_then(|s| s["leader"].as_u64())
                    .ok_or_else(|| format!("node {id}: {stream}/{p} has no leader"))?;
                if !running.contains(&leader) {
                    return Err(format!("node {id}: {stream}/{p} names node {leader}, which is down"));
                }
                leaders.insert(p, leader);
            }
            match &agreed {
                None => agreed = Some(leaders),
                Some(other) if *other != leaders => return Err(format!("nodes disagree: {other:?} vs {leaders:?}")),
                Some(_) => {}
            }
        }
        agreed.ok_or_else(|| "no node running".to_owned())
    }

    /// `stream`/`partition` as its leader reports it (a follower's view has only its own log
    /// end): the first running node naming a running leader is asked.
    pub fn leader_view(&self, stream: &str, partition: u32) -> Option<Value> {
        let running = self.running();
        let leader = running.iter().find_map(|&id| {
            let leader = self.partitions(id, stream)?.get(&partition)?["leader"].as_u64()?;
            running.contains(&leader).then_some(leader)
        })?;
        let view = self.partitions(leader, stream)?.get(&partition)?.clone();
        (view["leader"].as_u64() == Some(leader)).then_some(view)
    }

    /// Waits until, in the leader's status, every running replica of `stream`/`partition`
    /// has a log end equal to the committed offset. Returns that offset.
    pub fn wait_caught_up(&self, stream: &str, partition: u32, within: Duration) -> u64 {
        let mut end = 0;
        let mut last = Value::Null;
        let caught_up = poll_until(within, Duration::from_millis(50), || {
            let Some(view) = self.leader_view(stream, partition) else { return false };
            last = view.clone();
            let Some(committed) = view["committed"].as_u64() else { return false };
            end = committed;
            self.running().iter().all(|id| view["log_end"][id.to_string()].as_u64() == Some(committed))
        });
        assert!(caught_up, "{stream}/{partition}: replicas not caught up within {within:?}; the leader's view: {last}");
        end
    }

    /// Runs `strata <args> --server <node id's gRPC>`.
    pub fn cli(&self, id: u64, args: &[&str]) -> Output {
        self.command_at(id, env!("CARGO_BIN_EXE_strata"))
            .args(args)
            .args(["--server", &self.node(id).grpc.to_string()])
            .env_remove("RUST_LOG")
            .output()
            .expect("run strata")
    }

    /// The metadata group's leader (`$streams` partition 0 in node `via`'s status), if known.
    pub fn metadata_leader(&self, via: u64) -> Option<u64> {
        self.partitions(via, "$streams")?.get(&0)?["leader"].as_u64()
    }

    /// `strata stream create <name> --partitions <n> --topics <topics> [--config k=v...]`
    /// through node `via`, or with `None` through the metadata leader as the running nodes
    /// name it. Retried while it fails (a fresh cluster may still be electing), for 30 s.
    pub fn create_stream(&self, via: Option<u64>, name: &str, partitions: u32, topics: &str, settings: &[&str]) {
        let partitions = partitions.to_string();
        let mut args = vec!["stream", "create", name, "--partitions", &partitions, "--topics", topics];
        for setting in settings {
            args.extend(["--config", setting]);
        }
        let mut last = String::new();
        let created = poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
            let target = via.or_else(|| self.running().into_iter().find_map(|id| self.metadata_leader(id)));
            let Some(id) = target else {
                last = "no node names a metadata leader".into();
                return false;
            };
            let output = self.cli(id, &args);
            last = format!("node {id}: {}{}", text(&output.stdout), text(&output.stderr));
            output.status.success()
        });
        assert!(created, "strata stream create {name} failed for 30 s; last: {last}");
    }

    /// `strata log dump` of node `id`'s replica of `stream`/`partition` (run on the files; the
    /// node should be stopped or quiet).
    pub fn log_dump(&self, id: u64, stream: &str, partition: u32) -> String {
        let dir = self.node(id).partition_dir(stream, partition);
        let output = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["log", "dump", dir.to_str().expect("temp paths are UTF-8")])
            .env_remove("RUST_LOG")
            .output()
            .expect("run strata log dump");
        assert!(output.status.success(), "strata log dump {}: {}", dir.display(), text(&output.stderr));
        text(&output.stdout)
    }

    /// `strata log dump` of `stream`/`partition` on each node of `ids` (stopped first, so the
    /// files are still), for [`assert_same_records`] and [`assert_same_terms`].
    pub fn log_dumps(&self, ids: &[u64], stream: &str, partition: u32) -> Vec<(u64, String)> {
        let dumps: Vec<(u64, String)> = ids.iter().map(|&id| (id, self.log_dump(id, stream, partition))).collect();
        assert!(dumps[0].1.contains("offset="), "node {}: a dump with records: {}", dumps[0].0, dumps[0].1);
        dumps
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Calls `done` every `every` until it holds or `within` has passed; whether it held.
pub fn poll_until(within: Duration, every: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// [`poll_until`] every 50 ms that panics naming `what` when `within` passes.
pub fn wait_until(within: Duration, what: &str, done: impl FnMut() -> bool) {
    assert!(poll_until(within, Duration::from_millis(50), done), "timed out after {within:?} waiting for {what}");
}

/// `GET path` on a node's HTTP endpoint: (status code, body); `None` when it does not answer
/// within a second or two (a killed node, a node still starting).
pub fn http_get(http: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&http, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    // Bodies are small; a chunked one starts with its length line.
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body.split_once("\r\n").map(|(_, rest)| rest).unwrap_or(body).trim_end_matches("\r\n0\r\n\r\n").to_owned()
    } else {
        body.to_owned()
    };
    Some((code, body))
}

/// A PUBACK reason as its code.
pub fn reason_code(reason: PubAckReason) -> u8 {
    match reason {
        PubAckReason::Success => 0x00,
        PubAckReason::NoMatchingSubscribers => 0x10,
        PubAckReason::UnspecifiedError => 0x80,
        PubAckReason::ImplementationSpecificError => 0x83,
        PubAckReason::NotAuthorized => 0x87,
        PubAckReason::TopicNameInvalid => 0x90,
        PubAckReason::PacketIdentifierInUse => 0x91,
        PubAckReason::QuotaExceeded => 0x97,
        PubAckReason::PayloadFormatInvalid => 0x99,
    }
}

/// What a [`publish_until_acked`] run saw.
#[derive(Debug, Default)]
pub struct PublishRun {
    /// Payloads with a successful PUBACK.
    pub acked: usize,
    /// PUBACKs with a failure reason code (each retried).
    pub refused: usize,
    /// Those failure reason codes, with how often each came.
    pub refusal_codes: BTreeMap<u8, usize>,
    /// Connections that failed (each followed by a reconnect to the next node).
    pub reconnects: usize,
    /// Payloads never acknowledged with success by the deadline.
    pub unacked: Vec<String>,
}

/// How [`publish_until_acked`] goes about it.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// At most this many publishes unacknowledged at once.
    pub window: usize,
    /// Move to the next node on a refusal too (not only on a failed connection).
    pub rotate_on_refusal: bool,
    /// Give up after this long; what is not acknowledged then is returned.
    pub deadline: Duration,
}

/// Publishes every payload on `topic` at QoS 1 (MQTT 5, clean start) as client `id`, with at
/// most `window` in flight, until each has a successful PUBACK or `deadline` passes. A
/// payload refused with a failure code is published again; when the connection fails, the
/// client connects to the next address of `addrs` and publishes again what was not acked;
/// with `rotate_on_refusal`, a refusal moves it to the next address as well (for nodes that
/// refuse what they do not lead). Every attempt is recorded (sent, then its PUBACK's reason).
///
/// Which payload a packet id carries: rumqttc sends requests in the order they were made, so
/// the n-th new outgoing packet id of a connection is its n-th request.
pub async fn publish_until_acked(
    recorder: &Recorder,
    id: &str,
    addrs: &[SocketAddr],
    topic: &str,
    payloads: Vec<String>,
    pacing: Pacing,
) -> PublishRun {
    let Pacing { window, rotate_on_refusal, deadline } = pacing;
    let end = tokio::time::Instant::now() + deadline;
    let mut todo: VecDeque<String> = payloads.into();
    let mut run = PublishRun::default();
    let mut node = 0;
    'connections: while !todo.is_empty() && tokio::time::Instant::now() < end {
        let addr = addrs[node % addrs.len()];
        let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(Duration::from_secs(5));
        options.set_connection_timeout(3);
        let (client, mut events) = AsyncClient::new(options, window + 1);
        let mut requested: VecDeque<String> = VecDeque::new();
        let mut in_flight: HashMap<u16, String> = HashMap::new();
        loop {
            while requested.len() + in_flight.len() < window {
                let Some(payload) = todo.pop_front() else { break };
                if client.try_publish(topic, QoS::AtLeastOnce, false, payload.clone()).is_err() {
                    todo.push_front(payload);
                    break;
                }
                requested.push_back(payload);
            }
            if todo.is_empty() && requested.is_empty() && in_flight.is_empty() {
                let _ = client.try_disconnect();
                let _ = tokio::time::timeout(Duration::from_secs(1), events.poll()).await;
                break 'connections;
            }
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            let Ok(event) = tokio::time::timeout(left, events.poll()).await else {
                todo.extend(in_flight.into_values());
                todo.extend(requested);
                break 'connections;
            };
            match event {
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    if let std::collections::hash_map::Entry::Vacant(slot) = in_flight.entry(pkid) {
                        let payload = requested.pop_front().expect("a publish went out that was never requested");
                        recorder.sent(id, topic, &payload, 1);
                        slot.insert(payload);
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    if let Some(payload) = in_flight.remove(&ack.pkid) {
                        let code = reason_code(ack.reason);
                        recorder.acked(id, &payload, code);
                        if code < 0x80 {
                            run.acked += 1;
                        } else {
                            run.refused += 1;
                            *run.refusal_codes.entry(code).or_default() += 1;
                            todo.push_back(payload);
                            if rotate_on_refusal {
                                run.reconnects += 1;
                                let mut again: Vec<String> = in_flight.into_values().collect();
                                again.extend(requested);
                                for payload in again.into_iter().rev() {
                                    todo.push_front(payload);
                                }
                                node += 1;
                                let _ = client.try_disconnect();
                                continue 'connections;
                            }
                            // A node refusing during an election is not retried in a tight loop.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    // What was in flight stays "unknown" in the history; it goes out again.
                    run.reconnects += 1;
                    let mut again: Vec<String> = in_flight.into_values().collect();
                    again.extend(requested);
                    for payload in again.into_iter().rev() {
                        todo.push_front(payload);
                    }
                    node += 1;
                    // A refused or unreachable node is not retried in a tight loop.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue 'connections;
                }
            }
        }
    }
    run.unacked = todo.into_iter().collect();
    run
}

/// One `$stream` delivery: (partition, offset, payload).
pub type Entry = (u32, u64, String);

/// Replays `$stream/<stream>` from `earliest` on the node at `addr` as client `id`,
/// recording every delivery, until every payload of `markers` has arrived (publish one last
/// acknowledged marker per partition after a load: offsets grow within a partition, so the
/// marker's arrival means everything before it has arrived) and every acknowledged payload
/// too. Returns the distinct deliveries sorted by (partition, offset); panics after
/// `deadline` naming what is missing.
pub async fn replay_until(
    recorder: &Recorder,
    addr: SocketAddr,
    id: &str,
    stream: &str,
    markers: &[String],
    deadline: Duration,
) -> Vec<Entry> {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(10));
    options.set_connection_timeout(5);
    let (client, mut events) = AsyncClient::new(options, 16);
    let properties =
        SubscribeProperties { id: None, user_properties: vec![("stream-offset".into(), "earliest".into())] };
    let filter = format!("$stream/{stream}");
    client.subscribe_with_properties(&filter, QoS::AtLeastOnce, properties).await.expect("queue SUBSCRIBE");
    let end = tokio::time::Instant::now() + deadline;
    let mut got: BTreeMap<(u32, u64), String> = BTreeMap::new();
    let mut missing_markers: Vec<&String> = markers.iter().collect();
    loop {
        if missing_markers.is_empty() && recorder.has_every_acked(id) {
            break;
        }
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        let event = match tokio::time::timeout(left, events.poll()).await {
            Ok(Ok(event)) => event,
            Ok(Err(e)) => panic!("{id}: replay connection to {addr} failed: {e}"),
            Err(_) => panic!(
                "{id}: replay of {stream} on {addr} incomplete after {deadline:?}: {} deliveries, markers missing: {missing_markers:?}",
                got.len()
            ),
        };
        match event {
            Event::Incoming(Packet::SubAck(suback)) => {
                assert!(
                    suback.return_codes.iter().all(|c| matches!(c, SubscribeReasonCode::Success(_))),
                    "{id}: SUBSCRIBE {filter} refused on {addr}: {suback:?}"
                );
            }
            Event::Incoming(Packet::Publish(publish)) => {
                let user = publish.properties.as_ref().map(|p| p.user_properties.as_slice()).unwrap_or_default();
                let property =
                    |name: &str| user.iter().find(|(n, _)| n == name).and_then(|(_, v)| v.parse::<u64>().ok());
                let (Some(partition), Some(offset)) = (property("stream-partition"), property("stream-offset")) else {
                    panic!("{id}: a $stream delivery without stream-partition/stream-offset: {publish:?}");
                };
                let payload = text(&publish.payload);
                let topic = text(&publish.topic);
                missing_markers.retain(|m| **m != payload);
                recorder.delivered(
                    id,
                    &topic,
                    &payload,
                    Some(Position { stream: stream.to_owned(), partition: partition as u32, offset }),
                );
                got.insert((partition as u32, offset), payload);
            }
            _ => {}
        }
    }
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), events.poll()).await;
    got.into_iter().map(|((partition, offset), payload)| (partition, offset, payload)).collect()
}

/// One MQTT 5 QoS 1 publish of `payload` on `addr`: the PUBACK's reason code, or `None` when
/// none came within `within` (or the connection ended first). Recorded.
pub async fn publish_once_v5(
    recorder: &Recorder,
    addr: SocketAddr,
    id: &str,
    topic: &str,
    payload: &str,
    within: Duration,
) -> Option<u8> {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(options, 4);
    client.publish(topic, QoS::AtLeastOnce, false, payload.to_owned()).await.expect("queue PUBLISH");
    let end = tokio::time::Instant::now() + within;
    let mut code = None;
    loop {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, events.poll()).await {
            Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_)))) => recorder.sent(id, topic, payload, 1),
            Ok(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                let c = reason_code(ack.reason);
                recorder.acked(id, payload, c);
                code = Some(c);
                break;
            }
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => break,
        }
    }
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(1), events.poll()).await;
    code
}

/// One MQTT 3.1.1 QoS 1 publish: whether a PUBACK came (`true`) or the connection was closed
/// without one (`false`); panics if neither happened within `within`.
pub async fn publish_once_v311(
    recorder: &Recorder,
    addr: SocketAddr,
    id: &str,
    topic: &str,
    payload: &str,
    within: Duration,
) -> bool {
    let mut options = rumqttc::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = rumqttc::AsyncClient::new(options, 4);
    client.publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.to_owned()).await.expect("queue PUBLISH");
    let end = tokio::time::Instant::now() + within;
    let mut connected = false;
    loop {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, events.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)))) => connected = true,
            Ok(Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Publish(_)))) => recorder.sent(id, topic, payload, 1),
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) => {
                recorder.acked(id, payload, 0);
                return true;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                assert!(connected, "{id}: the connection failed before CONNACK: {e}");
                return false;
            }
            Err(_) => panic!("{id}: neither a PUBACK nor a closed connection within {within:?}"),
        }
    }
}

/// A topic `<prefix>/<n>` whose messages (published without a key) go to `partition` of a
/// stream of `partitions` partitions: the broker routes by FNV-1a of the topic
/// (`strata_frontend::streams::partition_for`), restated here as the contract it is.
pub fn topic_for_partition(prefix: &str, partition: u32, partitions: u32) -> String {
    (0..10_000)
        .map(|n| format!("{prefix}/{n}"))
        .find(|topic| {
            let hash = topic.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
            hash % partitions == partition
        })
        .expect("some topic hashes to each partition")
}

fn dump_lines(dump: &str, record: bool) -> Vec<String> {
    dump.lines()
        .filter(|l| if record { l.trim_start().starts_with("offset=") } else { l.starts_with("batch ") })
        .map(str::to_owned)
        .collect()
}

/// Asserts the dumps ([`Cluster::log_dumps`]) show the same records on every node (offset,
/// timestamp, key, headers), naming the first difference.
#[track_caller]
pub fn assert_same_records(dumps: &[(u64, String)]) {
    let (first, reference) = &dumps[0];
    let a = dump_lines(reference, true);
    for (id, dump) in &dumps[1..] {
        let b = dump_lines(dump, true);
        if a != b {
            let at = a.iter().zip(&b).position(|(x, y)| x != y);
            panic!(
                "strata log dump shows other records on node {id} than on node {first} ({} vs {} records; first \
                 difference at record {at:?}: {:?} vs {:?})",
                b.len(),
                a.len(),
                at.map(|i| &b[i]),
                at.map(|i| &a[i])
            );
        }
    }
}

/// Each offset's term from a dump's batch lines (`batch <file> @ byte N: offsets A-B, term T,
/// ...`): the Raft entry at that index, control batches included.
fn terms(dump: &str) -> Vec<(u64, u64)> {
    let mut terms = Vec::new();
    for line in dump.lines().filter(|l| l.starts_with("batch ")) {
        let field =
            |name: &str| line.split(", ").chain(line.split(": ")).find_map(|f| f.strip_prefix(name)).map(str::to_owned);
        let offsets = field("offsets ").unwrap_or_else(|| panic!("no offsets in {line:?}"));
        let offsets = offsets.split(',').next().unwrap_or(&offsets);
        let (first, last) = offsets.split_once('-').unwrap_or_else(|| panic!("bad offsets in {line:?}"));
        let term: u64 = field("term ").and_then(|t| t.parse().ok()).unwrap_or_else(|| panic!("no term in {line:?}"));
        let (first, last): (u64, u64) =
            (first.parse().unwrap_or_else(|_| panic!("{line:?}")), last.parse().unwrap_or_else(|_| panic!("{line:?}")));
        terms.extend((first..=last).map(|offset| (offset, term)));
    }
    terms
}

/// Asserts the dumps give every offset the same term on every node (Raft's log matching:
/// the same entries, control entries included). How records are grouped into batches may
/// differ: a replica writes the entries of one append as one batch
/// (`replication/src/codec.rs`, `plan_writes`).
#[track_caller]
pub fn assert_same_terms(dumps: &[(u64, String)]) {
    let (first, reference) = &dumps[0];
    let a = terms(reference);
    assert!(!a.is_empty(), "node {first}: no batches in {reference}");
    for (id, dump) in &dumps[1..] {
        let b = terms(dump);
        if a != b {
            let at = a.iter().zip(&b).position(|(x, y)| x != y);
            panic!(
                "the entries' terms differ between node {id} ({} entries) and node {first} ({} entries); first difference \
                 at {at:?}: {:?} vs {:?}",
                b.len(),
                a.len(),
                at.map(|i| b[i]),
                at.map(|i| a[i])
            );
        }
    }
}

/// Asserts two replays (as [`replay_until`] returns them) are the same list, naming the first
/// difference when not.
#[track_caller]
pub fn assert_same_entries(a_name: &str, a: &[Entry], b_name: &str, b: &[Entry]) {
    if a == b {
        return;
    }
    let at = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
    panic!(
        "{a_name} and {b_name} replay different logs: {} vs {} records, {a_name} spans {:?}..{:?}, {b_name} spans {:?}..{:?}; \
         first difference at entry {at}: {:?} vs {:?}",
        a.len(),
        b.len(),
        a.first().map(|e| e.1),
        a.last().map(|e| e.1),
        b.first().map(|e| e.1),
        b.last().map(|e| e.1),
        a.get(at),
        b.get(at)
    );
}

/// A multi-threaded tokio runtime for a test's clients.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}
