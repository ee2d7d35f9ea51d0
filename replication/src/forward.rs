//! Publish anywhere: [`Cluster::propose`] commits records to a group wherever its leader is,
//! forwarding them over gRPC (`strata.cluster.v1.Forward`, `forward.proto`) when this node is
//! not the leader, and retrying on a new leader until the caller's timeout. Also the group's
//! status as its leader sees it ([`Cluster::partition_status`]) and the figures of every
//! group for `/metrics` ([`Cluster::figures`]).
//!
//! Guarantees of [`Cluster::propose`]:
//! - the records of one call are committed in their order, and their offsets are returned in
//!   that order;
//! - `Ok` means a quorum committed them;
//! - at-least-once: after an ambiguous failure (the leader died or lost leadership with the
//!   proposal in flight, or the answer was lost) the records are proposed again on the new
//!   leader, so some of them may be committed twice, at different offsets;
//! - the receiving leader never forwards again (no loops): a node that is not the leader
//!   answers with the leader it knows, and the forwarding node follows that hint.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, RwLock, atomic::Ordering},
    time::{Duration, Instant},
};

use openraft::{BasicNode, error::ClientWriteError, metrics::RaftMetrics};
use strata_log::Record;
use strata_proto::cluster::v1::{
    self as pb,
    forward_client::ForwardClient,
    forward_server::{Forward, ForwardServer},
};
use tonic::{Request, Response, Status, transport::Channel};

use crate::{
    Cluster, GroupId, NodeId, ReplicationError,
    codec::{record_from_pb, record_to_pb},
    status::{self, GroupStats, LatencyHistogram},
    types::Raft,
};

/// How long a proposal waits for a new leader after a failure before trying again (the same
/// leader, if no other came): a dead leader is replaced within two election timeouts
/// (150-300 ms), and a leader that is in fact alive is asked again soon.
const LEADER_WAIT: Duration = Duration::from_millis(600);

/// Pause before asking again when no node named a leader (a group with no replica here, in
/// the middle of an election), so the peers are not asked in a tight loop.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How often a leader short of in-sync replicas looks again before it refuses.
const IN_SYNC_RECHECK: Duration = Duration::from_millis(20);

/// Extra time a forwarded proposal's gRPC call gets beyond the leader's own timeout, so the
/// leader's `timed_out` answer arrives before the call's deadline.
const ANSWER_MARGIN: Duration = Duration::from_millis(250);

/// How to propose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProposeOptions {
    /// The whole call's bound: leader elections, forwards and retries included.
    pub timeout: Duration,
    /// Refuse ([`ReplicationError::NotEnoughReplicas`], nothing appended) when fewer
    /// replicas than this are in sync with the leader (the leader counts).
    pub min_in_sync: usize,
}

impl Default for ProposeOptions {
    /// 5 s, and the leader alone is enough.
    fn default() -> Self {
        ProposeOptions { timeout: Duration::from_secs(5), min_in_sync: 1 }
    }
}

/// A group's replication state, as its leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStatus {
    /// The leader, if one is known.
    pub leader: Option<NodeId>,
    /// The voters, sorted.
    pub replicas: Vec<NodeId>,
    /// The replicas in sync with the leader, sorted, the leader included. A replica is in sync
    /// when it answered the leader within the last second and its log reached the leader's
    /// committed offset within that second. Empty when the leader could not be asked.
    pub in_sync: Vec<NodeId>,
    /// Each replica's log end offset (the next offset it would write), as known to the leader:
    /// the leader's own log end, and a follower's last matched offset + 1 (0 when nothing is
    /// matched yet). Only this node's own when the leader could not be asked.
    pub log_end: BTreeMap<NodeId, u64>,
    /// The high watermark: offsets below it are committed.
    pub committed: u64,
}

