//! The gRPC admin API (`--grpc ADDR`, `[grpc] listen`; on 127.0.0.1:7070 by default): `strata.admin.v1.Admin`
//! (`proto/strata/admin/v1/admin.proto`), served by tonic on the broker's runtime over the
//! operations of [`strata_frontend::admin::Admin`].

use std::net::SocketAddr;

use anyhow::Context;
use strata_frontend::admin::{
    Admin, AdminError, GroupInfo, GroupKind, PartitionSelector, ResetTarget, StreamChange, StreamInfo,
};
use strata_proto::admin::v1 as pb;
use tonic::{Request, Response, Status};

use super::token::AdminToken;

struct AdminService {
    admin: Admin,
}

fn status(error: AdminError) -> Status {
    match error {
        AdminError::UnknownStream(_) | AdminError::UnknownGroup(_) => Status::not_found(error.to_string()),
        AdminError::NotCompacted(_) | AdminError::Refused(_) => Status::failed_precondition(error.to_string()),
        AdminError::Invalid(_) => Status::invalid_argument(error.to_string()),
        AdminError::StreamExists(_) => Status::already_exists(error.to_string()),
        AdminError::ShuttingDown => Status::unavailable(error.to_string()),
        AdminError::Failed(_) => Status::internal(error.to_string()),
    }
}

fn summary(stream: &StreamInfo) -> pb::StreamSummary {
    pb::StreamSummary {
        name: stream.name.clone(),
        partitions: stream.partitions.len() as u32,
        topics: stream.topics.clone(),
        cleanup_policy: stream.cleanup_policy.to_owned(),
        offset_span: stream.partitions.iter().map(|p| p.log_end.saturating_sub(p.log_start)).sum(),
        size_bytes: stream.partitions.iter().map(|p| p.size_bytes).sum(),
        settings: settings(&stream.settings),
    }
}

fn settings(pairs: &[(String, String)]) -> Vec<pb::Setting> {
    pairs.iter().map(|(key, value)| pb::Setting { key: key.clone(), value: value.clone() }).collect()
}

fn pairs(settings: Vec<pb::Setting>) -> Vec<(String, String)> {
    settings.into_iter().map(|s| (s.key, s.value)).collect()
}

fn describe_response(stream: &StreamInfo) -> pb::DescribeStreamResponse {
    pb::DescribeStreamResponse {
        stream: Some(summary(stream)),
        partitions: stream
            .partitions
            .iter()
            .map(|p| pb::PartitionInfo {
                partition: p.partition,
                log_start: p.log_start,
                log_end: p.log_end,
                high_watermark: p.high_watermark,
                cleaned_up_to: p.cleaned_up_to,
                size_bytes: p.size_bytes,
                segment_count: p.segment_count,
            })
            .collect(),
    }
}

fn group_response(group: &GroupInfo) -> pb::DescribeGroupResponse {
    pb::DescribeGroupResponse {
        group: Some(group_summary(group)),
        partitions: group
            .partitions
            .iter()
            .map(|p| pb::GroupPartition {
                stream: p.stream.clone(),
                partition: p.partition,
                committed: p.committed,
                log_end: p.log_end,
                lag: p.lag,
                high_watermark: p.high_watermark,
            })
            .collect(),
    }
}

fn kind(text: &str) -> Result<Option<GroupKind>, Status> {
    match text {
        "" => Ok(None),
        "share" => Ok(Some(GroupKind::Share)),
        "session" => Ok(Some(GroupKind::Session)),
        other => Err(Status::invalid_argument(format!("kind = {other:?}: must be \"share\" or \"session\""))),
    }
}

fn group_summary(group: &GroupInfo) -> pb::GroupSummary {
    pb::GroupSummary {
        name: group.name.clone(),
        filter: group.filter.clone(),
        members: group.members,
        lag: group.lag(),
        kind: group.kind.as_str().to_owned(),
    }
}

