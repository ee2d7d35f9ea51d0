//! Who an append concerns. Readers that want everything (`$stream` cursors, consumer
//! groups) wait on one signal bumped after every append. A connection's plain
//! subscriptions are kept here instead, in a tree of filter levels. An append then wakes
//! only the connections with a filter matching its topic, and not every connection that
//! subscribed to anything.
//!
//! A wake also says where, in each partition, the first record that matched lies. Every
//! record between the connection's cursor and that offset matched none of its filters
//! when it was appended, so the cursor jumps there instead of reading them. A connection
//! subscribed to a quiet topic on a busy stream then reads only what it is sent.
//!
//! Invariants:
//! - A connection's filters are here at least while its outbound half holds them, and go
//!   when the connection ends ([`ConnectionInterest`]). They go in before its cursors read
//!   the high watermark: the inbound half adds a SUBSCRIBE's as it reads the packet, a
//!   resumed session's go in before its cursors are made.
//! - Per partition, appends and their wakes happen in offset order: the partition's writer
//!   holds one lock across both (`partition/writer.rs`). So when a wake's lowest offset is
//!   taken, every matching record below it was taken in an earlier wake.
//! - Only a cursor whose last read found the partition's end jumps
//!   (`readers::Cursor::reached_end`). Every record up to that end was read; every matching
//!   record appended after it is reported by a later wake, at or above the lowest offset
//!   taken. A resumed session's cursors start behind the end, so they read what came while
//!   the session was away before they ever jump.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use strata_log::Record;
use tokio::sync::{Notify, watch};

/// Wakes one connection's outbound half, and says from where to read.
#[derive(Default)]
pub(crate) struct ConnectionWake {
    /// `notify_one` keeps a permit when the connection is not waiting, so an append between
    /// its last read and its next wait is not missed.
    pub(crate) notify: Notify,
    /// (partition id, the lowest offset of a matching record since the last
    /// [`take_into`](Self::take_into)); a connection follows few partitions, so a short list.
    lowest: Mutex<Vec<(u32, u64)>>,
}

impl ConnectionWake {
    fn matched(&self, partition: u32, offset: u64) {
        let mut lowest = self.lowest.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match lowest.iter_mut().find(|(held, _)| *held == partition) {
            Some((_, held)) => *held = (*held).min(offset),
            None => lowest.push((partition, offset)),
        }
        drop(lowest);
        self.notify.notify_one();
    }

    /// Moves the lowest matching offset per partition since the last call into `out`
    /// (cleared first). Both lists keep their room: no allocation per wake.
    pub(crate) fn take_into(&self, out: &mut Vec<(u32, u64)>) {
        out.clear();
        let mut lowest = self.lowest.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        out.extend(lowest.drain(..));
    }
}

pub(crate) type Wake = Arc<ConnectionWake>;

/// One connection's filters in the tree. Both halves of the connection share it. The
/// inbound half adds a SUBSCRIBE's filters as it reads the packet, so that a PUBLISH right
/// behind it on the same connection already counts. The outbound half adds them again when
/// it takes the subscription (an UNSUBSCRIBE queued in between may have removed them), and
/// removes them on UNSUBSCRIBE. Whatever is left goes when the connection ends.
pub(crate) struct ConnectionInterest {
    signal: Arc<AppendSignal>,
    id: u64,
    pub(crate) wake: Wake,
    filters: Mutex<std::collections::HashSet<String>>,
}

impl ConnectionInterest {
    pub(crate) fn new(signal: Arc<AppendSignal>, id: u64) -> ConnectionInterest {
        ConnectionInterest { signal, id, wake: Arc::default(), filters: Mutex::default() }
    }

