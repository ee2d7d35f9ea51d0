//! The persistent sessions, as applied from the internal compacted stream `$sessions`
//! (`applied.rs`): the latest record per client id. [`SessionStore`] owns them. Every change
//! is a record written to `$sessions` that reaches the state by being applied, so a node
//! that never wrote the records holds the same sessions.
//!
//! Beside the applied state, the store keeps what only this node knows, in memory: which
//! connection has **checked out** each session it runs (a connection takes its session at
//! CONNECT and gives it back when it ends; no record says so), and how many records of each
//! client id are written but not yet applied. A session is *parked* (resumable, expirable,
//! changed by the admin API) when it is applied and not checked out. Taking a session first
//! waits until its client id has no record in flight: a client that reconnects at once reads
//! its own session's last write (read-your-write).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_log::{Record, StoredRecord};
use tokio::sync::{Notify, oneshot};

use crate::applied::{Applied, Apply};
use crate::partition::{AppendRequest, LogError, PartitionHandle};
use crate::session_state::{Owner, PendingWill, SessionState, SessionView};

/// How long taking a session waits for its client id's records in flight, at most. Each is
/// one append to `$sessions`; the bound only keeps a stuck writer from holding a CONNECT.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The sessions of `$sessions`: the latest record per client id, applied in offset order.
pub(crate) struct Sessions {
    /// A session whose record was written while its client was connected (a crash came
    /// before the disconnect, or its connection runs on another node) counts as disconnected
    /// at this node's start.
    started_at_ms: i64,
    sessions: HashMap<String, SessionState>,
}

impl Sessions {
    /// No sessions, on a node started at `started_at_ms` (unix ms).
    pub(crate) fn new(started_at_ms: i64) -> Sessions {
        Sessions { started_at_ms, sessions: HashMap::new() }
    }
}

impl Apply for Sessions {
    /// The latest record per client id wins; a tombstone (empty value) ends the session. A
    /// record that cannot be decoded is skipped with a warning.
    fn apply(&mut self, stored: StoredRecord) {
        let Some(client_id) = stored.key.as_ref().and_then(|k| std::str::from_utf8(k).ok()) else { return };
        if stored.value.is_empty() {
            self.sessions.remove(client_id);
            return;
        }
        match SessionState::decode(&stored.value) {
            Ok(mut state) => {
                if state.disconnected_at_ms == 0 {
                    state.disconnected_at_ms = self.started_at_ms;
                }
                self.sessions.insert(client_id.to_owned(), state);
            }
            Err(error) => tracing::warn!(client_id, %error, offset = stored.offset, "skipping a session record"),
        }
    }
}

/// What only this node knows about the sessions.
#[derive(Default)]
struct Overlay {
    /// Client id → the connection that runs its session now.
    checked_out: HashMap<String, u64>,
    /// Client id → its records written and not yet applied.
    in_flight: HashMap<String, usize>,
    /// Room held for new persistent sessions under `max_sessions`, by reservation token:
    /// the client id each is for.
    reserved: HashMap<u64, String>,
    next_token: u64,
}

/// Room for a persistent session under `max_sessions`, held while its connection runs
/// ([`SessionStore::reserve`]); dropping it gives the room back (by then a kept session is
/// applied, and counts by itself).
pub(crate) struct Reservation<'a> {
    store: &'a SessionStore,
    /// 0: nothing held (no limit).
    token: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.token != 0 {
            lock(&self.store.overlay).reserved.remove(&self.token);
        }
    }
}

/// The persistent sessions: applied from `$sessions`, with the connections' check-outs.
pub(crate) struct SessionStore {
    applied: Arc<Applied<Sessions>>,
    /// Locked briefly, never across an await; before the applied state when both are.
    overlay: Mutex<Overlay>,
    /// Told when a client id's last record in flight is applied.
    settled: Notify,
    /// Told when a session is parked that expires before `next_expiry_ms`, so that the
    /// expiry task (`Shared::expire_sessions_when_due`) can sleep until the earliest expiry
    /// instead of polling.
    stored: Notify,
    /// When the expiry task will next look (unix ms): `i64::MAX` when no session can
    /// expire, `i64::MIN` while it scans (then every parked session wakes it).
    next_expiry_ms: AtomicI64,
}