/// Runs `f` on a blocking thread (reading sizes lists files; compaction and retention do I/O).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, AdminError> + Send + 'static) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("admin task failed: {e}")))?
        .map_err(status)
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn list_streams(
        &self,
        _request: Request<pb::ListStreamsRequest>,
    ) -> Result<Response<pb::ListStreamsResponse>, Status> {
        let admin = self.admin.clone();
        let streams = blocking(move || Ok(admin.list_streams())).await?;
        Ok(Response::new(pb::ListStreamsResponse { streams: streams.iter().map(summary).collect() }))
    }

    async fn describe_stream(
        &self,
        request: Request<pb::DescribeStreamRequest>,
    ) -> Result<Response<pb::DescribeStreamResponse>, Status> {
        let admin = self.admin.clone();
        let name = request.into_inner().name;
        let stream = blocking(move || admin.describe_stream(&name)).await?;
        Ok(Response::new(describe_response(&stream)))
    }

    async fn create_stream(
        &self,
        request: Request<pb::CreateStreamRequest>,
    ) -> Result<Response<pb::DescribeStreamResponse>, Status> {
        let request = request.into_inner();
        let stream = self
            .admin
            .create_stream(&request.name, request.partitions, request.topics, &pairs(request.settings))
            .await
            .map_err(status)?;
        Ok(Response::new(describe_response(&stream)))
    }

    async fn alter_stream(
        &self,
        request: Request<pb::AlterStreamRequest>,
    ) -> Result<Response<pb::AlterStreamResponse>, Status> {
        let request = request.into_inner();
        let change = StreamChange {
            partitions: request.partitions,
            topics: request.set_topics.then_some(request.topics),
            settings: pairs(request.settings),
        };
        let outcome = self.admin.alter_stream(&request.name, change).await.map_err(status)?;
        Ok(Response::new(pb::AlterStreamResponse {
            stream: Some(describe_response(&outcome.stream)),
            at_restart: outcome.at_restart,
        }))
    }

    async fn delete_stream(
        &self,
        request: Request<pb::DeleteStreamRequest>,
    ) -> Result<Response<pb::DeleteStreamResponse>, Status> {
        let in_config_file = self.admin.delete_stream(&request.into_inner().name).await.map_err(status)?;
        Ok(Response::new(pb::DeleteStreamResponse { in_config_file }))
    }

    async fn reset_offsets(
        &self,
        request: Request<pb::ResetOffsetsRequest>,
    ) -> Result<Response<pb::DescribeGroupResponse>, Status> {
        let request = request.into_inner();
        let target = match request.target {
            Some(pb::reset_offsets_request::Target::Earliest(_)) => ResetTarget::Earliest,
            Some(pb::reset_offsets_request::Target::Latest(_)) => ResetTarget::Latest,
            Some(pb::reset_offsets_request::Target::Offset(offset)) => ResetTarget::Offset(offset),
            Some(pb::reset_offsets_request::Target::TimestampMs(ms)) => ResetTarget::Timestamp(ms),
            None => return Err(Status::invalid_argument("target: one of earliest, latest, offset, timestamp_ms")),
        };
        let select = PartitionSelector {
            stream: (!request.stream.is_empty()).then_some(request.stream),
            partition: request.partition,
        };
        let group =
            self.admin.reset_offsets(&request.group, kind(&request.kind)?, &select, target).await.map_err(status)?;
        Ok(Response::new(group_response(&group)))
    }

    async fn compact_stream(
        &self,
        request: Request<pb::CompactStreamRequest>,
    ) -> Result<Response<pb::CompactStreamResponse>, Status> {
        let admin = self.admin.clone();
        let name = request.into_inner().name;
        let outcomes = blocking(move || admin.compact_stream(&name)).await?;
        Ok(Response::new(pb::CompactStreamResponse {
            partitions: outcomes
                .iter()
                .map(|o| pb::PartitionCompaction {
                    partition: o.partition,
                    passes: o.passes,
                    bytes_read: o.bytes_read,
                    bytes_freed: o.bytes_freed,
                    cleaned_up_to: o.cleaned_up_to,
                })
                .collect(),
        }))
    }

    async fn enforce_retention(
        &self,
        request: Request<pb::EnforceRetentionRequest>,
    ) -> Result<Response<pb::EnforceRetentionResponse>, Status> {
        let admin = self.admin.clone();
        let name = request.into_inner().name;
        let (segments_deleted, bytes_deleted) = blocking(move || admin.enforce_retention(&name)).await?;
        Ok(Response::new(pb::EnforceRetentionResponse { segments_deleted, bytes_deleted }))
    }

    async fn list_groups(
        &self,
        _request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let admin = self.admin.clone();
        let groups = blocking(move || Ok(admin.list_groups())).await?;
        Ok(Response::new(pb::ListGroupsResponse { groups: groups.iter().map(group_summary).collect() }))
    }

    async fn describe_group(
        &self,
        request: Request<pb::DescribeGroupRequest>,
    ) -> Result<Response<pb::DescribeGroupResponse>, Status> {
        let request = request.into_inner();
        let kind = kind(&request.kind)?;
        let group = self.admin.describe_group(&request.name, kind).map_err(status)?;
        Ok(Response::new(group_response(&group)))
    }

    async fn cluster_status(
        &self,
        _request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        let cluster = self.admin.cluster_status().await.map_err(status)?;
        Ok(Response::new(super::cluster_status::to_proto(&cluster)))
    }
}

