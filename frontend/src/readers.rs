//! A connection's readers: one cursor per partition it follows. Plain subscriptions follow
//! every partition of every stream (filtering by topic as they read); each `$stream`
//! subscription has its own cursors over its stream's partitions. Every cursor's position is
//! kept in the persistent session (per stream, partition and subscription).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::codec::PacketId;
use crate::partition::PartitionHandle;
use crate::record::StoredMessage;
use crate::replay::ReplaySubscription;
use crate::session::OutboundWindow;
use crate::session_state::{self, PartitionPosition};
use crate::streams::Streams;

/// Keys of `$stream` cursors start here; a plain cursor's key is its partition's id, which
/// stays below (partition ids count the partitions the broker opened).
const REPLAY_KEYS: u32 = 1 << 31;
/// The outbound window's key for a retained message, whose offset is in `$retained`: above
/// every cursor's key (replay keys stop one short of it).
pub(crate) const RETAINED_KEY: u32 = u32::MAX;

/// Where one reader stands in one partition.
pub(crate) struct Cursor {
    /// Names this cursor's positions in the outbound window (see [`REPLAY_KEYS`]).
    pub(crate) key: u32,
    pub(crate) stream: Arc<str>,
    pub(crate) partition: Arc<PartitionHandle>,
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
    /// A resumed session had read up to here. Below it only the messages in `resend` go out
    /// (again, with DUP set); the others were acknowledged before.
    pub(crate) redeliver_below: u64,
    /// Offset → packet identifier of the messages below `redeliver_below` that were in flight
    /// awaiting PUBACK or PUBREC: resent under their identifiers, which the window holds.
    pub(crate) resend: HashMap<u64, PacketId>,
    /// Whether it has read everything up to the high watermark.
    pub(crate) caught_up: bool,
    /// Whether its last read found the end of the partition. Unlike `caught_up` a wake does
    /// not clear it. Only such a cursor may jump to the lowest offset a wake reports
    /// (`interest.rs`): every matching record it had been told of is behind it.
    pub(crate) reached_end: bool,
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

/// Where a resumed reader starts in one partition, and what it resends.
pub(crate) struct Resumed {
    pub(crate) position: PartitionPosition,
    pub(crate) resend: HashMap<u64, PacketId>,
}

impl Resumed {
    /// Starts at `since`'s offsets (partition id, offset), for the partitions it lists.
    pub(crate) fn from_high_watermarks(streams: &Streams, since: &[(u32, u64)]) -> Vec<Resumed> {
        let registry = streams.registry();
        let mut starts = Vec::new();
        for stream in registry.all() {
            for partition in &stream.partitions {
                if let Some(&(_, offset)) = since.iter().find(|(id, _)| *id == partition.id) {
                    starts.push(Resumed::at(&stream.name, partition.number, offset));
                }
            }
        }
        starts
    }

    /// A start at `offset` with nothing read before.
    fn at(stream: &str, partition: u32, offset: u64) -> Resumed {
        let position = PartitionPosition {
            stream: stream.to_owned(),
            partition,
            committed: offset,
            read_up_to: 0,
            subscription: None,
        };
        Resumed { position, resend: HashMap::new() }
    }
}

/// Every cursor of a connection.
#[derive(Default)]
pub(crate) struct Readers {
    pub(crate) cursors: Vec<Cursor>,
    /// Which cursor reads first on the next pass, so that no partition starves the others.
    pub(crate) next_turn: usize,
    /// The key of the next `$stream` cursor.
    next_replay_key: u32,
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

    /// Whether some cursor is still below where a resumed session had read: it resends
    /// without needing room in the window (the window already holds those messages).
    pub(crate) fn redelivering(&self) -> bool {
        self.cursors.iter().any(|c| c.next < c.redeliver_below)
    }

