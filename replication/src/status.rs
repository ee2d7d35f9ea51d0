//! What a node knows about each of its groups beyond openraft's metrics: when each follower
//! last answered and last caught up (for the in-sync set), leader changes and elections, the
//! forwarded records and the proposal-to-commit latency. Kept per group in a [`GroupStats`],
//! fed by the network (AppendEntries answers), by a small task per group that watches
//! openraft's metrics, and by the proposal path; read by [`crate::Cluster::partition_status`]
//! and [`crate::Cluster::figures`].
//!
//! The in-sync rule itself ([`in_sync`]) is pure, so it is tested without sockets.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use openraft::{BasicNode, metrics::RaftMetrics};
use tokio::sync::watch;

use crate::{GroupId, NodeId};

/// How recently a follower must have answered the leader, and have had the leader's
/// committed offset, to count as in sync.
///
/// 1 s is 20 heartbeats (50 ms, see [`crate::raft_config`]): a follower that missed that many
/// is dead or cut off, while a follower stalled by one slow fsync or a busy machine (a few
/// hundred ms) does not flap in and out of the set, which would refuse publishes under
/// `min_insync_replicas` for no reason. It is also well under the 5 s default ack timeout,
/// so a dead follower is out of the set long before a publish waiting on it would time out.
pub(crate) const IN_SYNC_WINDOW: Duration = Duration::from_millis(1000);

/// What the leader knows of one follower at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FollowerView {
    /// The end of the follower's log as the leader knows it: its matched index + 1 (0 when
    /// nothing is matched yet in this term).
    pub(crate) matched_end: u64,
    /// When the follower last answered an AppendEntries (heartbeat or entries).
    pub(crate) last_ack: Option<Instant>,
    /// When the leader last saw the follower's matched end at or past the committed offset.
    pub(crate) caught_up_at: Option<Instant>,
}

/// The in-sync replicas of a group, sorted, as its leader `leader` sees them at `now`.
///
/// In sync are:
/// - the leader, always;
/// - every other voter that answered an AppendEntries within `window` and whose log reached
///   the leader's committed offset (`matched_end >= committed`), now or within `window`.
///
/// Both halves matter: a follower of an idle group that died keeps its matched index (it had
/// everything), and only the silence tells; a follower that answers every heartbeat but
/// cannot keep up (a slow disk) keeps answering, and only its lag tells. Learners are never in
/// sync: they do not count toward a quorum.
pub(crate) fn in_sync(
    now: Instant,
    leader: NodeId,
    voters: &BTreeSet<NodeId>,
    followers: &BTreeMap<NodeId, FollowerView>,
    committed: u64,
    window: Duration,
) -> Vec<NodeId> {
    let recent = |at: Option<Instant>| at.is_some_and(|at| now.saturating_duration_since(at) <= window);
    let mut out: Vec<NodeId> = voters
        .iter()
        .copied()
        .filter(|id| {
            *id == leader
                || followers
                    .get(id)
                    .is_some_and(|f| recent(f.last_ack) && (f.matched_end >= committed || recent(f.caught_up_at)))
        })
        .collect();
    if !out.contains(&leader) {
        out.push(leader);
        out.sort_unstable();
    }
    out
}

/// Upper bounds (ms) of the commit latency histogram's buckets; the last bucket is +Inf.
pub(crate) const LATENCY_BOUNDS_MS: [f64; 12] =
    [1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0];

/// A cumulative histogram of proposal-to-commit times, ready for Prometheus.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LatencyHistogram {
    /// Proposals measured.
    pub count: u64,
    /// Their total time, ms.
    pub sum_ms: f64,
    /// (upper bound in ms, proposals that took at most that long), ascending bounds, the last
    /// one `f64::INFINITY` (so its count equals `count`).
    pub buckets: Vec<(f64, u64)>,
}

#[derive(Default)]
struct Latency {
    // Per bucket (not cumulative), the last one +Inf.
    counts: [AtomicU64; LATENCY_BOUNDS_MS.len() + 1],
    sum_us: AtomicU64,
}

impl Latency {
    fn record(&self, took: Duration) {
        let ms = took.as_secs_f64() * 1000.0;
        let bucket = LATENCY_BOUNDS_MS.iter().position(|bound| ms <= *bound).unwrap_or(LATENCY_BOUNDS_MS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn snapshot(&self) -> LatencyHistogram {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.counts.len());
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            buckets.push((LATENCY_BOUNDS_MS.get(i).copied().unwrap_or(f64::INFINITY), cumulative));
        }
        LatencyHistogram { count: cumulative, sum_ms: self.sum_us.load(Ordering::Relaxed) as f64 / 1000.0, buckets }
    }
}

/// Per follower: when it last answered, last had the committed offset, last had the log end.
#[derive(Default)]
struct Clocks {
    last_ack: BTreeMap<NodeId, Instant>,
    caught_up: BTreeMap<NodeId, Instant>,
    at_end: BTreeMap<NodeId, Instant>,
    // When this node last became leader: the lag of a follower never seen at the log end is
    // counted from there.
    leader_since: Option<Instant>,
}

