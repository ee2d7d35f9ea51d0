//! `strata stream ...`, `strata group ...` and `strata cluster ...`: clients of the gRPC admin
//! API of a running node (`strata serve`, on 127.0.0.1:7070 unless `[grpc] listen` says
//! otherwise). Human tables by default, `--output json` for scripts. Any failure (node
//! unreachable, unknown stream or group, a bad setting, a refused change) is one `error:` line
//! and exit status 2. Settings are checked by the node, with the same parser as
//! the config file, so the message names the key either way.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use strata_proto::admin::v1 as pb;
use strata_proto::admin::v1::admin_client::AdminClient;
use tonic::transport::{Channel, Endpoint};

/// How long connecting to the node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one call may take (compaction on demand can take a while on big partitions).
const CALL_TIMEOUT: Duration = Duration::from_secs(600);

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// One JSON document, for scripts.
    Json,
}

/// Where the admin API is and how to print.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// The node's gRPC admin API (`[grpc] listen` of `strata serve`), as HOST:PORT.
    #[arg(long, global = true, value_name = "HOST:PORT", default_value_t = super::config::DEFAULT_GRPC_LISTEN.to_string())]
    pub server: String,
    /// `table` (default) or `json`.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// A file holding the node's admin token (`[grpc] token_file`); else the
    /// STRATA_ADMIN_TOKEN environment variable, if set.
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// Speak TLS to a node with `[grpc] tls`, trusting the CA certificate(s) in this PEM file.
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// A client certificate (PEM) for a node that wants one (`[tls] client_ca_file`); with --key.
    #[arg(long, global = true, value_name = "FILE", requires = "key")]
    pub cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, global = true, value_name = "FILE", requires = "cert")]
    pub key: Option<std::path::PathBuf>,
}

/// The client's TLS from --ca-file, --cert and --key; `None`: plaintext.
fn client_tls(args: &ClientArgs) -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
    let read = |path: &std::path::Path, flag: &str| {
        std::fs::read(path).with_context(|| format!("{flag}: reading {}", path.display()))
    };
    let Some(ca) = &args.ca_file else {
        if args.cert.is_some() {
            anyhow::bail!("--cert needs --ca-file: a client certificate is only sent over TLS");
        }
        return Ok(None);
    };
    let mut tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(read(ca, "--ca-file")?));
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        tls = tls.identity(tonic::transport::Identity::from_pem(read(cert, "--cert")?, read(key, "--key")?));
    }
    Ok(Some(tls))
}

/// Adds `authorization: Bearer <token>` to every call, when there is a token.
#[derive(Clone)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Client = AdminClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

/// The token from `--token-file`, else from STRATA_ADMIN_TOKEN, as a header value.
fn bearer(args: &ClientArgs) -> anyhow::Result<Bearer> {
    let token = match &args.token_file {
        Some(path) => Some(super::token::AdminToken::load(path).context("--token-file")?),
        None => match std::env::var(super::token::TOKEN_ENV) {
            Ok(text) => Some(super::token::AdminToken::new(text.trim()).context(super::token::TOKEN_ENV)?),
            Err(_) => None,
        },
    };
    let value = token
        .map(|token| token.header_value().parse().context("the admin token is not a valid header value"))
        .transpose()?;
    Ok(Bearer(value))
}

/// `strata stream ...`.
#[derive(Debug, clap::Subcommand)]
pub enum StreamCommand {
    /// List the node's streams: partitions, policy, offsets spanned (log end - log start), size.
    List,
    /// Show one stream and, per partition, its offsets (log start, high watermark, log end,
    /// cleaned up to), size and segment count.
    Describe {
        /// The stream's name.
        name: String,
    },
    /// Run compaction now on every partition of a compacted stream (each partition only if
    /// the cleaner finds it dirty enough).
    Compact {
        /// The stream's name.
        name: String,
    },
    /// Apply retention now. Retention runs over every partition of the node whose policy
    /// deletes, not only this stream's.
    EnforceRetention {
        /// The stream's name (it must exist).
        name: String,
    },
    /// Create a stream. It starts from the node's `[log]` settings; it is kept by the node
    /// (in `$streams`) and survives restarts.
    Create {
        /// The stream's name.
        name: String,
        /// Number of partitions (1 to 1024).
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Topic filters it captures, comma-separated (`'a/#,b/+'`); may be repeated.
        #[arg(long, value_delimiter = ',', value_name = "FILTERS")]
        topics: Vec<String>,
        /// A setting under its config-file name (`retention_ms=86400000`); may be repeated.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        settings: Vec<String>,
    },
    /// Change a stream: settings, topics (replacing them), more partitions. Retention,
    /// compaction and routing change at once; segment, index, flush and compression settings
    /// apply when the partitions are next opened (the command says which).
    Alter {
        /// The stream's name.
        name: String,
        /// A larger number of partitions (keys may then map to other partitions).
        #[arg(long)]
        partitions: Option<u32>,
        /// The new topic filters, comma-separated; `''` captures nothing.
        #[arg(long, value_delimiter = ',', value_name = "FILTERS")]
        topics: Option<Vec<String>>,
        /// A setting under its config-file name (`retention_ms=86400000`); may be repeated.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        settings: Vec<String>,
    },
    /// Delete a stream and its data. `default` and the internal `$` streams cannot be deleted.
    Delete {
        /// The stream's name.
        name: String,
    },
}