    /// The key of the cursor serving `position`, if one does.
    pub(crate) fn key_of(&self, position: &PartitionPosition) -> Option<u32> {
        self.cursors
            .iter()
            .find(|c| {
                *c.stream == position.stream
                    && c.partition.number == position.partition
                    && c.replay.as_ref().map(|r| r.subscribed_as.as_str()) == position.subscription.as_deref()
            })
            .map(|c| c.key)
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

    /// Starts the plain reader on every partition of every stream: from a resumed position
    /// where `resumed` has one, else from the high watermark.
    pub(crate) fn follow_all(&mut self, streams: &Streams, resumed: &mut Vec<Resumed>) {
        if self.follows_all() {
            return;
        }
        let registry = streams.registry();
        self.generation = registry.generation();
        for stream in registry.all() {
            let name: Arc<str> = Arc::from(stream.name.as_str());
            for partition in &stream.partitions {
                let stored = resumed.iter().position(|r| {
                    r.position.subscription.is_none()
                        && r.position.stream == stream.name
                        && r.position.partition == partition.number
                });
                let start = stored.map(|i| resumed.swap_remove(i));
                self.cursors.push(Cursor::new(partition.id, Arc::clone(&name), Arc::clone(partition), None, start));
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
                let start = Resumed::at(&stream.name, partition.number, partition.offsets().log_start);
                self.cursors.push(Cursor::new(
                    partition.id,
                    Arc::clone(&name),
                    Arc::clone(partition),
                    None,
                    Some(start),
                ));
            }
        }
    }

    /// Stops the plain reader (the last plain subscription went).
    pub(crate) fn stop_following_all(&mut self) {
        self.cursors.retain(|c| c.replay.is_some());
    }

    /// Adds (or replaces, for the same filter) a `$stream` subscription: each partition from
    /// its offset, or from where a resumed session stood.
    pub(crate) fn add_replay(&mut self, replay: ReplaySubscription, starts: Vec<(Arc<PartitionHandle>, ReplayStart)>) {
        self.remove_replay(&replay.subscribed_as);
        let replay = Arc::new(replay);
        let stream: Arc<str> = Arc::from(replay.stream.as_str());
        for (partition, start) in starts {
            let key = REPLAY_KEYS | self.next_replay_key;
            self.next_replay_key = (self.next_replay_key + 1) % (REPLAY_KEYS - 1);
            debug_assert_ne!(key, RETAINED_KEY);
            let resumed = match start {
                ReplayStart::At(next) => Some(Resumed::at(&replay.stream, partition.number, next)),
                ReplayStart::Resumed(resumed) => Some(resumed),
            };
            self.cursors.push(Cursor::new(key, Arc::clone(&stream), partition, Some(Arc::clone(&replay)), resumed));
        }
    }

    /// Removes the `$stream` subscription made as `filter`; returns whether there was one.
    pub(crate) fn remove_replay(&mut self, filter: &str) -> bool {
        let before = self.cursors.len();
        self.cursors.retain(|c| c.replay.as_ref().is_none_or(|r| r.subscribed_as != filter));
        self.cursors.len() != before
    }

    /// Every cursor's position, in cursor order, for the session record: each committed
    /// offset is the cursor's lowest unacknowledged offset.
    pub(crate) fn positions(&self, window: &OutboundWindow) -> Vec<PartitionPosition> {
        self.cursors
            .iter()
            .map(|c| PartitionPosition {
                stream: c.stream.to_string(),
                partition: c.partition.number,
                committed: session_state::committed_offset(window.lowest_offset(c.key), c.next),
                read_up_to: c.next.max(c.redeliver_below),
                subscription: c.replay.as_ref().map(|r| r.subscribed_as.clone()),
            })
            .collect()
    }

    /// The committed offsets alone, to tell whether they moved since the last commit.
    pub(crate) fn committed(&self, window: &OutboundWindow) -> Vec<u64> {
        self.positions(window).into_iter().map(|p| p.committed).collect()
    }
}

/// Where a `$stream` cursor starts.
pub(crate) enum ReplayStart {
    /// At this offset, as the SUBSCRIBE asked.
    At(u64),
    /// Where a resumed session's cursor stood.
    Resumed(Resumed),
}

impl Cursor {
    fn new(
        key: u32,
        stream: Arc<str>,
        partition: Arc<PartitionHandle>,
        replay: Option<Arc<ReplaySubscription>>,
        resumed: Option<Resumed>,
    ) -> Cursor {
        let high_watermark = partition.committed();
        let (next, redeliver_below, resend) = match resumed {
            // Never past the high watermark: a stream deleted and created again under the
            // same name starts over at 0.
            Some(Resumed { position, resend }) => {
                (position.committed.min(high_watermark), position.read_up_to.min(high_watermark), resend)
            }
            None => (high_watermark, 0, HashMap::new()),
        };
        Cursor {
            key,
            stream,
            partition,
            next,
            buffered: VecDeque::new(),
            buffered_end: next,
            redeliver_below,
            resend,
            caught_up: false,
            reached_end: next == high_watermark && redeliver_below <= next,
            replay,
        }
    }
}
