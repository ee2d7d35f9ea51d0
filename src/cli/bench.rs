//! `strata bench`: an MQTT load generator that works against any broker (Strata, Mosquitto...).
//!
//! It speaks MQTT through our own codec over raw TCP sockets (TCP_NODELAY, batched writes), so the
//! client costs little and behaves the same whatever the broker. Every payload carries the
//! publisher id, a sequence number and the send time: subscribers measure end-to-end latency and
//! count lost and duplicate messages per publisher. Each run is bounded in time and in count.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{BufMut, Bytes, BytesMut};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use strata_frontend::codec::{
    self, Ack, ByteString, Connect, Disconnect, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS, Subscribe,
    SubscribeFilter, SubscriptionOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

/// Bytes at the start of every payload: publisher id (u32 LE), sequence (u32 LE), send time in
/// nanoseconds since the run's start (u64 LE).
const STAMP_LEN: usize = 16;
/// Largest packet we accept from the broker.
const MAX_INCOMING_PACKET: usize = 256 << 20;
/// A publisher's write batch is cut at this many bytes.
const WRITE_BATCH_BYTES: usize = 64 << 10;
/// How long publishers wait for outstanding acknowledgements after the run, and subscribers
/// for the last messages.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// Subscribers stop draining once nothing arrived for this long.
const DRAIN_IDLE: Duration = Duration::from_secs(1);
/// Connections opened concurrently in `--idle` mode.
const IDLE_OPEN_CONCURRENCY: usize = 100;

/// Options of `strata bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Broker address (any MQTT broker).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:1883")]
    target: String,
    /// Allow a target that is not a loopback address.
    #[arg(long)]
    allow_remote: bool,
    /// MQTT protocol version: v4 (3.1.1) or v5.
    #[arg(long, value_enum, default_value_t = ProtocolArg::V4)]
    protocol: ProtocolArg,
    /// User Name sent in every CONNECT, for brokers that require one.
    #[arg(long, value_name = "NAME")]
    username: Option<String>,
    /// Password sent in every CONNECT (with --username).
    #[arg(long, value_name = "PASSWORD", requires = "username")]
    password: Option<String>,
    /// Publishing connections.
    #[arg(long, value_name = "N", default_value_t = 1)]
    publishers: u32,
    /// Subscribing connections; each receives every message.
    #[arg(long, value_name = "N", default_value_t = 1)]
    subscribers: u32,
    /// QoS of publishes and subscriptions.
    #[arg(long, value_name = "0|1|2", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Payload size in bytes (at least 16: publisher id, sequence and send time).
    #[arg(long, value_name = "BYTES", default_value_t = 100)]
    payload: usize,
    /// Messages per second per publisher; unthrottled when absent.
    #[arg(long, value_name = "MSGS_PER_SEC")]
    rate: Option<f64>,
    /// How long publishers (or the connect / idle modes) run, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    duration: f64,
    /// Most messages published in total (shared out among publishers).
    #[arg(long, value_name = "N", default_value_t = 100_000_000)]
    max_messages: u64,
    /// `shared`: every publisher on one topic; `per-publisher`: one topic each, subscribers
    /// use a wildcard (fan-in).
    #[arg(long, value_enum, default_value_t = TopicMode::Shared)]
    topic_mode: TopicMode,
    /// Most unacknowledged QoS 1/2 publishes per publisher.
    #[arg(long, value_name = "N", default_value_t = 100)]
    window: u32,
    /// Connect-rate mode: open --connections connections, --inflight at a time, and measure
    /// connects/s and TCP connect + CONNECT → CONNACK latency.
    #[arg(long)]
    connect_rate: bool,
    /// Connections opened in --connect-rate mode.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    connections: u32,
    /// Connection attempts in flight in --connect-rate mode.
    #[arg(long, value_name = "M", default_value_t = 50)]
    inflight: u32,
    /// Idle mode: open N connections and hold them for --duration seconds.
    #[arg(long, value_name = "N")]
    idle: Option<u32>,
    /// Publishers' socket send buffer (SO_SNDBUF), in bytes; default: the kernel's autotuning
    /// (up to 4 MiB on Linux). Unthrottled publishers keep it full, and the time messages
    /// wait in it counts in the end-to-end latency: bound it to see the broker's own share.
    #[arg(long, value_name = "BYTES")]
    sndbuf: Option<u32>,
    /// Subscribers' socket receive buffer (SO_RCVBUF), in bytes; default: the kernel's
    /// autotuning.
    #[arg(long, value_name = "BYTES")]
    rcvbuf: Option<u32>,
    /// The broker's process id: its RSS and CPU time are reported.
    #[arg(long, value_name = "PID")]
    broker_pid: Option<u32>,
    /// Write the latency distribution and the rate over time (a point per second, as in the
    /// RESULT line's `timeline`) to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProtocolArg {
    V4,
    V5,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TopicMode {
    Shared,
    PerPublisher,
}

impl TopicMode {
    fn name(self) -> &'static str {
        match self {
            TopicMode::Shared => "shared",
            TopicMode::PerPublisher => "per-publisher",
        }
    }
}

/// Runs `strata bench`. Exit 0 when the run completed without connection errors, 1 when some
/// connection failed during the run (the RESULT line is printed either way).
pub fn bench(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    validate(args)?;
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async {
        let target = resolve(&args.target, args.allow_remote).await?;
        let broker_before = args.broker_pid.map(ProcSample::read).transpose()?;
        let mut result = if args.connect_rate {
            connect_rate(args, target).await?
        } else if let Some(connections) = args.idle {
            idle(args, target, connections).await?
        } else {
            pubsub(args, target).await?
        };
        if let (Some(pid), Some(before)) = (args.broker_pid, broker_before) {
            let after = ProcSample::read(pid)?;
            result.report["broker"] = json!({
                "pid": pid,
                "cpu_s": after.cpu_seconds - before.cpu_seconds,
                "rss_kib": after.rss_kib,
                "peak_rss_kib": after.peak_rss_kib,
            });
            println!(
                "broker pid {pid}: {:.2} CPU s during the run, RSS {} KiB, peak RSS {} KiB",
                after.cpu_seconds - before.cpu_seconds,
                after.rss_kib,
                after.peak_rss_kib
            );
        }
        if let Some(path) = &args.plot {
            plot(path, &result).with_context(|| format!("writing the plot {}", path.display()))?;
            println!("plot written to {}", path.display());
        }
        println!("RESULT {}", result.report);
        Ok(if result.errors == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
    })
}