/// `strata group ...`: `$share` groups and persistent sessions, which both keep committed
/// offsets (KIND `share` or `session`; a session is named by its client id).
#[derive(Debug, clap::Subcommand)]
pub enum GroupCommand {
    /// List the `$share` groups and the persistent sessions, with members and lag.
    List,
    /// Show one group or session: members and, per partition, committed offset, high
    /// watermark and lag.
    Describe {
        /// The group's name or the session's client id.
        group: String,
        /// Which one, when a group and a session share the name.
        #[arg(long, value_enum)]
        kind: Option<Kind>,
    },
    /// Move the committed offsets of a group or session with no connected member.
    ResetOffsets {
        /// The group's name or the session's client id.
        group: String,
        /// Which one, when a group and a session share the name.
        #[arg(long, value_enum)]
        kind: Option<Kind>,
        /// Only this stream's partitions.
        #[arg(long)]
        stream: Option<String>,
        /// Only this partition (of --stream).
        #[arg(long, requires = "stream")]
        partition: Option<u32>,
        #[command(flatten)]
        target: TargetArgs,
    },
}

/// `strata cluster ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Show the cluster's nodes and, per partition, its leader, replicas, in-sync replicas,
    /// each replica's log end and the committed offset. A node without a `[cluster]` section
    /// refuses (exit status 2).
    Status,
}

/// A `$share` group or a persistent session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// A `$share/<group>/...` consumer group.
    Share,
    /// A persistent session.
    Session,
}

impl Kind {
    fn as_str(kind: Option<Kind>) -> String {
        match kind {
            None => String::new(),
            Some(Kind::Share) => "share".into(),
            Some(Kind::Session) => "session".into(),
        }
    }
}

/// Where `reset-offsets` moves the offsets: exactly one.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct TargetArgs {
    /// The first offset still stored.
    #[arg(long)]
    to_earliest: bool,
    /// The high watermark (skip everything stored).
    #[arg(long)]
    to_latest: bool,
    /// This offset (clamped to what is stored).
    #[arg(long, value_name = "N")]
    to_offset: Option<u64>,
    /// The first record at or after this time (RFC 3339, e.g. 2024-05-01T12:00:00Z).
    #[arg(long, value_name = "RFC3339")]
    to_datetime: Option<String>,
}

/// `KEY=VALUE` arguments as settings.
fn settings(args: &[String]) -> anyhow::Result<Vec<pb::Setting>> {
    args.iter()
        .map(|arg| match arg.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                Ok(pb::Setting { key: key.trim().to_owned(), value: value.trim().to_owned() })
            }
            _ => anyhow::bail!("--config {arg:?}: expected KEY=VALUE, e.g. retention_ms=86400000"),
        })
        .collect()
}

fn topics(filters: &[String]) -> Vec<String> {
    filters.iter().map(|f| f.trim().to_owned()).filter(|f| !f.is_empty()).collect()
}