/// One group's figures and follower clocks on this node.
#[derive(Default)]
pub(crate) struct GroupStats {
    clocks: Mutex<Clocks>,
    leader_changes: AtomicU64,
    elections: AtomicU64,
    pub(crate) forwarded_in: AtomicU64,
    pub(crate) forwarded_out: AtomicU64,
    latency: Latency,
}

/// A follower's lag behind the leader: entries, and ms since it last had the leader's log end.
pub(crate) type Lag = (NodeId, u64, u64);

fn end_of(index: Option<u64>) -> u64 {
    index.map_or(0, |i| i + 1)
}

/// The leader's log end (next offset) and committed offset (high watermark) in `m`.
pub(crate) fn ends(m: &RaftMetrics<NodeId, BasicNode>) -> (u64, u64) {
    (end_of(m.last_log_index), end_of(m.last_applied.map(|id| id.index)))
}

/// The voters of the group's current membership.
pub(crate) fn voters(m: &RaftMetrics<NodeId, BasicNode>) -> BTreeSet<NodeId> {
    m.membership_config.membership().voter_ids().collect()
}

impl GroupStats {
    /// `target` answered an AppendEntries of this group.
    pub(crate) fn note_ack(&self, target: NodeId) {
        let now = Instant::now();
        self.clocks.lock().unwrap_or_else(|p| p.into_inner()).last_ack.insert(target, now);
    }

    /// A proposal committed `took` after it was handed to Raft on this leader.
    pub(crate) fn note_commit(&self, took: Duration) {
        self.latency.record(took);
    }

    /// Updates the follower clocks from a leader's metrics.
    fn observe(&self, m: &RaftMetrics<NodeId, BasicNode>, now: Instant) {
        let Some(replication) = &m.replication else {
            return;
        };
        let (log_end, committed) = ends(m);
        let mut clocks = self.clocks.lock().unwrap_or_else(|p| p.into_inner());
        for (id, matched) in replication {
            let matched_end = end_of(matched.map(|m| m.index));
            if matched_end >= committed {
                clocks.caught_up.insert(*id, now);
            }
            if matched_end >= log_end {
                clocks.at_end.insert(*id, now);
            }
        }
    }

    fn views(&self, m: &RaftMetrics<NodeId, BasicNode>) -> BTreeMap<NodeId, FollowerView> {
        let clocks = self.clocks.lock().unwrap_or_else(|p| p.into_inner());
        let Some(replication) = &m.replication else {
            return BTreeMap::new();
        };
        replication
            .iter()
            .map(|(id, matched)| {
                let view = FollowerView {
                    matched_end: end_of(matched.map(|m| m.index)),
                    last_ack: clocks.last_ack.get(id).copied(),
                    caught_up_at: clocks.caught_up.get(id).copied(),
                };
                (*id, view)
            })
            .collect()
    }

    /// The in-sync replicas (sorted) when `m` are a leader's metrics; empty otherwise.
    pub(crate) fn in_sync(&self, m: &RaftMetrics<NodeId, BasicNode>, now: Instant) -> Vec<NodeId> {
        if m.replication.is_none() || m.current_leader != Some(m.id) {
            return Vec::new();
        }
        let (_, committed) = ends(m);
        in_sync(now, m.id, &voters(m), &self.views(m), committed, IN_SYNC_WINDOW)
    }

    /// Each follower's lag when `m` are a leader's metrics; empty otherwise.
    pub(crate) fn lags(&self, m: &RaftMetrics<NodeId, BasicNode>, now: Instant) -> Vec<Lag> {
        let Some(replication) = &m.replication else {
            return Vec::new();
        };
        let (log_end, _) = ends(m);
        let clocks = self.clocks.lock().unwrap_or_else(|p| p.into_inner());
        replication
            .iter()
            .filter(|(id, _)| **id != m.id)
            .map(|(id, matched)| {
                let behind = log_end.saturating_sub(end_of(matched.map(|m| m.index)));
                let ms = if behind == 0 {
                    0
                } else {
                    let since = clocks.at_end.get(id).copied().or(clocks.leader_since).unwrap_or(now);
                    u64::try_from(now.saturating_duration_since(since).as_millis()).unwrap_or(u64::MAX)
                };
                (*id, behind, ms)
            })
            .collect()
    }

    pub(crate) fn leader_changes(&self) -> u64 {
        self.leader_changes.load(Ordering::Relaxed)
    }

    pub(crate) fn elections(&self) -> u64 {
        self.elections.load(Ordering::Relaxed)
    }

    pub(crate) fn commit_latency(&self) -> LatencyHistogram {
        self.latency.snapshot()
    }
}

