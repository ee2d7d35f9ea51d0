//! `strata stream ...` and `strata group ...`: clients of the gRPC admin API of a running node
//! (`strata serve --grpc ADDR`). Human tables by default, `--output json` for scripts. Any
//! failure (node unreachable, unknown stream or group) is one `error:` line and exit status 2.

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
    /// The node's gRPC admin API (`strata serve --grpc`), as HOST:PORT.
    #[arg(long, global = true, value_name = "HOST:PORT", default_value_t = format!("127.0.0.1:{}", super::grpc::DEFAULT_GRPC_PORT))]
    pub server: String,
    /// `table` (default) or `json`.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
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
}

/// `strata group ...`.
#[derive(Debug, clap::Subcommand)]
pub enum GroupCommand {
    /// List the consumer groups (`$share/<group>/...`) created since the node started.
    List,
    /// Show one group: members and, per partition, committed offset, log end and lag.
    Describe {
        /// The group's name.
        group: String,
    },
}

/// Runs `strata stream ...`.
pub fn stream(args: &ClientArgs, command: &StreamCommand) -> anyhow::Result<ExitCode> {
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
        }
        Ok(())
    })
}

/// Runs `strata group ...`.
pub fn group(args: &ClientArgs, command: &GroupCommand) -> anyhow::Result<ExitCode> {
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
                            .map(|g| vec![g.name.clone(), g.filter.clone(), g.members.to_string(), g.lag.to_string()])
                            .collect();
                        print_table(&["GROUP", "FILTER", "MEMBERS", "LAG"], rows);
                    }
                }
            }
            GroupCommand::Describe { group } => {
                let response =
                    client.describe_group(pb::DescribeGroupRequest { name: group.clone() }).await?.into_inner();
                let summary = response.group.unwrap_or_default();
                match output {
                    Output::Json => {
                        let mut value = group_json(&summary);
                        value["partitions"] = response
                            .partitions
                            .iter()
                            .map(|p| {
                                json!({"stream": p.stream, "partition": p.partition, "committed": p.committed,
                                       "log_end": p.log_end, "lag": p.lag})
                            })
                            .collect();
                        println!("{value}");
                    }
                    Output::Table => {
                        println!(
                            "group {}  filter {}  members {}  lag {}",
                            summary.name, summary.filter, summary.members, summary.lag
                        );
                        let rows = response
                            .partitions
                            .iter()
                            .map(|p| {
                                vec![
                                    p.stream.clone(),
                                    p.partition.to_string(),
                                    p.committed.to_string(),
                                    p.log_end.to_string(),
                                    p.lag.to_string(),
                                ]
                            })
                            .collect();
                        print_table(&["STREAM", "PARTITION", "COMMITTED", "LOG END", "LAG"], rows);
                    }
                }
            }
        }
        Ok(())
    })
}

/// Connects to `args.server` and runs `call`; a gRPC error becomes an `error:` line.
fn run<'a, F, Fut>(args: &ClientArgs, call: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(AdminClient<Channel>, Output) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + 'a,
{
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async {
        let server = &args.server;
        let endpoint = Endpoint::from_shared(format!("http://{server}"))
            .with_context(|| format!("--server {server:?}: expected HOST:PORT"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT);
        let channel = endpoint.connect().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the admin API at {server}: {} (is `strata serve --grpc {server}` running?)",
                source_chain(&e)
            )
        })?;
        call(AdminClient::new(channel), args.output).await.map_err(|status| match status.code() {
            tonic::Code::NotFound | tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument => {
                anyhow::anyhow!("{}", status.message())
            }
            tonic::Code::Unavailable => {
                anyhow::anyhow!("the admin API at {server} is unavailable: {}", status.message())
            }
            code => anyhow::anyhow!("the admin API at {server} answered {code:?}: {}", status.message()),
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
    json!({"name": stream.name, "partitions": stream.partitions, "topics": stream.topics,
           "cleanup_policy": stream.cleanup_policy, "offset_span": stream.offset_span, "size_bytes": stream.size_bytes})
}

fn group_json(group: &pb::GroupSummary) -> Value {
    json!({"name": group.name, "filter": group.filter, "members": group.members, "lag": group.lag})
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

fn print_stream(response: &pb::DescribeStreamResponse, output: Output) {
    let summary = response.stream.clone().unwrap_or_default();
    match output {
        Output::Json => {
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
            println!("{value}");
        }
        Output::Table => {
            let topics = if summary.topics.is_empty() { "-".to_owned() } else { summary.topics.join(",") };
            println!("stream {}  policy {}  topics {}", summary.name, summary.cleanup_policy, topics);
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
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}
