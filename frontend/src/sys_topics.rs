//! `$SYS/broker/...` topics, the Mosquitto convention: the broker's version, uptime, clients
//! and traffic counters, refreshed on an interval. They live in memory only, never in a log:
//! the latest value of each is handed to a new subscriber like a retained message, and each
//! refresh goes to the connected subscribers through a broadcast channel (QoS 0).

use std::sync::Mutex;
use std::time::Instant;

use bytes::Bytes;
use bytestring::ByteString;
use tokio::sync::broadcast;

use crate::codec::{Properties, QoS};
use crate::metrics::SysTotals;
use crate::record::StoredMessage;

/// Refreshes a slow subscriber may fall behind by before it skips to the newest.
const UPDATES_QUEUE: usize = 64;

/// The `$SYS` values: the latest of each topic, and the channel their refreshes go out on.
pub(crate) struct SysTopics {
    latest: Mutex<Vec<StoredMessage>>,
    updates: broadcast::Sender<StoredMessage>,
    started: Instant,
}

fn message(topic: &str, value: String) -> StoredMessage {
    StoredMessage {
        offset: 0,
        topic: ByteString::from(topic.to_owned()),
        qos: QoS::AtMostOnce,
        retain: true,
        client_id: Bytes::new(),
        properties: Properties::default(),
        expires_at: None,
        payload: Bytes::from(value),
    }
}

impl SysTopics {
    pub(crate) fn new() -> SysTopics {
        SysTopics {
            latest: Mutex::new(Vec::new()),
            updates: broadcast::channel(UPDATES_QUEUE).0,
            started: Instant::now(),
        }
    }

    /// A receiver of every refresh from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<StoredMessage> {
        self.updates.subscribe()
    }

    /// The latest values whose topic matches `filter` (a `#` or `+/...` filter matches none:
    /// `$` topics need an explicit `$SYS` first level).
    pub(crate) fn matching(&self, filter: &str) -> Vec<StoredMessage> {
        let latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        latest.iter().filter(|m| crate::topic::matches(filter, &m.topic)).cloned().collect()
    }

    /// Sets every value from `totals` and sends them to the connected subscribers.
    pub(crate) fn refresh(&self, totals: SysTotals) {
        let values = vec![
            message("$SYS/broker/version", format!("strata version {}", env!("CARGO_PKG_VERSION"))),
            message("$SYS/broker/uptime", format!("{} seconds", self.started.elapsed().as_secs())),
            message("$SYS/broker/clients/connected", totals.connected.to_string()),
            message("$SYS/broker/messages/received", totals.messages_received.to_string()),
            message("$SYS/broker/messages/sent", totals.messages_sent.to_string()),
            message("$SYS/broker/bytes/received", totals.bytes_received.to_string()),
            message("$SYS/broker/bytes/sent", totals.bytes_sent.to_string()),
        ];
        *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = values.clone();
        for value in values {
            // No receiver: nobody is connected; the latest values still wait for the next.
            let _ = self.updates.send(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_match_explicit_sys_filters_only() {
        let sys = SysTopics::new();
        let mut updates = sys.subscribe();
        sys.refresh(SysTotals { messages_received: 4, ..Default::default() });
        assert_eq!(sys.matching("$SYS/#").len(), 7);
        assert!(sys.matching("#").is_empty() && sys.matching("+/broker/version").is_empty());
        let received = sys.matching("$SYS/broker/messages/received");
        assert_eq!(&received[0].payload[..], b"4");
        assert_eq!(&updates.try_recv().unwrap().topic[..], "$SYS/broker/version");
    }
}
