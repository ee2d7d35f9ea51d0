//! A network of Linux network namespaces for chaos tests (issue 21): N node namespaces and one
//! client namespace, each joined by a veth pair to a bridge in a hub namespace, with addresses
//! 10.77.X.0/24. Faults are nftables rules in the namespaces' own tables (this kernel has no
//! netem): cut a host off, cut one direction, drop a share of packets, heal. Latency comes from
//! [`DelayProxy`], a small delaying TCP proxy in the test process.
//!
//! ```ignore
//! let Some(net) = Net::new(3) else { return }; // skipped (with the reason printed) unless root
//! let (a, b) = (net.node(0), net.node(1));
//! let broker = net.serve(a, &dir.path().join("a"), ""); // config text: "" for the defaults
//! net.cut(a);               // a reaches nobody, nobody reaches a
//! net.cut_one_way(b, a);    // b's packets to a are dropped: a reaches b, b does not reach a
//! net.drop_percent(a, 20);  // 20% of a's packets, each way, on its link
//! net.heal_all();
//! let n = net.block_on(net.client(), || async { /* rumqttc, inside the client namespace */ });
//! ```
//!
//! Everything is named `strata-chaos-<X>-<pid>-<n>-...` (X: the subnet, pid: this test process,
//! n: a counter within it). [`Net`]'s Drop kills what runs in its namespaces and deletes them
//! (their veths and nftables tables go with them); [`Net::new`] first deletes what earlier
//! runs left behind when their process is gone (a test binary killed before Drop ran).
//!
//! Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN), `ip` (iproute2) and `nft` (nftables). Without
//! them, [`Net::new`] prints why and returns `None`, except under `CI=true`, where it panics:
//! CI runs as root and must not skip these tests silently.
#![allow(dead_code)] // each test binary uses a different subset

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Every namespace the harness makes starts with this; the sweep looks for nothing else.
pub const PREFIX: &str = "strata-chaos-";
/// The nftables table each host's faults live in.
const TABLE: &str = "strata_chaos";
/// Inside every host namespace, the host's end of its veth pair.
const IFACE: &str = "eth0";
/// The client namespace's host part of the address.
const CLIENT_HOST: u8 = 100;
/// Where a broker started with [`Net::serve`] listens, on its node's address.
pub const MQTT_PORT: u16 = 1883;
pub const HTTP_PORT: u16 = 9090;
pub const GRPC_PORT: u16 = 7070;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// One host on the bridge: a node (0..N) or the client namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host(usize);

/// The network; dropping it tears everything down.
pub struct Net {
    tag: String,
    subnet: u8,
    nodes: usize,
    /// Namespaces created so far, hub first; Drop deletes exactly these.
    created: Vec<String>,
}

fn run_status(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} {args:?}: {e}"))
}