/// One group's figures on this node, for `/metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupFigures {
    /// The group.
    pub group: GroupId,
    /// Whether this node leads it.
    pub is_leader: bool,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// The current term.
    pub term: u64,
    /// Times the known leader became a different node (the first leader seen included), since
    /// the group was opened here.
    pub leader_changes: u64,
    /// Terms this node saw begin since the group was opened here: every election, whether this
    /// node started it or only heard of it (including elections that elected nobody).
    pub elections: u64,
    /// Replicas in sync (see [`PartitionStatus::in_sync`]); on a follower, 0 (only the leader
    /// knows).
    pub in_sync: usize,
    /// Voters of the group.
    pub replicas: usize,
    /// On the leader, each follower's lag: (node, entries behind the leader's log end, ms since
    /// it last had the leader's log end, 0 when it has it). Empty on a follower.
    pub follower_lag: Vec<(NodeId, u64, u64)>,
    /// Records committed here as the leader for proposals other nodes forwarded.
    pub forwarded_in: u64,
    /// Records this node forwarded to the leader elsewhere and saw committed.
    pub forwarded_out: u64,
    /// Proposal-to-commit time of the proposals this node led, through
    /// [`Cluster::propose`] (local or forwarded in): one sample per call.
    pub commit_latency: LatencyHistogram,
}

/// Forwarding's share of a [`Cluster`]: the peers' addresses and each open group's stats.
#[derive(Default)]
pub(crate) struct ForwardState {
    peers: RwLock<BTreeMap<NodeId, String>>,
    stats: RwLock<HashMap<GroupId, Arc<GroupStats>>>,
    /// For groups not open here: the leader the last forward reached, asked first next time.
    leaders: RwLock<HashMap<GroupId, (NodeId, String)>>,
}

impl ForwardState {
    /// The stats of `group`, created on first use.
    pub(crate) fn stats_for(&self, group: &GroupId) -> Arc<GroupStats> {
        if let Some(stats) = self.stats.read().unwrap_or_else(|p| p.into_inner()).get(group) {
            return Arc::clone(stats);
        }
        let mut stats = self.stats.write().unwrap_or_else(|p| p.into_inner());
        Arc::clone(stats.entry(group.clone()).or_default())
    }

    /// `group` was opened with `raft`: its figures are kept from now on.
    pub(crate) fn opened(&self, group: &GroupId, raft: &Raft) {
        let stats = self.stats_for(group);
        tokio::spawn(status::watch_group(group.clone(), stats, raft.metrics()));
    }

    pub(crate) fn closed(&self, group: &GroupId) {
        self.stats.write().unwrap_or_else(|p| p.into_inner()).remove(group);
    }

    fn remember_leader(&self, group: &GroupId, leader: NodeId, addr: &str) {
        let known = |leaders: &HashMap<GroupId, (NodeId, String)>| {
            leaders.get(group).is_some_and(|(id, known)| *id == leader && known == addr)
        };
        // Usually the same as last time: a read lock only.
        if known(&self.leaders.read().unwrap_or_else(|p| p.into_inner())) {
            return;
        }
        self.leaders.write().unwrap_or_else(|p| p.into_inner()).insert(group.clone(), (leader, addr.to_string()));
    }

    fn remembered_leader(&self, group: &GroupId) -> Option<(NodeId, String)> {
        self.leaders.read().unwrap_or_else(|p| p.into_inner()).get(group).cloned()
    }

    fn forget_leader(&self, group: &GroupId, failed: NodeId) {
        let mut leaders = self.leaders.write().unwrap_or_else(|p| p.into_inner());
        if leaders.get(group).is_some_and(|(id, _)| *id == failed) {
            leaders.remove(group);
        }
    }