fn validate(args: &BenchArgs) -> anyhow::Result<()> {
    if args.payload < STAMP_LEN {
        bail!("--payload must be at least {STAMP_LEN} bytes (publisher id, sequence, send time)");
    }
    if !(args.duration > 0.0 && args.duration.is_finite()) {
        bail!("--duration must be a positive number of seconds");
    }
    if let Some(rate) = args.rate
        && !(rate > 0.0 && rate.is_finite())
    {
        bail!("--rate must be a positive number of messages per second");
    }
    if args.window == 0 || args.window > 60_000 {
        bail!("--window must be between 1 and 60000");
    }
    if args.connect_rate && (args.connections == 0 || args.inflight == 0) {
        bail!("--connections and --inflight must be at least 1");
    }
    if !args.connect_rate && args.idle.is_none() && (args.publishers == 0 || args.subscribers == 0) {
        bail!("--publishers and --subscribers must be at least 1");
    }
    if args.max_messages == 0 {
        bail!("--max-messages must be at least 1");
    }
    Ok(())
}

/// Many connections need many descriptors: lift the soft limit to the hard one.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

async fn resolve(target: &str, allow_remote: bool) -> anyhow::Result<SocketAddr> {
    let addrs: Vec<SocketAddr> =
        tokio::net::lookup_host(target).await.with_context(|| format!("resolving --target {target}"))?.collect();
    let Some(&first) = addrs.first() else {
        bail!("--target {target} resolved to no address");
    };
    if !allow_remote && let Some(remote) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        bail!("--target {target} resolves to {remote}, which is not loopback; pass --allow-remote to bench it");
    }
    Ok(first)
}

fn version(args: &BenchArgs) -> ProtocolVersion {
    match args.protocol {
        ProtocolArg::V4 => ProtocolVersion::V3_1_1,
        ProtocolArg::V5 => ProtocolVersion::V5,
    }
}

/// What every CONNECT of a run carries besides its client id.
#[derive(Clone)]
struct Login {
    version: ProtocolVersion,
    username: Option<ByteString>,
    password: Option<Bytes>,
}

impl Login {
    fn from_args(args: &BenchArgs) -> Login {
        Login {
            version: version(args),
            username: args.username.as_deref().map(ByteString::from),
            password: args.password.as_ref().map(|p| Bytes::copy_from_slice(p.as_bytes())),
        }
    }
}

fn qos(args: &BenchArgs) -> QoS {
    QoS::from_u8(args.qos).unwrap_or(QoS::AtMostOnce)
}

fn new_histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to 1 hour, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
}

fn nanos_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn percentiles(histogram: &Histogram<u64>) -> Value {
    if histogram.is_empty() {
        return json!({"count": 0});
    }
    json!({
        "count": histogram.len(),
        "min": histogram.min(),
        "mean": (histogram.mean() * 10.0).round() / 10.0,
        "p50": histogram.value_at_quantile(0.5),
        "p99": histogram.value_at_quantile(0.99),
        "p999": histogram.value_at_quantile(0.999),
        "max": histogram.max(),
    })
}

