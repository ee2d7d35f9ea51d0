//! Graceful shutdown: a flag every connection watches (it then sends DISCONNECT 0x8B Server
//! shutting down to an MQTT 5 client and ends), and a count of running connection tasks the
//! broker waits on, for a bounded time, before it closes the logs.

use std::time::Duration;

use tokio::sync::watch;

use crate::watched::modify_and_notify_watchers;

/// Shared by the broker and its connections.
pub(crate) struct ShutdownState {
    stopping: watch::Sender<bool>,
    active: std::sync::Arc<watch::Sender<usize>>,
}

impl ShutdownState {
    pub(crate) fn new() -> ShutdownState {
        ShutdownState { stopping: watch::channel(false).0, active: std::sync::Arc::new(watch::channel(0).0) }
    }

    /// Tells every connection to end.
    pub(crate) fn begin(&self) {
        self.stopping.send_replace(true);
    }

    /// A receiver whose value turns `true` when shutdown begins.
    pub(crate) fn subscribe(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Counts a running connection task until the guard is dropped.
    pub(crate) fn track(&self) -> ActiveConnection {
        // Only `wait_idle` watches the count, at shutdown; connects and disconnects skip the
        // notify the rest of the time.
        modify_and_notify_watchers(&self.active, |n| *n += 1);
        ActiveConnection { active: std::sync::Arc::clone(&self.active) }
    }

    /// Waits until no connection task runs, or `limit`; returns how many still run.
    pub(crate) async fn wait_idle(&self, limit: Duration) -> usize {
        let mut active = self.active.subscribe();
        let _ = tokio::time::timeout(limit, active.wait_for(|n| *n == 0)).await;
        *active.borrow()
    }
}

/// One running connection task.
pub(crate) struct ActiveConnection {
    active: std::sync::Arc<watch::Sender<usize>>,
}

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        modify_and_notify_watchers(&self.active, |n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_tracked_connections() {
        let state = ShutdownState::new();
        let mut stopping = state.subscribe();
        let guard = state.track();
        assert_eq!(state.wait_idle(Duration::from_millis(1)).await, 1);
        state.begin();
        assert!(*stopping.borrow_and_update());
        drop(guard);
        assert_eq!(state.wait_idle(Duration::from_secs(5)).await, 0);
    }
}
