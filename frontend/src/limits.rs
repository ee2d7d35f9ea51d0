//! Per-broker and per-connection limits from `[mqtt]`: how many connections, how long and deep
//! a topic may be, the Server Keep Alive cap and our Topic Alias Maximum. It also owns the
//! count of open connections that `max_connections` is checked against.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::topic::TopicLimits;

/// Limits announced to or enforced on every client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most connections open at once (TCP and WebSocket together); `None`: no limit. A client
    /// beyond it gets CONNACK 0x97 Quota Exceeded (MQTT 5) or 0x03 Server Unavailable (3.1.1).
    pub max_connections: Option<usize>,
    /// Longest topic name or filter, in bytes.
    pub max_topic_length: usize,
    /// Longest client id, in bytes; a longer one gets CONNACK 0x85 Client Identifier not
    /// valid (MQTT 5) or 0x02 Identifier rejected (3.1.1).
    pub max_client_id_length: usize,
    /// Most `/`-separated levels in a topic name or filter.
    pub max_topic_levels: usize,
    /// Server Keep Alive: the longest keep alive an MQTT 5 client gets, in seconds, announced
    /// in CONNACK when it lowers the client's (a client's 0, no keep alive, is raised to it).
    /// `None`: the client's keep alive is used as sent.
    pub max_keep_alive: Option<u16>,
    /// Our Topic Alias Maximum, announced in the MQTT 5 CONNACK; 0 refuses topic aliases.
    pub topic_alias_maximum: u16,
    /// How many offsets a live reader whose subscriptions are all QoS 0 may fall behind a
    /// partition's high watermark before it skips ahead to half that far behind (the skipped
    /// offsets are counted).
    /// `None`: never skip.
    pub qos0_max_lag: Option<u64>,
}

/// Default [`Limits::max_client_id_length`]: well above generated ids (UUIDs are 36 bytes)
/// and MQTT 3.1's own 23, far below the 65,535 the encoding allows.
pub const DEFAULT_MAX_CLIENT_ID_LENGTH: usize = 256;

/// Default [`Limits::qos0_max_lag`]: 100,000 messages of 100 bytes are 10 MB behind.
pub const DEFAULT_QOS0_MAX_LAG: u64 = 100_000;

impl Default for Limits {
    fn default() -> Self {
        let topics = TopicLimits::default();
        Limits {
            max_connections: None,
            max_topic_length: topics.max_length,
            max_client_id_length: DEFAULT_MAX_CLIENT_ID_LENGTH,
            max_topic_levels: topics.max_levels,
            max_keep_alive: None,
            topic_alias_maximum: 64,
            qos0_max_lag: Some(DEFAULT_QOS0_MAX_LAG),
        }
    }
}

impl Limits {
    /// The topic limits for [`crate::topic`]'s checks.
    pub fn topics(&self) -> TopicLimits {
        TopicLimits { max_length: self.max_topic_length, max_levels: self.max_topic_levels }
    }

    /// The keep alive a client gets, and whether it differs from what the client asked (so
    /// CONNACK must announce it as Server Keep Alive).
    pub fn keep_alive(&self, requested: u16) -> (u16, bool) {
        match self.max_keep_alive {
            Some(max) if requested == 0 || requested > max => (max, true),
            _ => (requested, false),
        }
    }
}

/// The number of open connections. A [`ConnectionSlot`] holds one until dropped.
#[derive(Debug, Default)]
pub(crate) struct ConnectionCount {
    open: AtomicUsize,
}

/// One counted connection.
pub(crate) struct ConnectionSlot<'a> {
    count: &'a ConnectionCount,
}

impl ConnectionCount {
    /// Takes a slot, unless `max` are already open.
    pub(crate) fn try_acquire(&self, max: Option<usize>) -> Option<ConnectionSlot<'_>> {
        let max = max.unwrap_or(usize::MAX);
        self.open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| (open < max).then_some(open + 1)).ok()?;
        Some(ConnectionSlot { count: self })
    }
}

impl Drop for ConnectionSlot<'_> {
    fn drop(&mut self) {
        self.count.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_given_back() {
        let count = ConnectionCount::default();
        let first = count.try_acquire(Some(2)).expect("first");
        let second = count.try_acquire(Some(2)).expect("second");
        assert!(count.try_acquire(Some(2)).is_none());
        drop(first);
        assert!(count.try_acquire(Some(2)).is_some());
        drop(second);
        assert!(count.try_acquire(None).is_some());
    }

    #[test]
    fn keep_alive_is_capped_and_zero_raised() {
        let limits = Limits { max_keep_alive: Some(60), ..Limits::default() };
        assert_eq!(limits.keep_alive(30), (30, false));
        assert_eq!(limits.keep_alive(600), (60, true));
        assert_eq!(limits.keep_alive(0), (60, true));
        assert_eq!(Limits::default().keep_alive(0), (0, false));
    }
}