    fn peers(&self) -> BTreeMap<NodeId, String> {
        self.peers.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The server of the `Forward` service of `cluster`.
pub(crate) fn server(cluster: Cluster) -> ForwardServer<ForwardService> {
    ForwardServer::new(ForwardService { cluster }).max_decoding_message_size(64 << 20)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn group_to_pb(group: &GroupId) -> pb::GroupId {
    pb::GroupId { stream: group.stream.clone(), partition: group.partition }
}

/// The leader `m` names, with its address from the membership or else from `peers`.
fn leader_hint(m: &RaftMetrics<NodeId, BasicNode>, peers: &BTreeMap<NodeId, String>) -> Option<(NodeId, String)> {
    let leader = m.current_leader?;
    let addr = m.membership_config.membership().get_node(&leader).map(|n| n.addr.clone());
    addr.or_else(|| peers.get(&leader).cloned()).map(|addr| (leader, addr))
}

enum Route {
    /// This node's replica leads: propose here.
    Local(Raft),
    /// Forward to this leader at this address.
    Remote(NodeId, String),
}

/// The outcome of one attempt, and what to do next.
enum Attempt {
    Done(Result<Vec<u64>, ReplicationError>),
    /// Try again, at this leader if one was named; `failed` is the node that failed, if any.
    Retry {
        hint: Option<(NodeId, String)>,
        failed: Option<NodeId>,
        error: ReplicationError,
    },
}

impl Cluster {
    /// Tells the endpoint every node's gRPC address (from `[cluster] peers`), so it can
    /// forward to groups it has no replica of. Replaces what it was told before.
    pub fn set_peers(&self, peers: BTreeMap<NodeId, String>) {
        *self.forward_state().peers.write().unwrap_or_else(|p| p.into_inner()) = peers;
    }

    /// Proposes `records` to `group`, wherever its leader is, and resolves with their offsets
    /// (in the records' order) once committed by a quorum.
    ///
    /// On this node's leader replica, refuses with [`ReplicationError::NotEnoughReplicas`]
    /// (nothing appended) when fewer than `options.min_in_sync` replicas have been in sync
    /// for a second (a leader just elected has heard from no follower yet).
    /// Otherwise forwards to the leader: the one this node's replica knows, or the one a peer
    /// (from [`Cluster::set_peers`]) names when the group is not open here. When the leader
    /// is not the leader any more, cannot be reached or dies mid-flight, waits for a new one
    /// and proposes again, until `options.timeout` has passed; then
    /// [`ReplicationError::Timeout`]. A retry after an ambiguous failure may commit some
    /// records twice (at-least-once).
    pub async fn propose(
        &self,
        group: &GroupId,
        records: Vec<Record>,
        options: ProposeOptions,
    ) -> Result<Vec<u64>, ReplicationError> {
        if records.is_empty() {
            return Err(ReplicationError::EmptyProposal);
        }
        let started = Instant::now();
        let deadline = started.checked_add(options.timeout.min(MAX_TIMEOUT)).unwrap_or(started);
        // A leader named by a refusal, to try next.
        let mut hint: Option<(NodeId, String)> = None;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(ReplicationError::Timeout { group: group.clone(), waited_ms: millis(started.elapsed()) });
            }
            let remaining = deadline - now;
            let local = self.raft_of(group);
            let Some(route) = self.route(group, local.as_ref(), hint.take(), remaining).await else {
                continue;
            };
            let attempt = match route {
                Route::Local(raft) => Attempt::from_local(
                    self.node_id(),
                    self.propose_local(group, &raft, records.clone(), options.min_in_sync, remaining).await,
                ),
                Route::Remote(leader, addr) => {
                    self.forward(group, local.as_ref(), leader, &addr, &records, options.min_in_sync, remaining).await
                }
            };
            let (next, failed, error) = match attempt {
                // A timeout reports the whole call's wait.
                Attempt::Done(Err(ReplicationError::Timeout { .. })) => {
                    return Err(ReplicationError::Timeout {
                        group: group.clone(),
                        waited_ms: millis(started.elapsed()),
                    });
                }
                Attempt::Done(result) => return result,
                Attempt::Retry { hint, failed, error } => (hint, failed, error),
            };
            tracing::debug!(%group, ?failed, %error, "proposal not committed; trying again");
            if let Some(failed) = failed {
                self.forward_state().forget_leader(group, failed);
            }
            let until = tokio::time::Instant::from_std(deadline.min(Instant::now() + LEADER_WAIT));
            match (&local, &next) {
                // A different leader was named: ask it at once.
                (_, Some((id, _))) if Some(*id) != failed => {}
                // Wait until this replica knows a leader other than the one that failed.
                (Some(raft), _) => {
                    let mut metrics = raft.metrics();
                    let _ = tokio::time::timeout_at(
                        until,
                        metrics.wait_for(|m| m.current_leader.is_some() && m.current_leader != failed),
                    )
                    .await;
                }
                (None, _) => tokio::time::sleep_until(until.min(tokio::time::Instant::now() + RETRY_PAUSE)).await,
            }
            hint = next.filter(|(id, _)| Some(*id) != failed);
        }
    }

    /// Where to send the next attempt: to `hint` if a refusal named a leader, else to the
    /// leader this node's replica knows (waiting out an election, then `None`: look again),
    /// else to the leader a peer names (`None` after a pause when none does).
    async fn route(
        &self,
        group: &GroupId,
        local: Option<&Raft>,
        hint: Option<(NodeId, String)>,
        remaining: Duration,
    ) -> Option<Route> {
        match (local, hint) {
            (Some(raft), Some((id, _))) if id == self.node_id() => Some(Route::Local(raft.clone())),
            (_, Some((id, addr))) if id != self.node_id() => Some(Route::Remote(id, addr)),
            (Some(raft), _) => {
                let m = raft.metrics().borrow().clone();
                match m.current_leader {
                    Some(leader) if leader == self.node_id() => Some(Route::Local(raft.clone())),
                    Some(_) => match leader_hint(&m, &self.forward_state().peers()) {
                        Some((leader, addr)) => Some(Route::Remote(leader, addr)),
                        None => {
                            tracing::debug!(%group, leader = ?m.current_leader, "no address known for the leader");
                            tokio::time::sleep(RETRY_PAUSE.min(remaining)).await;
                            None
                        }
                    },
                    None => {
                        // In an election: wait for its outcome, then look again.
                        let mut metrics = raft.metrics();
                        let _ = tokio::time::timeout(remaining, metrics.wait_for(|m| m.current_leader.is_some())).await;
                        None
                    }
                }
            }
            (None, _) => match self.find_leader(group, remaining).await {
                Some((leader, addr)) => Some(Route::Remote(leader, addr)),
                None => {
                    tokio::time::sleep(RETRY_PAUSE.min(remaining)).await;
                    None
                }
            },
        }
    }
}

/// A refusal naming the leader `leader` (with its address), if known.
fn not_leader(group: &GroupId, leader: Option<(NodeId, String)>) -> ReplicationError {
    ReplicationError::NotLeader { group: group.clone(), leader }
}

fn write_error(
    group: &GroupId,
    e: openraft::error::RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
) -> ReplicationError {
    match e {
        openraft::error::RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
            not_leader(group, forward.leader_id.zip(forward.leader_node.map(|n| n.addr)))
        }
        other => ReplicationError::Raft { group: group.clone(), message: other.to_string() },
    }
}