    fn filters(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.filters.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Returns whether `filter` was not there: appends on it since it was last removed (if
    /// ever) were not reported to this connection.
    pub(crate) fn add(&self, filter: &str) -> bool {
        let mut filters = self.filters();
        let added = !filters.contains(filter);
        if added {
            filters.insert(filter.to_owned());
        }
        self.signal.interest.add(filter, self.id, &self.wake);
        added
    }

    pub(crate) fn remove(&self, filter: &str) {
        self.filters().remove(filter);
        self.signal.interest.remove(filter, self.id);
    }
}

impl Drop for ConnectionInterest {
    fn drop(&mut self) {
        for filter in self.filters().drain() {
            self.signal.interest.remove(&filter, self.id);
        }
    }
}

/// The broker's "something was appended" signals.
pub(crate) struct AppendSignal {
    /// Bumped after every append and every swap of the streams.
    everything: watch::Sender<u64>,
    interest: Interest,
}

impl AppendSignal {
    pub(crate) fn new() -> AppendSignal {
        AppendSignal { everything: watch::channel(0).0, interest: Interest::default() }
    }

    /// After `records` went into partition `partition` from `base_offset` on: wakes the
    /// readers of everything and the connections whose plain subscriptions match a record's
    /// topic. The caller holds the partition's append lock (see the module's invariants).
    pub(crate) fn appended(&self, partition: u32, base_offset: u64, records: &[Record]) {
        // Only `$stream` readers and `$share` groups hold a receiver.
        crate::watched::modify_and_notify_watchers(&self.everything, |n| *n = n.wrapping_add(1));
        let mut last_topic: Option<&str> = None;
        for (offset, record) in (base_offset..).zip(records) {
            let Some(topic) = crate::record::topic_of(&record.headers) else { continue };
            // A run on one topic looks the tree up once: its first offset is the lowest.
            if last_topic != Some(topic) {
                self.interest.wake_matching(topic, partition, offset);
                last_topic = Some(topic);
            }
        }
    }

    /// After the streams changed: every reader looks again (new partitions to follow).
    pub(crate) fn streams_changed(&self) {
        self.everything.send_modify(|n| *n = n.wrapping_add(1));
        self.interest.wake_all();
    }

    /// A receiver woken after every append and every swap of the streams.
    pub(crate) fn subscribe_everything(&self) -> watch::Receiver<u64> {
        self.everything.subscribe()
    }

    #[cfg(test)]
    fn interest(&self) -> &Interest {
        &self.interest
    }
}

/// Plain subscription filters → the connections holding them.
#[derive(Default)]
pub(crate) struct Interest {
    root: RwLock<Node>,
}

#[derive(Default)]
struct Node {
    /// The next level, by its exact text.
    children: HashMap<Box<str>, Node>,
    /// The next level is `+`.
    plus: Option<Box<Node>>,
    /// Filters that end at this node.
    here: Vec<(u64, Wake)>,
    /// Filters that end with `#` after this node: they match here and at any depth below.
    hash: Vec<(u64, Wake)>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.plus.is_none() && self.here.is_empty() && self.hash.is_empty()
    }
}

impl Interest {
    /// Adds connection `id`'s `filter`; adding the same pair twice keeps one.
    pub(crate) fn add(&self, filter: &str, id: u64, wake: &Wake) {
        let mut root = self.root.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut node = &mut *root;
        let mut levels = filter.split('/').peekable();
        while let Some(level) = levels.next() {
            if level == "#" && levels.peek().is_none() {
                if !node.hash.iter().any(|(held, _)| *held == id) {
                    node.hash.push((id, Arc::clone(wake)));
                }
                return;
            }
            node = match level {
                "+" => node.plus.get_or_insert_with(Box::default),
                _ => node.children.entry(level.into()).or_default(),
            };
        }
        if !node.here.iter().any(|(held, _)| *held == id) {
            node.here.push((id, Arc::clone(wake)));
        }
    }

    /// Removes connection `id`'s `filter`, and the tree's branches left empty.
    pub(crate) fn remove(&self, filter: &str, id: u64) {
        let mut root = self.root.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let levels: Vec<&str> = filter.split('/').collect();
        remove_below(&mut root, &levels, id);
    }

    /// Wakes every connection with a filter that matches `topic` (MQTT's rules, as
    /// [`crate::topic::matches`]: wildcards at the first level skip topics starting with
    /// `$`), telling it the record's place.
    fn wake_matching(&self, topic: &str, partition: u32, offset: u64) {
        self.for_each_match(topic, &mut |wake| wake.matched(partition, offset));
    }

    fn wake_all(&self) {
        let root = self.root.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        visit_all(&root, &mut |wake| wake.notify.notify_one());
    }