fn describe_latency(label: &str, histogram: &Histogram<u64>) {
    if histogram.is_empty() {
        println!("{label}: no samples");
        return;
    }
    println!(
        "{label} (µs): p50 {}  p99 {}  p99.9 {}  max {}  mean {:.1}  ({} samples)",
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.99),
        histogram.value_at_quantile(0.999),
        histogram.max(),
        histogram.mean(),
        histogram.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Connections

/// The read side of a connection: the socket half and its buffer.
struct PacketReader {
    reader: OwnedReadHalf,
    read_buf: BytesMut,
    version: ProtocolVersion,
}

/// One MQTT connection.
struct Connection {
    rx: PacketReader,
    writer: OwnedWriteHalf,
    version: ProtocolVersion,
}

/// Socket buffer sizes for a connection; `None` leaves the kernel's autotuning.
#[derive(Debug, Clone, Copy, Default)]
struct SocketBuffers {
    send: Option<u32>,
    receive: Option<u32>,
}

/// Opens a TCP connection with TCP_NODELAY (and `buffers`, set before connecting so the
/// window is sized from the start), sends CONNECT (clean start, keep alive off) and waits for
/// a successful CONNACK.
async fn connect(
    target: SocketAddr,
    login: &Login,
    client_id: &str,
    buffers: SocketBuffers,
) -> anyhow::Result<Connection> {
    let version = login.version;
    let socket =
        if target.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.context("creating a socket")?;
    if let Some(bytes) = buffers.send {
        socket.set_send_buffer_size(bytes).context("setting SO_SNDBUF")?;
    }
    if let Some(bytes) = buffers.receive {
        socket.set_recv_buffer_size(bytes).context("setting SO_RCVBUF")?;
    }
    let stream = socket.connect(target).await.with_context(|| format!("connecting to {target}"))?;
    stream.set_nodelay(true).context("setting TCP_NODELAY")?;
    let (reader, mut writer) = stream.into_split();
    let connect = Connect {
        protocol: version,
        clean_start: true,
        keep_alive: 0,
        client_id: client_id.into(),
        will: None,
        username: login.username.clone(),
        password: login.password.clone(),
        properties: Properties::default(),
    };
    let mut out = BytesMut::with_capacity(64);
    codec::encode(&Packet::Connect(Box::new(connect)), version, &mut out).context("encoding CONNECT")?;
    writer.write_all(&out).await.context("sending CONNECT")?;
    let mut connection =
        Connection { rx: PacketReader { reader, read_buf: BytesMut::with_capacity(4096), version }, writer, version };
    match connection.rx.next_packet().await? {
        Some(Packet::ConnAck(connack)) if !connack.reason_code.is_error() => Ok(connection),
        Some(Packet::ConnAck(connack)) => {
            bail!("{client_id}: the broker refused the connection: {:?}", connack.reason_code)
        }
        Some(other) => bail!("{client_id}: expected CONNACK, got {}", other.kind()),
        None => bail!("{client_id}: the broker closed the connection before CONNACK"),
    }
}

impl PacketReader {
    /// The next packet, or `None` at end of stream.
    async fn next_packet(&mut self) -> anyhow::Result<Option<Packet>> {
        loop {
            if let Some(packet) = codec::decode(&mut self.read_buf, self.version, MAX_INCOMING_PACKET)? {
                return Ok(Some(packet));
            }
            if self.reader.read_buf(&mut self.read_buf).await.context("reading from the broker")? == 0 {
                return Ok(None);
            }
        }
    }
}

impl Connection {
    async fn subscribe(&mut self, filter: &str, qos: QoS) -> anyhow::Result<()> {
        let subscribe = Subscribe {
            packet_id: PacketId::MIN,
            properties: Properties::default(),
            filters: vec![SubscribeFilter {
                filter: filter.into(),
                options: SubscriptionOptions { qos, ..SubscriptionOptions::default() },
            }],
        };
        let mut out = BytesMut::new();
        codec::encode(&Packet::Subscribe(subscribe), self.version, &mut out).context("encoding SUBSCRIBE")?;
        self.writer.write_all(&out).await.context("sending SUBSCRIBE")?;
        match self.rx.next_packet().await? {
            Some(Packet::SubAck(suback)) => match suback.reason_codes.first() {
                Some(code) if !code.is_error() => Ok(()),
                code => bail!("the broker refused the subscription to {filter}: {code:?}"),
            },
            Some(other) => bail!("expected SUBACK, got {}", other.kind()),
            None => bail!("the broker closed the connection before SUBACK"),
        }
    }
}

async fn send_disconnect(writer: &mut OwnedWriteHalf, version: ProtocolVersion) {
    let mut out = BytesMut::new();
    if codec::encode(&Packet::Disconnect(Disconnect::default()), version, &mut out).is_ok() {
        let _ = writer.write_all(&out).await;
    }
    let _ = writer.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Publish / subscribe mode

/// Counters shared by every task of a run, read by the progress line and the timeline.
#[derive(Default)]
struct Progress {
    published: AtomicU64,
    delivered: AtomicU64,
    /// Set once publishers stopped; the value of `published` is then final.
    publishing_done: AtomicBool,
}

struct PublisherOutcome {
    sent: u64,
    acked: u64,
    ack_latency: Histogram<u64>,
    error: Option<String>,
}

struct SubscriberOutcome {
    /// Per publisher: the sequence numbers seen, as a bitset.
    seen: Vec<Vec<u64>>,
    duplicates: u64,
    foreign: u64,
    latency: Histogram<u64>,
    last_delivery: Option<Instant>,
    error: Option<String>,
}

/// What a run measured: the JSON report plus what the plot needs.
struct RunResult {
    report: Value,
    errors: u64,
    latency: Histogram<u64>,
    latency_label: &'static str,
    /// (seconds since start, published/s, delivered/s); delivered is 0 outside pub/sub mode.
    timeline: Vec<(f64, f64, f64)>,
}

fn run_id() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{:x}-{:x}", std::process::id(), nanos & 0xffff_ffff)
}

async fn pubsub(args: &BenchArgs, target: SocketAddr) -> anyhow::Result<RunResult> {
    let login = Login::from_args(args);
    let qos = qos(args);
    let run = run_id();
    let topic_root = format!("strata-bench/{run}");
    let filter = match args.topic_mode {
        TopicMode::Shared => format!("{topic_root}/shared"),
        TopicMode::PerPublisher => format!("{topic_root}/pub/+"),
    };
    let progress = Arc::new(Progress::default());

    // Subscribers first, each subscribed before any publisher starts.
    let base = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut subscribers = Vec::new();
    for s in 0..args.subscribers {
        let buffers = SocketBuffers { receive: args.rcvbuf, ..SocketBuffers::default() };
        let mut connection = connect(target, &login, &format!("sb-{run}-s{s}"), buffers).await?;
        connection.subscribe(&filter, qos).await?;
        subscribers.push(connection);
    }
    let subscriber_tasks: Vec<_> = subscribers
        .into_iter()
        .map(|connection| {
            let progress = progress.clone();
            let stop = stop_rx.clone();
            let publishers = args.publishers as usize;
            tokio::spawn(subscriber(connection, publishers, base, progress, stop))
        })
        .collect();

    let mut publishers = Vec::new();
    for p in 0..args.publishers {
        let buffers = SocketBuffers { send: args.sndbuf, ..SocketBuffers::default() };
        publishers.push(connect(target, &login, &format!("sb-{run}-p{p}"), buffers).await?);
    }
    let per_publisher_budget = args.max_messages.div_ceil(u64::from(args.publishers));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.duration);
    let publisher_tasks: Vec<_> = publishers
        .into_iter()
        .enumerate()
        .map(|(p, connection)| {
            let topic = match args.topic_mode {
                TopicMode::Shared => format!("{topic_root}/shared"),
                TopicMode::PerPublisher => format!("{topic_root}/pub/{p}"),
            };
            let plan = PublishPlan {
                id: p as u32,
                topic,
                qos,
                payload: args.payload,
                rate: args.rate,
                budget: per_publisher_budget,
                window: args.window,
                start,
                deadline,
                base,
            };
            tokio::spawn(publisher(connection, plan, progress.clone()))
        })
        .collect();

    // Progress line and timeline while the tasks run.
    let bar = progress_bar();
    let duration = args.duration;
    let sampler = spawn_sampler(progress.clone(), start, bar.clone(), move |t, published, delivered, done| {
        let draining = if done { "  (draining)" } else { "" };
        format!("{t:5.1}/{duration:.0} s  published {published}  delivered {delivered}{draining}")
    });

    let mut sent = vec![0u64; args.publishers as usize];
    let mut acked = 0u64;
    let mut ack_latency = new_histogram();
    let mut errors = Vec::new();
    for (p, task) in publisher_tasks.into_iter().enumerate() {
        let outcome = task.await.context("publisher task")?;
        sent[p] = outcome.sent;
        acked += outcome.acked;
        ack_latency.add(&outcome.ack_latency).context("merging histograms")?;
        errors.extend(outcome.error.map(|e| format!("publisher {p}: {e}")));
    }
    let publish_elapsed = start.elapsed();
    progress.publishing_done.store(true, Ordering::Release);
    let _ = stop_tx.send(true);

    let mut latency = new_histogram();
    let mut unique = 0u64;
    let mut duplicates = 0u64;
    let mut foreign = 0u64;
    let mut lost_per_publisher = vec![0u64; sent.len()];
    let mut last_delivery: Option<Instant> = None;
    for (s, task) in subscriber_tasks.into_iter().enumerate() {
        let outcome = task.await.context("subscriber task")?;
        latency.add(&outcome.latency).context("merging histograms")?;
        duplicates += outcome.duplicates;
        foreign += outcome.foreign;
        for (p, seen) in outcome.seen.iter().enumerate() {
            let got = count_below(seen, sent[p]);
            unique += got;
            lost_per_publisher[p] += sent[p] - got;
        }
        last_delivery = last_delivery.max(outcome.last_delivery);
        errors.extend(outcome.error.map(|e| format!("subscriber {s}: {e}")));
    }
    let timeline = finish_sampler(sampler, bar).await;

    let published: u64 = sent.iter().sum();
    let expected = published * u64::from(args.subscribers);
    let lost: u64 = lost_per_publisher.iter().sum();
    let delivery_elapsed = last_delivery.map_or(publish_elapsed, |t| t.saturating_duration_since(start));
    let publish_rate = published as f64 / publish_elapsed.as_secs_f64();
    let delivery_rate = unique as f64 / delivery_elapsed.as_secs_f64().max(1e-9);

    println!(
        "{} publisher(s) → {} subscriber(s), QoS {}, {} B, {}, topics {}",
        args.publishers,
        args.subscribers,
        args.qos,
        args.payload,
        args.rate.map_or("unthrottled".to_string(), |r| format!("{r} msg/s per publisher")),
        args.topic_mode.name()
    );
    // Payload bytes only, as Kafka's perf tools count record bytes: MQTT headers vary by broker.
    let payload_mib_s = |messages_per_s: f64| messages_per_s * args.payload as f64 / (1024.0 * 1024.0);
    println!(
        "published {published} in {:.2} s: {publish_rate:.0} msg/s, {:.2} MiB/s of payload (acknowledged {acked})",
        publish_elapsed.as_secs_f64(),
        payload_mib_s(publish_rate)
    );
    println!(
        "delivered {unique} of {expected} in {:.2} s: {delivery_rate:.0} msg/s, {:.2} MiB/s of payload; lost {lost}, \
         duplicates {duplicates}",
        delivery_elapsed.as_secs_f64(),
        payload_mib_s(delivery_rate)
    );
    describe_latency("end-to-end latency", &latency);
    if qos != QoS::AtMostOnce {
        describe_latency("publish → ack latency", &ack_latency);
    }
    for error in &errors {
        println!("error: {error}");
    }

    let report = json!({
        "mode": "pubsub",
        "target": target.to_string(),
        "protocol": match args.protocol { ProtocolArg::V4 => "v4", ProtocolArg::V5 => "v5" },
        "qos": args.qos,
        "publishers": args.publishers,
        "subscribers": args.subscribers,
        "payload": args.payload,
        "rate_per_publisher": args.rate,
        "topic_mode": args.topic_mode.name(),
        "window": args.window,
        "sndbuf": args.sndbuf,
        "rcvbuf": args.rcvbuf,
        "duration_s": args.duration,
        "max_messages": args.max_messages,
        "publish_elapsed_s": publish_elapsed.as_secs_f64(),
        "delivery_elapsed_s": delivery_elapsed.as_secs_f64(),
        "published": published,
        "acked": acked,
        "publish_rate": publish_rate.round(),
        "publish_payload_mib_s": (payload_mib_s(publish_rate) * 1000.0).round() / 1000.0,
        "expected": expected,
        "delivered": unique,
        "delivery_rate": delivery_rate.round(),
        "delivery_payload_mib_s": (payload_mib_s(delivery_rate) * 1000.0).round() / 1000.0,
        "lost": lost,
        "lost_per_publisher": lost_per_publisher,
        "duplicates": duplicates,
        "foreign": foreign,
        "latency_us": percentiles(&latency),
        "ack_latency_us": percentiles(&ack_latency),
        "timeline": timeline_json(&timeline, true),
        "errors": errors,
    });
    Ok(RunResult { report, errors: errors.len() as u64, latency, latency_label: "end-to-end latency", timeline })
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

/// Set bits among sequence numbers `0..limit`.
fn count_below(seen: &[u64], limit: u64) -> u64 {
    let full_words = (limit / 64) as usize;
    let mut count: u64 = seen.iter().take(full_words).map(|w| u64::from(w.count_ones())).sum();
    let rest = limit % 64;
    if rest > 0
        && let Some(word) = seen.get(full_words)
    {
        count += u64::from((word & ((1u64 << rest) - 1)).count_ones());
    }
    count
}

struct PublishPlan {
    id: u32,
    topic: String,
    qos: QoS,
    payload: usize,
    rate: Option<f64>,
    budget: u64,
    window: u32,
    start: Instant,
    deadline: Instant,
    base: Instant,
}

/// One publisher: a writer task that pipelines publishes within the window and a reader task
/// that takes the acknowledgements (and answers PUBREC with PUBREL through the writer).
async fn publisher(connection: Connection, plan: PublishPlan, progress: Arc<Progress>) -> PublisherOutcome {
    let Connection { rx, writer, version } = connection;
    let window = Arc::new(Semaphore::new(plan.window as usize));
    // Send time (ns since base) per packet id; 0 = free.
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..=u16::MAX).map(|_| AtomicU64::new(0)).collect());
    let (release_tx, release_rx) = mpsc::unbounded_channel::<PacketId>();
    let acks = tokio::spawn(publisher_reader(rx, plan.base, window.clone(), sent_at.clone(), release_tx));
    let (sent, mut error) = publisher_writer(writer, version, &plan, &progress, &window, &sent_at, release_rx).await;
    let (acked, ack_latency, read_error) = match acks.await {
        Ok(outcome) => outcome,
        Err(e) => (0, new_histogram(), Some(format!("ack reader: {e}"))),
    };
    if error.is_none() {
        error = read_error;
    }
    PublisherOutcome { sent, acked, ack_latency, error }
}

