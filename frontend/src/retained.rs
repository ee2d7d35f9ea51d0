//! The retained messages, as applied from the internal compacted stream `$retained`
//! (`applied.rs`): the latest message per topic, and the figures `max_retained_messages` and
//! `max_retained_bytes` are checked against. [`RetainedStore`] owns them: a retained publish
//! is written to `$retained` and reaches the map by being applied from there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use strata_log::{Record, StoredRecord};

use crate::applied::{Applied, Apply};
use crate::partition::{AppendError, LogError, PartitionHandle};
use crate::record::{self, StoredMessage};

/// The retained messages, applied from `$retained`.
pub(crate) struct RetainedStore {
    applied: Arc<Applied<Retained>>,
    /// Retained publishes let in under the limits and not yet applied, by token: their
    /// topic and payload length. Locked briefly, before the applied state.
    reserved: Mutex<Reserved>,
}

#[derive(Default)]
struct Reserved {
    by_token: HashMap<u64, (String, u64)>,
    next_token: u64,
}

/// Room for one retained publish under the limits ([`RetainedStore::reserve`]); dropping it
/// (once the message is applied, or was not stored) gives the room back.
pub(crate) struct RetainedReservation<'a> {
    store: &'a RetainedStore,
    /// 0: nothing held (a clear, or no limit).
    token: u64,
}