/// Runs `strata stream ...`.
pub fn stream(args: &ClientArgs, command: &StreamCommand) -> anyhow::Result<ExitCode> {
    let parsed = match command {
        StreamCommand::Create { settings: given, .. } | StreamCommand::Alter { settings: given, .. } => {
            settings(given)?
        }
        _ => Vec::new(),
    };
    run(args, |mut client, output| async move {
        match command {
            StreamCommand::List => {
                let response = client.list_streams(pb::ListStreamsRequest {}).await?.into_inner();
                print_streams(&response.streams, output);
            }
            StreamCommand::Describe { name } => {
                let response =
                    client.describe_stream(pb::DescribeStreamRequest { name: name.clone() }).await?.into_inner();
                print_stream(&response, output);
            }
            StreamCommand::Compact { name } => {
                let response =
                    client.compact_stream(pb::CompactStreamRequest { name: name.clone() }).await?.into_inner();
                print_compaction(name, &response, output);
            }
            StreamCommand::EnforceRetention { name } => {
                let response =
                    client.enforce_retention(pb::EnforceRetentionRequest { name: name.clone() }).await?.into_inner();
                match output {
                    Output::Json => println!(
                        "{}",
                        json!({"segments_deleted": response.segments_deleted, "bytes_deleted": response.bytes_deleted})
                    ),
                    Output::Table => println!(
                        "retention deleted {} segments, {} bytes (all partitions of the node)",
                        response.segments_deleted, response.bytes_deleted
                    ),
                }
            }
            StreamCommand::Create { name, partitions, topics: filters, .. } => {
                let request = pb::CreateStreamRequest {
                    name: name.clone(),
                    partitions: *partitions,
                    topics: topics(filters),
                    settings: parsed,
                };
                let response = client.create_stream(request).await?.into_inner();
                print_stream(&response, output);
            }
            StreamCommand::Alter { name, partitions, topics: filters, .. } => {
                let request = pb::AlterStreamRequest {
                    name: name.clone(),
                    partitions: *partitions,
                    set_topics: filters.is_some(),
                    topics: filters.as_deref().map(topics).unwrap_or_default(),
                    settings: parsed,
                };
                let response = client.alter_stream(request).await?.into_inner();
                let stream = response.stream.unwrap_or_default();
                match output {
                    Output::Json => {
                        let mut value = stream_detail_json(&stream);
                        value["at_restart"] = json!(response.at_restart);
                        println!("{value}");
                    }
                    Output::Table => {
                        print_stream(&stream, output);
                        if !response.at_restart.is_empty() {
                            println!(
                                "note: {} apply to the open partitions at the next start (new partitions use them now)",
                                response.at_restart.join(", ")
                            );
                        }
                    }
                }
            }
            StreamCommand::Delete { name } => {
                let response = client.delete_stream(pb::DeleteStreamRequest { name: name.clone() }).await?.into_inner();
                match output {
                    Output::Json => {
                        println!("{}", json!({"deleted": name, "in_config_file": response.in_config_file}))
                    }
                    Output::Table => {
                        println!("stream {name} deleted");
                        if response.in_config_file {
                            println!(
                                "note: the config file defines {name}; it comes back, empty, at the next start unless removed there"
                            );
                        }
                    }
                }
            }
        }
        Ok(())
    })
}

/// Runs `strata group ...`.
pub fn group(args: &ClientArgs, command: &GroupCommand) -> anyhow::Result<ExitCode> {
    let target = match command {
        GroupCommand::ResetOffsets { target, .. } => Some(reset_target(target)?),
        _ => None,
    };
    run(args, |mut client, output| async move {
        match command {
            GroupCommand::List => {
                let response = client.list_groups(pb::ListGroupsRequest {}).await?.into_inner();
                match output {
                    Output::Json => {
                        let groups: Vec<Value> = response.groups.iter().map(group_json).collect();
                        println!("{}", json!({ "groups": groups }));
                    }
                    Output::Table => {
                        let rows = response
                            .groups
                            .iter()
                            .map(|g| {
                                vec![
                                    g.name.clone(),
                                    g.kind.clone(),
                                    if g.filter.is_empty() { "-".into() } else { g.filter.clone() },
                                    g.members.to_string(),
                                    g.lag.to_string(),
                                ]
                            })
                            .collect();
                        print_table(&["GROUP", "KIND", "FILTER", "MEMBERS", "LAG"], rows);
                    }
                }
            }
            GroupCommand::Describe { group, kind } => {
                let request = pb::DescribeGroupRequest { name: group.clone(), kind: Kind::as_str(*kind) };
                let response = client.describe_group(request).await?.into_inner();
                print_group(&response, output);
            }
            GroupCommand::ResetOffsets { group, kind, stream, partition, .. } => {
                let request = pb::ResetOffsetsRequest {
                    group: group.clone(),
                    kind: Kind::as_str(*kind),
                    stream: stream.clone().unwrap_or_default(),
                    partition: *partition,
                    target,
                };
                let response = client.reset_offsets(request).await?.into_inner();
                print_group(&response, output);
            }
        }
        Ok(())
    })
}