async fn publisher_writer(
    mut writer: OwnedWriteHalf,
    version: ProtocolVersion,
    plan: &PublishPlan,
    progress: &Progress,
    window: &Semaphore,
    sent_at: &[AtomicU64],
    mut release_rx: mpsc::UnboundedReceiver<PacketId>,
) -> (u64, Option<String>) {
    let acknowledged = plan.qos != QoS::AtMostOnce;
    let mut template = Publish {
        dup: false,
        qos: plan.qos,
        retain: false,
        topic: plan.topic.as_str().into(),
        packet_id: None,
        properties: Properties::default(),
        payload: Bytes::from(vec![0u8; plan.payload]),
    };
    let filler = vec![b'x'; plan.payload - STAMP_LEN];
    let mut out = BytesMut::with_capacity(WRITE_BATCH_BYTES + plan.payload + 256);
    let mut sent = 0u64;
    let mut credits = 0u32; // window permits held for publishes not yet built
    let mut next_packet_id: u16 = 0;
    let mut error = None;
    let mut releases_open = true;
    // A broker that stops reading must not hold the run past its bound.
    let hard_deadline = plan.deadline + DRAIN_LIMIT;
    'run: loop {
        let now = Instant::now();
        if now >= plan.deadline || sent >= plan.budget {
            break;
        }
        while let Ok(id) = release_rx.try_recv() {
            encode_ack(Packet::PubRel(Ack::success(id)), version, &mut out);
        }
        let mut allowed = plan.budget - sent;
        if let Some(rate) = plan.rate {
            let due = ((now - plan.start).as_secs_f64() * rate) as u64 + 1;
            allowed = allowed.min(due.saturating_sub(sent));
        }
        while acknowledged && u64::from(credits) < allowed {
            match window.try_acquire() {
                Ok(permit) => {
                    permit.forget();
                    credits += 1;
                }
                Err(_) => break,
            }
        }
        if acknowledged {
            allowed = allowed.min(u64::from(credits));
        }
        let mut built = 0u64;
        while built < allowed && out.len() < WRITE_BATCH_BYTES {
            if acknowledged {
                // Skip ids still in flight (only possible when acks come back far out of order).
                let mut tries = 0;
                loop {
                    next_packet_id = next_packet_id.wrapping_add(1).max(1);
                    if sent_at[usize::from(next_packet_id)].load(Ordering::Acquire) == 0 || tries > 65_535 {
                        break;
                    }
                    tries += 1;
                }
                template.packet_id = PacketId::new(next_packet_id);
                credits -= 1;
            }
            let stamp = nanos_since(plan.base).max(1);
            if acknowledged {
                sent_at[usize::from(next_packet_id)].store(stamp, Ordering::Release);
            }
            if let Err(e) = codec::encode_publish_header(&template, version, &mut out) {
                error = Some(format!("encoding PUBLISH: {e}"));
                break 'run;
            }
            out.put_u32_le(plan.id);
            out.put_u32_le(sent as u32);
            out.put_u64_le(stamp);
            out.extend_from_slice(&filler);
            sent += 1;
            built += 1;
        }
        if !out.is_empty() {
            if let Err(e) = write_bounded(&mut writer, &out, hard_deadline).await {
                error = Some(e);
                break;
            }
            out.clear();
            progress.published.fetch_add(built, Ordering::Relaxed);
            continue;
        }
        // Nothing to send now: wait for a window slot, a PUBREL to send, the next rate tick or
        // the end of the run.
        let next_due = match plan.rate {
            Some(rate) => plan.start + Duration::from_secs_f64(sent as f64 / rate),
            None => plan.deadline,
        };
        let wake = next_due.min(plan.deadline);
        let need_window = acknowledged && credits == 0 && sent < plan.budget;
        tokio::select! {
            permit = window.acquire(), if need_window => {
                if let Ok(permit) = permit {
                    permit.forget();
                    credits += 1;
                }
            }
            id = release_rx.recv(), if releases_open => match id {
                Some(id) => encode_ack(Packet::PubRel(Ack::success(id)), version, &mut out),
                None => releases_open = false,
            },
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
        if !out.is_empty() {
            if let Err(e) = write_bounded(&mut writer, &out, hard_deadline).await {
                error = Some(e);
                break;
            }
            out.clear();
        }
    }
    // Give back unused credits, then wait (bounded) for every outstanding acknowledgement,
    // still answering PUBRECs.
    window.add_permits(credits as usize);
    if acknowledged && error.is_none() {
        let drain_deadline = Instant::now() + DRAIN_LIMIT;
        while window.available_permits() < plan.window as usize && Instant::now() < drain_deadline {
            tokio::select! {
                id = release_rx.recv(), if releases_open => match id {
                    Some(id) => {
                        encode_ack(Packet::PubRel(Ack::success(id)), version, &mut out);
                        while let Ok(id) = release_rx.try_recv() {
                            encode_ack(Packet::PubRel(Ack::success(id)), version, &mut out);
                        }
                        if let Err(e) = write_bounded(&mut writer, &out, hard_deadline).await {
                            error = Some(e);
                            break;
                        }
                        out.clear();
                    }
                    None => releases_open = false,
                },
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
    }
    if Instant::now() < hard_deadline {
        let _ = tokio::time::timeout_at(hard_deadline.into(), send_disconnect(&mut writer, version)).await;
    }
    (sent, error)
}

async fn write_bounded(writer: &mut OwnedWriteHalf, bytes: &[u8], deadline: Instant) -> Result<(), String> {
    match tokio::time::timeout_at(deadline.into(), writer.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("writing: {e}")),
        Err(_) => Err("the broker stopped reading: write still blocked 10 s after the run's end".to_string()),
    }
}

fn encode_ack(packet: Packet, version: ProtocolVersion, out: &mut BytesMut) {
    // An ack without properties always encodes.
    let _ = codec::encode(&packet, version, out);
}

async fn publisher_reader(
    mut rx: PacketReader,
    base: Instant,
    window: Arc<Semaphore>,
    sent_at: Arc<Vec<AtomicU64>>,
    release_tx: mpsc::UnboundedSender<PacketId>,
) -> (u64, Histogram<u64>, Option<String>) {
    let mut histogram = new_histogram();
    let mut acked = 0u64;
    let mut complete = |id: PacketId, histogram: &mut Histogram<u64>| {
        let stamp = sent_at[usize::from(id.get())].swap(0, Ordering::AcqRel);
        if stamp != 0 {
            histogram.saturating_record((nanos_since(base).saturating_sub(stamp) / 1000).max(1));
            acked += 1;
            window.add_permits(1);
        }
    };
    loop {
        match rx.next_packet().await {
            Ok(Some(Packet::PubAck(ack))) | Ok(Some(Packet::PubComp(ack))) => complete(ack.packet_id, &mut histogram),
            Ok(Some(Packet::PubRec(ack))) => {
                if ack.reason_code.is_error() {
                    complete(ack.packet_id, &mut histogram);
                } else {
                    let _ = release_tx.send(ack.packet_id);
                }
            }
            Ok(Some(Packet::Disconnect(d))) => {
                return (acked, histogram, Some(format!("the broker disconnected: {:?}", d.reason_code)));
            }
            Ok(Some(_)) => {}
            Ok(None) => return (acked, histogram, None),
            Err(e) => return (acked, histogram, Some(format!("{e:#}"))),
        }
    }
}

async fn subscriber(
    connection: Connection,
    publishers: usize,
    base: Instant,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
) -> SubscriberOutcome {
    let Connection { rx, mut writer, version } = connection;
    let PacketReader { mut reader, mut read_buf, .. } = rx;
    let mut outcome = SubscriberOutcome {
        seen: vec![Vec::new(); publishers],
        duplicates: 0,
        foreign: 0,
        latency: new_histogram(),
        last_delivery: None,
        error: None,
    };
    let mut unique = 0u64;
    let mut out = BytesMut::with_capacity(4096);
    let mut stopped_at: Option<Instant> = None;
    'run: loop {
        let mut delivered = 0u64;
        loop {
            match codec::decode(&mut read_buf, version, MAX_INCOMING_PACKET) {
                Ok(Some(Packet::Publish(publish))) => {
                    delivered += 1;
                    match publish.packet_id {
                        Some(id) if publish.qos == QoS::AtLeastOnce => {
                            encode_ack(Packet::PubAck(Ack::success(id)), version, &mut out)
                        }
                        Some(id) => encode_ack(Packet::PubRec(Ack::success(id)), version, &mut out),
                        None => {}
                    }
                    let Some(stamp) = read_stamp(&publish.payload) else {
                        outcome.foreign += 1;
                        continue;
                    };
                    let Some(seen) = outcome.seen.get_mut(stamp.publisher as usize) else {
                        outcome.foreign += 1;
                        continue;
                    };
                    let (word, bit) = ((stamp.sequence / 64) as usize, stamp.sequence % 64);
                    if seen.len() <= word {
                        seen.resize((word + 1).next_power_of_two(), 0);
                    }
                    if seen[word] & (1 << bit) != 0 {
                        outcome.duplicates += 1;
                        continue;
                    }
                    seen[word] |= 1 << bit;
                    unique += 1;
                    let now = nanos_since(base);
                    outcome.latency.saturating_record((now.saturating_sub(stamp.sent_nanos) / 1000).max(1));
                }
                Ok(Some(Packet::PubRel(ack))) => {
                    encode_ack(Packet::PubComp(Ack::success(ack.packet_id)), version, &mut out)
                }
                Ok(Some(Packet::Disconnect(d))) => {
                    outcome.error = Some(format!("the broker disconnected: {:?}", d.reason_code));
                    break 'run;
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    outcome.error = Some(format!("decoding: {e}"));
                    break 'run;
                }
            }
        }
        if delivered > 0 {
            progress.delivered.fetch_add(delivered, Ordering::Relaxed);
            outcome.last_delivery = Some(Instant::now());
        }
        if !out.is_empty() {
            if let Err(e) = writer.write_all(&out).await {
                outcome.error = Some(format!("writing acks: {e}"));
                break;
            }
            out.clear();
        }
        if let Some(stopped) = stopped_at {
            let published = progress.published.load(Ordering::Acquire);
            let idle_since = outcome.last_delivery.map_or(stopped, |t| t.max(stopped));
            if unique >= published || idle_since.elapsed() >= DRAIN_IDLE || stopped.elapsed() >= DRAIN_LIMIT {
                break;
            }
        }
        read_buf.reserve(64 << 10);
        tokio::select! {
            read = reader.read_buf(&mut read_buf) => match read {
                Ok(0) => {
                    if stopped_at.is_none() {
                        outcome.error = Some("the broker closed the connection".to_string());
                    }
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    outcome.error = Some(format!("reading: {e}"));
                    break;
                }
            },
            changed = stop.changed(), if stopped_at.is_none() => {
                if changed.is_err() || *stop.borrow() {
                    stopped_at = Some(Instant::now());
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(50)), if stopped_at.is_some() => {}
        }
    }
    send_disconnect(&mut writer, version).await;
    outcome
}

struct Stamp {
    publisher: u32,
    sequence: u64,
    sent_nanos: u64,
}

fn read_stamp(payload: &[u8]) -> Option<Stamp> {
    let stamp: &[u8; STAMP_LEN] = payload.get(..STAMP_LEN)?.try_into().ok()?;
    let [p0, p1, p2, p3, s0, s1, s2, s3, t @ ..] = *stamp;
    Some(Stamp {
        publisher: u32::from_le_bytes([p0, p1, p2, p3]),
        sequence: u64::from(u32::from_le_bytes([s0, s1, s2, s3])),
        sent_nanos: u64::from_le_bytes(t),
    })
}

/// The progress line's task. It samples the counters every 250 ms. The timeline gets a point
/// per second, and one for the part-second before the stop: (seconds since the start, then the
/// published and delivered counts per second over the interval that ends there).
struct Sampler {
    task: tokio::task::JoinHandle<Vec<(f64, f64, f64)>>,
    stop: oneshot::Sender<()>,
}

fn spawn_sampler(
    progress: Arc<Progress>,
    start: Instant,
    bar: ProgressBar,
    message: impl Fn(f64, u64, u64, bool) -> String + Send + 'static,
) -> Sampler {
    /// A part-second shorter than this at the end is left out: its rate would be noise.
    const SHORTEST_LAST_INTERVAL: f64 = 0.1;
    let (stop, mut stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut timeline = Vec::new();
        // Time and counts at the last point.
        let mut last = (0.0f64, 0u64, 0u64);
        let period = Duration::from_millis(250);
        let mut tick = tokio::time::interval_at((start + period).into(), period);
        let mut n = 0u64;
        // Bounded even if never stopped: one day of ticks.
        while n < 4 * 86_400 {
            let stopping = tokio::select! {
                _ = tick.tick() => false,
                _ = &mut stopped => true,
            };
            n += 1;
            let t = start.elapsed().as_secs_f64();
            let published = progress.published.load(Ordering::Relaxed);
            let delivered = progress.delivered.load(Ordering::Relaxed);
            let done = progress.publishing_done.load(Ordering::Relaxed);
            let interval = t - last.0;
            if (!stopping && n.is_multiple_of(4)) || (stopping && interval >= SHORTEST_LAST_INTERVAL) {
                timeline.push((t, (published - last.1) as f64 / interval, (delivered - last.2) as f64 / interval));
                last = (t, published, delivered);
            }
            if stopping {
                break;
            }
            bar.set_message(message(t, published, delivered, done));
        }
        timeline
    });
    Sampler { task, stop }
}

