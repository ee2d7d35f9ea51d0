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
//! disconnects, and read back at start. The group follows the streams as the admin API
//! creates, alters and deletes them: a new partition is read from its start, a deleted
//! stream's partitions are dropped with what was pending there.
//!
//! [`GroupState`] holds the decisions (membership, round-robin, pending offsets); the
//! [`Group`] shell adds the log, the members' queues and the task.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_log::Record;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::partition::AppendRequest;
use crate::partition::PartitionHandle;
use crate::record::{self, StoredMessage};
use crate::streams::{LiveStreams, Registry, Streams};

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

/// A partition of a group, named by its stream partition's [`PartitionHandle::id`]: unique while
/// the broker runs and never reused, so an acknowledgement that comes after its stream was
/// deleted (or deleted and created again) never lands on another partition.
pub type PartitionId = u32;

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

/// A group's decisions, free of I/O. The partitions it follows come and go with their
/// streams; every call naming a partition it does not follow (any more) is ignored, so a
/// late acknowledgement or a redelivery of a deleted stream's message is harmless.
#[derive(Debug, Default)]
pub struct GroupState {
    members: Vec<MemberId>,
    turn: usize,
    partitions: BTreeMap<PartitionId, PartitionState>,
}

impl GroupState {
    /// A group whose partition `id` starts reading at `next`, for each `(id, next)`.
    pub fn new(starts: &[(PartitionId, u64)]) -> GroupState {
        let mut state = GroupState::default();
        for &(partition, next) in starts {
            state.add_partition(partition, next);
        }
        state
    }

    /// Follows `partition` from `next`; false (and nothing changes) if it is followed already.
    pub fn add_partition(&mut self, partition: PartitionId, next: u64) -> bool {
        match self.partitions.entry(partition) {
            std::collections::btree_map::Entry::Occupied(_) => false,
            std::collections::btree_map::Entry::Vacant(entry) => {
                entry.insert(PartitionState { next, ..Default::default() });
                true
            }
        }
    }

    /// Stops following `partition` (its stream was deleted): what was pending or to redeliver
    /// there is forgotten. Returns whether it was followed.
    pub fn remove_partition(&mut self, partition: PartitionId) -> bool {
        self.partitions.remove(&partition).is_some()
    }

    /// Whether `partition` is followed.
    pub fn follows(&self, partition: PartitionId) -> bool {
        self.partitions.contains_key(&partition)
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
        for partition in self.partitions.values_mut() {
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
    pub fn first_redelivery(&self, partition: PartitionId) -> Option<u64> {
        self.partitions.get(&partition)?.redeliver.first().copied()
    }

    /// Drops a redelivery that cannot be served (the record is gone).
    pub fn forget_redelivery(&mut self, partition: PartitionId, offset: u64) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            p.redeliver.remove(&offset);
        }
    }