impl Attempt {
    /// What a proposal on this node's own replica (`node`) leads to.
    fn from_local(node: NodeId, result: Result<Vec<u64>, ReplicationError>) -> Attempt {
        match result {
            Err(ReplicationError::NotLeader { leader, group }) => Attempt::Retry {
                hint: leader.clone(),
                failed: Some(node),
                error: ReplicationError::NotLeader { group, leader },
            },
            // Raft stopped or failed with the proposal in flight: ambiguous, try the next leader.
            Err(error @ ReplicationError::Raft { .. }) => Attempt::Retry { hint: None, failed: Some(node), error },
            done => Attempt::Done(done),
        }
    }
}

/// A `Status` answer.
enum StatusAnswer {
    Status(PartitionStatus),
    NotLeader(Option<(NodeId, String)>),
    NotReplica,
}

fn hint_from_pb(n: pb::NotLeader) -> Option<(NodeId, String)> {
    n.leader_id.filter(|_| !n.leader_addr.is_empty()).map(|id| (id, n.leader_addr))
}

fn hint_to_pb(hint: Option<(NodeId, String)>) -> pb::NotLeader {
    match hint {
        Some((id, addr)) => pb::NotLeader { leader_id: Some(id), leader_addr: addr },
        None => pb::NotLeader { leader_id: None, leader_addr: String::new() },
    }
}

fn status_to_pb(s: &PartitionStatus) -> pb::PartitionStatus {
    pb::PartitionStatus {
        leader: s.leader,
        replicas: s.replicas.clone(),
        in_sync: s.in_sync.clone(),
        log_end: s.log_end.iter().map(|(node_id, end)| pb::LogEnd { node_id: *node_id, end: *end }).collect(),
        committed: s.committed,
    }
}

fn status_from_pb(s: pb::PartitionStatus) -> PartitionStatus {
    PartitionStatus {
        leader: s.leader,
        replicas: s.replicas,
        in_sync: s.in_sync,
        log_end: s.log_end.into_iter().map(|e| (e.node_id, e.end)).collect(),
        committed: s.committed,
    }
}

/// The longest a proposal may wait, whatever it asks (keeps deadline arithmetic finite).
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// How long a status request to one node may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

impl Cluster {
    /// The stats of `group` if it is open here (never creates them).
    fn stats_of(&self, group: &GroupId) -> Option<Arc<GroupStats>> {
        self.forward_state().stats.read().unwrap_or_else(|p| p.into_inner()).get(group).cloned()
    }