/// The timeline in the RESULT line: `[seconds, published/s, delivered/s]` per point, or
/// `[seconds, connects/s]` without deliveries; seconds to the millisecond, rates whole.
fn timeline_json(timeline: &[(f64, f64, f64)], with_deliveries: bool) -> Value {
    let seconds = |t: f64| (t * 1000.0).round() / 1000.0;
    timeline
        .iter()
        .map(|&(t, first, delivered)| {
            if with_deliveries {
                json!([seconds(t), first.round(), delivered.round()])
            } else {
                json!([seconds(t), first.round()])
            }
        })
        .collect()
}

/// Stops the sampler and returns the timeline it gathered.
async fn finish_sampler(sampler: Sampler, bar: ProgressBar) -> Vec<(f64, f64, f64)> {
    // The task may have ended on its own bound; then there is nobody to tell.
    let _ = sampler.stop.send(());
    let timeline = sampler.task.await.unwrap_or_default();
    bar.finish_and_clear();
    timeline
}

// ---------------------------------------------------------------------------------------------
// Connect-rate and idle modes

struct Opened {
    latency: Histogram<u64>,
    connections: Vec<Connection>,
    failures: u64,
    first_failure: Option<String>,
    elapsed: Duration,
}

/// Opens `count` connections, `concurrency` at a time, until `deadline`; times each from TCP
/// connect to CONNACK.
async fn open_connections(
    target: SocketAddr,
    login: &Login,
    run: &str,
    count: u32,
    concurrency: u32,
    deadline: Instant,
    progress: &Arc<Progress>,
) -> Opened {
    let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency.min(count))
        .map(|_| {
            let next = next.clone();
            let progress = progress.clone();
            let run = run.to_string();
            let login = login.clone();
            tokio::spawn(async move {
                let mut latency = new_histogram();
                let mut connections = Vec::new();
                let mut failures = 0u64;
                let mut first_failure = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count || Instant::now() >= deadline {
                        break;
                    }
                    let t0 = Instant::now();
                    let attempt = tokio::time::timeout_at(
                        deadline.into(),
                        connect(target, &login, &format!("sb-{run}-c{i}"), SocketBuffers::default()),
                    )
                    .await;
                    match attempt {
                        Ok(Ok(connection)) => {
                            latency.saturating_record((t0.elapsed().as_micros() as u64).max(1));
                            connections.push(connection);
                            progress.published.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Err(e)) => {
                            failures += 1;
                            first_failure.get_or_insert_with(|| format!("{e:#}"));
                        }
                        Err(_) => break,
                    }
                }
                (latency, connections, failures, first_failure)
            })
        })
        .collect();
    let mut opened = Opened {
        latency: new_histogram(),
        connections: Vec::new(),
        failures: 0,
        first_failure: None,
        elapsed: Duration::ZERO,
    };
    for worker in workers {
        match worker.await {
            Ok((latency, connections, failures, first_failure)) => {
                let _ = opened.latency.add(&latency);
                opened.connections.extend(connections);
                opened.failures += failures;
                if opened.first_failure.is_none() {
                    opened.first_failure = first_failure;
                }
            }
            Err(e) => {
                opened.failures += 1;
                opened.first_failure.get_or_insert_with(|| format!("connect task: {e}"));
            }
        }
    }
    opened.elapsed = start.elapsed();
    opened
}