    /// `offset` of `partition` went to `member` (fresh or redelivered).
    pub fn hand_out(&mut self, partition: PartitionId, offset: u64, member: MemberId) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            p.redeliver.remove(&offset);
            p.pending.insert(offset, member);
            p.next = p.next.max(offset + 1);
        }
    }

    /// The cursor of `partition` moved past records not handed out (filtered, not MQTT).
    pub fn advance(&mut self, partition: PartitionId, next: u64) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            p.next = p.next.max(next);
        }
    }

    /// Moves the cursor of `partition` to `next` even backwards (retention removed records).
    pub fn reset(&mut self, partition: PartitionId, next: u64) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            p.next = next;
        }
    }

    /// Starts `partition` over at `next`, forgetting what was pending or to redeliver (an
    /// operator's offset reset; only while the group has no member).
    pub fn seek(&mut self, partition: PartitionId, next: u64) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            *p = PartitionState { next, ..Default::default() };
        }
    }

    /// The next offset to read in `partition`.
    pub fn next(&self, partition: PartitionId) -> Option<u64> {
        Some(self.partitions.get(&partition)?.next)
    }

    /// `member` acknowledged `offset` of `partition`; ignored (false) unless that member
    /// holds it (it may have been given back already, or the partition dropped).
    pub fn ack(&mut self, partition: PartitionId, offset: u64, member: MemberId) -> bool {
        let Some(p) = self.partitions.get_mut(&partition) else { return false };
        if p.pending.get(&offset) == Some(&member) {
            p.pending.remove(&offset);
            true
        } else {
            false
        }
    }

    /// The committed offset of `partition`: the lowest offset not yet acknowledged (pending
    /// or to redeliver), else the cursor.
    pub fn committed(&self, partition: PartitionId) -> Option<u64> {
        let p = self.partitions.get(&partition)?;
        let lowest = [p.pending.keys().next().copied(), p.redeliver.first().copied()].into_iter().flatten().min();
        Some(lowest.map_or(p.next, |lowest| lowest.min(p.next)))
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
    pub(crate) partition: PartitionId,
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

/// One partition a group follows, with what its task read ahead there.
struct Followed {
    stream: Arc<str>,
    partition: Arc<PartitionHandle>,
    /// The committed offset last written to `$offsets`.
    last_commit: Option<u64>,
    /// Records read and not handed out yet, in offset order.
    buffered: VecDeque<Buffered>,
    /// The offset after the fetch `buffered` came from (0: read from the cursor).
    buffered_end: u64,
}

struct Inner {
    state: GroupState,
    queues: HashMap<MemberId, mpsc::Sender<GroupDelivery>>,
    /// The partitions followed, in the streams' order.
    partitions: Vec<Followed>,
    /// The streams' generation `partitions` was last matched against.
    generation: u64,
    /// This group's committed offsets read from `$offsets` at start and not used yet, by
    /// `$offsets` key: a partition that shows up later starts there if it is within the log.
    restored: HashMap<String, u64>,
    /// `$offsets` keys of partitions dropped with their stream, tombstoned at the next commit
    /// (a stream created again under that name is read from its start).
    forgotten: Vec<String>,
}

/// A consumer group, shared by its members' connections and its task.
pub(crate) struct Group {
    pub(crate) name: String,
    pub(crate) filter: String,
    streams: LiveStreams,
    inner: Mutex<Inner>,
    wake: Notify,
    offsets_partition: Arc<PartitionHandle>,
    /// Held (async) through a commit, so that commits reach `$offsets` in the order their
    /// offsets were taken and an older one never lands last.
    committing: tokio::sync::Mutex<()>,
    /// Set when the group is removed (idle, issue 22): its task ends and it commits no more.
    stopped: std::sync::atomic::AtomicBool,
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
    /// offset (clamped to the log) or from the end: its offset in `since` (partition id,
    /// offset: the end when the SUBSCRIBE that made the group was decoded) if listed there,
    /// else its end now. Starts the group's task. Partitions created
    /// later are followed from their restored offset if it is within the log, else from their
    /// start (see [`Group::follow_streams`]).
    pub(crate) fn start(
        name: &str,
        filter: &str,
        streams: &Streams,
        restored: &HashMap<String, u64>,
        since: &[(PartitionId, u64)],
        offsets_partition: Arc<PartitionHandle>,
    ) -> Arc<Group> {
        let prefix = format!("{name}/");
        let restored = restored.iter().filter(|(key, _)| key.starts_with(&prefix)).map(|(k, v)| (k.clone(), *v));
        let group = Arc::new(Group {
            name: name.to_owned(),
            filter: filter.to_owned(),
            streams: streams.live(),
            inner: Mutex::new(Inner {
                state: GroupState::default(),
                queues: HashMap::new(),
                partitions: Vec::new(),
                generation: 0,
                restored: restored.collect(),
                forgotten: Vec::new(),
            }),
            wake: Notify::new(),
            offsets_partition,
            committing: tokio::sync::Mutex::new(()),
            stopped: std::sync::atomic::AtomicBool::new(false),
        });
        {
            let mut inner = lock(&group.inner);
            group.follow(&mut inner, &group.streams.registry(), Some(since));
        }
        tokio::spawn(run(Arc::clone(&group), streams.appended()));
        group
    }

    /// Follows the streams created, altered or deleted since the group last looked: new
    /// partitions from their restored offset if within the log, else from their start
    /// (everything in them came after the group started); partitions of deleted streams are
    /// dropped with what was pending there. Cheap when nothing changed.
    fn follow_streams(&self, inner: &mut Inner) {
        if self.streams.generation() != inner.generation {
            self.follow(inner, &self.streams.registry(), None);
        }
    }

    /// Matches the partitions followed with `registry`; at the start (`since`, see
    /// [`Group::start`]), a partition without a restored offset starts at its end.
    fn follow(&self, inner: &mut Inner, registry: &Registry, since: Option<&[(PartitionId, u64)]>) {
        let start = since.is_some();
        inner.generation = registry.generation();
        let live: HashSet<PartitionId> =
            registry.all().iter().flat_map(|s| s.partitions.iter().map(|p| p.id)).collect();
        let Inner { state, partitions, restored, forgotten, .. } = inner;
        partitions.retain(|followed| {
            if live.contains(&followed.partition.id) {
                return true;
            }
            state.remove_partition(followed.partition.id);
            let key = offsets_key(&self.name, &followed.stream, followed.partition.number);
            restored.remove(&key);
            if followed.last_commit.is_some() {
                forgotten.push(key);
            }
            tracing::info!(group = %self.name, stream = %followed.stream, partition = followed.partition.number,
                "group dropped the partition of a deleted stream");
            false
        });
        for stream in registry.all() {
            let stream_name: Arc<str> = Arc::from(stream.name.as_str());
            for partition in &stream.partitions {
                if state.follows(partition.id) {
                    continue;
                }
                let offsets = partition.offsets();
                let (log_start, high_watermark) = (offsets.log_start, offsets.high_watermark);
                let stored = restored.remove(&offsets_key(&self.name, &stream.name, partition.number));
                let end = since
                    .and_then(|since| since.iter().find(|(id, _)| *id == partition.id))
                    .map_or(high_watermark, |&(_, end)| end.clamp(log_start, high_watermark));
                let next = match stored {
                    Some(offset) if start => offset.clamp(log_start, high_watermark),
                    None if start => end,
                    Some(offset) if (log_start..=high_watermark).contains(&offset) => offset,
                    _ => log_start,
                };
                state.add_partition(partition.id, next);
                partitions.push(Followed {
                    stream: Arc::clone(&stream_name),
                    partition: Arc::clone(partition),
                    last_commit: stored,
                    buffered: VecDeque::new(),
                    buffered_end: 0,
                });
                if !start {
                    tracing::info!(group = %self.name, stream = %stream.name, partition = partition.number, next,
                        "group follows a new partition");
                }
            }
        }
    }

    /// The group's members count and, per partition (stream name, partition number, log
    /// end), its committed offset, read now (for the admin API).
    pub(crate) fn snapshot(&self) -> (usize, Vec<PartitionSnapshot>) {
        let mut inner = lock(&self.inner);
        self.follow_streams(&mut inner);
        let partitions = inner
            .partitions
            .iter()
            .filter_map(|followed| {
                let committed = inner.state.committed(followed.partition.id)?;
                Some((Arc::clone(&followed.stream), followed.partition.number, committed, followed.partition.offsets()))
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
        target: impl Fn(&PartitionHandle) -> u64,
    ) -> Result<(), usize> {
        {
            let mut inner = lock(&self.inner);
            if !inner.state.is_empty() {
                return Err(inner.state.member_count());
            }
            self.follow_streams(&mut inner);
            let Inner { state, partitions, .. } = &mut *inner;
            for followed in partitions.iter_mut().filter(|f| select(&f.stream, f.partition.number)) {
                state.seek(followed.partition.id, target(&followed.partition));
                followed.buffered.clear();
                followed.buffered_end = 0;
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

    /// `member` acknowledged (or finished with) `offset` of `partition`; ignored if the group
    /// dropped that partition meanwhile.
    pub(crate) fn ack(&self, member: MemberId, partition: PartitionId, offset: u64) {
        lock(&self.inner).state.ack(partition, offset, member);
    }

    /// Stops the group, removed from the registry: its task ends and no commit follows.
    /// Returns every `$offsets` key it has or had (to tombstone), once a commit under way
    /// has finished, so that no commit lands after the tombstones.
    pub(crate) async fn stop(&self) -> Vec<String> {
        self.stopped.store(true, std::sync::atomic::Ordering::Release);
        self.wake.notify_one();
        let _ordered = self.committing.lock().await;
        let inner = lock(&self.inner);
        let mut keys: Vec<String> = inner
            .partitions
            .iter()
            .map(|followed| offsets_key(&self.name, &followed.stream, followed.partition.number))
            .collect();
        keys.extend(inner.restored.keys().cloned());
        keys.extend(inner.forgotten.iter().cloned());
        keys
    }

    /// A member took a message from its queue or finished one: there may be room again.
    pub(crate) fn poke(&self) {
        self.wake.notify_one();
    }

    /// Writes the committed offsets that moved since the last commit to `$offsets` (and
    /// tombstones those of dropped partitions); with `durable`, waits until they are durable.
    pub(crate) async fn commit(&self, durable: bool) {
        let _ordered = self.committing.lock().await;
        if self.stopped.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let records: Vec<Record> = {
            let mut inner = lock(&self.inner);
            let Inner { state, partitions, forgotten, .. } = &mut *inner;
            // Tombstones first: a partition of a stream created again under the same name
            // writes the same key after them.
            let mut records: Vec<Record> =
                forgotten.drain(..).map(|key| Record::new(now_ms(), Vec::new()).with_key(key.into_bytes())).collect();
            for followed in partitions.iter_mut() {
                let Some(committed) = state.committed(followed.partition.id) else { continue };
                if followed.last_commit != Some(committed) {
                    followed.last_commit = Some(committed);
                    let key = offsets_key(&self.name, &followed.stream, followed.partition.number);
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
            if self.offsets_partition.send(AppendRequest { record, durable: tx }).await.is_err() {
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
    /// Follows the streams first, so that no partition of a deleted stream is read.
    fn dispatch(&self) -> Result<Pass, crate::partition::LogError> {
        let mut inner = lock(&self.inner);
        self.follow_streams(&mut inner);
        let Inner { state, queues, partitions, .. } = &mut *inner;
        if state.is_empty() {
            return Ok(Pass::Wait);
        }
        let mut sent = 0;
        for followed in partitions.iter_mut() {
            let (id, log) = (followed.partition.id, &followed.partition);
            while let Some(offset) = state.first_redelivery(id) {
                if sent >= DISPATCH_BATCH {
                    return Ok(Pass::More);
                }
                let fetch = log.read(offset, FETCH_BYTES)?;
                let found = if offset < fetch.log_start {
                    None
                } else {
                    fetch.records(offset)?.into_iter().find(|r| r.offset == offset)
                };
                let Some(message) = found.and_then(|r| record::from_record(r).ok()) else {
                    state.forget_redelivery(id, offset);
                    continue;
                };
                let delivery = GroupDelivery { partition: id, offset, message, redelivery: true };
                if !offer(state, queues, delivery) {
                    return Ok(Pass::Wait);
                }
                sent += 1;
            }
            let (buffered, end) = (&mut followed.buffered, &mut followed.buffered_end);
            loop {
                if sent >= DISPATCH_BATCH {
                    return Ok(Pass::More);
                }
                let Some(front) = buffered.front() else {
                    let Some(next) = state.next(id) else { break };
                    let next = next.max(*end);
                    let fetch = log.read(next, FETCH_BYTES)?;
                    if next < fetch.log_start {
                        state.reset(id, fetch.log_start);
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
                        state.advance(id, fetch_end);
                    }
                    continue;
                };
                let offset = front.offset;
                let wanted = front.message.as_ref().is_some_and(|m| crate::topic::matches(&self.filter, &m.topic));
                if !wanted {
                    buffered.pop_front();
                    state.advance(id, offset + 1);
                } else {
                    let message = front.message.clone().expect("wanted messages exist");
                    let delivery = GroupDelivery { partition: id, offset, message, redelivery: false };
                    if !offer(state, queues, delivery) {
                        return Ok(Pass::Wait);
                    }
                    buffered.pop_front();
                    sent += 1;
                }
                if buffered.is_empty() {
                    state.advance(id, *end);
                }
            }
        }
        Ok(Pass::Wait)
    }
}

/// Gives `delivery` to the next member with room; false when none has room.
fn offer(
    state: &mut GroupState,
    queues: &HashMap<MemberId, mpsc::Sender<GroupDelivery>>,
    delivery: GroupDelivery,
) -> bool {
    let Some(member) = state.pick(|m| queues.get(&m).is_some_and(|q| q.capacity() > 0)) else {
        return false;
    };
    let (partition, offset) = (delivery.partition, delivery.offset);
    // Only this group sends on the queue, under this lock: the room seen is still there.
    if queues[&member].try_send(delivery).is_err() {
        return false;
    }
    state.hand_out(partition, offset, member);
    true
}

/// The group's task: hands out messages as records arrive, members make room and streams
/// change (a swap of the streams also wakes `appended`), and commits offsets on an interval.
/// It lives as long as the broker.
async fn run(group: Arc<Group>, mut appended: watch::Receiver<u64>) {
    let mut tick = tokio::time::interval(COMMIT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if group.stopped.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        appended.borrow_and_update();
        match group.dispatch() {
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
        let mut state = GroupState::new(&[(0, 0)]);
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
        let mut state = GroupState::new(&[(0, 10)]);
        state.join(1);
        state.join(2);
        state.hand_out(0, 10, 1);
        state.hand_out(0, 11, 2);
        state.advance(0, 13);
        assert_eq!(state.committed(0), Some(10));
        assert!(state.ack(0, 11, 2));
        assert!(!state.ack(0, 10, 2), "only the holder acknowledges");
        assert_eq!(state.leave(1), 1);
        assert_eq!(state.first_redelivery(0), Some(10));
        assert_eq!(state.committed(0), Some(10));
        assert!(!state.ack(0, 10, 1), "a late ack from the member that left is ignored");
        state.hand_out(0, 10, 2);
        assert_eq!(state.first_redelivery(0), None);
        assert!(state.ack(0, 10, 2));
        assert_eq!(state.committed(0), Some(13));
    }

    #[test]
    fn an_added_partition_starts_where_told_and_adding_it_again_changes_nothing() {
        let mut state = GroupState::new(&[(3, 10)]);
        state.join(1);
        assert!(state.add_partition(7, 0));
        assert_eq!(state.committed(7), Some(0));
        state.hand_out(7, 0, 1);
        state.advance(7, 2);
        assert!(!state.add_partition(7, 50), "a followed partition keeps its state");
        assert_eq!(state.next(7), Some(2));
        assert_eq!(state.committed(7), Some(0));
        assert_eq!(state.committed(3), Some(10));
    }

    #[test]
    fn a_removed_partition_is_forgotten_and_the_others_are_untouched() {
        let mut state = GroupState::new(&[(0, 0), (1, 100), (2, 200)]);
        state.join(1);
        state.join(2);
        state.hand_out(0, 0, 1);
        state.hand_out(1, 100, 1);
        state.hand_out(1, 101, 2);
        state.hand_out(2, 200, 2);
        assert!(state.remove_partition(1));
        assert!(!state.remove_partition(1));
        assert!(!state.follows(1));
        assert_eq!(state.committed(1), None);
        assert_eq!(state.next(1), None);
        assert!(!state.ack(1, 101, 2), "a late ack for a dropped partition is ignored");
        state.hand_out(1, 102, 1);
        state.advance(1, 500);
        state.seek(1, 7);
        assert!(!state.follows(1), "calls naming a dropped partition do not bring it back");
        // Only the remaining partitions' messages come back for redelivery.
        assert_eq!(state.leave(1), 1);
        assert_eq!(state.first_redelivery(0), Some(0));
        assert_eq!(state.first_redelivery(1), None);
        assert_eq!(state.committed(0), Some(0));
        assert_eq!(state.committed(2), Some(200));
        assert!(state.ack(2, 200, 2));
        assert_eq!(state.committed(2), Some(201));
        // The same stream created again gets a new partition id and starts afresh.
        assert!(state.add_partition(3, 0));
        assert_eq!(state.committed(3), Some(0));
    }

    /// One step of [`committed_offsets_match_a_model_as_partitions_come_and_go`]: partition
    /// and member are picked modulo the few there are.
    #[derive(Debug, Clone)]
    enum Step {
        Add(u32, u64),
        Remove(u32),
        HandOut(u32, u64),
        Redeliver(u32, u64),
        Ack(u32, usize, u64),
        Skip(u32, u64),
        Leave(u64),
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            (0..6u32, 0..20u64).prop_map(|(p, n)| Step::Add(p, n)),
            (0..6u32).prop_map(Step::Remove),
            (0..6u32, 0..3u64).prop_map(|(p, m)| Step::HandOut(p, m)),
            (0..6u32, 0..3u64).prop_map(|(p, m)| Step::Redeliver(p, m)),
            (0..6u32, 0..8usize, 0..3u64).prop_map(|(p, i, m)| Step::Ack(p, i, m)),
            (0..6u32, 0..5u64).prop_map(|(p, n)| Step::Skip(p, n)),
            (0..3u64).prop_map(Step::Leave),
        ]
    }

    proptest::proptest! {
        /// The model: per followed partition, a cursor and the offsets handed out and not yet
        /// acknowledged by their holder (a member that left holds nothing). The committed
        /// offset is the lowest of those, else the cursor; a dropped partition has none and
        /// takes no calls.
        #[test]
        fn committed_offsets_match_a_model_as_partitions_come_and_go(
            steps in proptest::collection::vec(step(), 1..200),
        ) {
            let mut state = GroupState::default();
            let mut model: BTreeMap<u32, (u64, BTreeMap<u64, Option<MemberId>>)> = BTreeMap::new();
            for member in 0..3 {
                state.join(member);
            }
            for step in steps {
                match step {
                    Step::Add(p, next) => {
                        let added = state.add_partition(p, next);
                        proptest::prop_assert_eq!(added, !model.contains_key(&p));
                        model.entry(p).or_insert((next, BTreeMap::new()));
                    }
                    Step::Remove(p) => {
                        proptest::prop_assert_eq!(state.remove_partition(p), model.remove(&p).is_some());
                    }
                    Step::HandOut(p, member) => {
                        let next = state.next(p);
                        if let (Some(next), Some((cursor, out))) = (next, model.get_mut(&p)) {
                            state.hand_out(p, next, member);
                            out.insert(next, Some(member));
                            *cursor = next + 1;
                        } else {
                            state.hand_out(p, 0, member);
                        }
                    }
                    Step::Redeliver(p, member) => {
                        if let Some(offset) = state.first_redelivery(p) {
                            let (_, out) = model.get_mut(&p).expect("only followed partitions redeliver");
                            proptest::prop_assert_eq!(out.get(&offset), Some(&None));
                            state.hand_out(p, offset, member);
                            out.insert(offset, Some(member));
                        }
                    }
                    Step::Ack(p, index, member) => {
                        let target = model.get(&p).and_then(|(_, out)| out.keys().nth(index).copied());
                        let offset = target.unwrap_or(index as u64);
                        let holds = model.get(&p).and_then(|(_, out)| out.get(&offset)) == Some(&Some(member));
                        proptest::prop_assert_eq!(state.ack(p, offset, member), holds);
                        if holds {
                            model.get_mut(&p).expect("held").1.remove(&offset);
                        }
                    }
                    Step::Skip(p, count) => {
                        if let (Some(next), Some((cursor, _))) = (state.next(p), model.get_mut(&p)) {
                            state.advance(p, next + count);
                            *cursor = next + count;
                        }
                    }
                    Step::Leave(member) => {
                        let held: usize = model
                            .values_mut()
                            .flat_map(|(_, out)| out.values_mut())
                            .filter(|holder| **holder == Some(member))
                            .map(|holder| *holder = None)
                            .count();
                        proptest::prop_assert_eq!(state.leave(member), held);
                        state.join(member);
                    }
                }
                for p in 0..6 {
                    let expected = model.get(&p).map(|(cursor, out)| out.keys().next().copied().unwrap_or(*cursor));
                    proptest::prop_assert_eq!(state.committed(p), expected, "partition {}", p);
                }
            }
        }
    }

    #[test]
    fn offsets_values_round_trip() {
        assert_eq!(decode_offset(&encode_offset(42)), Some(42));
        assert_eq!(decode_offset(&[]), None);
        assert_eq!(decode_offset(&[2, 0, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(offsets_key("g", "default", 3), "g/default/3");
    }
}
