//! Command-line definitions and dispatch.

mod admin_client;
mod bench;
mod cluster_status;
mod compact;
mod config;
mod dashboard;
mod display;
mod grpc;
mod http;
mod idle_poll;
mod log_tools;
mod passwd;
mod serve;
mod streams_config;
mod telemetry;
mod token;
mod units;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

/// Exit status when a command could not do its job (bad path, unreadable file...).
pub const EXIT_ERROR: u8 = 2;
/// Exit status when a check ran and found damaged data.
pub const EXIT_DAMAGED: u8 = 1;

/// Strata: an MQTT broker built on a Kafka-like segmented log.
///
/// `strata serve` runs the broker (MQTT over TCP on a single node); `strata config check`
/// validates a config file; `strata log` holds the offline tools for partition logs.
#[derive(Debug, Parser)]
#[command(name = "strata", version)]
pub struct Cli {
    /// Log lines on stderr: `text`, or `json` (one JSON object per line). RUST_LOG filters
    /// them (default: warnings and errors).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker: MQTT 3.1.1 and 5.0 over TCP, every publish appended to the log.
    ///
    /// With no flags: data in ./data, MQTT on 127.0.0.1:1883, the admin API on
    /// 127.0.0.1:7070 and the HTTP endpoint on 127.0.0.1:9090. Flags override the config
    /// file. A bad config file stops the start with exit status 2 and names the key.
    Serve {
        /// A TOML config file (docs/config.md).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print the effective configuration (file, flags and defaults: every key with its
        /// value, as TOML that `strata config check` accepts) and exit without starting.
        #[arg(long)]
        print_config: bool,
        /// Root directory of the partition logs.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Address of the MQTT TCP listener.
        #[arg(long, value_name = "ADDR")]
        mqtt: Option<SocketAddr>,
        /// Address of the MQTT-over-WebSocket listener (path /mqtt); off unless given here or
        /// as mqtt.ws_listen.
        #[arg(long, value_name = "ADDR")]
        ws: Option<SocketAddr>,
        /// Address of the operator HTTP endpoint (/health, /ready, /metrics), or `off`.
        /// Default: http.listen, else 127.0.0.1:9090.
        #[arg(long, value_name = "ADDR|off")]
        http: Option<config::Listen>,
        /// Address of the gRPC admin API (what `strata stream` and `strata group` call), or
        /// `off`. Default: grpc.listen, else 127.0.0.1:7070.
        #[arg(long, value_name = "ADDR|off")]
        grpc: Option<config::Listen>,
    },
    /// Config files of `strata serve`.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Streams of a running node, through its gRPC admin API (`[grpc] listen`).
    Stream {
        #[command(flatten)]
        client: admin_client::ClientArgs,
        #[command(subcommand)]
        command: admin_client::StreamCommand,
    },
    /// Consumer groups of a running node, through its gRPC admin API (`[grpc] listen`).
    Group {
        #[command(flatten)]
        client: admin_client::ClientArgs,
        #[command(subcommand)]
        command: admin_client::GroupCommand,
    },
    /// The cluster a running node belongs to, through its gRPC admin API (`[grpc] listen`).
    Cluster {
        #[command(flatten)]
        client: admin_client::ClientArgs,
        #[command(subcommand)]
        command: admin_client::ClusterCommand,
    },
    /// Inspect, check and compact partition logs on disk (offline).
    #[command(subcommand)]
    Log(LogCommand),
    /// Load-test any MQTT broker: publish/subscribe throughput and latency, connect rate, or
    /// idle connections. Loopback targets only unless --allow-remote; every run is bounded.
    ///
    /// Prints a progress line while running, a summary, and a final `RESULT {json}` line.
    Bench(Box<bench::BenchArgs>),
    /// Add a user to an `[auth] password_file`, change their password, or delete them (-D).
    ///
    /// The password is read from standard input when it is not a terminal (one line), and
    /// asked for twice otherwise. It is stored as an argon2id hash; Mosquitto's lines in the
    /// same file are kept.
    Passwd {
        /// Delete the user instead.
        #[arg(short = 'D', long = "delete")]
        delete: bool,
        /// The password file (created, mode 0600, when missing).
        file: PathBuf,
        /// The user name.
        user: String,
    },
}