async fn close_all(connections: Vec<Connection>) {
    let closers: Vec<_> = connections
        .into_iter()
        .map(|mut c| tokio::spawn(async move { send_disconnect(&mut c.writer, c.version).await }))
        .collect();
    for closer in closers {
        let _ = closer.await;
    }
}

async fn connect_rate(args: &BenchArgs, target: SocketAddr) -> anyhow::Result<RunResult> {
    let progress = Arc::new(Progress::default());
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.duration);
    let bar = progress_bar();
    let total = args.connections;
    let sampler = spawn_sampler(progress.clone(), start, bar.clone(), move |t, opened, _, _| {
        format!("{t:5.1} s  connected {opened}/{total}")
    });
    let opened = open_connections(
        target,
        &Login::from_args(args),
        &run_id(),
        args.connections,
        args.inflight,
        deadline,
        &progress,
    )
    .await;
    let timeline = finish_sampler(sampler, bar).await;
    let connected = opened.connections.len() as u64;
    let rate = connected as f64 / opened.elapsed.as_secs_f64();
    println!(
        "connect rate: {connected} of {} connections in {:.2} s, {} in flight: {rate:.0} connects/s; {} failed",
        args.connections,
        opened.elapsed.as_secs_f64(),
        args.inflight,
        opened.failures
    );
    describe_latency("TCP connect + CONNECT → CONNACK", &opened.latency);
    if let Some(failure) = &opened.first_failure {
        println!("first failure: {failure}");
    }
    let report = json!({
        "mode": "connect-rate",
        "target": target.to_string(),
        "protocol": match args.protocol { ProtocolArg::V4 => "v4", ProtocolArg::V5 => "v5" },
        "connections": args.connections,
        "inflight": args.inflight,
        "connected": connected,
        "failed": opened.failures,
        "elapsed_s": opened.elapsed.as_secs_f64(),
        "connect_rate": rate.round(),
        "connect_latency_us": percentiles(&opened.latency),
        "timeline": timeline_json(&timeline, false),
        "errors": opened.first_failure.iter().collect::<Vec<_>>(),
    });
    close_all(opened.connections).await;
    let errors = opened.failures + u64::from(connected < u64::from(args.connections));
    Ok(RunResult { report, errors, latency: opened.latency, latency_label: "connect latency", timeline })
}

