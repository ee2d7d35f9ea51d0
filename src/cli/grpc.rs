//! The gRPC admin API (`--grpc ADDR`, `[grpc] listen`): `strata.admin.v1.Admin`
//! (`proto/strata/admin/v1/admin.proto`), served by tonic on the broker's runtime over the
//! operations of [`strata_frontend::admin::Admin`].

use std::net::SocketAddr;

use anyhow::Context;
use strata_frontend::admin::{Admin, AdminError, GroupInfo, StreamInfo};
use strata_proto::admin::v1 as pb;
use tonic::{Request, Response, Status};

/// The port `strata stream ...` and `strata group ...` call when `--server` is not given.
pub const DEFAULT_GRPC_PORT: u16 = 7070;

struct AdminService {
    admin: Admin,
}

fn status(error: AdminError) -> Status {
    match error {
        AdminError::UnknownStream(_) | AdminError::UnknownGroup(_) => Status::not_found(error.to_string()),
        AdminError::NotCompacted(_) => Status::failed_precondition(error.to_string()),
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
    }
}

fn group_summary(group: &GroupInfo) -> pb::GroupSummary {
    pb::GroupSummary {
        name: group.name.clone(),
        filter: group.filter.clone(),
        members: group.members,
        lag: group.lag(),
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
        Ok(Response::new(pb::DescribeStreamResponse {
            stream: Some(summary(&stream)),
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
        }))
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
        let groups = self.admin.list_groups();
        Ok(Response::new(pb::ListGroupsResponse { groups: groups.iter().map(group_summary).collect() }))
    }

    async fn describe_group(
        &self,
        request: Request<pb::DescribeGroupRequest>,
    ) -> Result<Response<pb::DescribeGroupResponse>, Status> {
        let group = self.admin.describe_group(&request.into_inner().name).map_err(status)?;
        Ok(Response::new(pb::DescribeGroupResponse {
            group: Some(group_summary(&group)),
            partitions: group
                .partitions
                .iter()
                .map(|p| pb::GroupPartition {
                    stream: p.stream.clone(),
                    partition: p.partition,
                    committed: p.committed,
                    log_end: p.log_end,
                    lag: p.lag,
                })
                .collect(),
        }))
    }
}

/// Binds `addr` (before returning, so the printed address is live) and serves the admin API
/// in a task of the current runtime until `shutdown` completes.
pub async fn start(
    addr: SocketAddr,
    admin: Admin,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("gRPC: listening on {addr}"))?;
    let local = listener.local_addr().context("reading the gRPC listener address")?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let service = pb::admin_server::AdminServer::new(AdminService { admin });
    tokio::spawn(async move {
        if let Err(error) = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
        {
            tracing::error!(%error, "the gRPC admin API stopped");
        }
    });
    Ok(local)
}