    fn forward_client(&self, node: NodeId, addr: &str) -> Result<ForwardClient<Channel>, ReplicationError> {
        let channel = self
            .peer_channel(node, addr)
            .map_err(|e| ReplicationError::Transport(format!("node {node} at {addr}: {e}")))?;
        Ok(ForwardClient::new(channel).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20))
    }

    /// The leader path: on this node's replica `raft` of `group`, which must lead it; the
    /// in-sync check, then every record handed to Raft at once (openraft hands them to storage
    /// together, one batch), bounded by `timeout`. Never forwards.
    async fn propose_local(
        &self,
        group: &GroupId,
        raft: &Raft,
        records: Vec<Record>,
        min_in_sync: usize,
        timeout: Duration,
    ) -> Result<Vec<u64>, ReplicationError> {
        let stats = self.stats_of(group).unwrap_or_default();
        // A leader elected a moment ago has heard no follower yet, and a follower can miss a
        // heartbeat: a shortage is refused only once it has lasted this long.
        let grace_until = Instant::now() + crate::status::IN_SYNC_WINDOW.min(timeout);
        loop {
            let m = raft.metrics().borrow().clone();
            if m.current_leader != Some(self.node_id()) {
                return Err(not_leader(group, leader_hint(&m, &self.forward_state().peers())));
            }
            let in_sync = stats.in_sync(&m, Instant::now()).len();
            if in_sync >= min_in_sync {
                break;
            }
            if Instant::now() >= grace_until {
                return Err(ReplicationError::NotEnoughReplicas {
                    group: group.clone(),
                    in_sync,
                    required: min_in_sync,
                });
            }
            tokio::time::sleep(IN_SYNC_RECHECK).await;
        }
        let started = Instant::now();
        let writes = records.into_iter().map(|record| raft.client_write(record));
        let Ok(results) = tokio::time::timeout(timeout, futures_util::future::join_all(writes)).await else {
            return Err(ReplicationError::Timeout { group: group.clone(), waited_ms: millis(started.elapsed()) });
        };
        let offsets = results
            .into_iter()
            .map(|result| result.map(|response| response.data).map_err(|e| write_error(group, e)))
            .collect::<Result<Vec<u64>, _>>()?;
        stats.note_commit(started.elapsed());
        Ok(offsets)
    }

    /// One forward of `records` to `leader` at `addr`.
    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        group: &GroupId,
        local: Option<&Raft>,
        leader: NodeId,
        addr: &str,
        records: &[Record],
        min_in_sync: usize,
        remaining: Duration,
    ) -> Attempt {
        let failed = |error| Attempt::Retry { hint: None, failed: Some(leader), error };
        let mut client = match self.forward_client(leader, addr) {
            Ok(client) => client,
            Err(e) => return failed(e),
        };
        let mut request = Request::new(pb::ProposeRequest {
            group: Some(group_to_pb(group)),
            records: records.iter().map(record_to_pb).collect(),
            min_in_sync: u32::try_from(min_in_sync).unwrap_or(u32::MAX),
            timeout_ms: millis(remaining),
            from_node: self.node_id(),
        });
        request.set_timeout(remaining + ANSWER_MARGIN);
        let call = client.propose(request);
        // A leader cut off from the others without its connections closing (a network
        // partition, not a crash) would hold the call until the deadline; when this node's
        // replica learns of another leader meanwhile, the old one cannot commit any more, so
        // give up on it and propose to the new one (the proposal may yet be committed by the
        // new leader if it had reached a quorum: at-least-once).
        let answer = match local {
            None => call.await,
            Some(raft) => {
                let mut metrics = raft.metrics();
                let before = metrics.borrow().current_leader;
                let replaced = async move {
                    let changed = metrics
                        .wait_for(|m| m.current_leader.is_some_and(|l| Some(l) != before && l != leader))
                        .await
                        .map(|m| leader_hint(&m, &BTreeMap::new()));
                    match changed {
                        Ok(hint) => hint,
                        // This replica stopped: only the call's own outcome is left.
                        Err(_) => std::future::pending().await,
                    }
                };
                tokio::select! {
                    answer = call => answer,
                    hint = replaced => {
                        return Attempt::Retry {
                            hint: hint.clone(),
                            failed: Some(leader),
                            error: not_leader(group, hint),
                        };
                    }
                }
            }
        };
        let response = match answer {
            Ok(response) => response.into_inner(),
            Err(status) => {
                return failed(ReplicationError::Transport(format!(
                    "forward to node {leader} at {addr}: {}: {}",
                    status.code(),
                    status.message()
                )));
            }
        };
        use pb::propose_response::Result as R;
        match response.result {
            Some(R::Offsets(o)) if o.offsets.len() == records.len() => {
                if let Some(stats) = self.stats_of(group) {
                    stats.forwarded_out.fetch_add(records.len() as u64, Ordering::Relaxed);
                }
                self.forward_state().remember_leader(group, leader, addr);
                Attempt::Done(Ok(o.offsets))
            }
            Some(R::Offsets(o)) => Attempt::Done(Err(ReplicationError::Transport(format!(
                "node {leader} answered {} offsets for {} records",
                o.offsets.len(),
                records.len()
            )))),
            Some(R::NotLeader(n)) => {
                let hint = hint_from_pb(n);
                Attempt::Retry { hint: hint.clone(), failed: Some(leader), error: not_leader(group, hint) }
            }
            Some(R::NotEnoughReplicas(n)) => Attempt::Done(Err(ReplicationError::NotEnoughReplicas {
                group: group.clone(),
                in_sync: n.in_sync as usize,
                required: n.required as usize,
            })),
            // The leader waited all the time there was: the loop reports the timeout.
            Some(R::TimedOut(t)) => Attempt::Retry {
                hint: None,
                failed: None,
                error: ReplicationError::Timeout { group: group.clone(), waited_ms: t.waited_ms },
            },
            Some(R::NotReplica(_)) => failed(not_leader(group, None)),
            Some(R::Failed(message)) => failed(ReplicationError::Raft { group: group.clone(), message }),
            None => failed(ReplicationError::Transport(format!("node {leader} answered nothing"))),
        }
    }

    async fn ask_status(&self, node: NodeId, addr: &str, group: &GroupId) -> Result<StatusAnswer, ReplicationError> {
        let mut client = self.forward_client(node, addr)?;
        let mut request = Request::new(pb::StatusRequest { group: Some(group_to_pb(group)) });
        request.set_timeout(STATUS_TIMEOUT);
        let response = client
            .status(request)
            .await
            .map_err(|s| ReplicationError::Transport(format!("status from node {node} at {addr}: {}", s.message())))?
            .into_inner();
        use pb::status_response::Result as R;
        Ok(match response.result {
            Some(R::Status(s)) => StatusAnswer::Status(status_from_pb(s)),
            Some(R::NotLeader(n)) => StatusAnswer::NotLeader(hint_from_pb(n)),
            Some(R::NotReplica(_)) | None => StatusAnswer::NotReplica,
        })
    }

    /// For a group not open here: the leader as the peers see it, and its status if it
    /// answered. The leader remembered from the last forward is asked first, then every peer
    /// in turn, following one hint.
    async fn status_from_peers(
        &self,
        group: &GroupId,
        remaining: Duration,
    ) -> Option<(NodeId, String, PartitionStatus)> {
        let deadline = Instant::now() + remaining;
        let mut candidates: Vec<(NodeId, String)> = self.forward_state().remembered_leader(group).into_iter().collect();
        candidates.extend(self.forward_state().peers().into_iter().filter(|(id, _)| *id != self.node_id()));
        let mut followed = false;
        let mut i = 0;
        while i < candidates.len() && Instant::now() < deadline {
            let (node, addr) = candidates[i].clone();
            i += 1;
            match self.ask_status(node, &addr, group).await {
                Ok(StatusAnswer::Status(status)) => return Some((node, addr, status)),
                Ok(StatusAnswer::NotLeader(Some(hint))) if !followed && hint.0 != self.node_id() => {
                    followed = true;
                    candidates.insert(i, hint);
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(%group, node, %e, "status request failed"),
            }
        }
        None
    }

    /// For a group not open here: its leader, from the peers.
    async fn find_leader(&self, group: &GroupId, remaining: Duration) -> Option<(NodeId, String)> {
        if let Some(known) = self.forward_state().remembered_leader(group) {
            return Some(known);
        }
        self.status_from_peers(group, remaining).await.map(|(node, addr, _)| (node, addr))
    }

    /// The status of `group` computed on its leader (this node) from its metrics `m`.
    fn leader_status(&self, group: &GroupId, m: &RaftMetrics<NodeId, BasicNode>) -> PartitionStatus {
        let stats = self.stats_of(group).unwrap_or_default();
        let (own_end, committed) = status::ends(m);
        let voters = status::voters(m);
        let log_end = voters
            .iter()
            .map(|id| {
                let end = if *id == m.id {
                    own_end
                } else {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(id))
                        .and_then(|matched| matched.map(|l| l.index + 1))
                        .unwrap_or(0)
                };
                (*id, end)
            })
            .collect();
        PartitionStatus {
            leader: Some(m.id),
            replicas: voters.into_iter().collect(),
            in_sync: stats.in_sync(m, Instant::now()),
            log_end,
            committed,
        }
    }

    /// The group's status as this (non-leader) replica sees it: the leader it knows, the
    /// voters, its own log end and committed offset; the in-sync set is unknown (empty).
    fn own_status(m: &RaftMetrics<NodeId, BasicNode>) -> PartitionStatus {
        let (own_end, committed) = status::ends(m);
        PartitionStatus {
            leader: m.current_leader,
            replicas: status::voters(m).into_iter().collect(),
            in_sync: Vec::new(),
            log_end: BTreeMap::from([(m.id, own_end)]),
            committed,
        }
    }

    /// The group's status as its leader sees it: computed here when this node leads it, else
    /// asked of the leader over gRPC. When no leader is known, or the leader cannot be asked,
    /// this replica's own view ([`PartitionStatus::in_sync`] empty, [`PartitionStatus::log_end`]
    /// only its own); on a node with no replica of the group and no peer that answers, an
    /// empty status with leader `None`.
    pub async fn partition_status(&self, group: &GroupId) -> Result<PartitionStatus, ReplicationError> {
        let Some(raft) = self.raft_of(group) else {
            return Ok(match self.status_from_peers(group, STATUS_TIMEOUT).await {
                Some((_, _, status)) => status,
                None => PartitionStatus {
                    leader: None,
                    replicas: Vec::new(),
                    in_sync: Vec::new(),
                    log_end: BTreeMap::new(),
                    committed: 0,
                },
            });
        };
        let m = raft.metrics().borrow().clone();
        if m.current_leader == Some(self.node_id()) {
            return Ok(self.leader_status(group, &m));
        }
        if let Some((leader, addr)) = leader_hint(&m, &self.forward_state().peers()) {
            match self.ask_status(leader, &addr, group).await {
                Ok(StatusAnswer::Status(status)) => return Ok(status),
                Ok(_) => tracing::debug!(%group, leader, "the leader this replica knows does not lead any more"),
                Err(e) => tracing::debug!(%group, leader, %e, "the leader did not answer a status request"),
            }
        }
        Ok(Cluster::own_status(&m))
    }

    /// Figures of every group open on this node, for `/metrics`, sorted by group. Cheap: a
    /// copy of each group's metrics and a few counters.
    pub fn figures(&self) -> Vec<GroupFigures> {
        let now = Instant::now();
        let mut out: Vec<GroupFigures> = self
            .open_groups()
            .into_iter()
            .map(|(group, raft)| {
                let m = raft.metrics().borrow().clone();
                let stats = self.stats_of(&group).unwrap_or_default();
                let is_leader = m.current_leader == Some(m.id);
                GroupFigures {
                    is_leader,
                    leader: m.current_leader,
                    term: m.current_term,
                    leader_changes: stats.leader_changes(),
                    elections: stats.elections(),
                    in_sync: stats.in_sync(&m, now).len(),
                    replicas: status::voters(&m).len(),
                    follower_lag: if is_leader { stats.lags(&m, now) } else { Vec::new() },
                    forwarded_in: stats.forwarded_in.load(Ordering::Relaxed),
                    forwarded_out: stats.forwarded_out.load(Ordering::Relaxed),
                    commit_latency: stats.commit_latency(),
                    group,
                }
            })
            .collect();
        out.sort_by(|a, b| a.group.cmp(&b.group));
        out
    }
}

