//! A connection's readers: one cursor per partition it follows. Plain subscriptions follow
//! every partition of every stream (filtering by topic as they read); each `$stream`
//! subscription has its own cursors over its stream's partitions. Only the plain cursors'
//! positions are kept in the persistent session (per stream and partition).

use std::collections::VecDeque;
use std::sync::Arc;

use crate::record::StoredMessage;
use crate::replay::ReplaySubscription;
use crate::session::OutboundWindow;
use crate::session_state::{self, PartitionPosition};
use crate::streams::{Partition, Streams};

/// Where one reader stands in one partition.
pub(crate) struct Cursor {
    pub(crate) stream: Arc<str>,
    pub(crate) partition: Arc<Partition>,
    /// The next offset to deliver: every record below it was delivered or skipped.
    pub(crate) next: u64,
    /// Records at or after `next` already read and decoded but not yet delivered (the window
    /// was full or enough bytes waited to be written), in offset order: the rest of one fetch
    /// at most, sharing the log's bytes. An acknowledgement that frees a slot takes the next
    /// one from here instead of reading and decoding the log again from `next`.
    pub(crate) buffered: VecDeque<BufferedRecord>,
    /// The offset after the fetch `buffered` came from: where the next read starts once
    /// `buffered` is drained.
    pub(crate) buffered_end: u64,
    /// A resumed session had read up to here: QoS 1/2 messages below go out with DUP set.
    pub(crate) redeliver_below: u64,
    /// Whether it has read everything up to the high watermark.
    pub(crate) caught_up: bool,
    /// The `$stream` subscription it serves; `None` for the plain subscriptions' reader.
    pub(crate) replay: Option<Arc<ReplaySubscription>>,
}

/// One record read ahead by a cursor: its offset, its timestamp and the message it holds
/// (`None` when the record is not an MQTT message and is skipped).
pub(crate) struct BufferedRecord {
    pub(crate) offset: u64,
    pub(crate) timestamp: i64,
    pub(crate) message: Option<StoredMessage>,
}

/// Every cursor of a connection.
#[derive(Default)]
pub(crate) struct Readers {
    pub(crate) cursors: Vec<Cursor>,
    /// Which cursor reads first on the next pass, so that no partition starves the others.
    pub(crate) next_turn: usize,
    /// The streams' generation the cursors were last matched against ([`Readers::refresh`]).
    generation: u64,
}

impl Readers {
    /// Whether nothing is followed.
    pub(crate) fn is_empty(&self) -> bool {
        self.cursors.is_empty()
    }

    /// Whether the plain subscriptions' reader runs.
    pub(crate) fn follows_all(&self) -> bool {
        self.cursors.iter().any(|c| c.replay.is_none())
    }

    /// Whether every cursor has read up to its partition's high watermark.
    pub(crate) fn all_caught_up(&self) -> bool {
        self.cursors.iter().all(|c| c.caught_up)
    }

    /// New data may have arrived somewhere: every cursor looks again.
    pub(crate) fn wake(&mut self) {
        for cursor in &mut self.cursors {
            cursor.caught_up = false;
        }
    }

    /// Starts the plain reader on every partition of every stream: from a stored position
    /// where `positions` has one, else from the high watermark.
    pub(crate) fn follow_all(&mut self, streams: &Streams, positions: &[PartitionPosition]) {
        if self.follows_all() {
            return;
        }
        let registry = streams.registry();
        self.generation = registry.generation();
        for stream in registry.all() {
            let name: Arc<str> = Arc::from(stream.name.as_str());
            for partition in &stream.partitions {
                let stored = positions.iter().find(|p| p.stream == stream.name && p.partition == partition.number);
                let (next, redeliver_below) = match stored {
                    // Never past the high watermark: a stream deleted and created again
                    // under the same name starts over at 0.
                    Some(position) => {
                        let high_watermark = partition.log.offsets().high_watermark;
                        (position.committed.min(high_watermark), position.read_up_to.min(high_watermark))
                    }
                    None => (partition.log.offsets().high_watermark, 0),
                };
                self.cursors.push(Cursor {
                    stream: Arc::clone(&name),
                    partition: Arc::clone(partition),
                    next,
                    buffered: VecDeque::new(),
                    buffered_end: next,
                    redeliver_below,
                    caught_up: false,
                    replay: None,
                });
            }
        }
    }

