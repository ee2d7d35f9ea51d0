//! The cluster transport under `[tls]` (issue 22), with the real `strata serve`: three nodes
//! on loopback whose `[tls]` certificates one CA signed form a cluster over mutual TLS and
//! carry a publish from one node to a subscriber on another; a node that talks plaintext, or
//! whose certificate another CA signed, never joins them; bad cluster TLS files stop the start
//! naming the key; SIGHUP reloads the node's certificate and the cluster keeps working.
//!
//! Every node gets its own certificate (IP SAN 127.0.0.1, no extended key usage, so it serves
//! both ends of a connection). Its MQTT, HTTP and gRPC listeners are on port 0; the cluster
//! ports are fixed up front, since every node's `[cluster] peers` names them.

#[path = "common/broker.rs"]
mod broker;
mod common;
#[path = "common/tls.rs"]
mod tls;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use broker::ServeProcess;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::Value;
use tls::{Ca, CertFiles};

/// How long the cluster has to form, or to show a change in `/cluster/status`.
const FORM_DEADLINE: Duration = Duration::from_secs(90);
/// How long an outsider is watched for joining.
const OUTSIDER_WINDOW: Duration = Duration::from_secs(10);
/// How long a publish has to reach the subscriber on another node.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The three nodes' cluster addresses and the test's files.
struct Layout {
    dir: PathBuf,
    cluster_ports: [u16; 3],
}

impl Layout {
    fn new(dir: &Path) -> Layout {
        Layout { dir: dir.to_path_buf(), cluster_ports: [free_port(), free_port(), free_port()] }
    }

    /// Node `id`'s config: `tls` is its `[tls]` section (none: plaintext), `extra` is added
    /// to its `[cluster]` section.
    fn config(&self, id: usize, name: &str, tls: Option<&str>, extra: &str) -> PathBuf {
        let peers: Vec<String> =
            self.cluster_ports.iter().enumerate().map(|(i, port)| format!("\"{}@127.0.0.1:{port}\"", i + 1)).collect();
        let text = format!(
            "[auth]\nallow_anonymous = true\n{}\n[cluster]\nnode_id = {id}\nlisten = \"127.0.0.1:{}\"\npeers = [{}]\n{extra}",
            tls.unwrap_or(""),
            self.cluster_ports[id - 1],
            peers.join(", ")
        );
        let path = self.dir.join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn data(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("data")
    }
}

/// Starts every `(data dir, config)` at once (each waits at start for the metadata group's
/// leader, which needs a majority of them up) and waits for all their start-up lines. A node
/// that fails to start panics the test; the others are killed as they are dropped.
fn start_all(nodes: Vec<(PathBuf, PathBuf)>) -> Vec<ServeProcess> {
    let handles: Vec<_> = nodes
        .into_iter()
        .map(|(data, config)| {
            std::thread::spawn(move || ServeProcess::start_with(&data, &["--config", config.to_str().unwrap()]))
        })
        .collect();
    let started: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
    assert!(started.iter().all(Result::is_ok), "a node did not start (its stderr is above)");
    started.into_iter().map(|r| r.unwrap()).collect()
}

/// `GET path`: the status code and the body; `None` when the endpoint does not answer.
fn get(http: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&http, Duration::from_secs(5)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// `/cluster/status` as JSON, when the node answers 200.
fn cluster_status(http: SocketAddr) -> Option<Value> {
    match get(http, "/cluster/status")? {
        (200, body) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

/// The partitions of `stream` in a `/cluster/status` document.
fn partitions<'a>(status: &'a Value, stream: &str) -> Vec<&'a Value> {
    status["partitions"].as_array().map(|ps| ps.iter().filter(|p| p["stream"] == stream).collect()).unwrap_or_default()
}

fn in_sync(partition: &Value) -> Vec<u64> {
    partition["in_sync"].as_array().map(|ids| ids.iter().filter_map(Value::as_u64).collect()).unwrap_or_default()
}

/// Whether every partition of `$streams` and `default` has a leader and all three nodes in
/// sync, as `status` shows it.
fn formed(status: &Value) -> bool {
    ["$streams", "default"].iter().all(|stream| {
        let ps = partitions(status, stream);
        !ps.is_empty() && ps.iter().all(|p| p["leader"].is_u64() && in_sync(p) == [1, 2, 3])
    })
}

/// Polls `/cluster/status` of `http` until `check` holds; panics with the last document
/// after `FORM_DEADLINE`.
fn wait_status(http: SocketAddr, what: &str, check: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + FORM_DEADLINE;
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(status) = cluster_status(http) {
            if check(&status) {
                return;
            }
            last = Some(status);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what}: not seen on {http} within {FORM_DEADLINE:?}; last /cluster/status: {last:?}");
}

/// What a timed-out wait of [`deliver_across`] panics with.
fn within(what: &'static str) -> impl FnOnce(tokio::time::error::Elapsed) {
    move |_| panic!("{what} within {DELIVERY_DEADLINE:?}")
}

/// Subscribes on `to` (MQTT port), then publishes `payload` at QoS 1 on `from` and waits for
/// its PUBACK; returns once the subscriber got it, panics after `DELIVERY_DEADLINE`.
fn deliver_across(from: u16, to: u16, topic: &str, payload: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let mut options = MqttOptions::new(format!("sub-{payload}"), "127.0.0.1", to);
        options.set_keep_alive(Duration::from_secs(30));
        let (subscriber, mut sub_events) = AsyncClient::new(options, 100);
        subscriber.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
        tokio::time::timeout(DELIVERY_DEADLINE, async {
            loop {
                if let Event::Incoming(Packet::SubAck(_)) = sub_events.poll().await.expect("subscriber connection") {
                    return;
                }
            }
        })
        .await
        .unwrap_or_else(within("no SUBACK"));

        let mut options = MqttOptions::new(format!("pub-{payload}"), "127.0.0.1", from);
        options.set_keep_alive(Duration::from_secs(30));
        let (publisher, mut pub_events) = AsyncClient::new(options, 100);
        publisher.publish(topic, QoS::AtLeastOnce, false, payload.to_owned()).await.unwrap();
        tokio::time::timeout(DELIVERY_DEADLINE, async {
            loop {
                if let Event::Incoming(Packet::PubAck(ack)) = pub_events.poll().await.expect("publisher connection") {
                    assert_eq!(ack.reason, rumqttc::v5::mqttbytes::v5::PubAckReason::Success, "{ack:?}");
                    return;
                }
            }
        })
        .await
        .unwrap_or_else(within("no PUBACK"));

        tokio::time::timeout(DELIVERY_DEADLINE, async {
            loop {
                if let Event::Incoming(Packet::Publish(publish)) =
                    sub_events.poll().await.expect("subscriber connection")
                {
                    assert_eq!(publish.topic.as_ref(), topic.as_bytes());
                    assert_eq!(publish.payload.as_ref(), payload.as_bytes());
                    return;
                }
            }
        })
        .await
        .unwrap_or_else(within("the publish was not delivered on the other node"));
        let _ = publisher.disconnect().await;
        let _ = subscriber.disconnect().await;
    });
}