/// Runs `strata cluster ...`.
pub fn cluster(args: &ClientArgs, command: &ClusterCommand) -> anyhow::Result<ExitCode> {
    run(args, |mut client, output| async move {
        match command {
            ClusterCommand::Status => {
                let response = client.cluster_status(pb::ClusterStatusRequest {}).await?.into_inner();
                let status = super::cluster_status::from_proto(response);
                match output {
                    Output::Json => println!("{}", super::cluster_status::to_json(&status)),
                    Output::Table => print!("{}", super::cluster_status::to_table(&status)),
                }
            }
        }
        Ok(())
    })
}

fn reset_target(args: &TargetArgs) -> anyhow::Result<pb::reset_offsets_request::Target> {
    use pb::reset_offsets_request::Target;
    Ok(match (args.to_earliest, args.to_latest, args.to_offset, &args.to_datetime) {
        (true, ..) => Target::Earliest(true),
        (_, true, ..) => Target::Latest(true),
        (_, _, Some(offset), _) => Target::Offset(offset),
        (_, _, _, Some(text)) => {
            Target::TimestampMs(super::display::parse_rfc3339(text).ok_or_else(|| {
                anyhow::anyhow!("--to-datetime {text:?}: expected RFC 3339, e.g. 2024-05-01T12:00:00Z")
            })?)
        }
        _ => anyhow::bail!("give one of --to-earliest, --to-latest, --to-offset, --to-datetime"),
    })
}

fn print_group(response: &pb::DescribeGroupResponse, output: Output) {
    let summary = response.group.clone().unwrap_or_default();
    match output {
        Output::Json => {
            let mut value = group_json(&summary);
            value["partitions"] = response
                .partitions
                .iter()
                .map(|p| {
                    json!({"stream": p.stream, "partition": p.partition, "committed": p.committed,
                           "log_end": p.log_end, "high_watermark": p.high_watermark, "lag": p.lag})
                })
                .collect();
            println!("{value}");
        }
        Output::Table => {
            let filter = if summary.filter.is_empty() { "-" } else { summary.filter.as_str() };
            println!(
                "{} {}  filter {}  members {}  lag {}",
                if summary.kind == "session" { "session" } else { "group" },
                summary.name,
                filter,
                summary.members,
                summary.lag
            );
            let rows = response
                .partitions
                .iter()
                .map(|p| {
                    vec![
                        p.stream.clone(),
                        p.partition.to_string(),
                        p.committed.to_string(),
                        p.high_watermark.to_string(),
                        p.lag.to_string(),
                    ]
                })
                .collect();
            print_table(&["STREAM", "PARTITION", "COMMITTED", "HIGH WATERMARK", "LAG"], rows);
        }
    }
}

/// Connects to `args.server` and runs `call`; a gRPC error becomes an `error:` line.
fn run<'a, F, Fut>(args: &ClientArgs, call: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(Client, Output) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + 'a,
{
    let bearer = bearer(args)?;
    let tls = client_tls(args)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async {
        let server = &args.server;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{server}"))
            .with_context(|| format!("--server {server:?}: expected HOST:PORT"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT);
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls).context("the TLS configuration of --ca-file, --cert and --key")?;
        }
        let channel = endpoint.connect().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the admin API at {server}: {} (is `strata serve --grpc {server}` running?)",
                source_chain(&e)
            )
        })?;
        call(AdminClient::with_interceptor(channel, bearer), args.output).await.map_err(|status| {
            match status.code() {
                tonic::Code::Unauthenticated => anyhow::anyhow!(
                    "the admin API at {server} refused the call: {} (give the token with --token-file FILE or {})",
                    status.message(),
                    super::token::TOKEN_ENV
                ),
                tonic::Code::NotFound | tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument => {
                    anyhow::anyhow!("{}", status.message())
                }
                tonic::Code::Unavailable => {
                    anyhow::anyhow!("the admin API at {server} is unavailable: {}", status.message())
                }
                code => anyhow::anyhow!("the admin API at {server} answered {code:?}: {}", status.message()),
            }
        })?;
        Ok(ExitCode::SUCCESS)
    })
}