    fn for_each_match(&self, topic: &str, found: &mut dyn FnMut(&Wake)) {
        let root = self.root.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let levels: Vec<&str> = topic.split('/').collect();
        let dollar = topic.starts_with('$');
        visit_matching(&root, &levels, dollar, found);
    }
}

// The walks below keep their place in loops and explicit lists, never on the call stack: a
// filter may have as many levels as `max_topic_levels` allows, and a recursion per level
// overflowed a task's stack (issue 18).

fn visit_matching(root: &Node, levels: &[&str], dollar: bool, found: &mut dyn FnMut(&Wake)) {
    // The `+` branches still to walk, with their depth; never allocated without a `+`.
    let mut branches: Vec<(&Node, usize)> = Vec::new();
    let mut next = Some((root, 0));
    while let Some((node, depth)) = next.take().or_else(|| branches.pop()) {
        // Wildcards at the first level do not match a `$` topic.
        let wildcards = !(depth == 0 && dollar);
        // `#` matches the rest, including nothing (`a/#` matches `a`).
        if wildcards {
            node.hash.iter().for_each(|(_, wake)| found(wake));
        }
        let Some(level) = levels.get(depth) else {
            node.here.iter().for_each(|(_, wake)| found(wake));
            continue;
        };
        if let Some(plus) = &node.plus
            && wildcards
        {
            branches.push((plus, depth + 1));
        }
        next = node.children.get(*level).map(|child| (child, depth + 1));
    }
}

fn visit_all(root: &Node, found: &mut dyn FnMut(&Wake)) {
    let mut pending = vec![root];
    while let Some(node) = pending.pop() {
        node.here.iter().chain(&node.hash).for_each(|(_, wake)| found(wake));
        pending.extend(node.children.values());
        pending.extend(node.plus.as_deref());
    }
}

/// The node one `level` below `node`, if there is one.
fn step<'a>(node: &'a mut Node, level: &str) -> Option<&'a mut Node> {
    match level {
        "+" => node.plus.as_deref_mut(),
        _ => node.children.get_mut(level),
    }
}

