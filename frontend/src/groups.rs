//! Shared subscriptions (`$share/<group>/<filter>`) as consumer groups. A group is held by
//! the broker, not by a session: one cursor per (stream, partition), shared by its members.
//! One task per group reads the log from those cursors, filters by the group's filter and
//! hands each matching message to exactly one member, round-robin among the connected
//! members that have room (each member has a bounded queue the size of its window). A
//! message stays pending in the group until that member acknowledges it (PUBACK, PUBCOMP; a
//! QoS 0 delivery counts as acknowledged once queued); a member that leaves (disconnect,
//! UNSUBSCRIBE) gives its pending messages back, and they are redelivered to another member
//! first, with DUP set. A partition's committed offset is its lowest pending (or
//! to-be-redelivered) offset, else the cursor; it is written to the internal compacted stream
//! `$offsets` (key `<group>/<stream>/<partition>`) on an interval and when a member
//! disconnects, and read back at start.
//!
//! [`GroupState`] holds the decisions (membership, round-robin, pending offsets); the
//! [`Group`] shell adds the log, the members' queues and the task.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_log::Record;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::partition_writer::AppendRequest;
use crate::record::{self, StoredMessage};
use crate::streams::{Partition, Streams};

/// One partition of a group as [`Group::snapshot`] reads it: stream name, partition number,
/// committed offset, the partition's offsets.
pub(crate) type PartitionSnapshot = (Arc<str>, u32, u64, strata_log::LogOffsets);

/// A member of a group, unique within the broker's run.
pub type MemberId = u64;

/// How often a group's committed offsets are written to `$offsets` while they move.
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// Bytes read from the log per fetch by a group.
const FETCH_BYTES: usize = 256 << 10;
/// Most messages handed out per pass before the group task yields to others.
const DISPATCH_BATCH: usize = 256;
/// Largest member queue, whatever its window.
const MAX_MEMBER_QUEUE: usize = 1024;
/// Version byte of a `$offsets` value.
const OFFSETS_VERSION: u8 = 1;

/// One partition of a group: where its cursor stands and what is handed out but not done.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionState {
    /// The next offset to read: everything below was handed out or skipped.
    pub next: u64,
    /// Offsets handed to a member and not yet acknowledged, with that member.
    pending: BTreeMap<u64, MemberId>,
    /// Offsets given back by a member that left, to hand out again first.
    redeliver: BTreeSet<u64>,
}

/// A group's decisions, free of I/O.
#[derive(Debug, Default)]
pub struct GroupState {
    members: Vec<MemberId>,
    turn: usize,
    partitions: Vec<PartitionState>,
}

impl GroupState {
    /// A group whose partition `i` starts reading at `starts[i]`.
    pub fn new(starts: &[u64]) -> GroupState {
        GroupState {
            members: Vec::new(),
            turn: 0,
            partitions: starts.iter().map(|&next| PartitionState { next, ..Default::default() }).collect(),
        }
    }

    /// Adds a member.
    pub fn join(&mut self, member: MemberId) {
        if !self.members.contains(&member) {
            self.members.push(member);
        }
    }

    /// Removes a member; what it had pending goes back for redelivery. Returns how many.
    pub fn leave(&mut self, member: MemberId) -> usize {
        self.members.retain(|&m| m != member);
        let mut returned = 0;
        for partition in &mut self.partitions {
            let mine: Vec<u64> = partition.pending.iter().filter(|(_, m)| **m == member).map(|(o, _)| *o).collect();
            for offset in mine {
                partition.pending.remove(&offset);
                partition.redeliver.insert(offset);
                returned += 1;
            }
        }
        returned
    }

    /// How many members the group has.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Whether the group has no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The next member, round-robin, for which `has_room` holds; the turn moves past it.
    pub fn pick(&mut self, has_room: impl Fn(MemberId) -> bool) -> Option<MemberId> {
        let count = self.members.len();
        for step in 0..count {
            let index = (self.turn + step) % count;
            let member = self.members[index];
            if has_room(member) {
                self.turn = (index + 1) % count;
                return Some(member);
            }
        }
        None
    }

