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

mod client;
mod report;
mod sampler;
mod scenarios;

use client::*;
use report::*;
use sampler::*;
use scenarios::*;

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
    /// Broker address (any MQTT broker). Repeat it, or give a comma list, to spread the load
    /// over several nodes of a cluster: publisher i and subscriber i connect to target
    /// i mod (number of targets), in the order given.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:1883", value_delimiter = ',', num_args = 1)]
    target: Vec<String>,
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
        let mut resolved = Vec::with_capacity(args.target.len());
        for target in &args.target {
            resolved.push(resolve(target, args.allow_remote).await?);
        }
        let targets = Targets::new(resolved)?;
        let broker_before = args.broker_pid.map(ProcSample::read).transpose()?;
        let mut result = if args.connect_rate {
            connect_rate(args, &targets).await?
        } else if let Some(connections) = args.idle {
            idle(args, &targets, connections).await?
        } else {
            pubsub(args, &targets).await?
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

/// The brokers a run connects to, in the order given: connection i of a kind (publisher,
/// subscriber, or any connection in the connect-rate and idle modes) goes to target
/// i mod n, so one publisher and three subscribers over three nodes publish on the first and
/// subscribe on each. The RESULT line's `target` stays the first (the only one in a
/// single-target run), and `targets` lists them all.
#[derive(Debug, Clone)]
struct Targets(Vec<SocketAddr>);

impl Targets {
    fn new(targets: Vec<SocketAddr>) -> anyhow::Result<Targets> {
        if targets.is_empty() {
            bail!("--target needs at least one address");
        }
        Ok(Targets(targets))
    }

    /// Where connection `index` of a kind goes.
    fn for_connection(&self, index: u32) -> SocketAddr {
        self.0[index as usize % self.0.len()]
    }

    fn first(&self) -> SocketAddr {
        self.0[0]
    }

    fn all(&self) -> &[SocketAddr] {
        &self.0
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn one_target_takes_every_connection() {
        let targets = Targets::new(vec![addr(1883)]).expect("one target");
        assert!((0..10).all(|i| targets.for_connection(i) == addr(1883)));
        assert_eq!(targets.first(), addr(1883));
    }

    #[test]
    fn connections_go_round_robin_in_the_given_order() {
        let targets = Targets::new(vec![addr(2), addr(1), addr(3)]).expect("three targets");
        let ports: Vec<u16> = (0..7).map(|i| targets.for_connection(i).port()).collect();
        assert_eq!(ports, [2, 1, 3, 2, 1, 3, 2]);
        // One publisher lands on the first target; three subscribers cover every node.
        assert_eq!(targets.for_connection(0), addr(2));
        assert_eq!(targets.first(), addr(2));
        assert_eq!(targets.all(), [addr(2), addr(1), addr(3)]);
    }

    #[test]
    fn no_target_is_refused() {
        assert!(Targets::new(Vec::new()).is_err());
    }

    #[test]
    fn targets_parse_repeated_and_comma_separated() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let parse = |argv: &[&str]| Cli::try_parse_from(argv).expect("valid arguments").bench.target;
        assert_eq!(parse(&["bench"]), ["127.0.0.1:1883"]);
        assert_eq!(parse(&["bench", "--target", "127.0.0.1:1"]), ["127.0.0.1:1"]);
        assert_eq!(
            parse(&["bench", "--target", "127.0.0.1:1,127.0.0.1:2", "--target", "127.0.0.1:3"]),
            ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
        );
    }
}