/// Three TLS nodes, formed: every node's certificate signed by `ca`, with `client_ca_file`.
struct TlsCluster {
    layout: Layout,
    ca: Ca,
    nodes: Vec<ServeProcess>,
    certs: Vec<CertFiles>,
}

impl TlsCluster {
    fn start(dir: &Path) -> TlsCluster {
        let layout = Layout::new(dir);
        let ca = Ca::new(dir, "cluster");
        let certs: Vec<CertFiles> = (1..=3).map(|id| ca.server(dir, &format!("node{id}"))).collect();
        let nodes = start_all(
            (1..=3).map(|id| (layout.data(&format!("n{id}")), Self::config(&layout, &ca, &certs, id))).collect(),
        );
        for node in &nodes {
            wait_status(node.http_addr(), "a leader and 3 in sync for $streams and default", formed);
        }
        TlsCluster { layout, ca, nodes, certs }
    }

    fn config(layout: &Layout, ca: &Ca, certs: &[CertFiles], id: usize) -> PathBuf {
        let tls = tls::tls_section(&certs[id - 1], Some(&ca.file));
        layout.config(id, &format!("n{id}"), Some(&tls), "")
    }

    /// Kills node `id` (1-based) and starts it again on its data and config.
    fn restart(&mut self, id: usize) {
        self.nodes[id - 1].kill9();
        let config = Self::config(&self.layout, &self.ca, &self.certs, id);
        self.nodes[id - 1] =
            ServeProcess::start_with(&self.layout.data(&format!("n{id}")), &["--config", config.to_str().unwrap()]);
    }
}

#[test]
fn issue22_tls_nodes_form_a_cluster_deliver_across_nodes_and_reload_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TlsCluster::start(dir.path());
    deliver_across(cluster.nodes[0].port(), cluster.nodes[2].port(), "e2e/before", "over-mtls");

    // A new certificate from the same CA in node 1's files, then SIGHUP.
    let renewed = cluster.ca.server(dir.path(), "node1");
    assert_eq!(renewed.cert, cluster.certs[0].cert, "the renewed certificate replaces node 1's file");
    let status = Command::new("kill").arg("-HUP").arg(cluster.nodes[0].pid().to_string()).status().unwrap();
    assert!(status.success(), "kill -HUP failed");
    let reloaded = cluster.nodes[0].line_after("strata: cluster TLS reloaded from ");
    assert_eq!(reloaded, renewed.cert.display().to_string());
    assert!(cluster.nodes[0].is_running(), "SIGHUP ended node 1");

    // Node 3 restarted dials node 1 afresh: node 1 answers with the renewed certificate.
    cluster.restart(3);
    wait_status(cluster.nodes[0].http_addr(), "node 3 back in sync after the reload", formed);
    wait_status(cluster.nodes[2].http_addr(), "a leader and 3 in sync, seen from node 3", formed);
    // Another topic than before: a subscriber on node 3 just restarted may be handed the
    // earlier message as node 3's replica catches up (seen here; not what this test is about).
    deliver_across(cluster.nodes[0].port(), cluster.nodes[2].port(), "e2e/after", "after-reload");
}