    /// The lowest offset of `partition` waiting for redelivery.
    pub fn first_redelivery(&self, partition: usize) -> Option<u64> {
        self.partitions[partition].redeliver.first().copied()
    }

    /// Drops a redelivery that cannot be served (the record is gone).
    pub fn forget_redelivery(&mut self, partition: usize, offset: u64) {
        self.partitions[partition].redeliver.remove(&offset);
    }

    /// `offset` of `partition` went to `member` (fresh or redelivered).
    pub fn hand_out(&mut self, partition: usize, offset: u64, member: MemberId) {
        let p = &mut self.partitions[partition];
        p.redeliver.remove(&offset);
        p.pending.insert(offset, member);
        p.next = p.next.max(offset + 1);
    }

    /// The cursor of `partition` moved past records not handed out (filtered, not MQTT).
    pub fn advance(&mut self, partition: usize, next: u64) {
        let p = &mut self.partitions[partition];
        p.next = p.next.max(next);
    }

    /// Moves the cursor of `partition` to `next` even backwards (retention removed records).
    pub fn reset(&mut self, partition: usize, next: u64) {
        self.partitions[partition].next = next;
    }

    /// Starts `partition` over at `next`, forgetting what was pending or to redeliver (an
    /// operator's offset reset; only while the group has no member).
    pub fn seek(&mut self, partition: usize, next: u64) {
        self.partitions[partition] = PartitionState { next, ..Default::default() };
    }

    /// The next offset to read in `partition`.
    pub fn next(&self, partition: usize) -> u64 {
        self.partitions[partition].next
    }

    /// `member` acknowledged `offset` of `partition`; ignored (false) unless that member
    /// holds it (it may have been given back already).
    pub fn ack(&mut self, partition: usize, offset: u64, member: MemberId) -> bool {
        let p = &mut self.partitions[partition];
        if p.pending.get(&offset) == Some(&member) {
            p.pending.remove(&offset);
            true
        } else {
            false
        }
    }

    /// The committed offset of `partition`: the lowest offset not yet acknowledged.
    pub fn committed(&self, partition: usize) -> u64 {
        let p = &self.partitions[partition];
        let lowest = [p.pending.keys().next().copied(), p.redeliver.first().copied()].into_iter().flatten().min();
        lowest.map_or(p.next, |lowest| lowest.min(p.next))
    }
}

/// The `$offsets` key of a group's partition (group names and stream names hold no `/`).
pub fn offsets_key(group: &str, stream: &str, partition: u32) -> String {
    format!("{group}/{stream}/{partition}")
}

/// Encodes a committed offset as a `$offsets` value.
pub fn encode_offset(offset: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    out.push(OFFSETS_VERSION);
    out.extend_from_slice(&offset.to_le_bytes());
    out
}

/// Decodes a `$offsets` value.
pub fn decode_offset(value: &[u8]) -> Option<u64> {
    match value {
        [OFFSETS_VERSION, rest @ ..] => rest.try_into().ok().map(u64::from_le_bytes),
        _ => None,
    }
}

/// One message handed to a member.
pub(crate) struct GroupDelivery {
    pub(crate) partition: usize,
    pub(crate) offset: u64,
    pub(crate) message: StoredMessage,
    /// Given back by another member: it may have been seen (DUP).
    pub(crate) redelivery: bool,
}

/// A record read ahead by a group: its offset and the message (`None`: not an MQTT message).
struct Buffered {
    offset: u64,
    message: Option<StoredMessage>,
}

struct Inner {
    state: GroupState,
    queues: HashMap<MemberId, mpsc::Sender<GroupDelivery>>,
    /// The committed offsets last written to `$offsets`.
    last_commit: Vec<Option<u64>>,
    /// Partitions whose read-ahead the task must drop: an offset reset moved them.
    seeked: Vec<bool>,
}