fn remove_below(root: &mut Node, levels: &[&str], id: u64) {
    // A last `#` names the list of the node above it, as in `Interest::add`.
    let (path, hash) = match levels {
        [path @ .., "#"] => (path, true),
        _ => (levels, false),
    };
    // Down to the filter's node, noting the deepest node on the way that holds anything
    // besides the path: if the filter's node ends up empty, the branch below that one goes.
    let mut node = &mut *root;
    let mut cut = 0;
    for (depth, level) in path.iter().enumerate() {
        let branches = node.children.len() + usize::from(node.plus.is_some());
        if !node.here.is_empty() || !node.hash.is_empty() || branches > 1 {
            cut = depth;
        }
        let Some(below) = step(node, level) else { return };
        node = below;
    }
    match hash {
        true => node.hash.retain(|(held, _)| *held != id),
        false => node.here.retain(|(held, _)| *held != id),
    }
    if path.is_empty() || !node.is_empty() {
        return;
    }
    let mut node = root;
    for level in &path[..cut] {
        let Some(below) = step(node, level) else { return };
        node = below;
    }
    // Dropped without recursion (`Drop for Node`).
    match path[cut] {
        "+" => node.plus = None,
        level => _ = node.children.remove(level),
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Each node below is emptied of its children before it drops, so no drop recurses.
        let mut below: Vec<Node> = self.children.drain().map(|(_, child)| child).collect();
        below.extend(self.plus.take().map(|plus| *plus));
        while let Some(mut node) = below.pop() {
            below.extend(node.children.drain().map(|(_, child)| child));
            below.extend(node.plus.take().map(|plus| *plus));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn matched(interest: &Interest, topic: &str) -> BTreeSet<u64> {
        // Which connection a wake belongs to: compare the Notify's address.
        let mut found = BTreeSet::new();
        interest.for_each_match(topic, &mut |wake| {
            found.insert(Arc::as_ptr(wake) as u64);
        });
        found
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![Just("a"), Just("b"), Just(""), Just("$s"), Just("+"), Just("#")].prop_map(str::to_owned)
    }

    fn filter() -> impl Strategy<Value = String> {
        // Valid filters only: `#` last, wildcards whole levels (as SUBSCRIBE validates).
        proptest::collection::vec(level(), 1..4).prop_filter_map("valid filter", |levels| {
            let hash_inside = levels[..levels.len() - 1].iter().any(|l| l == "#");
            (!hash_inside).then(|| levels.join("/"))
        })
    }

    fn topic() -> impl Strategy<Value = String> {
        proptest::collection::vec(prop_oneof![Just("a"), Just("b"), Just(""), Just("$s")].prop_map(str::to_owned), 1..4)
            .prop_map(|levels| levels.join("/"))
    }

    proptest! {
        // The oracle is `topic::matches`, the rule the connections filter with. Some filters
        // are removed again, to check that removal leaves the others in place.
        #[test]
        fn wakes_exactly_the_matching_filters(
            filters in proptest::collection::vec((filter(), 0u64..6, any::<bool>()), 0..12),
            topics in proptest::collection::vec(topic(), 1..6),
        ) {
            let interest = Interest::default();
            let wakes: Vec<Wake> = (0..6).map(|_| Arc::default()).collect();
            let mut held: Vec<(String, u64)> = Vec::new();
            for (filter, id, _) in &filters {
                interest.add(filter, *id, &wakes[*id as usize]);
                held.push((filter.clone(), *id));
            }
            for (filter, id, remove) in &filters {
                if *remove {
                    interest.remove(filter, *id);
                    held.retain(|(f, i)| !(f == filter && i == id));
                }
            }
            for topic in &topics {
                let expected: BTreeSet<u64> = held
                    .iter()
                    .filter(|(filter, _)| crate::topic::matches(filter, topic))
                    .map(|(_, id)| Arc::as_ptr(&wakes[*id as usize]) as u64)
                    .collect();
                prop_assert_eq!(matched(&interest, topic), expected, "topic {:?}", topic);
            }
            // Removal prunes every branch it leaves empty.
            for (filter, id) in &held {
                interest.remove(filter, *id);
            }
            prop_assert!(interest.root.read().unwrap().is_empty());
        }
    }

    // Issue 18: the walks recursed once per level, so a single deep filter (with
    // `max_topic_levels` raised) overflowed the stack of the task that matched or removed it.
    #[test]
    fn issue18_deep_filters_do_not_overflow_the_stack() {
        const LEVELS: usize = 100_000;
        let walk = std::thread::Builder::new().stack_size(256 << 10).spawn(|| {
            let interest = Interest::default();
            let wakes: Vec<Wake> = (0..4).map(|_| Arc::default()).collect();
            let exact = vec!["a"; LEVELS].join("/");
            let plus = vec!["+"; LEVELS].join("/");
            let hash = format!("{}/#", vec!["a"; LEVELS - 1].join("/"));
            let other = format!("{}/b", vec!["a"; LEVELS - 1].join("/"));
            for (id, filter) in [&exact, &plus, &hash, &other].into_iter().enumerate() {
                interest.add(filter, id as u64, &wakes[id]);
            }
            let id_of = |id: usize| Arc::as_ptr(&wakes[id]) as u64;
            assert_eq!(matched(&interest, &exact), BTreeSet::from([id_of(0), id_of(1), id_of(2)]));
            assert_eq!(matched(&interest, &other), BTreeSet::from([id_of(1), id_of(2), id_of(3)]));
            interest.wake_all();
            interest.remove(&plus, 1);
            interest.remove(&hash, 2);
            assert_eq!(matched(&interest, &exact), BTreeSet::from([id_of(0)]));
            interest.remove(&exact, 0);
            assert_eq!(matched(&interest, &exact), BTreeSet::new());
            // The last deep branch goes with the tree.
            drop(interest);
        });
        walk.expect("spawn").join().expect("deep walks ran on a 256 KiB stack");
    }

    #[test]
    fn removing_every_filter_empties_the_tree() {
        let interest = Interest::default();
        let wake: Wake = Arc::default();
        let filters = ["a/b", "a/+/c", "a/#", "#", "+", "$SYS/#", "a//b"];
        for filter in filters {
            interest.add(filter, 7, &wake);
        }
        for filter in filters {
            interest.remove(filter, 7);
        }
        assert!(interest.root.read().unwrap().is_empty());
    }

    #[test]
    fn a_wake_carries_the_lowest_matching_offset_per_partition() {
        let signal = AppendSignal::new();
        let (sensor, other): (Wake, Wake) = (Arc::default(), Arc::default());
        signal.interest().add("sensors/1", 1, &sensor);
        signal.interest().add("sensors/2", 2, &other);
        let record = |topic: &str| {
            Record::new(0, "x").with_header(crate::record::TOPIC, bytes::Bytes::copy_from_slice(topic.as_bytes()))
        };
        signal.appended(3, 10, &[record("other"), record("sensors/1"), record("sensors/1")]);
        signal.appended(3, 13, &[record("sensors/1")]);
        signal.appended(4, 7, &[record("sensors/1")]);
        let mut taken = Vec::new();
        sensor.take_into(&mut taken);
        assert_eq!(taken, vec![(3, 11), (4, 7)]);
        sensor.take_into(&mut taken);
        assert!(taken.is_empty(), "taken once");
        other.take_into(&mut taken);
        assert!(taken.is_empty(), "the other connection's filter matched nothing");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        runtime.block_on(async {
            let woken = tokio::time::timeout(std::time::Duration::from_millis(50), sensor.notify.notified()).await;
            assert!(woken.is_ok(), "the matching connection has a wake waiting");
            let not_woken = tokio::time::timeout(std::time::Duration::from_millis(50), other.notify.notified()).await;
            assert!(not_woken.is_err(), "the other connection was not woken");
        });
    }
}