/// Follows one group's metrics until its Raft stops: counts leader changes and new terms, and
/// keeps the follower clocks. Cheap per change: a lock and a few map updates.
pub(crate) async fn watch_group(
    group: GroupId,
    stats: Arc<GroupStats>,
    mut metrics: watch::Receiver<RaftMetrics<NodeId, BasicNode>>,
) {
    let (mut leader, mut term) = {
        let m = metrics.borrow_and_update();
        (m.current_leader, m.current_term)
    };
    if leader.is_some() {
        stats.leader_changes.fetch_add(1, Ordering::Relaxed);
    }
    loop {
        {
            let m = metrics.borrow_and_update();
            let now = Instant::now();
            if m.current_term > term {
                term = m.current_term;
                stats.elections.fetch_add(1, Ordering::Relaxed);
            }
            if m.current_leader.is_some() && m.current_leader != leader {
                leader = m.current_leader;
                stats.leader_changes.fetch_add(1, Ordering::Relaxed);
                if leader == Some(m.id) {
                    stats.clocks.lock().unwrap_or_else(|p| p.into_inner()).leader_since = Some(now);
                }
            }
            stats.observe(&m, now);
        }
        if metrics.changed().await.is_err() {
            tracing::debug!(%group, "raft stopped: no more figures");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_millis(1000);

    fn voters(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    fn view(matched_end: u64, ack_ms_ago: Option<u64>, caught_up_ms_ago: Option<u64>, now: Instant) -> FollowerView {
        let ago = |ms: Option<u64>| ms.map(|ms| now - Duration::from_millis(ms));
        FollowerView { matched_end, last_ack: ago(ack_ms_ago), caught_up_at: ago(caught_up_ms_ago) }
    }

    #[test]
    fn the_leader_is_always_in_sync() {
        let now = Instant::now() + Duration::from_secs(10);
        assert_eq!(in_sync(now, 2, &voters(&[1, 2, 3]), &BTreeMap::new(), 100, W), vec![2]);
        // Even when it is, oddly, missing from the voters (a membership change removing it).
        assert_eq!(in_sync(now, 4, &voters(&[1, 2, 3]), &BTreeMap::new(), 100, W), vec![4]);
    }

    #[test]
    fn a_follower_that_answers_and_has_the_commit_is_in_sync() {
        let now = Instant::now() + Duration::from_secs(10);
        let followers = BTreeMap::from([(1, view(100, Some(10), None, now)), (3, view(120, Some(900), None, now))]);
        assert_eq!(in_sync(now, 2, &voters(&[1, 2, 3]), &followers, 100, W), vec![1, 2, 3]);
    }

    #[test]
    fn a_silent_follower_is_out_even_with_the_whole_log() {
        let now = Instant::now() + Duration::from_secs(10);
        let followers = BTreeMap::from([(1, view(100, Some(1001), Some(5), now)), (3, view(100, None, Some(5), now))]);
        assert_eq!(in_sync(now, 2, &voters(&[1, 2, 3]), &followers, 100, W), vec![2]);
    }

    #[test]
    fn a_follower_behind_stays_in_for_the_window_after_it_last_caught_up() {
        let now = Instant::now() + Duration::from_secs(10);
        let followers = BTreeMap::from([
            (1, view(90, Some(5), Some(999), now)),  // behind, caught up 999 ms ago: in
            (3, view(90, Some(5), Some(1001), now)), // behind, caught up 1001 ms ago: out
        ]);
        assert_eq!(in_sync(now, 2, &voters(&[1, 2, 3]), &followers, 100, W), vec![1, 2]);
        // Never caught up (a new follower still copying the log): out.
        let followers = BTreeMap::from([(1, view(0, Some(5), None, now))]);
        assert_eq!(in_sync(now, 2, &voters(&[1, 2]), &followers, 100, W), vec![2]);
    }

    #[test]
    fn learners_are_never_in_sync() {
        let now = Instant::now() + Duration::from_secs(10);
        let followers = BTreeMap::from([(4, view(100, Some(5), Some(5), now))]);
        assert_eq!(in_sync(now, 1, &voters(&[1]), &followers, 100, W), vec![1]);
    }

    #[test]
    fn the_histogram_is_cumulative_and_ends_with_everything() {
        let latency = Latency::default();
        for ms in [0, 1, 3, 3, 40, 7000] {
            latency.record(Duration::from_millis(ms));
        }
        let h = latency.snapshot();
        assert_eq!(h.count, 6);
        assert_eq!(h.sum_ms, 7047.0);
        assert_eq!(h.buckets[0], (1.0, 2)); // 0 and 1 ms
        assert_eq!(h.buckets[2], (5.0, 4)); // and the two 3 ms
        assert_eq!(h.buckets[5], (50.0, 5)); // and 40 ms
        assert_eq!(h.buckets[11], (5000.0, 5));
        assert_eq!(*h.buckets.last().unwrap(), (f64::INFINITY, 6));
        assert_eq!(h.buckets.len(), LATENCY_BOUNDS_MS.len() + 1);
    }
}