/// A consumer group, shared by its members' connections and its task.
pub(crate) struct Group {
    pub(crate) name: String,
    pub(crate) filter: String,
    partitions: Vec<(Arc<str>, Arc<Partition>)>,
    inner: Mutex<Inner>,
    wake: Notify,
    offsets_writer: mpsc::Sender<AppendRequest>,
    /// Held (async) through a commit, so that commits reach `$offsets` in the order their
    /// offsets were taken and an older one never lands last.
    committing: tokio::sync::Mutex<()>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// What one dispatch pass ended on.
enum Pass {
    /// Stopped after a batch; more may be ready.
    More,
    /// Nothing more to do until new records, room or members.
    Wait,
}

impl Group {
    /// Creates the group over every partition of `streams`, each from its restored committed
    /// offset (clamped to the log) or from the end, and starts its task.
    pub(crate) fn start(
        name: &str,
        filter: &str,
        streams: &Streams,
        restored: &HashMap<String, u64>,
        offsets_writer: mpsc::Sender<AppendRequest>,
    ) -> Arc<Group> {
        let mut partitions = Vec::new();
        let mut starts = Vec::new();
        let mut last_commit = Vec::new();
        for stream in streams.all() {
            let stream_name: Arc<str> = Arc::from(stream.name.as_str());
            for partition in &stream.partitions {
                let offsets = partition.log.offsets();
                let stored = restored.get(&offsets_key(name, &stream.name, partition.number)).copied();
                let start =
                    stored.map_or(offsets.high_watermark, |o| o.clamp(offsets.log_start, offsets.high_watermark));
                partitions.push((Arc::clone(&stream_name), Arc::clone(partition)));
                starts.push(start);
                last_commit.push(stored);
            }
        }
        let group = Arc::new(Group {
            name: name.to_owned(),
            filter: filter.to_owned(),
            partitions,
            inner: Mutex::new(Inner {
                state: GroupState::new(&starts),
                queues: HashMap::new(),
                seeked: vec![false; last_commit.len()],
                last_commit,
            }),
            wake: Notify::new(),
            offsets_writer,
            committing: tokio::sync::Mutex::new(()),
        });
        tokio::spawn(run(Arc::clone(&group), streams.appended()));
        group
    }

    /// The group's members count and, per partition (stream name, partition number, log
    /// end), its committed offset, read now (for the admin API).
    pub(crate) fn snapshot(&self) -> (usize, Vec<PartitionSnapshot>) {
        let inner = lock(&self.inner);
        let partitions = self
            .partitions
            .iter()
            .enumerate()
            .map(|(index, (stream, partition))| {
                (Arc::clone(stream), partition.number, inner.state.committed(index), partition.log.offsets())
            })
            .collect();
        (inner.state.member_count(), partitions)
    }

