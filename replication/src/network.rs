//! The network between nodes: tonic gRPC (`strata.cluster.v1.Raft`). [`Cluster`] is a node's
//! side of it: one lazily connected, reconnecting channel per peer, shared by every group's
//! replication, and the server that routes each incoming RPC to its group's Raft.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use openraft::{
    BasicNode, RaftNetwork, RaftNetworkFactory,
    error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable},
    network::{Backoff, RPCOption},
    raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
        VoteResponse,
    },
};
use strata_proto::cluster::v1::{self as pb, raft_client::RaftClient, raft_server::RaftServer};
use tonic::{Request, Response, Status, transport::Channel};

use crate::{
    ClusterTls, GroupId, NodeId, ReplicationError, TypeConfig,
    codec::{
        CodecError, entry_from_pb, entry_to_pb, log_id_from_pb, log_id_to_pb, membership_from_pb, membership_to_pb,
        vote_from_pb, vote_to_pb,
    },
    types::{Raft, StoredMembership},
};

/// A node's endpoint in the cluster: the peers it dials and the groups it serves. Clones
/// share it.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<ClusterInner>,
}

struct ClusterInner {
    node_id: NodeId,
    groups: RwLock<HashMap<GroupId, Raft>>,
    peers: Mutex<HashMap<NodeId, (String, Channel)>>,
    /// Forwarding and status: the peers' addresses and each group's figures.
    forward: crate::forward::ForwardState,
    /// Set: the transport is mutual TLS only ([`Cluster::new_with_tls`]).
    tls: Option<ClusterTls>,
}

impl Cluster {
    /// The endpoint of node `node_id`, in plaintext. Serve it with [`Cluster::serve`].
    pub fn new(node_id: NodeId) -> Cluster {
        Cluster::with_transport(node_id, None)
    }

    /// The endpoint of node `node_id` over mutual TLS: [`Cluster::serve`] accepts only TLS
    /// connections with a client certificate from `tls`'s CA, and peers are dialled over TLS
    /// with this node's certificate. Plaintext is refused both ways. A
    /// [`ClusterTls::reload`] applies to the connections made after it.
    pub fn new_with_tls(node_id: NodeId, tls: ClusterTls) -> Cluster {
        Cluster::with_transport(node_id, Some(tls))
    }

    fn with_transport(node_id: NodeId, tls: Option<ClusterTls>) -> Cluster {
        Cluster {
            inner: Arc::new(ClusterInner {
                node_id,
                groups: RwLock::new(HashMap::new()),
                peers: Mutex::new(HashMap::new()),
                forward: crate::forward::ForwardState::default(),
                tls,
            }),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// Serves the Raft RPCs of this node's groups on `listener` until `shutdown` resolves;
    /// then peers are told to go away (HTTP/2 GOAWAY) and in-flight calls finish. With TLS,
    /// a connection reaches the server only after a handshake with a valid client certificate.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ReplicationError> {
        let tls = self.inner.tls.clone();
        let server = tonic::transport::Server::builder()
            .add_service(RaftServer::new(ClusterService { cluster: self.clone() }).max_decoding_message_size(64 << 20))
            .add_service(crate::forward::server(self));
        let served = match tls {
            None => {
                let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                server.serve_with_incoming_shutdown(incoming, shutdown).await
            }
            Some(tls) => server.serve_with_incoming_shutdown(crate::tls::incoming(listener, tls), shutdown).await,
        };
        served.map_err(|e| ReplicationError::Transport(e.to_string()))
    }

    pub(crate) fn register(&self, group: GroupId, raft: Raft) -> Result<(), ReplicationError> {
        let mut groups = self.inner.groups.write().unwrap_or_else(|p| p.into_inner());
        if groups.contains_key(&group) {
            return Err(ReplicationError::AlreadyOpen(group));
        }
        self.inner.forward.opened(&group, &raft);
        groups.insert(group, raft);
        Ok(())
    }

    pub(crate) fn deregister(&self, group: &GroupId) {
        self.inner.groups.write().unwrap_or_else(|p| p.into_inner()).remove(group);
        self.inner.forward.closed(group);
    }

    /// The Raft of `group` if it is open on this node.
    pub(crate) fn raft_of(&self, group: &GroupId) -> Option<Raft> {
        self.inner.groups.read().unwrap_or_else(|p| p.into_inner()).get(group).cloned()
    }

    /// The groups open on this node.
    pub(crate) fn open_groups(&self) -> Vec<(GroupId, Raft)> {
        let groups = self.inner.groups.read().unwrap_or_else(|p| p.into_inner());
        groups.iter().map(|(group, raft)| (group.clone(), raft.clone())).collect()
    }

    pub(crate) fn forward_state(&self) -> &crate::forward::ForwardState {
        &self.inner.forward
    }

    /// The shared channel to peer `target` at `addr` (the one Raft uses too).
    pub(crate) fn peer_channel(&self, target: NodeId, addr: &str) -> Result<Channel, tonic::transport::Error> {
        self.channel(target, addr)
    }

    fn group(&self, group: Option<pb::GroupId>) -> Result<Raft, Status> {
        let group = group.ok_or_else(|| Status::invalid_argument("no group"))?;
        let group = GroupId::new(group.stream, group.partition);
        let groups = self.inner.groups.read().unwrap_or_else(|p| p.into_inner());
        groups.get(&group).cloned().ok_or_else(|| Status::not_found(format!("group {group} is not open on this node")))
    }

    /// The channel to `target` at `addr`: one per peer, created on first use and connected
    /// lazily; tonic reconnects it after a failure. A new address replaces it.
    fn channel(&self, target: NodeId, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut peers = self.inner.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((known, channel)) = peers.get(&target)
            && known == addr
        {
            return Ok(channel.clone());
        }
        // With TLS the URI stays `http`: our dialler does the TLS, and tonic would refuse an
        // `https` URI without its own TLS configuration, which cannot be reloaded.
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        let channel = match &self.inner.tls {
            None => endpoint.connect_timeout(Duration::from_secs(1)).connect_lazy(),
            // The timeout covers the handshake too: two more round trips and the signatures.
            Some(tls) => endpoint.connect_timeout(Duration::from_secs(3)).connect_with_connector_lazy(tls.dialer()),
        };
        peers.insert(target, (addr.to_string(), channel.clone()));
        Ok(channel)
    }

    pub(crate) fn network_for(&self, group: &GroupId) -> GroupNetwork {
        GroupNetwork {
            cluster: self.clone(),
            group: pb::GroupId { stream: group.stream.clone(), partition: group.partition },
            stats: self.inner.forward.stats_for(group),
        }
    }
}

/// openraft's network factory for one group: clients to peers that tag every RPC with the
/// group and share the node's channel to that peer.
pub(crate) struct GroupNetwork {
    cluster: Cluster,
    group: pb::GroupId,
    stats: Arc<crate::status::GroupStats>,
}

impl RaftNetworkFactory<TypeConfig> for GroupNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        let client = self.cluster.channel(target, &node.addr).map(|channel| {
            RaftClient::new(channel).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20)
        });
        PeerClient { client, group: self.group.clone(), target, stats: Arc::clone(&self.stats) }
    }
}