/// Config file tools.
#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check a config file exactly as `strata serve --config FILE` would, without starting.
    ///
    /// Prints `FILE: ok` and exits 0, or prints the first error, naming the key, and exits 2.
    Check {
        /// A TOML config file.
        file: PathBuf,
    },
}

/// Offline tools for partition directories. `dump` and `verify` take no lock and repair
/// nothing, so they are safe beside a running broker; `compact` locks the partition and
/// refuses to run while a broker holds it.
#[derive(Debug, Subcommand)]
enum LogCommand {
    /// Print the batches and records of one partition.
    ///
    /// Exits 0 after printing, 1 if it reached a damaged batch (everything before it is
    /// printed, the error names the file and byte position), 2 if it could not run.
    Dump {
        /// A partition directory (`<data>/<stream>/<partition>/`), holding `*.log` segments.
        partition_dir: PathBuf,
        /// Start at this offset (records before it in the same batch are skipped).
        #[arg(long, value_name = "OFFSET", default_value_t = 0)]
        from: u64,
        /// Print at most this many records.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Check every batch, record and index entry of every partition under a directory.
    ///
    /// DIR is a partition directory or any directory above one (such as the data
    /// directory): every directory below it holding segment files is checked.
    ///
    /// Exits 0 when everything is sound, 1 when problems are found (the first one is named
    /// with its file and byte position, then all of them are listed), 2 if it could not run.
    Verify {
        /// A partition directory, or a directory containing partitions at any depth.
        dir: PathBuf,
    },
    /// Run one full compaction of a partition: keep the latest record per key.
    ///
    /// The key is the value of the header named by --key (an MQTT 5 user property such as
    /// `entity_id`), else the topic header, else the record key. The active segment is never
    /// compacted. Prints the size before and after.
    Compact {
        /// A partition directory (`<data>/<stream>/<partition>/`).
        partition_dir: PathBuf,
        /// Header whose value is the compaction key.
        #[arg(long, value_name = "HEADER")]
        key: Option<String>,
        /// Header holding the topic, the key of records without --key.
        #[arg(long, value_name = "HEADER", default_value = strata_compaction::TOPIC_HEADER)]
        topic_header: String,
        /// Drop tombstones (empty values) older than this many milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 86_400_000)]
        delete_retention_ms: u64,
        /// Leave segments whose newest record is younger than this many milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 0)]
        min_compaction_lag_ms: u64,
        /// Merge rewritten segments up to this size in bytes.
        #[arg(long, value_name = "BYTES", default_value_t = 128 << 20)]
        segment_bytes: u64,
    },
}

/// Runs the parsed command and turns its outcome into the process exit status.
pub fn run(cli: Cli) -> ExitCode {
    // `serve` sets up logging itself, once its config says whether spans are exported.
    if !matches!(cli.command, Command::Serve { .. }) {
        telemetry::init_logging(cli.log_format);
    }
    let outcome = match cli.command {
        Command::Serve { config, print_config, data_dir, mqtt, ws, http, grpc } => serve::serve(&serve::ServeArgs {
            config,
            print_config,
            log_format: cli.log_format,
            overrides: config::Overrides { data_dir, mqtt, ws, http, grpc },
        }),
        Command::Config(ConfigCommand::Check { file }) => config::check(&file),
        Command::Stream { client, command } => admin_client::stream(&client, &command),
        Command::Group { client, command } => admin_client::group(&client, &command),
        Command::Cluster { client, command } => admin_client::cluster(&client, &command),
        Command::Bench(args) => bench::bench(&args),
        Command::Passwd { delete, file, user } => {
            passwd::passwd(&file, &user, if delete { passwd::Change::Delete } else { passwd::Change::Set })
        }
        Command::Log(LogCommand::Dump { partition_dir, from, count }) => log_tools::dump(&partition_dir, from, count),
        Command::Log(LogCommand::Verify { dir }) => log_tools::verify(&dir),
        Command::Log(LogCommand::Compact {
            partition_dir,
            key,
            topic_header,
            delete_retention_ms,
            min_compaction_lag_ms,
            segment_bytes,
        }) => compact::compact(
            &partition_dir,
            &compact::CompactOptions {
                key_header: key.as_deref(),
                topic_header: &topic_header,
                delete_retention_ms,
                min_compaction_lag_ms,
                segment_bytes,
            },
        ),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