    /// Moves the committed offset of every partition `select` picks to `target` of it, unless
    /// the group has members (then returns their count and changes nothing: their pending
    /// messages and read-ahead would make the reset a race). Commit afterwards.
    pub(crate) fn seek(
        &self,
        select: impl Fn(&str, u32) -> bool,
        target: impl Fn(&strata_log::Log) -> u64,
    ) -> Result<(), usize> {
        {
            let mut inner = lock(&self.inner);
            if !inner.state.is_empty() {
                return Err(inner.state.member_count());
            }
            for (index, (stream, partition)) in self.partitions.iter().enumerate() {
                if select(stream, partition.number) {
                    inner.state.seek(index, target(&partition.log));
                    inner.seeked[index] = true;
                }
            }
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Adds `member` with a queue of `window` messages; returns its end of the queue.
    pub(crate) fn join(&self, member: MemberId, window: usize) -> mpsc::Receiver<GroupDelivery> {
        let (tx, rx) = mpsc::channel(window.clamp(1, MAX_MEMBER_QUEUE));
        {
            let mut inner = lock(&self.inner);
            inner.state.join(member);
            inner.queues.insert(member, tx);
        }
        self.wake.notify_one();
        rx
    }

    /// Removes `member`; what it held goes to the other members.
    pub(crate) fn leave(&self, member: MemberId) {
        let returned = {
            let mut inner = lock(&self.inner);
            inner.queues.remove(&member);
            inner.state.leave(member)
        };
        tracing::debug!(group = %self.name, member, returned, "member left");
        self.wake.notify_one();
    }

    /// `member` acknowledged (or finished with) `offset` of partition index `partition`.
    pub(crate) fn ack(&self, member: MemberId, partition: usize, offset: u64) {
        lock(&self.inner).state.ack(partition, offset, member);
    }

    /// A member took a message from its queue or finished one: there may be room again.
    pub(crate) fn poke(&self) {
        self.wake.notify_one();
    }

    /// Writes the committed offsets that moved since the last commit to `$offsets`; with
    /// `durable`, waits until they are durable.
    pub(crate) async fn commit(&self, durable: bool) {
        let _ordered = self.committing.lock().await;
        let records: Vec<Record> = {
            let mut inner = lock(&self.inner);
            let mut records = Vec::new();
            for (index, (stream, partition)) in self.partitions.iter().enumerate() {
                let committed = inner.state.committed(index);
                if inner.last_commit[index] != Some(committed) {
                    inner.last_commit[index] = Some(committed);
                    let key = offsets_key(&self.name, stream, partition.number);
                    records.push(Record::new(now_ms(), encode_offset(committed)).with_key(key.into_bytes()));
                }
            }
            records
        };
        let count = records.len();
        let mut last = None;
        for (i, record) in records.into_iter().enumerate() {
            let (tx, rx) = if durable && i + 1 == count {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            } else {
                (None, None)
            };
            if self.offsets_writer.send(AppendRequest { record, durable: tx }).await.is_err() {
                tracing::warn!(group = %self.name, "the $offsets writer stopped; offsets not committed");
                return;
            }
            last = rx;
        }
        if let Some(rx) = last
            && !matches!(rx.await, Ok(Ok(_)))
        {
            tracing::warn!(group = %self.name, "group offsets not stored");
        }
    }

    /// Hands out what is ready: redeliveries first, then new records, round-robin among
    /// members with room, until nobody has room, everything is read or a batch is done.
    fn dispatch(&self, buffers: &mut [(VecDeque<Buffered>, u64)]) -> Result<Pass, strata_log::LogError> {
        let mut inner = lock(&self.inner);
        for (index, seeked) in inner.seeked.iter_mut().enumerate() {
            if std::mem::take(seeked) {
                buffers[index] = (VecDeque::new(), 0);
            }
        }
        if inner.state.is_empty() {
            return Ok(Pass::Wait);
        }
        let mut sent = 0;
        for (index, (_, partition)) in self.partitions.iter().enumerate() {
            while let Some(offset) = inner.state.first_redelivery(index) {
                if sent >= DISPATCH_BATCH {
                    return Ok(Pass::More);
                }
                let fetch = partition.log.read(offset, FETCH_BYTES)?;
                let found = if offset < fetch.log_start {
                    None
                } else {
                    fetch.records(offset)?.into_iter().find(|r| r.offset == offset)
                };
                let Some(message) = found.and_then(|r| record::from_record(r).ok()) else {
                    inner.state.forget_redelivery(index, offset);
                    continue;
                };
                let delivery = GroupDelivery { partition: index, offset, message, redelivery: true };
                if !offer(&mut inner, delivery) {
                    return Ok(Pass::Wait);
                }
                sent += 1;
            }
            let (buffered, end) = &mut buffers[index];
            loop {
                if sent >= DISPATCH_BATCH {
                    return Ok(Pass::More);
                }
                let Some(front) = buffered.front() else {
                    let next = inner.state.next(index).max(*end);
                    let fetch = partition.log.read(next, FETCH_BYTES)?;
                    if next < fetch.log_start {
                        inner.state.reset(index, fetch.log_start);
                        *end = fetch.log_start;
                        continue;
                    }
                    let Some(fetch_end) = fetch.next_offset() else { break };
                    buffered.extend(
                        fetch.records(next)?.into_iter().map(|stored| Buffered {
                            offset: stored.offset,
                            message: record::from_record(stored).ok(),
                        }),
                    );
                    *end = fetch_end;
                    if buffered.is_empty() {
                        inner.state.advance(index, fetch_end);
                    }
                    continue;
                };
                let offset = front.offset;
                let wanted = front.message.as_ref().is_some_and(|m| crate::topic::matches(&self.filter, &m.topic));
                if !wanted {
                    buffered.pop_front();
                    inner.state.advance(index, offset + 1);
                } else {
                    let message = front.message.clone().expect("wanted messages exist");
                    let delivery = GroupDelivery { partition: index, offset, message, redelivery: false };
                    if !offer(&mut inner, delivery) {
                        return Ok(Pass::Wait);
                    }
                    buffered.pop_front();
                    sent += 1;
                }
                if buffered.is_empty() {
                    inner.state.advance(index, *end);
                }
            }
        }
        Ok(Pass::Wait)
    }
}

/// Gives `delivery` to the next member with room; false when none has room.
fn offer(inner: &mut Inner, delivery: GroupDelivery) -> bool {
    let queues = &inner.queues;
    let Some(member) = inner.state.pick(|m| queues.get(&m).is_some_and(|q| q.capacity() > 0)) else {
        return false;
    };
    let (partition, offset) = (delivery.partition, delivery.offset);
    // Only this group sends on the queue, under this lock: the room seen is still there.
    if inner.queues[&member].try_send(delivery).is_err() {
        return false;
    }
    inner.state.hand_out(partition, offset, member);
    true
}

/// The group's task: hands out messages as records arrive and members make room, and
/// commits offsets on an interval. It lives as long as the broker.
async fn run(group: Arc<Group>, mut appended: watch::Receiver<u64>) {
    let mut buffers: Vec<(VecDeque<Buffered>, u64)> =
        (0..group.partitions.len()).map(|_| (VecDeque::new(), 0)).collect();
    let mut tick = tokio::time::interval(COMMIT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        appended.borrow_and_update();
        match group.dispatch(&mut buffers) {
            Ok(Pass::More) => {
                tokio::task::yield_now().await;
                continue;
            }
            Ok(Pass::Wait) => {}
            Err(error) => tracing::error!(group = %group.name, %error, "reading the log for a group failed"),
        }
        tokio::select! {
            () = group.wake.notified() => {}
            changed = appended.changed() => if changed.is_err() { return },
            _ = tick.tick() => group.commit(false).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_take_turns_among_those_with_room() {
        let mut state = GroupState::new(&[0]);
        state.join(1);
        state.join(2);
        state.join(3);
        let picks: Vec<_> = (0..6).map(|_| state.pick(|_| true).unwrap()).collect();
        assert_eq!(picks, [1, 2, 3, 1, 2, 3]);
        assert_eq!(state.pick(|m| m == 2), Some(2));
        assert_eq!(state.pick(|m| m != 2), Some(3));
        assert_eq!(state.pick(|_| false), None);
    }

    #[test]
    fn a_leaving_member_gives_back_what_it_held_and_the_commit_waits_for_it() {
        let mut state = GroupState::new(&[10]);
        state.join(1);
        state.join(2);
        state.hand_out(0, 10, 1);
        state.hand_out(0, 11, 2);
        state.advance(0, 13);
        assert_eq!(state.committed(0), 10);
        assert!(state.ack(0, 11, 2));
        assert!(!state.ack(0, 10, 2), "only the holder acknowledges");
        assert_eq!(state.leave(1), 1);
        assert_eq!(state.first_redelivery(0), Some(10));
        assert_eq!(state.committed(0), 10);
        assert!(!state.ack(0, 10, 1), "a late ack from the member that left is ignored");
        state.hand_out(0, 10, 2);
        assert_eq!(state.first_redelivery(0), None);
        assert!(state.ack(0, 10, 2));
        assert_eq!(state.committed(0), 13);
    }

    #[test]
    fn offsets_values_round_trip() {
        assert_eq!(decode_offset(&encode_offset(42)), Some(42));
        assert_eq!(decode_offset(&[]), None);
        assert_eq!(decode_offset(&[2, 0, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(offsets_key("g", "default", 3), "g/default/3");
    }
}