/// Runs a command that must succeed.
fn run(program: &str, args: &[&str]) {
    let out = run_status(program, args);
    assert!(
        out.status.success(),
        "{program} {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn have(program: &str) -> bool {
    Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

fn is_root() -> bool {
    // The effective uid, without a libc dependency: /proc says it.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

/// Why this machine cannot run the harness, if it cannot.
fn missing() -> Option<String> {
    if !is_root() {
        return Some("network namespaces need root".into());
    }
    for (program, package) in [("ip", "iproute2"), ("nft", "nftables")] {
        if !have(program) {
            return Some(format!("`{program}` is missing (install {package})"));
        }
    }
    None
}

fn namespaces() -> Vec<String> {
    // `ip netns add` keeps its namespaces as files here.
    std::fs::read_dir("/run/netns")
        .map(|dir| dir.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default()
}

/// Kills every process in namespace `ns` and deletes it.
fn destroy(ns: &str) {
    let pids = run_status("ip", &["netns", "pids", ns]);
    for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
        let _ = run_status("kill", &["-9", pid]);
    }
    let _ = run_status("ip", &["netns", "delete", ns]);
}

/// Deletes the namespaces of runs whose process is gone.
fn sweep_leftovers() {
    for ns in namespaces() {
        let Some(rest) = ns.strip_prefix(PREFIX) else { continue };
        // <X>-<pid>-<n>-<role>
        let pid = rest.split('-').nth(1).and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            eprintln!("netns: deleting {ns}, left by an earlier run");
            destroy(&ns);
        }
    }
}

/// Enters network namespace `ns` on the calling thread (only this thread: sockets it opens
/// afterwards, and threads it starts, are in `ns`).
pub fn enter(ns: &str) {
    let file = File::open(format!("/run/netns/{ns}")).unwrap_or_else(|e| panic!("open namespace {ns}: {e}"));
    // SAFETY: a plain system call on a file descriptor that `file` keeps open for its duration.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns into {ns}: {}", std::io::Error::last_os_error());
}

impl Net {
    /// `nodes` node namespaces and a client namespace on one bridge. `None` (with the reason
    /// printed) when this machine cannot make them and `CI` is not `true`.
    pub fn new(nodes: usize) -> Option<Net> {
        assert!((1..=50).contains(&nodes), "1 to 50 nodes");
        if let Some(reason) = missing() {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("chaos tests cannot run in CI: {reason}");
            }
            eprintln!("SKIPPED: {reason}; the chaos tests need root, iproute2 and nftables (docs/testing.md)");
            return None;
        }
        sweep_leftovers();
        let pid = std::process::id();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        // The subnets of parallel runs never meet (each run has its own bridge), but distinct
        // ones keep `ip netns` and packet traces readable: take one no live run uses.
        let in_use = namespaces();
        let start = (pid as usize).wrapping_mul(7).wrapping_add(n as usize * 13);
        let subnet = (0..200)
            .map(|i| (20 + (start + i) % 200) as u8)
            .find(|x| !in_use.iter().any(|ns| ns.starts_with(&format!("{PREFIX}{x}-"))))
            .unwrap_or(20 + (start % 200) as u8);
        let mut net = Net { tag: format!("{PREFIX}{subnet}-{pid}-{n}"), subnet, nodes, created: Vec::new() };
        let hub = net.hub();
        net.add_namespace(&hub);
        net.exec(&hub, &["ip", "link", "add", "br0", "type", "bridge"]);
        net.exec(&hub, &["ip", "link", "set", "br0", "up"]);
        for host in (0..nodes).map(Host).chain([net.client()]) {
            net.add_host(host);
        }
        Some(net)
    }

    fn hub(&self) -> String {
        format!("{}-hub", self.tag)
    }

    /// The namespace's name, for `ip netns exec`.
    pub fn namespace(&self, host: Host) -> String {
        if host.0 == self.nodes { format!("{}-client", self.tag) } else { format!("{}-n{}", self.tag, host.0) }
    }

    fn add_namespace(&mut self, ns: &str) {
        run("ip", &["netns", "add", ns]);
        self.created.push(ns.to_owned());
        self.exec(ns, &["ip", "link", "set", "lo", "up"]);
    }

    fn add_host(&mut self, host: Host) {
        let ns = self.namespace(host);
        self.add_namespace(&ns);
        let hub = self.hub();
        // Both ends are created straight in their namespaces, so names never clash with the
        // host's interfaces or with other runs'.
        let hub_end = format!("v{}", host.0);
        run("ip", &["link", "add", IFACE, "netns", &ns, "type", "veth", "peer", "name", &hub_end, "netns", &hub]);
        let cidr = format!("{}/24", self.addr(host));
        self.exec(&ns, &["ip", "addr", "add", &cidr, "dev", IFACE]);
        self.exec(&ns, &["ip", "link", "set", IFACE, "up"]);
        self.exec(&hub, &["ip", "link", "set", &hub_end, "master", "br0"]);
        self.exec(&hub, &["ip", "link", "set", &hub_end, "up"]);
        let rules = format!(
            "table inet {TABLE} {{\n\
             chain output {{ type filter hook output priority 0; policy accept; }}\n\
             chain input {{ type filter hook input priority 0; policy accept; }}\n}}\n"
        );
        self.nft(host, &rules);
    }

    /// Runs `args` inside namespace `ns`; it must succeed.
    fn exec(&self, ns: &str, args: &[&str]) {
        let mut all = vec!["netns", "exec", ns];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    /// Loads an nftables script into `host`'s namespace.
    fn nft(&self, host: Host, script: &str) {
        let path = std::env::temp_dir().join(format!("{}-{}.nft", self.tag, COUNTER.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(&path, script).expect("write nft script");
        let ns = self.namespace(host);
        let out = run_status("ip", &["netns", "exec", &ns, "nft", "-f", path.to_str().expect("UTF-8 temp dir")]);
        let _ = std::fs::remove_file(&path);
        assert!(out.status.success(), "nft in {ns} refused:\n{script}\n{}", String::from_utf8_lossy(&out.stderr));
    }

    fn rule(&self, host: Host, chain: &str, rule: &str) {
        self.nft(host, &format!("add rule inet {TABLE} {chain} {rule}\n"));
    }

    pub fn node(&self, i: usize) -> Host {
        assert!(i < self.nodes, "node {i} of {}", self.nodes);
        Host(i)
    }

    /// The client namespace, where test clients run (see [`Net::block_on`]).
    pub fn client(&self) -> Host {
        Host(self.nodes)
    }

    /// The host's address: 10.77.X.(i+1) for node i, 10.77.X.100 for the client namespace.
    pub fn addr(&self, host: Host) -> Ipv4Addr {
        let last = if host.0 == self.nodes { CLIENT_HOST } else { host.0 as u8 + 1 };
        Ipv4Addr::new(10, 77, self.subnet, last)
    }

    /// Cuts `host` off: every packet in or out of its link is dropped. Loopback still works.
    pub fn cut(&self, host: Host) {
        self.rule(host, "output", &format!("oifname \"{IFACE}\" counter drop"));
        self.rule(host, "input", &format!("iifname \"{IFACE}\" counter drop"));
    }

    /// Drops what `from` sends to `to`, and nothing else: `to` still reaches `from` (its
    /// packets arrive; `from`'s answers do not).
    pub fn cut_one_way(&self, from: Host, to: Host) {
        self.rule(from, "output", &format!("ip daddr {} counter drop", self.addr(to)));
    }

    /// Both directions between `a` and `b`; each still reaches every other host.
    pub fn partition(&self, a: Host, b: Host) {
        self.cut_one_way(a, b);
        self.cut_one_way(b, a);
    }

    /// Drops `percent`% of the packets on `host`'s link, each way, at random.
    pub fn drop_percent(&self, host: Host, percent: u32) {
        assert!(percent <= 100, "a percentage");
        for (chain, dir) in [("output", "oifname"), ("input", "iifname")] {
            self.rule(host, chain, &format!("{dir} \"{IFACE}\" numgen random mod 100 < {percent} counter drop"));
        }
    }

    /// Removes every fault on `host`.
    pub fn heal(&self, host: Host) {
        self.nft(host, &format!("flush table inet {TABLE}\n"));
    }

    pub fn heal_all(&self) {
        for host in (0..=self.nodes).map(Host) {
            self.heal(host);
        }
    }

    /// Packets the fault rules in `host` have dropped since its last heal: proof that a fault
    /// took effect.
    pub fn dropped_packets(&self, host: Host) -> u64 {
        let ns = self.namespace(host);
        let out = run_status("ip", &["netns", "exec", &ns, "nft", "list", "table", "inet", TABLE]);
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] == "packets")
            .filter_map(|w| w[1].parse::<u64>().ok())
            .sum()
    }

    /// A command run inside `host`'s namespace (`ip netns exec`), e.g. `mosquitto_sub`.
    pub fn command(&self, host: Host, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.namespace(host)]).arg(program);
        command
    }

    /// Runs `f` on a thread inside `host`'s namespace and returns what it returns (a panic in
    /// it is this caller's panic).
    pub fn run_in<T: Send>(&self, host: Host, f: impl FnOnce() -> T + Send) -> T {
        let ns = self.namespace(host);
        std::thread::scope(|scope| {
            let thread = scope.spawn(move || {
                enter(&ns);
                f()
            });
            thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Runs the future `f` makes on a current-thread tokio runtime inside `host`'s namespace.
    pub fn block_on<T: Send, F: std::future::Future<Output = T>>(&self, host: Host, f: impl FnOnce() -> F + Send) -> T {
        self.run_in(host, || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
            runtime.block_on(f())
        })
    }

    /// Starts `strata serve` inside `host`'s namespace: MQTT on the host's address, port
    /// [`MQTT_PORT`]; HTTP ([`HTTP_PORT`]) and the admin API ([`GRPC_PORT`]) on the
    /// namespace's own 127.0.0.1, as the broker wants an unauthenticated admin API on loopback
    /// (reach them with [`Net::run_in`] on that host); data in `data_dir`. `config` is the
    /// config file's text (e.g. `[[streams]]` or `[cluster]` sections), written beside
    /// `data_dir`. The MQTT listener is not on loopback, so anonymous clients would be
    /// refused: the harness adds `[auth] allow_anonymous = true` unless `config` has its own
    /// `[auth]` section.
    pub fn serve(&self, host: Host, data_dir: &Path, config: &str) -> NodeBroker {
        let ip = self.addr(host);
        let data = data_dir.to_str().expect("temp paths are UTF-8");
        let mut text = config.to_owned();
        if !config.lines().any(|l| l.trim() == "[auth]") {
            text.push_str("\n[auth]\nallow_anonymous = true\n");
        }
        let config_path = data_dir.with_extension("toml");
        std::fs::write(&config_path, text).expect("write the broker's config");
        let mut command = self.command(host, env!("CARGO_BIN_EXE_strata"));
        command
            .args(["serve", "--data-dir", data])
            .args(["--config", config_path.to_str().expect("temp paths are UTF-8")])
            .args(["--mqtt", &format!("{ip}:{MQTT_PORT}")])
            .args(["--http", &format!("127.0.0.1:{HTTP_PORT}")])
            .args(["--grpc", &format!("127.0.0.1:{GRPC_PORT}")])
            .env_remove("RUST_LOG");
        NodeBroker::spawn(command, host, ip, data_dir)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Hosts first, the hub last: deleting a host's namespace deletes its veth pair.
        for ns in self.created.iter().rev() {
            destroy(ns);
        }
    }
}

/// A `strata serve` in a node's namespace; killed when dropped (and by [`Net`]'s Drop in any
/// case).
pub struct NodeBroker {
    child: Option<Child>,
    pub host: Host,
    pub mqtt: SocketAddr,
    /// On the namespace's loopback: reachable only from inside it.
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub data_dir: PathBuf,
}

impl NodeBroker {
    fn spawn(mut command: Command, host: Host, ip: Ipv4Addr, data_dir: &Path) -> NodeBroker {
        // `ip netns exec` execs the program, so the child's pid is the broker's.
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start strata serve in its namespace");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining so the broker never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // The gRPC line is the last start-up line: every listener is open after it.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("strata: gRPC") => break,
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    panic!("strata serve in namespace did not start (its stderr is above)");
                }
            }
        }
        NodeBroker {
            child: Some(child),
            host,
            mqtt: SocketAddr::from((ip, MQTT_PORT)),
            http: SocketAddr::from((Ipv4Addr::LOCALHOST, HTTP_PORT)),
            grpc: SocketAddr::from((Ipv4Addr::LOCALHOST, GRPC_PORT)),
            data_dir: data_dir.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("broker is running").id()
    }

    /// SIGKILL: no clean shutdown.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NodeBroker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A TCP proxy that holds every chunk `delay` before passing it on, each way: the latency of
/// a long link. It listens on 127.0.0.1 inside the namespace it was started in and forwards
/// to `target`; it runs on its own thread and stops when dropped.
pub struct DelayProxy {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// At most this many connections at once, and this many chunks queued per direction: the
/// proxy is bounded whatever a test does.
const PROXY_CONNECTIONS: usize = 64;
const PROXY_QUEUE: usize = 256;

impl DelayProxy {
    pub fn start(net: &Net, host: Host, target: SocketAddr, delay: Duration) -> DelayProxy {
        let ns = net.namespace(host);
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            enter(&ns);
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
                ready_tx.send(listener.local_addr().expect("proxy address")).expect("proxy starter waits");
                let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(PROXY_CONNECTIONS));
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        accepted = listener.accept() => {
                            let Ok((client, _)) = accepted else { continue };
                            let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
                            tokio::spawn(async move {
                                let _slot = slot;
                                let Ok(server) = tokio::net::TcpStream::connect(target).await else { return };
                                let (client_read, client_write) = client.into_split();
                                let (server_read, server_write) = server.into_split();
                                tokio::join!(
                                    delayed_copy(client_read, server_write, delay),
                                    delayed_copy(server_read, client_write, delay)
                                );
                            });
                        }
                    }
                }
            });
        });
        let addr = ready_rx.recv_timeout(Duration::from_secs(30)).expect("the proxy did not start");
        DelayProxy { addr, stop: Some(stop), thread: Some(thread) }
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read, in order.
async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(PROXY_QUEUE);
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            if tx.send((tokio::time::Instant::now() + delay, buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // The runtime drops its connection tasks when block_on returns.
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