impl Drop for RetainedReservation<'_> {
    fn drop(&mut self) {
        if self.token != 0 {
            lock(&self.store.reserved).by_token.remove(&self.token);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl RetainedStore {
    /// Rebuilds the retained messages from `partition` (`$retained`). Blocking.
    pub(crate) fn rebuild(partition: Arc<PartitionHandle>) -> Result<RetainedStore, LogError> {
        Ok(RetainedStore {
            applied: Arc::new(Applied::rebuild(partition, Retained::default())?),
            reserved: Mutex::new(Reserved::default()),
        })
    }

    /// Stores a retained message (or deletes the topic's, for an empty payload) in
    /// `$retained`; once it is committed, the store shows it.
    pub(crate) async fn store(&self, record: Record) -> Result<(), AppendError> {
        self.applied.propose(record).await.map(|_| ())
    }

    /// Holds room for retaining `payload_len` bytes on `topic` within the limits (issue 22),
    /// counting the retained publishes let in before and not yet applied as if each were
    /// stored; `None` when it does not fit. Checked and held under one lock, so publishes
    /// arriving together cannot pass the limits.
    pub(crate) fn reserve(
        &self,
        topic: &str,
        payload_len: usize,
        limits: &crate::limits::Limits,
    ) -> Option<RetainedReservation<'_>> {
        let unlimited = limits.max_retained_messages.is_none() && limits.max_retained_bytes.is_none();
        if payload_len == 0 || unlimited {
            return Some(RetainedReservation { store: self, token: 0 });
        }
        let mut reserved = lock(&self.reserved);
        let fits = self.applied.read(|retained| {
            let pending = reserved.by_token.values().map(|(topic, len)| (topic.as_str(), *len));
            retained.fits(pending.chain([(topic, payload_len as u64)]), limits)
        });
        if !fits {
            return None;
        }
        reserved.next_token += 1;
        let token = reserved.next_token;
        reserved.by_token.insert(token, (topic.to_owned(), payload_len as u64));
        Some(RetainedReservation { store: self, token })
    }

    /// The retained messages whose topic matches `filter`, by offset in `$retained`.
    pub(crate) fn matching(&self, filter: &str) -> Vec<StoredMessage> {
        self.applied.read(|retained| retained.matching(filter))
    }

    /// The retained message at `offset` in `$retained`, if it is still its topic's current
    /// one.
    pub(crate) fn at(&self, offset: u64) -> Option<StoredMessage> {
        self.applied.read(|retained| retained.at(offset))
    }

    /// `$retained` itself.
    pub(crate) fn partition(&self) -> &Arc<PartitionHandle> {
        self.applied.partition()
    }

    /// Applies records of `$retained` as they commit, until dropped.
    pub(crate) fn follow(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        Arc::clone(&self.applied).follow()
    }
}

impl Apply for Retained {
    fn apply(&mut self, record: StoredRecord) {
        Retained::apply(self, record);
    }
}

/// The retained messages by topic, and the sum of their payload sizes, which
/// `max_retained_bytes` is checked against.
#[derive(Default)]
struct Retained {
    messages: HashMap<String, StoredMessage>,
    payload_bytes: u64,
}

impl Retained {
    /// Applies one `$retained` record: the latest per topic wins, an empty payload deletes
    /// the topic.
    fn apply(&mut self, stored: StoredRecord) {
        let Ok(message) = record::from_record(stored) else { return };
        let replaced = if message.payload.is_empty() {
            self.messages.remove(&message.topic[..])
        } else {
            self.payload_bytes += message.payload.len() as u64;
            self.messages.insert(message.topic.to_string(), message)
        };
        if let Some(old) = replaced {
            self.payload_bytes -= old.payload.len() as u64;
        }
    }

    /// Whether the retained messages stay within the limits once every write of `writes`
    /// (topic, payload length; none empty) is applied, in whatever order: a topic written
    /// more than once counts its largest payload.
    fn fits<'a>(&self, writes: impl Iterator<Item = (&'a str, u64)>, limits: &crate::limits::Limits) -> bool {
        let mut largest: HashMap<&str, u64> = HashMap::new();
        for (topic, len) in writes {
            let entry = largest.entry(topic).or_default();
            *entry = (*entry).max(len);
        }
        let mut count = self.messages.len();
        let mut bytes = self.payload_bytes;
        for (topic, len) in largest {
            match self.messages.get(topic) {
                Some(old) => bytes = bytes - old.payload.len() as u64 + len,
                None => {
                    count += 1;
                    bytes += len;
                }
            }
        }
        limits.max_retained_messages.is_none_or(|max| count <= max)
            && limits.max_retained_bytes.is_none_or(|max| bytes <= max)
    }

    /// The retained messages whose topic matches `filter`, by offset in `$retained`.
    fn matching(&self, filter: &str) -> Vec<StoredMessage> {
        let mut matching: Vec<StoredMessage> =
            self.messages.values().filter(|m| crate::topic::matches(filter, &m.topic)).cloned().collect();
        matching.sort_by_key(|m| m.offset);
        matching
    }

    /// The retained message at `offset` in `$retained`, if it is still its topic's current
    /// one (not replaced or deleted since).
    fn at(&self, offset: u64) -> Option<StoredMessage> {
        self.messages.values().find(|m| m.offset == offset).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retained(offset: u64, topic: &str, payload: &str) -> StoredRecord {
        let publish = crate::codec::Publish {
            dup: false,
            qos: crate::codec::QoS::AtMostOnce,
            retain: true,
            topic: topic.into(),
            packet_id: None,
            properties: crate::codec::Properties::default(),
            payload: payload.as_bytes().to_vec().into(),
        };
        let record = record::to_record(&publish, "client", 1);
        StoredRecord { offset, timestamp: 1, key: record.key, value: record.value, headers: record.headers }
    }

    #[test]
    fn applying_keeps_the_latest_per_topic_and_an_empty_payload_deletes() {
        let mut state = Retained::default();
        state.apply(retained(0, "a/1", "one"));
        state.apply(retained(1, "a/2", "two"));
        state.apply(retained(2, "a/1", "uno"));
        let topics: Vec<(String, u64)> =
            state.matching("a/#").iter().map(|m| (m.topic.to_string(), m.offset)).collect();
        assert_eq!(topics, [("a/2".to_owned(), 1), ("a/1".to_owned(), 2)]);
        assert_eq!(state.payload_bytes, 6, "the replaced payload no longer counts");
        assert!(state.at(0).is_none(), "replaced");
        assert_eq!(&state.at(2).map(|m| m.payload).unwrap_or_default()[..], b"uno");
        state.apply(retained(3, "a/2", ""));
        assert_eq!(state.matching("#").len(), 1);
        assert_eq!(state.payload_bytes, 3);
    }

    #[test]
    fn the_limits_count_a_replacement_once_and_a_deletion_always_fits() {
        let mut state = Retained::default();
        state.apply(retained(0, "t", "12345"));
        let limits =
            crate::limits::Limits { max_retained_messages: Some(1), max_retained_bytes: Some(6), ..Default::default() };
        let fits = |writes: &[(&'static str, u64)]| state.fits(writes.iter().copied(), &limits);
        assert!(fits(&[("t", 6)]), "replaces the 5 bytes");
        assert!(!fits(&[("t", 7)]));
        assert!(!fits(&[("u", 1)]), "a second topic");
        assert!(fits(&[("t", 2), ("t", 6)]), "writes to one topic count their largest");
        assert!(!fits(&[("t", 6), ("t", 7)]), "whichever is applied last");
    }

    #[test]
    fn room_is_held_for_publishes_let_in_until_given_back() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let partition = PartitionHandle::open_for_tests(dir.path(), strata_log::LogConfig::default(), 0);
        let store = RetainedStore::rebuild(partition).unwrap();
        let limits = crate::limits::Limits {
            max_retained_messages: Some(2),
            max_retained_bytes: Some(10),
            ..Default::default()
        };
        let a = store.reserve("a", 4, &limits).expect("room for a");
        let b = store.reserve("b", 4, &limits).expect("room for b");
        assert!(store.reserve("c", 1, &limits).is_none(), "a and b hold both messages");
        assert!(store.reserve("a", 6, &limits).is_some(), "a again: 6 + 4 bytes");
        assert!(store.reserve("a", 7, &limits).is_none(), "7 + 4 bytes");
        assert!(store.reserve("c", 0, &limits).is_some(), "clearing always fits");
        drop(b);
        let record = retained(0, "a", "1234");
        let record =
            Record { timestamp: record.timestamp, key: record.key, value: record.value, headers: record.headers };
        runtime.block_on(store.store(record)).unwrap();
        drop(a);
        assert!(store.reserve("c", 6, &limits).is_some(), "a is stored and counts once");
        assert!(store.reserve("c", 7, &limits).is_none());
    }

    #[test]
    fn a_store_shows_its_own_write_and_a_rebuild_finds_the_same_messages() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let partition = PartitionHandle::open_for_tests(dir.path(), strata_log::LogConfig::default(), 0);
        let store = RetainedStore::rebuild(Arc::clone(&partition)).unwrap();
        let record = |topic: &str, payload: &str| {
            let r = retained(0, topic, payload);
            Record { timestamp: r.timestamp, key: r.key, value: r.value, headers: r.headers }
        };
        runtime.block_on(async {
            store.store(record("x", "1")).await.unwrap();
            assert_eq!(store.matching("x").len(), 1, "applied before store returns");
            store.store(record("y", "2")).await.unwrap();
            store.store(record("x", "")).await.unwrap();
        });
        let topics =
            |store: &RetainedStore| store.matching("#").iter().map(|m| m.topic.to_string()).collect::<Vec<_>>();
        assert_eq!(topics(&store), ["y"]);
        let rebuilt = RetainedStore::rebuild(partition).unwrap();
        assert_eq!(topics(&rebuilt), topics(&store));
        assert_eq!(rebuilt.at(1).map(|m| m.offset), Some(1));
    }
}