/// The server side of `Forward`: runs the leader path locally, never forwards again.
pub(crate) struct ForwardService {
    cluster: Cluster,
}

fn group_from_pb(group: Option<pb::GroupId>) -> Result<GroupId, Status> {
    let group = group.ok_or_else(|| Status::invalid_argument("no group"))?;
    Ok(GroupId::new(group.stream, group.partition))
}

#[tonic::async_trait]
impl Forward for ForwardService {
    async fn propose(&self, request: Request<pb::ProposeRequest>) -> Result<Response<pb::ProposeResponse>, Status> {
        let request = request.into_inner();
        let group = group_from_pb(request.group)?;
        if request.records.is_empty() {
            return Err(Status::invalid_argument("nothing to propose"));
        }
        use pb::propose_response::Result as R;
        let Some(raft) = self.cluster.raft_of(&group) else {
            return Ok(Response::new(pb::ProposeResponse { result: Some(R::NotReplica(pb::Empty {})) }));
        };
        let count = request.records.len() as u64;
        let records = request.records.into_iter().map(record_from_pb).collect();
        let timeout = Duration::from_millis(request.timeout_ms).min(MAX_TIMEOUT);
        let min_in_sync = request.min_in_sync as usize;
        let result = match self.cluster.propose_local(&group, &raft, records, min_in_sync, timeout).await {
            Ok(offsets) => {
                if let Some(stats) = self.cluster.stats_of(&group) {
                    stats.forwarded_in.fetch_add(count, Ordering::Relaxed);
                }
                R::Offsets(pb::Offsets { offsets })
            }
            Err(ReplicationError::NotLeader { leader, .. }) => R::NotLeader(hint_to_pb(leader)),
            Err(ReplicationError::NotEnoughReplicas { in_sync, required, .. }) => {
                R::NotEnoughReplicas(pb::NotEnoughReplicas {
                    in_sync: u32::try_from(in_sync).unwrap_or(u32::MAX),
                    required: u32::try_from(required).unwrap_or(u32::MAX),
                })
            }
            Err(ReplicationError::Timeout { waited_ms, .. }) => R::TimedOut(pb::TimedOut { waited_ms }),
            Err(e) => R::Failed(e.to_string()),
        };
        tracing::trace!(%group, from = request.from_node, "forwarded proposal answered");
        Ok(Response::new(pb::ProposeResponse { result: Some(result) }))
    }