/// A `strata serve` that may never be ready: started without waiting for its start-up
/// lines, its HTTP endpoint on a known port (bound before the node waits for the metadata
/// group's leader). Killed when dropped.
struct Outsider {
    child: Child,
    http: SocketAddr,
}

impl Outsider {
    fn start(data_dir: &Path, config: &Path) -> Outsider {
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let extra = ["--config", config.to_str().unwrap(), "--http", &http.to_string()];
        let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(broker::serve_args(data_dir, &extra))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start strata serve");
        let stdout = child.stdout.take().expect("stdout is piped");
        // Keep draining so the node never blocks on a full pipe.
        std::thread::spawn(move || for _ in BufReader::new(stdout).lines().map_while(Result::ok) {});
        Outsider { child, http }
    }

    /// Watches the outsider for `OUTSIDER_WINDOW` once its HTTP endpoint answers: node 1's
    /// `/cluster/status` never shows node 3 in sync for `$streams`, and the outsider's
    /// `/ready` answers 503 (no metadata leader) throughout.
    fn never_joins(&mut self, node1_http: SocketAddr, what: &str) {
        let answered = Instant::now() + FORM_DEADLINE;
        while get(self.http, "/ready").is_none() {
            assert!(self.child.try_wait().unwrap().is_none(), "{what}: the node exited (its stderr is above)");
            assert!(Instant::now() < answered, "{what}: its HTTP endpoint never answered");
            std::thread::sleep(Duration::from_millis(100));
        }
        let end = Instant::now() + OUTSIDER_WINDOW;
        let mut looks = 0;
        while Instant::now() < end {
            if let Some((status, body)) = get(self.http, "/ready") {
                assert_eq!(status, 503, "{what}: the outsider is not refused readiness: {body}");
            }
            if let Some(status) = cluster_status(node1_http) {
                for p in partitions(&status, "$streams") {
                    assert!(!in_sync(p).contains(&3), "{what}: node 3 is in sync on node 1: {status}");
                    looks += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(looks > 0, "{what}: node 1's /cluster/status never answered");
        assert!(self.child.try_wait().unwrap().is_none(), "{what}: the node exited instead of being refused");
    }
}

impl Drop for Outsider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn issue22_a_plaintext_node_or_one_of_another_ca_never_joins_a_tls_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TlsCluster::start(dir.path());
    let node1 = cluster.nodes[0].http_addr();
    cluster.nodes[2].kill9();
    wait_status(node1, "node 3 out of sync once killed", |s| {
        let ps = partitions(s, "$streams");
        !ps.is_empty() && ps.iter().all(|p| p["leader"].is_u64() && !in_sync(p).contains(&3))
    });

    // Node 3's id and cluster address, no [tls]: it talks plaintext.
    let plain = cluster.layout.config(3, "plain", None, "");
    let mut outsider = Outsider::start(&cluster.layout.data("plain"), &plain);
    outsider.never_joins(node1, "a plaintext node 3");
    drop(outsider);

    // Node 3's id and address, TLS with a certificate and CA of another authority.
    let other = Ca::new(dir.path(), "other");
    let foreign = other.server(dir.path(), "foreign");
    let config = cluster.layout.config(3, "foreign", Some(&tls::tls_section(&foreign, Some(&other.file))), "");
    let mut outsider = Outsider::start(&cluster.layout.data("foreign"), &config);
    outsider.never_joins(node1, "a node 3 of another CA");
    drop(outsider);

    // The real node 3 comes back: what the outsiders lacked was the cluster's credentials.
    cluster.restart(3);
    wait_status(node1, "node 3 back in sync", formed);
}

#[test]
fn issue22_bad_cluster_tls_files_stop_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    let ca = Ca::new(dir.path(), "cluster");
    let other = Ca::new(dir.path(), "other");
    let foreign = other.server(dir.path(), "foreign");
    let node = ca.server(dir.path(), "node");
    let ca_line = |file: &Path| format!("ca_file = {file:?}\n");
    let cases = [
        ("a [tls] certificate another CA signed", tls::tls_section(&foreign, None), ca_line(&ca.file), "tls.cert_file"),
        (
            "a missing cluster.ca_file",
            tls::tls_section(&node, None),
            ca_line(&dir.path().join("absent-ca.pem")),
            "cluster.ca_file",
        ),
        ("[tls] without any CA", tls::tls_section(&node, None), String::new(), "cluster.ca_file"),
    ];
    for (what, tls, cluster_extra, key) in cases {
        let config = std::fs::read_to_string(layout.config(1, "bad", Some(&tls), &cluster_extra)).unwrap();
        let output = common::serve_refusing(&config);
        let stderr = common::stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{what}: {stderr}\nconfig:\n{config}");
        assert!(stderr.contains(key), "{what}: the message does not name {key}: {stderr}");
    }
}
