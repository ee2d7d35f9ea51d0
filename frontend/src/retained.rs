//! The retained messages, as applied from the internal compacted stream `$retained`: the
//! latest message per topic, and the figures `max_retained_messages` and
//! `max_retained_bytes` are checked against.

use std::collections::HashMap;

use strata_log::StoredRecord;

use crate::record::{self, StoredMessage};

/// The retained messages by topic, and the sum of their payload sizes, which
/// `max_retained_bytes` is checked against.
#[derive(Default)]
pub(crate) struct Retained {
    messages: HashMap<String, StoredMessage>,
    payload_bytes: u64,
}

impl Retained {
    /// Applies one `$retained` record: the latest per topic wins, an empty payload deletes
    /// the topic.
    pub(crate) fn apply(&mut self, stored: StoredRecord) {
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

    /// Whether retaining `payload_len` bytes on `topic` stays within the limits (issue 22):
    /// replacing a topic's message frees the old one's room; clearing one always fits.
    pub(crate) fn fits(&self, topic: &str, payload_len: usize, limits: &crate::limits::Limits) -> bool {
        if payload_len == 0 {
            return true;
        }
        let old = self.messages.get(topic);
        let count = self.messages.len() + usize::from(old.is_none());
        let bytes = self.payload_bytes - old.map_or(0, |m| m.payload.len() as u64) + payload_len as u64;
        limits.max_retained_messages.is_none_or(|max| count <= max)
            && limits.max_retained_bytes.is_none_or(|max| bytes <= max)
    }

    /// The retained messages whose topic matches `filter`, by offset in `$retained`.
    pub(crate) fn matching(&self, filter: &str) -> Vec<StoredMessage> {
        let mut matching: Vec<StoredMessage> =
            self.messages.values().filter(|m| crate::topic::matches(filter, &m.topic)).cloned().collect();
        matching.sort_by_key(|m| m.offset);
        matching
    }

    /// The retained message at `offset` in `$retained`, if it is still its topic's current
    /// one (not replaced or deleted since).
    pub(crate) fn at(&self, offset: u64) -> Option<StoredMessage> {
        self.messages.values().find(|m| m.offset == offset).cloned()
    }
}