/// Whether `client_id` may have a persistent session under `max` sessions (issue 22): it has
/// one already (`known`: indexed, parked or connected), or fewer than `max` are `stored`.
pub(crate) fn may_store_session(max: Option<usize>, known: bool, stored: usize) -> bool {
    max.is_none_or(|max| known || stored < max)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn record(client_id: &str, state: Option<&SessionState>) -> Record {
    Record::new(now_ms(), state.map(SessionState::encode).unwrap_or_default()).with_key(client_id.as_bytes().to_vec())
}

impl SessionStore {
    /// Rebuilds the sessions from `partition` (`$sessions`) on a node started at
    /// `started_at_ms`. Blocking.
    pub(crate) fn rebuild(partition: Arc<PartitionHandle>, started_at_ms: i64) -> Result<SessionStore, LogError> {
        Ok(SessionStore {
            applied: Arc::new(Applied::rebuild(partition, Sessions::new(started_at_ms))?),
            overlay: Mutex::new(Overlay::default()),
            settled: Notify::new(),
            stored: Notify::new(),
            next_expiry_ms: AtomicI64::new(i64::MIN),
        })
    }

    /// `$sessions` itself.
    pub(crate) fn partition(&self) -> &Arc<PartitionHandle> {
        self.applied.partition()
    }

    /// Applies records of `$sessions` as they commit, until dropped.
    pub(crate) fn follow(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        Arc::clone(&self.applied).follow()
    }

    /// Checks the session of `client_id` out for connection `connection_id`, once every
    /// record of `client_id` in flight is applied: a copy of it, unless it expired (or
    /// another connection still holds it: a takeover that stopped waiting for the one it
    /// took over). The session stays checked out, hidden from the expiry task and the admin
    /// API, until [`SessionStore::release`].
    pub(crate) async fn take(&self, client_id: &str, connection_id: u64) -> Option<SessionState> {
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            {
                let mut overlay = lock(&self.overlay);
                if !overlay.in_flight.contains_key(client_id) || tokio::time::Instant::now() >= deadline {
                    let held = overlay.checked_out.insert(client_id.to_owned(), connection_id);
                    if held.is_some_and(|other| other != connection_id) {
                        return None;
                    }
                    let session = self.applied.read(|s| s.sessions.get(client_id).cloned())?;
                    return (!session.expired(now_ms())).then_some(session);
                }
            }
            let _ = tokio::time::timeout_at(deadline, settled).await;
        }
    }

    /// Holds room for a persistent session of `client_id` under `max` sessions (issue 22),
    /// or `None` when there is none: it has a session already (applied, reserved, or
    /// `connected` under that id), or fewer than `max` are applied or reserved. Checked and
    /// held under the store's lock, so CONNECTs arriving together cannot pass `max`.
    pub(crate) fn reserve(&self, client_id: &str, max: Option<usize>, connected: bool) -> Option<Reservation<'_>> {
        if max.is_none() {
            return Some(Reservation { store: self, token: 0 });
        }
        let mut overlay = lock(&self.overlay);
        let (known, stored) = self.applied.read(|s| {
            let mut pending: Vec<&String> =
                overlay.reserved.values().filter(|id| !s.sessions.contains_key(id.as_str())).collect();
            pending.sort_unstable();
            pending.dedup();
            let known = connected || s.sessions.contains_key(client_id) || pending.iter().any(|id| *id == client_id);
            (known, s.sessions.len() + pending.len())
        });
        if !may_store_session(max, known, stored) {
            return None;
        }
        overlay.next_token += 1;
        let token = overlay.next_token;
        overlay.reserved.insert(token, client_id.to_owned());
        Some(Reservation { store: self, token })
    }

    /// Gives the session of `client_id` back, if `connection_id` holds it: whatever its
    /// last record says is parked from now on.
    pub(crate) fn release(&self, client_id: &str, connection_id: u64) {
        let mut overlay = lock(&self.overlay);
        if overlay.checked_out.get(client_id) == Some(&connection_id) {
            overlay.checked_out.remove(client_id);
        }
    }

    /// Writes `state` (or a tombstone for `None`) to `$sessions` as the latest record of
    /// `client_id`, and returns once it is committed and applied (or could not be stored:
    /// logged). The connection holding the session writes it this way.
    pub(crate) async fn save(&self, client_id: &str, state: Option<&SessionState>) {
        self.write_if(client_id, false, |_| Some(state.cloned())).await;
    }

    /// Runs `change` on the parked session of `client_id`, if there is one, and writes what
    /// it returns (`Some`) as its record, like [`SessionStore::save`]. The session cannot be
    /// checked out in between: a client reconnecting meanwhile resumes the changed session.
    /// Whether a record was written.
    pub(crate) async fn update_parked(
        &self,
        client_id: &str,
        change: impl FnOnce(&mut SessionState) -> Option<Option<SessionState>>,
    ) -> bool {
        self.write_if(client_id, true, |parked| change(&mut parked?.clone())).await
    }

    /// Queues the record `decide` returns for `client_id` (given its session, when `parked`:
    /// `None` if checked out or absent), under the overlay's lock, then waits until it is
    /// applied. Whether a record was written.
    async fn write_if(
        &self,
        client_id: &str,
        parked: bool,
        decide: impl FnOnce(Option<&SessionState>) -> Option<Option<SessionState>>,
    ) -> bool {
        let Ok(permit) = self.partition().reserve().await else {
            tracing::warn!(client_id, "the $sessions writer stopped; session not saved");
            return false;
        };
        let (done, stored) = oneshot::channel();
        let state = {
            let mut overlay = lock(&self.overlay);
            let session = if parked && !overlay.checked_out.contains_key(client_id) {
                self.applied.read(|s| s.sessions.get(client_id).cloned())
            } else {
                None
            };
            if parked && session.is_none() {
                return false;
            }
            let Some(state) = decide(session.as_ref()) else { return false };
            *overlay.in_flight.entry(client_id.to_owned()).or_default() += 1;
            permit.send(AppendRequest { record: record(client_id, state.as_ref()), durable: Some(done) });
            state
        };
        if !matches!(stored.await, Ok(Ok(_))) {
            tracing::warn!(client_id, "session record not stored");
        }
        if let Err(error) = self.applied.catch_up() {
            tracing::warn!(%error, "applying $sessions records failed");
        }
        {
            let mut overlay = lock(&self.overlay);
            if let Some(count) = overlay.in_flight.get_mut(client_id) {
                *count -= 1;
                if *count == 0 {
                    overlay.in_flight.remove(client_id);
                }
            }
        }
        self.settled.notify_waiters();
        // Only a session due before the task's next look wakes it: under a churn of
        // sessions with like intervals, the task is not woken by each disconnect.
        if let Some(state) = state
            && state.disconnected_at_ms != 0
            && state.expires_at_ms().is_some_and(|at| at < self.next_expiry_ms.load(Ordering::SeqCst))
        {
            // A permit if the task is not waiting: the wake cannot be lost.
            self.stored.notify_one();
        }
        true
    }

    /// Reads the parked sessions (applied, not checked out) with `read`.
    fn read_parked<T>(&self, read: impl FnOnce(&mut dyn Iterator<Item = (&String, &SessionState)>) -> T) -> T {
        let overlay = lock(&self.overlay);
        self.applied
            .read(|s| read(&mut s.sessions.iter().filter(|(id, _)| !overlay.checked_out.contains_key(id.as_str()))))
    }

    /// A copy of the parked session of `client_id` (applied, not checked out), if any.
    fn parked(&self, client_id: &str) -> Option<SessionState> {
        let overlay = lock(&self.overlay);
        if overlay.checked_out.contains_key(client_id) {
            return None;
        }
        self.applied.read(|s| s.sessions.get(client_id).cloned())
    }

    /// Who owns the parked, unexpired session of `client_id`, if there is one.
    pub(crate) fn parked_owner(&self, client_id: &str) -> Option<Owner> {
        self.parked(client_id).filter(|session| !session.expired(now_ms())).map(|session| session.owner)
    }

    /// Whether `client_id` has a session, and how many sessions there are (connected or
    /// not, as last written).
    #[cfg(test)]
    pub(crate) fn indexed(&self, client_id: &str) -> (bool, usize) {
        self.applied.read(|s| (s.sessions.contains_key(client_id), s.sessions.len()))
    }

    /// Whether a session of `client_id` is parked.
    #[cfg(test)]
    pub(crate) fn is_parked(&self, client_id: &str) -> bool {
        self.parked(client_id).is_some()
    }

    /// Every session's client id and view, as last written.
    pub(crate) fn views(&self) -> Vec<(String, SessionView)> {
        self.applied.read(|s| s.sessions.iter().map(|(id, state)| (id.clone(), SessionView::of(state))).collect())
    }

    /// The `$share` groups some session subscribes to.
    pub(crate) fn wanted_share_groups(&self) -> Vec<String> {
        self.applied.read(|s| {
            s.sessions
                .values()
                .flat_map(|state| state.subscriptions.iter())
                .filter_map(|sub| sub.filter.strip_prefix("$share/")?.split_once('/').map(|(name, _)| name.to_owned()))
                .collect()
        })
    }

    /// The wills of parked sessions still waiting out their delay.
    pub(crate) fn pending_wills(&self) -> Vec<(String, PendingWill)> {
        self.read_parked(|parked| parked.filter_map(|(id, s)| Some((id.clone(), s.will.clone()?))).collect())
    }

    /// The parked sessions expired at `now`, and when the earliest of the others expires,
    /// if any can.
    pub(crate) fn expired(&self, now: i64) -> (Vec<String>, Option<i64>) {
        self.read_parked(|parked| {
            let mut expired = Vec::new();
            let mut next = None::<i64>;
            for (id, session) in parked {
                if session.expired(now) {
                    expired.push(id.clone());
                } else if let Some(at) = session.expires_at_ms() {
                    next = Some(next.map_or(at, |next| next.min(at)));
                }
            }
            (expired, next)
        })
    }

    /// Ends the parked session of `client_id` if it is expired at `now`: its tombstone.
    /// Whether it ended.
    pub(crate) async fn expire(&self, client_id: &str, now: i64) -> bool {
        self.update_parked(client_id, |session| session.expired(now).then_some(None)).await
    }

    /// Completes when a session due before the expiry task's next look is parked (a permit
    /// is kept if nobody waits).
    pub(crate) fn parked_sooner(&self) -> tokio::sync::futures::Notified<'_> {
        self.stored.notified()
    }

    /// Records when the expiry task looks next (see the field).
    pub(crate) fn set_next_expiry(&self, at_ms: i64) {
        self.next_expiry_ms.store(at_ms, Ordering::SeqCst);
    }

    /// Forgets the deleted stream `stream` in every parked session
    /// ([`SessionState::forget_stream`]) and writes each session it changed to `$sessions`.
    /// Each record is queued while its session is still parked, so a client that
    /// reconnects meanwhile resumes the changed session, and its own writes land after.
    /// (A connected session drops the stream with its cursors, at its next commit.)
    pub(crate) async fn forget_stream(&self, stream: &str) {
        let client_ids: Vec<String> = self.read_parked(|parked| parked.map(|(id, _)| id.clone()).collect());
        for client_id in client_ids {
            self.update_parked(&client_id, |session| session.forget_stream(stream).then(|| Some(session.clone())))
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disconnected(expiry_interval: u32, at_ms: i64) -> SessionState {
        SessionState { expiry_interval, disconnected_at_ms: at_ms, ..SessionState::default() }
    }

    fn stored(offset: u64, client_id: &str, state: Option<&SessionState>) -> StoredRecord {
        let value = state.map(SessionState::encode).unwrap_or_default();
        StoredRecord {
            offset,
            timestamp: 1,
            key: Some(client_id.as_bytes().to_vec().into()),
            value: value.into(),
            headers: Vec::new(),
        }
    }

    #[test]
    fn the_latest_record_per_client_id_wins_and_a_tombstone_ends_it() {
        let mut sessions = Sessions::new(5_000);
        let first = disconnected(60, 1_000);
        let second = disconnected(120, 2_000);
        sessions.apply(stored(0, "a", Some(&first)));
        sessions.apply(stored(1, "b", Some(&first)));
        sessions.apply(stored(2, "a", Some(&second)));
        assert_eq!(sessions.sessions.get("a"), Some(&second));
        sessions.apply(stored(3, "b", None));
        assert!(!sessions.sessions.contains_key("b"));
        sessions.apply(StoredRecord { value: b"\xffnot a session".to_vec().into(), ..stored(4, "a", None) });
        assert_eq!(sessions.sessions.get("a"), Some(&second), "a record that cannot be decoded changes nothing");
        sessions.apply(StoredRecord { key: None, ..stored(5, "a", None) });
        assert_eq!(sessions.sessions.len(), 1, "nor does a record without a key");
    }

    #[test]
    fn a_session_written_while_connected_counts_as_disconnected_at_the_start() {
        let mut sessions = Sessions::new(5_000);
        sessions.apply(stored(0, "a", Some(&disconnected(60, 0))));
        assert_eq!(sessions.sessions["a"].disconnected_at_ms, 5_000);
    }

    fn store(dir: &std::path::Path) -> (SessionStore, Arc<PartitionHandle>) {
        let partition = PartitionHandle::open_for_tests(dir, strata_log::LogConfig::default(), 0);
        (SessionStore::rebuild(Arc::clone(&partition), now_ms()).unwrap(), partition)
    }

    #[test]
    fn a_saved_session_is_applied_and_taking_it_checks_it_out_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let (store, partition) = store(dir.path());
        runtime.block_on(async {
            store.save("a", Some(&disconnected(60, now_ms()))).await;
            assert!(store.is_parked("a"), "read-your-write: parked once save returns");
            let taken = store.take("a", 1).await;
            assert!(taken.is_some());
            assert!(!store.is_parked("a"), "checked out by connection 1");
            assert_eq!(store.indexed("a"), (true, 1), "but still a session");
            assert!(store.take("a", 2).await.is_none(), "connection 1 still holds it");
            store.release("a", 1);
            assert!(!store.is_parked("a"), "connection 2 holds it now");
            store.release("a", 2);
            assert!(store.is_parked("a"));
            store.save("a", None).await;
            assert_eq!(store.indexed("a"), (false, 0), "a tombstone ends it");
        });
        let records = partition.replay(|_| {}).unwrap();
        assert_eq!(records, 2, "every save is a record of $sessions");
    }

    #[test]
    fn a_store_rebuilt_from_the_records_holds_the_same_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let (store, partition) = store(dir.path());
        runtime.block_on(async {
            store.save("kept", Some(&disconnected(60, now_ms()))).await;
            store.save("gone", Some(&disconnected(60, now_ms()))).await;
            store.save("gone", None).await;
            let _ = store.take("kept", 7).await;
        });
        // A node that wrote nothing: the same sessions, none checked out.
        let other = SessionStore::rebuild(partition, now_ms()).unwrap();
        let ids = |store: &SessionStore| {
            let mut ids: Vec<String> = store.views().into_iter().map(|(id, _)| id).collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(&other), ["kept"]);
        assert_eq!(ids(&store), ["kept"]);
        assert!(other.is_parked("kept") && !store.is_parked("kept"), "the check-out is this node's alone");
        store.release("kept", 7);
        assert_eq!(store.parked("kept"), other.parked("kept"));
    }

    #[test]
    fn parked_changes_skip_checked_out_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let (store, _partition) = store(dir.path());
        runtime.block_on(async {
            store.save("a", Some(&disconnected(60, now_ms()))).await;
            store.save("b", Some(&disconnected(60, now_ms()))).await;
            let _ = store.take("b", 1).await;
            let set = |session: &mut SessionState| {
                session.expiry_interval = 99;
                Some(Some(session.clone()))
            };
            assert!(store.update_parked("a", set).await);
            assert!(!store.update_parked("b", set).await, "b is checked out");
            assert!(!store.update_parked("c", set).await, "c has no session");
            assert_eq!(store.take("a", 2).await.map(|s| s.expiry_interval), Some(99));
        });
    }

    #[test]
    fn expired_sessions_are_listed_and_ended_and_the_earliest_left_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let (store, _partition) = store(dir.path());
        runtime.block_on(async {
            store.save("gone", Some(&disconnected(1, 1_000))).await;
            store.save("later", Some(&disconnected(10, 1_000))).await;
            store.save("never", Some(&disconnected(crate::session_state::NEVER_EXPIRES, 1_000))).await;
            assert_eq!(store.expired(5_000), (vec!["gone".to_owned()], Some(11_000)));
            assert!(store.take("gone", 1).await.is_none(), "an expired session is not resumed");
            store.release("gone", 1);
            assert!(!store.expire("later", 5_000).await, "not expired yet");
            assert!(store.expire("gone", 5_000).await);
            assert_eq!(store.indexed("gone"), (false, 2), "its tombstone is applied");
        });
    }

    #[test]
    fn max_sessions_counts_new_sessions_only() {
        assert!(may_store_session(None, false, 1_000));
        assert!(may_store_session(Some(2), false, 1));
        assert!(!may_store_session(Some(2), false, 2));
        assert!(may_store_session(Some(2), true, 2), "a session it has already");
    }

    #[test]
    fn room_for_new_sessions_is_held_until_given_back() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let (store, _partition) = store(dir.path());
        runtime.block_on(store.save("stored", Some(&disconnected(60, now_ms()))));
        let max = Some(3);
        let first = store.reserve("a", max, false).expect("1 stored + a");
        let second = store.reserve("b", max, false).expect("1 stored + a + b");
        assert!(store.reserve("c", max, false).is_none(), "a and b hold the room left");
        assert!(store.reserve("a", max, false).is_some(), "a second CONNECT of a needs no more room");
        assert!(store.reserve("stored", max, false).is_some(), "nor a stored session");
        assert!(store.reserve("live", max, true).is_some(), "nor a connected client id");
        drop(second);
        let third = store.reserve("c", max, false).expect("b gave its room back");
        runtime.block_on(store.save("c", Some(&disconnected(60, now_ms()))));
        drop(third);
        assert!(store.reserve("d", max, false).is_none(), "c's session, now stored, counts by itself");
        drop(first);
        assert!(store.reserve("d", max, false).is_some());
        assert!(store.reserve("e", None, false).is_some(), "no limit");
    }
}