/// How long an admin client has to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Binds `addr` (before returning, so the printed address is live) and serves the admin API
/// in a task of the current runtime until `shutdown` completes. With `tls` (`[grpc] tls`), each
/// connection is accepted with the certificate in force at that moment, so a SIGHUP reload of
/// `[tls]` reaches the admin API as it does the MQTT listeners.
pub async fn start(
    addr: SocketAddr,
    admin: Admin,
    token: Option<AdminToken>,
    tls: Option<strata_frontend::tls::TlsReloader>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("gRPC admin API: listening on {addr} (grpc.listen or --grpc; \"off\" turns it off)")
    })?;
    let local = listener.local_addr().context("reading the gRPC listener address")?;
    // Every call is checked before it reaches the service; without a token, all pass.
    let check = move |request: Request<()>| -> Result<Request<()>, Status> {
        match &token {
            Some(token) if !token.admits(request.metadata().get("authorization").map(|v| v.as_bytes())) => {
                tracing::warn!(peer = ?request.remote_addr(), "admin call refused: missing or wrong token");
                Err(Status::unauthenticated("missing or wrong admin token (grpc.token_file)"))
            }
            _ => Ok(request),
        }
    };
    let service = pb::admin_server::AdminServer::with_interceptor(AdminService { admin }, check);
    let server = tonic::transport::Server::builder().add_service(service);
    tokio::spawn(async move {
        let served = match tls {
            None => {
                server
                    .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), shutdown)
                    .await
            }
            Some(tls) => server.serve_with_incoming_shutdown(tls_incoming(listener, tls), shutdown).await,
        };
        if let Err(error) = served {
            tracing::error!(%error, "the gRPC admin API stopped");
        }
    });
    Ok(local)
}

/// The admin API's connections over TLS. Handshakes run in their own tasks, bounded in time, so
/// a slow or silent client holds up nobody; a failed one is logged and dropped. The accept
/// loop ends when the server stops taking connections (the receiver is gone).
fn tls_incoming(
    listener: tokio::net::TcpListener,
    tls: strata_frontend::tls::TlsReloader,
) -> impl futures_util::Stream<Item = std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>> {
    let (accepted, incoming) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of descriptors, say: the next accept may work; do not spin meanwhile.
                    tracing::warn!(%error, "gRPC admin API: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            if accepted.is_closed() {
                return;
            }
            let _ = stream.set_nodelay(true);
            let acceptor = tls.admin_acceptor();
            let accepted = accepted.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let _ = accepted.send(Ok(stream)).await;
                    }
                    Ok(Err(error)) => tracing::info!(%peer, %error, "gRPC admin API: TLS handshake failed"),
                    Err(_) => tracing::info!(%peer, "gRPC admin API: TLS handshake timed out"),
                }
            });
        }
    });
    futures_util::stream::unfold(incoming, |mut incoming| async move {
        incoming.recv().await.map(|stream| (stream, incoming))
    })
}