/// One group's client to one peer.
pub(crate) struct PeerClient {
    client: Result<RaftClient<Channel>, tonic::transport::Error>,
    group: pb::GroupId,
    target: NodeId,
    /// Told of every answer, for the in-sync set.
    stats: Arc<crate::status::GroupStats>,
}

/// Every failure to reach the peer's group (connection refused, group not open there, its
/// Raft stopped) is `Unreachable`: openraft backs off before trying it again.
fn unreachable<E: std::error::Error>(status: &Status) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(status))
}

fn malformed<E: std::error::Error>(e: CodecError) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Network(NetworkError::new(&e))
}

fn request<T>(message: T, option: &RPCOption) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(option.hard_ttl());
    request
}

impl PeerClient {
    fn client(&self) -> Result<RaftClient<Channel>, Unreachable> {
        match &self.client {
            Ok(client) => Ok(client.clone()),
            Err(e) => Err(Unreachable::new(e)),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let message = pb::AppendEntriesRequest {
            group: Some(self.group.clone()),
            vote: Some(vote_to_pb(&rpc.vote)),
            prev_log_id: rpc.prev_log_id.as_ref().map(log_id_to_pb),
            entries: rpc.entries.iter().map(entry_to_pb).collect(),
            leader_commit: rpc.leader_commit.as_ref().map(log_id_to_pb),
        };
        let response = self
            .client()
            .map_err(RPCError::Unreachable)?
            .append_entries(request(message, &option))
            .await
            .map_err(|s| unreachable(&s))?
            .into_inner();
        self.stats.note_ack(self.target);
        use pb::append_entries_response::Result as R;
        match response.result {
            Some(R::Success(_)) => Ok(AppendEntriesResponse::Success),
            Some(R::PartialSuccess(p)) => Ok(AppendEntriesResponse::PartialSuccess(p.matching.map(log_id_from_pb))),
            Some(R::Conflict(_)) => Ok(AppendEntriesResponse::Conflict),
            Some(R::HigherVote(v)) => Ok(AppendEntriesResponse::HigherVote(vote_from_pb(Some(v)).map_err(malformed)?)),
            None => Err(malformed(CodecError("an append-entries response without a result"))),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        let meta = &rpc.meta;
        let message = pb::InstallSnapshotRequest {
            group: Some(self.group.clone()),
            vote: Some(vote_to_pb(&rpc.vote)),
            meta: Some(pb::SnapshotMeta {
                last_log_id: meta.last_log_id.as_ref().map(log_id_to_pb),
                membership_log_id: meta.last_membership.log_id().as_ref().map(log_id_to_pb),
                membership: Some(membership_to_pb(meta.last_membership.membership())),
                snapshot_id: meta.snapshot_id.clone(),
            }),
            offset: rpc.offset,
            data: rpc.data.into(),
            done: rpc.done,
        };
        let response = self
            .client()
            .map_err(RPCError::Unreachable)?
            .install_snapshot(request(message, &option))
            .await
            .map_err(|s| unreachable(&s))?
            .into_inner();
        Ok(InstallSnapshotResponse { vote: vote_from_pb(response.vote).map_err(malformed)? })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let message = pb::VoteRequest {
            group: Some(self.group.clone()),
            vote: Some(vote_to_pb(&rpc.vote)),
            last_log_id: rpc.last_log_id.as_ref().map(log_id_to_pb),
        };
        let response = self
            .client()
            .map_err(RPCError::Unreachable)?
            .vote(request(message, &option))
            .await
            .map_err(|s| unreachable(&s))?
            .into_inner();
        Ok(VoteResponse {
            vote: vote_from_pb(response.vote).map_err(malformed)?,
            vote_granted: response.vote_granted,
            last_log_id: response.last_log_id.map(log_id_from_pb),
        })
    }

    fn backoff(&self) -> Backoff {
        // Short: a peer that restarts should be caught up within an election or two.
        Backoff::new(std::iter::repeat(Duration::from_millis(100)))
    }
}

/// The server side: routes each RPC to its group's Raft.
struct ClusterService {
    cluster: Cluster,
}

fn invalid(e: CodecError) -> Status {
    Status::invalid_argument(e.to_string())
}

fn raft_failed(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("raft: {e}"))
}

#[tonic::async_trait]
impl pb::raft_server::Raft for ClusterService {
    async fn append_entries(
        &self,
        request: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::AppendEntriesResponse>, Status> {
        let request = request.into_inner();
        let raft = self.cluster.group(request.group)?;
        let entries = request.entries.into_iter().map(entry_from_pb).collect::<Result<Vec<_>, _>>().map_err(invalid)?;
        let rpc = AppendEntriesRequest {
            vote: vote_from_pb(request.vote).map_err(invalid)?,
            prev_log_id: request.prev_log_id.map(log_id_from_pb),
            entries,
            leader_commit: request.leader_commit.map(log_id_from_pb),
        };
        use pb::append_entries_response::Result as R;
        let result = match raft.append_entries(rpc).await.map_err(raft_failed)? {
            AppendEntriesResponse::Success => R::Success(pb::Empty {}),
            AppendEntriesResponse::PartialSuccess(matching) => {
                R::PartialSuccess(pb::PartialSuccess { matching: matching.as_ref().map(log_id_to_pb) })
            }
            AppendEntriesResponse::Conflict => R::Conflict(pb::Empty {}),
            AppendEntriesResponse::HigherVote(vote) => R::HigherVote(vote_to_pb(&vote)),
        };
        Ok(Response::new(pb::AppendEntriesResponse { result: Some(result) }))
    }

    async fn vote(&self, request: Request<pb::VoteRequest>) -> Result<Response<pb::VoteResponse>, Status> {
        let request = request.into_inner();
        let raft = self.cluster.group(request.group)?;
        let rpc = VoteRequest {
            vote: vote_from_pb(request.vote).map_err(invalid)?,
            last_log_id: request.last_log_id.map(log_id_from_pb),
        };
        let response = raft.vote(rpc).await.map_err(raft_failed)?;
        Ok(Response::new(pb::VoteResponse {
            vote: Some(vote_to_pb(&response.vote)),
            vote_granted: response.vote_granted,
            last_log_id: response.last_log_id.as_ref().map(log_id_to_pb),
        }))
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::InstallSnapshotRequest>,
    ) -> Result<Response<pb::InstallSnapshotResponse>, Status> {
        let request = request.into_inner();
        let raft = self.cluster.group(request.group)?;
        let meta = request.meta.ok_or_else(|| Status::invalid_argument("no snapshot meta"))?;
        let membership = membership_from_pb(meta.membership.unwrap_or_default()).map_err(invalid)?;
        let rpc = InstallSnapshotRequest {
            vote: vote_from_pb(request.vote).map_err(invalid)?,
            meta: openraft::SnapshotMeta {
                last_log_id: meta.last_log_id.map(log_id_from_pb),
                last_membership: StoredMembership::new(meta.membership_log_id.map(log_id_from_pb), membership),
                snapshot_id: meta.snapshot_id,
            },
            offset: request.offset,
            data: request.data.to_vec(),
            done: request.done,
        };
        let response = raft.install_snapshot(rpc).await.map_err(raft_failed)?;
        Ok(Response::new(pb::InstallSnapshotResponse { vote: Some(vote_to_pb(&response.vote)) }))
    }
}