    /// Follows the streams created, altered or deleted since the cursors were made: the plain
    /// reader also reads new partitions, from their start (everything in them came after it
    /// started following); cursors of deleted partitions go, so a deleted stream's
    /// `$stream` subscriptions end without an error. Cheap when nothing changed.
    pub(crate) fn refresh(&mut self, streams: &Streams) {
        if streams.generation() == self.generation {
            return;
        }
        let registry = streams.registry();
        self.generation = registry.generation();
        let live: std::collections::HashSet<u32> =
            registry.all().iter().flat_map(|s| s.partitions.iter().map(|p| p.id)).collect();
        self.cursors.retain(|c| live.contains(&c.partition.id));
        if !self.follows_all() {
            return;
        }
        let followed: std::collections::HashSet<u32> =
            self.cursors.iter().filter(|c| c.replay.is_none()).map(|c| c.partition.id).collect();
        for stream in registry.all() {
            let name: Arc<str> = Arc::from(stream.name.as_str());
            for partition in stream.partitions.iter().filter(|p| !followed.contains(&p.id)) {
                let next = partition.log.offsets().log_start;
                self.cursors.push(Cursor {
                    stream: Arc::clone(&name),
                    partition: Arc::clone(partition),
                    next,
                    buffered: VecDeque::new(),
                    buffered_end: next,
                    redeliver_below: 0,
                    caught_up: false,
                    replay: None,
                });
            }
        }
    }

    /// Stops the plain reader (the last plain subscription went).
    pub(crate) fn stop_following_all(&mut self) {
        self.cursors.retain(|c| c.replay.is_some());
    }

    /// Adds (or replaces, for the same filter) a `$stream` subscription starting at `starts`.
    pub(crate) fn add_replay(&mut self, replay: ReplaySubscription, starts: Vec<(Arc<Partition>, u64)>) {
        self.remove_replay(&replay.subscribed_as);
        let replay = Arc::new(replay);
        let stream: Arc<str> = Arc::from(replay.stream.as_str());
        for (partition, next) in starts {
            self.cursors.push(Cursor {
                stream: Arc::clone(&stream),
                partition,
                next,
                buffered: VecDeque::new(),
                buffered_end: next,
                redeliver_below: 0,
                caught_up: false,
                replay: Some(Arc::clone(&replay)),
            });
        }
    }

    /// Removes the `$stream` subscription made as `filter`; returns whether there was one.
    pub(crate) fn remove_replay(&mut self, filter: &str) -> bool {
        let before = self.cursors.len();
        self.cursors.retain(|c| c.replay.as_ref().is_none_or(|r| r.subscribed_as != filter));
        self.cursors.len() != before
    }

    /// The plain reader's positions, for the session record: each partition's committed
    /// offset is its lowest unacknowledged offset.
    pub(crate) fn positions(&self, window: &OutboundWindow) -> Vec<PartitionPosition> {
        self.cursors
            .iter()
            .filter(|c| c.replay.is_none())
            .map(|c| PartitionPosition {
                stream: c.stream.to_string(),
                partition: c.partition.number,
                committed: session_state::committed_offset(window.lowest_offset(c.partition.id), c.next),
                read_up_to: c.next.max(c.redeliver_below),
            })
            .collect()
    }

    /// The committed offsets alone, to tell whether they moved since the last commit.
    pub(crate) fn committed(&self, window: &OutboundWindow) -> Vec<u64> {
        self.positions(window).into_iter().map(|p| p.committed).collect()
    }
}
