//! Which client ids are connected now, and taking a session over: the registry a CONNECT
//! registers its client id in, which tells an older connection with the same id to go and
//! hands the newer one that connection's "finished" signal. In memory only: a connection is
//! a fact of this node, not of the log.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::oneshot;

use crate::session_state::Owner;

/// A connected client's handle, kept so a newer connection can take its session over.
struct Connected {
    connection_id: u64,
    /// Its verified user (`None`: anonymous): only the same user may take it over (issue 22).
    user: Option<String>,
    take_over: oneshot::Sender<()>,
    /// Completes (its sender is dropped) once that connection has saved its session and
    /// scheduled its will, so the newer one reads the session after it.
    finished: oneshot::Receiver<()>,
}

/// What a new connection holds while it runs; dropping it tells a newer connection with the
/// same client id that this one has finished.
pub(crate) struct Registration {
    pub(crate) connection_id: u64,
    pub(crate) taken_over: oneshot::Receiver<()>,
    pub(crate) previous_finished: Option<oneshot::Receiver<()>>,
    pub(crate) _finished: oneshot::Sender<()>,
}

/// The connected client ids.
#[derive(Default)]
pub(crate) struct ClientRegistry {
    /// Locked briefly, never across an await.
    connected: Mutex<HashMap<String, Connected>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ClientRegistry {
    /// Registers `client_id` for connection `connection_id` of `user` (`None`: anonymous);
    /// an older connection with the same id is told to go, and the registration carries
    /// that connection's `finished` signal. `None`, with nothing changed, when the id belongs
    /// to another user: its connection or its stored session (`stored_owner`, looked at
    /// under this registry's lock) is theirs (issue 22). A connection saves its session
    /// before it unregisters, so one of the two always shows the owner.
    pub(crate) fn register(
        &self,
        client_id: &str,
        user: Option<&str>,
        connection_id: u64,
        stored_owner: impl FnOnce() -> Option<Owner>,
    ) -> Option<Registration> {
        let mut connected = lock(&self.connected);
        let live = connected.get(client_id).map(|c| Owner::User(c.user.clone()));
        let stored = stored_owner();
        if !crate::session_state::may_claim(user, live.as_ref(), stored.as_ref()) {
            return None;
        }
        let (take_over, taken_over) = oneshot::channel();
        let (finished_tx, finished) = oneshot::channel();
        let previous = connected.insert(
            client_id.to_owned(),
            Connected { connection_id, user: user.map(str::to_owned), take_over, finished },
        );
        drop(connected);
        let previous_finished = previous.map(|previous| {
            let _ = previous.take_over.send(());
            previous.finished
        });
        Some(Registration { connection_id, taken_over, previous_finished, _finished: finished_tx })
    }

    /// Forgets `client_id` if `connection_id` still holds it.
    pub(crate) fn unregister(&self, client_id: &str, connection_id: u64) {
        let mut connected = lock(&self.connected);
        if connected.get(client_id).is_some_and(|c| c.connection_id == connection_id) {
            connected.remove(client_id);
        }
    }

    /// Whether a connection holds `client_id` now.
    pub(crate) fn is_connected(&self, client_id: &str) -> bool {
        lock(&self.connected).contains_key(client_id)
    }

    /// Runs `read` with a test of "is this client id connected", all under one look at the
    /// registry.
    pub(crate) fn read<T>(&self, read: impl FnOnce(&dyn Fn(&str) -> bool) -> T) -> T {
        let connected = lock(&self.connected);
        read(&|id| connected.contains_key(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Option<Owner> {
        Some(Owner::User(Some(name.to_owned())))
    }

    #[test]
    fn a_second_connection_takes_the_first_over_and_waits_for_it() {
        let registry = ClientRegistry::default();
        let mut first = registry.register("c", Some("u"), 1, || None).unwrap();
        assert!(first.previous_finished.is_none());
        assert!(registry.is_connected("c"));
        let second = registry.register("c", Some("u"), 2, || None).unwrap();
        assert_eq!(first.taken_over.try_recv(), Ok(()), "the first is told to go");
        let mut previous = second.previous_finished.unwrap();
        assert!(previous.try_recv().is_err(), "the first has not finished yet");
        drop(first._finished);
        assert!(matches!(previous.try_recv(), Err(oneshot::error::TryRecvError::Closed)));
        // The first one's unregister, coming late, leaves the second registered.
        registry.unregister("c", 1);
        assert!(registry.is_connected("c"));
        registry.unregister("c", 2);
        assert!(!registry.is_connected("c"));
    }

    #[test]
    fn another_users_connection_or_stored_session_is_not_claimed() {
        let registry = ClientRegistry::default();
        let first = registry.register("c", Some("alice"), 1, || None).unwrap();
        assert!(registry.register("c", Some("bob"), 2, || None).is_none(), "alice's connection");
        assert!(registry.register("c", None, 3, || None).is_none(), "anonymous may not take it either");
        assert!(registry.read(|connected| connected("c")));
        registry.unregister("c", first.connection_id);
        assert!(registry.register("d", Some("bob"), 4, || user("alice")).is_none(), "alice's stored session");
        assert!(!registry.is_connected("d"), "a refused registration changes nothing");
        assert!(registry.register("d", Some("alice"), 5, || user("alice")).is_some());
    }
}