async fn idle(args: &BenchArgs, target: SocketAddr, count: u32) -> anyhow::Result<RunResult> {
    let progress = Arc::new(Progress::default());
    let before = args.broker_pid.map(ProcSample::read).transpose()?;
    let start = Instant::now();
    // Opening is bounded too, separately from the holding time.
    let open_deadline = start + Duration::from_secs(120);
    let bar = progress_bar();
    let sampler = spawn_sampler(progress.clone(), start, bar.clone(), move |t, opened, _, _| {
        format!("{t:5.1} s  idle connections {opened}/{count}")
    });
    let opened = open_connections(
        target,
        &Login::from_args(args),
        &run_id(),
        count,
        IDLE_OPEN_CONCURRENCY as u32,
        open_deadline,
        &progress,
    )
    .await;
    let held = opened.connections.len() as u64;
    // Let the broker settle, then sample its memory with every connection open; hold for the
    // rest of the duration and sample again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = args.broker_pid.map(ProcSample::read).transpose()?;
    let hold_until = Instant::now() + Duration::from_secs_f64(args.duration);
    tokio::time::sleep_until(hold_until.into()).await;
    let end = args.broker_pid.map(ProcSample::read).transpose()?;
    let timeline = finish_sampler(sampler, bar).await;
    println!(
        "idle: {held} of {count} connections open in {:.2} s ({} failed), held {:.1} s",
        opened.elapsed.as_secs_f64(),
        opened.failures,
        args.duration
    );
    let mut broker = Value::Null;
    if let (Some(before), Some(during), Some(end)) = (before, during, end) {
        let per_connection = |after: &ProcSample| {
            (after.rss_kib.saturating_sub(before.rss_kib) as f64 * 1024.0 / held.max(1) as f64).round()
        };
        println!(
            "broker RSS: {} KiB before, {} KiB with {held} connections ({:.0} B each), {} KiB at the end ({:.0} B each)",
            before.rss_kib,
            during.rss_kib,
            per_connection(&during),
            end.rss_kib,
            per_connection(&end)
        );
        broker = json!({
            "rss_before_kib": before.rss_kib,
            "rss_held_kib": during.rss_kib,
            "rss_end_kib": end.rss_kib,
            "rss_per_connection_bytes": per_connection(&during),
            "rss_per_connection_end_bytes": per_connection(&end),
        });
    }
    if let Some(failure) = &opened.first_failure {
        println!("first failure: {failure}");
    }
    let report = json!({
        "mode": "idle",
        "target": target.to_string(),
        "protocol": match args.protocol { ProtocolArg::V4 => "v4", ProtocolArg::V5 => "v5" },
        "connections": count,
        "held": held,
        "failed": opened.failures,
        "open_elapsed_s": opened.elapsed.as_secs_f64(),
        "hold_s": args.duration,
        "idle_rss": broker,
        "connect_latency_us": percentiles(&opened.latency),
        "errors": opened.first_failure.iter().collect::<Vec<_>>(),
    });
    close_all(opened.connections).await;
    let errors = opened.failures + u64::from(held < u64::from(count));
    Ok(RunResult { report, errors, latency: opened.latency, latency_label: "connect latency", timeline })
}