/// An error and its sources, as one line (tonic's transport error hides the cause otherwise).
fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn stream_json(stream: &pb::StreamSummary) -> Value {
    let settings: serde_json::Map<String, Value> =
        stream.settings.iter().map(|s| (s.key.clone(), Value::String(s.value.clone()))).collect();
    json!({"name": stream.name, "partitions": stream.partitions, "topics": stream.topics,
           "cleanup_policy": stream.cleanup_policy, "offset_span": stream.offset_span, "size_bytes": stream.size_bytes,
           "settings": settings})
}

fn group_json(group: &pb::GroupSummary) -> Value {
    json!({"name": group.name, "kind": group.kind, "filter": group.filter, "members": group.members, "lag": group.lag})
}

fn print_streams(streams: &[pb::StreamSummary], output: Output) {
    match output {
        Output::Json => {
            let streams: Vec<Value> = streams.iter().map(stream_json).collect();
            println!("{}", json!({ "streams": streams }));
        }
        Output::Table => {
            let rows = streams
                .iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        s.partitions.to_string(),
                        s.cleanup_policy.clone(),
                        s.offset_span.to_string(),
                        s.size_bytes.to_string(),
                        s.topics.join(","),
                    ]
                })
                .collect();
            print_table(&["STREAM", "PARTITIONS", "POLICY", "OFFSETS", "BYTES", "TOPICS"], rows);
        }
    }
}

/// A stream with its partitions, as `describe --output json` prints it.
fn stream_detail_json(response: &pb::DescribeStreamResponse) -> Value {
    let summary = response.stream.clone().unwrap_or_default();
    let mut value = stream_json(&summary);
    value["partitions"] = response
        .partitions
        .iter()
        .map(|p| {
            json!({"partition": p.partition, "log_start": p.log_start, "log_end": p.log_end,
                   "high_watermark": p.high_watermark, "cleaned_up_to": p.cleaned_up_to,
                   "size_bytes": p.size_bytes, "segment_count": p.segment_count})
        })
        .collect();
    value
}

fn print_stream(response: &pb::DescribeStreamResponse, output: Output) {
    let summary = response.stream.clone().unwrap_or_default();
    match output {
        Output::Json => println!("{}", stream_detail_json(response)),
        Output::Table => {
            let topics = if summary.topics.is_empty() { "-".to_owned() } else { summary.topics.join(",") };
            println!("stream {}  policy {}  topics {}", summary.name, summary.cleanup_policy, topics);
            let settings: Vec<String> = summary.settings.iter().map(|s| format!("{}={}", s.key, s.value)).collect();
            println!("settings {}", settings.join(" "));
            let rows = response
                .partitions
                .iter()
                .map(|p| {
                    vec![
                        p.partition.to_string(),
                        p.log_start.to_string(),
                        p.cleaned_up_to.to_string(),
                        p.high_watermark.to_string(),
                        p.log_end.to_string(),
                        p.segment_count.to_string(),
                        p.size_bytes.to_string(),
                    ]
                })
                .collect();
            print_table(
                &["PARTITION", "LOG START", "CLEANED TO", "HIGH WATERMARK", "LOG END", "SEGMENTS", "BYTES"],
                rows,
            );
        }
    }
}

fn print_compaction(name: &str, response: &pb::CompactStreamResponse, output: Output) {
    match output {
        Output::Json => {
            let partitions: Vec<Value> = response
                .partitions
                .iter()
                .map(|p| {
                    json!({"partition": p.partition, "passes": p.passes, "bytes_read": p.bytes_read,
                           "bytes_freed": p.bytes_freed, "cleaned_up_to": p.cleaned_up_to})
                })
                .collect();
            println!("{}", json!({"stream": name, "partitions": partitions}));
        }
        Output::Table => {
            let rows = response
                .partitions
                .iter()
                .map(|p| {
                    vec![
                        p.partition.to_string(),
                        p.passes.to_string(),
                        p.bytes_read.to_string(),
                        p.bytes_freed.to_string(),
                        p.cleaned_up_to.to_string(),
                    ]
                })
                .collect();
            print_table(&["PARTITION", "PASSES", "BYTES READ", "BYTES FREED", "CLEANED TO"], rows);
        }
    }
}

/// Prints `rows` under `headers` in left-aligned columns two spaces apart.
fn print_table(headers: &[&str], rows: Vec<Vec<String>>) {
    print!("{}", table(headers, rows));
}

/// `rows` under `headers` in left-aligned columns two spaces apart, each line ended by `\n`.
pub(super) fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut text = String::new();
    let mut line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        text.push_str(padded.join("  ").trim_end());
        text.push('\n');
    };
    line(headers.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    text
}
