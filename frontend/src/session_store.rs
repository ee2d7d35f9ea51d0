//! The persistent sessions: written to the internal compacted stream `$sessions`, rebuilt
//! from it at start (`broker.rs`). The store holds the disconnected sessions ("parked": a
//! connection takes its session out while it runs and puts it back when it ends) and an
//! index of every session's filters and positions as last written (connected or not), for
//! the admin API, the lag metrics and `max_sessions`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use strata_log::Record;
use tokio::sync::{Notify, oneshot};

use crate::partition::{AppendRequest, PartitionHandle};
use crate::session_state::{Owner, PendingWill, SessionState, SessionView};

/// The sessions of `$sessions`.
pub(crate) struct SessionStore {
    partition: Arc<PartitionHandle>,
    /// Disconnected persistent sessions. Locked briefly, never across an await.
    parked: Mutex<HashMap<String, SessionState>>,
    /// Every persistent session's filters and positions as last written.
    index: Mutex<HashMap<String, SessionView>>,
    /// Told when a session is parked that expires before `next_expiry_ms`, so that the
    /// expiry task (`Shared::expire_sessions_when_due`) can sleep until the earliest expiry
    /// instead of polling.
    stored: Notify,
    /// When the expiry task will next look (unix ms): `i64::MAX` when no session can
    /// expire, `i64::MIN` while it scans (then every parked session wakes it).
    next_expiry_ms: AtomicI64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl SessionStore {
    /// The store of `partition` (`$sessions`) holding `sessions`, as rebuilt from it.
    pub(crate) fn new(partition: Arc<PartitionHandle>, sessions: HashMap<String, SessionState>) -> SessionStore {
        SessionStore {
            partition,
            index: Mutex::new(sessions.iter().map(|(id, state)| (id.clone(), SessionView::of(state))).collect()),
            parked: Mutex::new(sessions),
            stored: Notify::new(),
            next_expiry_ms: AtomicI64::new(i64::MIN),
        }
    }

    /// `$sessions` itself.
    pub(crate) fn partition(&self) -> &Arc<PartitionHandle> {
        &self.partition
    }

    /// Takes the disconnected session of `client_id` out of the store, unless it expired.
    pub(crate) fn take(&self, client_id: &str) -> Option<SessionState> {
        let session = lock(&self.parked).remove(client_id)?;
        (!session.expired(now_ms())).then_some(session)
    }

    /// Who owns the parked, unexpired session of `client_id`, if there is one.
    pub(crate) fn parked_owner(&self, client_id: &str) -> Option<Owner> {
        lock(&self.parked).get(client_id).filter(|session| !session.expired(now_ms())).map(|s| s.owner.clone())
    }

    /// Whether `client_id` has a session in the index, and how many the index holds.
    pub(crate) fn indexed(&self, client_id: &str) -> (bool, usize) {
        let index = lock(&self.index);
        (index.contains_key(client_id), index.len())
    }

    /// Whether a session of `client_id` is parked.
    pub(crate) fn is_parked(&self, client_id: &str) -> bool {
        lock(&self.parked).contains_key(client_id)
    }

    /// Every session's client id and view.
    pub(crate) fn views(&self) -> Vec<(String, SessionView)> {
        lock(&self.index).iter().map(|(id, view)| (id.clone(), view.clone())).collect()
    }

    /// The `$share` groups some session subscribes to.
    pub(crate) fn wanted_share_groups(&self) -> Vec<String> {
        lock(&self.index)
            .values()
            .flat_map(|view| view.filters.iter())
            .filter_map(|filter| filter.strip_prefix("$share/")?.split_once('/').map(|(name, _)| name.to_owned()))
            .collect()
    }

    /// Runs `change` on the parked session of `client_id`, if there is one.
    pub(crate) fn update_parked<T>(&self, client_id: &str, change: impl FnOnce(&mut SessionState) -> T) -> Option<T> {
        lock(&self.parked).get_mut(client_id).map(change)
    }

    /// The wills of parked sessions still waiting out their delay.
    pub(crate) fn pending_wills(&self) -> Vec<(String, PendingWill)> {
        lock(&self.parked)
            .iter()
            .filter_map(|(client_id, session)| Some((client_id.clone(), session.will.clone()?)))
            .collect()
    }

    /// Takes the parked sessions expired at `now` out; returns their client ids and when
    /// the earliest of those left expires, if any can.
    pub(crate) fn take_expired(&self, now: i64) -> (Vec<String>, Option<i64>) {
        let mut parked = lock(&self.parked);
        let ids: Vec<String> = parked.iter().filter(|(_, s)| s.expired(now)).map(|(id, _)| id.clone()).collect();
        for id in &ids {
            parked.remove(id);
        }
        (ids, parked.values().filter_map(SessionState::expires_at_ms).min())
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

    /// Writes `state` (or a tombstone for `None`) to `$sessions` as the latest record of
    /// `client_id`; with `durable`, waits until it is durable. A disconnected session is also
    /// parked.
    pub(crate) async fn save(&self, client_id: &str, state: Option<&SessionState>, durable: bool) {
        let value = state.map(SessionState::encode).unwrap_or_default();
        let record = Record::new(now_ms(), value).with_key(client_id.as_bytes().to_vec());
        {
            let mut index = lock(&self.index);
            match state {
                Some(state) => index.insert(client_id.to_owned(), SessionView::of(state)),
                None => index.remove(client_id),
            };
        }
        let (tx, rx) = if durable {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        if self.partition.send(AppendRequest { record, durable: tx }).await.is_err() {
            tracing::warn!(client_id, "the $sessions writer stopped; session not saved");
            return;
        }
        if let Some(rx) = rx
            && !matches!(rx.await, Ok(Ok(_)))
        {
            tracing::warn!(client_id, "session record not stored");
        }
        if let Some(state) = state
            && state.disconnected_at_ms != 0
        {
            lock(&self.parked).insert(client_id.to_owned(), state.clone());
            // Only a session due before the task's next look wakes it: under a churn of
            // sessions with like intervals, the task is not woken by each disconnect.
            if state.expires_at_ms().is_some_and(|at| at < self.next_expiry_ms.load(Ordering::SeqCst)) {
                // A permit if the task is not waiting: the wake cannot be lost.
                self.stored.notify_one();
            }
        }
    }

    /// Forgets the deleted stream `stream` in every parked session
    /// ([`SessionState::forget_stream`]) and writes each session it changed to `$sessions`,
    /// durably. Each record is queued while its session is still parked, so a client that
    /// reconnects meanwhile resumes the changed session, and its own writes land after.
    /// (A connected session drops the stream with its cursors, at its next commit.)
    pub(crate) async fn forget_stream(&self, stream: &str) {
        let client_ids: Vec<String> = lock(&self.parked).keys().cloned().collect();
        for client_id in client_ids {
            let Ok(permit) = self.partition.reserve().await else {
                tracing::warn!(stream, "the $sessions writer stopped; sessions not saved");
                return;
            };
            let (durable, stored) = oneshot::channel();
            let view = {
                let mut parked = lock(&self.parked);
                let Some(state) = parked.get_mut(&client_id) else { continue };
                if !state.forget_stream(stream) {
                    continue;
                }
                let record = Record::new(now_ms(), state.encode()).with_key(client_id.as_bytes().to_vec());
                permit.send(AppendRequest { record, durable: Some(durable) });
                SessionView::of(state)
            };
            lock(&self.index).insert(client_id.clone(), view);
            if !matches!(stored.await, Ok(Ok(_))) {
                tracing::warn!(client_id, stream, "session record not stored after the stream was deleted");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disconnected(expiry_interval: u32, at_ms: i64) -> SessionState {
        SessionState { expiry_interval, disconnected_at_ms: at_ms, ..SessionState::default() }
    }

    #[test]
    fn a_saved_disconnected_session_is_parked_and_indexed_and_taking_it_unparks_it() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let partition = PartitionHandle::open_for_tests(dir.path(), strata_log::LogConfig::default(), 0);
        let store = SessionStore::new(Arc::clone(&partition), HashMap::new());
        let connected = SessionState { expiry_interval: 60, ..SessionState::default() };
        runtime.block_on(async {
            store.save("a", Some(&connected), true).await;
            store.save("b", Some(&disconnected(60, now_ms())), true).await;
        });
        assert_eq!(store.indexed("a"), (true, 2), "a connected session is indexed");
        assert!(!store.is_parked("a"), "but not parked: its connection holds it");
        assert!(store.is_parked("b"));
        assert!(store.take("b").is_some());
        assert!(!store.is_parked("b") && store.take("b").is_none());
        runtime.block_on(store.save("b", None, true));
        assert_eq!(store.indexed("b"), (false, 1), "a tombstone leaves the index");
        let stored = partition.replay(|_| {}).unwrap();
        assert_eq!(stored, 3, "every save is a record of $sessions");
    }

    #[test]
    fn expired_sessions_are_taken_out_and_the_earliest_left_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let partition = PartitionHandle::open_for_tests(dir.path(), strata_log::LogConfig::default(), 0);
        let sessions = HashMap::from([
            ("gone".to_owned(), disconnected(1, 1_000)),
            ("later".to_owned(), disconnected(10, 1_000)),
            ("never".to_owned(), disconnected(crate::session_state::NEVER_EXPIRES, 1_000)),
        ]);
        let store = SessionStore::new(partition, sessions);
        assert_eq!(store.take_expired(5_000), (vec!["gone".to_owned()], Some(11_000)));
        assert!(store.take("gone").is_none());
        assert_eq!(store.indexed("gone"), (true, 3), "the index keeps it until its tombstone is saved");
    }
}