// ---------------------------------------------------------------------------------------------
// The broker's process, from /proc

struct ProcSample {
    cpu_seconds: f64,
    rss_kib: u64,
    peak_rss_kib: u64,
}

impl ProcSample {
    fn read(pid: u32) -> anyhow::Result<ProcSample> {
        let stat_path = format!("/proc/{pid}/stat");
        let stat =
            std::fs::read_to_string(&stat_path).with_context(|| format!("reading {stat_path} (--broker-pid)"))?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
        let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        let (Some(utime), Some(stime)) = (field(11), field(12)) else {
            bail!("{stat_path}: unexpected format");
        };
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let status_path = format!("/proc/{pid}/status");
        let status = std::fs::read_to_string(&status_path).with_context(|| format!("reading {status_path}"))?;
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(ProcSample {
            cpu_seconds: (utime + stime) as f64 / ticks,
            rss_kib: kib("VmRSS:"),
            peak_rss_kib: kib("VmHWM:"),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Plot

fn plot(path: &Path, result: &RunResult) -> anyhow::Result<()> {
    use plotters::prelude::*;

    let root = SVGBackend::new(path, (1000, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (upper, lower) = root.split_vertically(450);

    // Latency by percentile, the x axis in "nines": 1 = 90%, 2 = 99%, 3 = 99.9%...
    let points: Vec<(f64, f64)> = result
        .latency
        .iter_quantiles(1)
        .filter(|v| v.quantile_iterated_to() < 1.0)
        .map(|v| (-(1.0 - v.quantile_iterated_to()).log10(), v.value_iterated_to() as f64 / 1000.0))
        .collect();
    let max_x = points.iter().map(|p| p.0).fold(1.0f64, f64::max).min(6.0);
    let max_y = points.iter().map(|p| p.1).fold(0.001f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&upper)
        .caption(format!("{} by percentile", result.latency_label), ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..max_x, 0.0..max_y)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("ms")
        .x_label_formatter(&|nines| format!("{:.3}%", 100.0 * (1.0 - 10f64.powf(-nines))))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart.draw_series(LineSeries::new(points, &BLUE)).map_err(|e| anyhow::anyhow!("{e}"))?;

    let max_t = result.timeline.iter().map(|p| p.0).fold(1.0f64, f64::max);
    let max_rate = result.timeline.iter().map(|p| p.1.max(p.2)).fold(1.0f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&lower)
        .caption("rate per second", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..max_t, 0.0..max_rate)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart.configure_mesh().x_desc("s").y_desc("per s").draw().map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .draw_series(LineSeries::new(result.timeline.iter().map(|p| (p.0, p.1)), &RED))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .label("published (or connected)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    if result.timeline.iter().any(|p| p.2 > 0.0) {
        chart
            .draw_series(LineSeries::new(result.timeline.iter().map(|p| (p.0, p.2)), &BLUE))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label("delivered")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        let mut buf = BytesMut::new();
        buf.put_u32_le(3);
        buf.put_u32_le(77);
        buf.put_u64_le(123_456_789);
        buf.extend_from_slice(b"padding");
        let stamp = read_stamp(&buf).expect("a full stamp");
        assert_eq!((stamp.publisher, stamp.sequence, stamp.sent_nanos), (3, 77, 123_456_789));
        assert!(read_stamp(&buf[..15]).is_none());
    }

    #[test]
    fn counts_sequences_below_a_limit() {
        let mut seen = vec![0u64; 3];
        for seq in [0u64, 1, 63, 64, 100, 150] {
            seen[(seq / 64) as usize] |= 1 << (seq % 64);
        }
        assert_eq!(count_below(&seen, 0), 0);
        assert_eq!(count_below(&seen, 64), 3);
        assert_eq!(count_below(&seen, 101), 5);
        assert_eq!(count_below(&seen, 1000), 6);
    }
}