    async fn status(&self, request: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let group = group_from_pb(request.into_inner().group)?;
        use pb::status_response::Result as R;
        let result = match self.cluster.raft_of(&group) {
            None => R::NotReplica(pb::Empty {}),
            Some(raft) => {
                let m = raft.metrics().borrow().clone();
                if m.current_leader == Some(self.cluster.node_id()) {
                    R::Status(status_to_pb(&self.cluster.leader_status(&group, &m)))
                } else {
                    R::NotLeader(hint_to_pb(leader_hint(&m, &self.cluster.forward_state().peers())))
                }
            }
        };
        Ok(Response::new(pb::StatusResponse { result: Some(result) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: T) {}

    #[test]
    fn the_public_futures_can_be_spawned() {
        let cluster = Cluster::new(1);
        let group = GroupId::new("s", 0);
        assert_send(cluster.propose(&group, vec![Record::new(0, "x")], ProposeOptions::default()));
        assert_send(cluster.partition_status(&group));
    }

    #[test]
    fn a_hint_needs_an_id_and_an_address() {
        let hint = |leader_id, addr: &str| hint_from_pb(pb::NotLeader { leader_id, leader_addr: addr.to_string() });
        assert_eq!(hint(Some(2), "127.0.0.1:7102"), Some((2, "127.0.0.1:7102".to_string())));
        assert_eq!(hint(Some(2), ""), None);
        assert_eq!(hint(None, "127.0.0.1:7102"), None);
        assert_eq!(hint_from_pb(hint_to_pb(Some((3, "a:1".to_string())))), Some((3, "a:1".to_string())));
        assert_eq!(hint_from_pb(hint_to_pb(None)), None);
    }

    #[test]
    fn a_status_survives_the_wire() {
        let status = PartitionStatus {
            leader: Some(2),
            replicas: vec![1, 2, 3],
            in_sync: vec![2, 3],
            log_end: BTreeMap::from([(1, 10), (2, 17), (3, 17)]),
            committed: 17,
        };
        assert_eq!(status_from_pb(status_to_pb(&status)), status);
    }
}
