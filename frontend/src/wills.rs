//! Wills waiting out their Will Delay Interval. The scheduler holds each client id's will
//! with a token; the timer that publishes it (`Shared::delay_will`) takes it back by that
//! token when due, so a will cancelled (a reconnect to the session), sent early (a clean
//! start, the session expiring) or replaced by a newer one is not sent by an older timer.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::codec::Publish;

/// A will waiting for its Will Delay Interval.
struct Waiting {
    token: u64,
    publish: Publish,
}

/// The delayed wills, by client id: at most one each.
#[derive(Default)]
pub(crate) struct WillScheduler {
    /// Locked briefly, never across an await.
    waiting: Mutex<HashMap<String, Waiting>>,
    next_token: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How long from `now_ms` until `due_at_ms` (both unix ms): nothing if already due.
pub(crate) fn delay_until(due_at_ms: i64, now_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(due_at_ms.saturating_sub(now_ms)).unwrap_or(0))
}

impl WillScheduler {
    /// Holds `publish` as `client_id`'s delayed will (replacing one held before); the token
    /// its timer takes it back with ([`WillScheduler::take_due`]).
    pub(crate) fn hold(&self, client_id: &str, publish: Publish) -> u64 {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        lock(&self.waiting).insert(client_id.to_owned(), Waiting { token, publish });
        token
    }

    /// Takes `client_id`'s will if it is still the one held under `token`: its timer is due.
    pub(crate) fn take_due(&self, client_id: &str, token: u64) -> Option<Publish> {
        let mut waiting = lock(&self.waiting);
        match waiting.get(client_id) {
            Some(will) if will.token == token => waiting.remove(client_id).map(|will| will.publish),
            _ => None,
        }
    }

    /// Takes the will still waiting for `client_id`'s Will Delay Interval, if any.
    pub(crate) fn take(&self, client_id: &str) -> Option<Publish> {
        lock(&self.waiting).remove(client_id).map(|will| will.publish)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::QoS;

    fn will(topic: &str) -> Publish {
        Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: topic.into(),
            packet_id: None,
            properties: Default::default(),
            payload: Default::default(),
        }
    }

    #[test]
    fn a_due_timer_takes_its_own_will_once() {
        let wills = WillScheduler::default();
        let token = wills.hold("c", will("w"));
        assert_eq!(wills.take_due("c", token).map(|w| w.topic.to_string()), Some("w".to_owned()));
        assert!(wills.take_due("c", token).is_none(), "sent once");
        assert!(wills.take("c").is_none());
    }

    #[test]
    fn a_taken_or_replaced_will_is_not_sent_by_the_older_timer() {
        let wills = WillScheduler::default();
        let cancelled = wills.hold("c", will("first"));
        assert_eq!(wills.take("c").map(|w| w.topic.to_string()), Some("first".to_owned()));
        assert!(wills.take_due("c", cancelled).is_none(), "taken by a reconnect");
        let old = wills.hold("c", will("second"));
        let new = wills.hold("c", will("third"));
        assert!(wills.take_due("c", old).is_none(), "replaced by a newer will");
        assert_eq!(wills.take_due("c", new).map(|w| w.topic.to_string()), Some("third".to_owned()));
    }

    #[test]
    fn the_delay_runs_to_the_due_time_and_not_below_zero() {
        assert_eq!(delay_until(1_500, 1_000), Duration::from_millis(500));
        assert_eq!(delay_until(1_000, 1_000), Duration::ZERO);
        assert_eq!(delay_until(500, 1_000), Duration::ZERO, "already due");
        assert_eq!(delay_until(i64::MIN, i64::MAX), Duration::ZERO);
    }
}
