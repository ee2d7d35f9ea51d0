//! The session's decisions, free of I/O: which subscriptions a message matches and at what
//! QoS, which packet identifiers are in flight in each direction. The connection shell feeds
//! these structs events and acts on what they return.

use std::collections::{HashMap, HashSet};

use crate::codec::{PacketId, QoS, SubscriptionOptions};
use crate::topic;

/// One subscription of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Subscription {
    filter: String,
    options: SubscriptionOptions,
    identifier: Option<u32>,
    /// (partition id, offset): the subscription wants records of that partition from the
    /// offset on, the partition's end when it was made. A reader that lags behind does not
    /// hand it older ones. Partitions not listed: every record.
    since: Vec<(u32, u64)>,
}

/// A session's subscriptions, keyed by filter (a second SUBSCRIBE to a filter replaces it).
#[derive(Debug, Default)]
pub struct Subscriptions {
    entries: Vec<Subscription>,
}

/// How one message goes to one subscriber: once, whatever the number of matching
/// subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The highest QoS granted among the matching subscriptions, capped by the message's QoS.
    pub qos: QoS,
    /// The RETAIN flag to send: the message's flag if a matching subscription has Retain As
    /// Published, else 0.
    pub retain: bool,
    /// The Subscription Identifiers of every matching subscription that has one.
    pub identifiers: Vec<u32>,
}

impl Subscriptions {
    /// Adds or replaces the subscription to `filter`; returns whether it existed before.
    pub fn subscribe(&mut self, filter: &str, options: SubscriptionOptions, identifier: Option<u32>) -> bool {
        self.subscribe_since(filter, options, identifier, Vec::new())
    }

    /// As [`Subscriptions::subscribe`], for records from `since` on (see `Subscription::since`);
    /// a subscription replaced keeps its own.
    pub fn subscribe_since(
        &mut self,
        filter: &str,
        options: SubscriptionOptions,
        identifier: Option<u32>,
        since: Vec<(u32, u64)>,
    ) -> bool {
        let entry = Subscription { filter: filter.to_owned(), options, identifier, since };
        match self.entries.iter_mut().find(|s| s.filter == filter) {
            Some(existing) => {
                let since = std::mem::take(&mut existing.since);
                *existing = Subscription { since, ..entry };
                true
            }
            None => {
                self.entries.push(entry);
                false
            }
        }
    }

    /// Removes the subscription to `filter`; returns whether there was one.
    pub fn unsubscribe(&mut self, filter: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|s| s.filter != filter);
        self.entries.len() != before
    }

    /// Every subscription as (filter, options, identifier), in the order made.
    pub fn entries(&self) -> impl Iterator<Item = (&str, SubscriptionOptions, Option<u32>)> {
        self.entries.iter().map(|s| (s.filter.as_str(), s.options, s.identifier))
    }

    /// Whether there is no subscription.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The highest QoS granted to any subscription (QoS 0 when there is none).
    pub fn max_qos(&self) -> QoS {
        self.entries.iter().map(|s| s.options.qos).max().unwrap_or(QoS::AtMostOnce)
    }

    /// How a message on `topic`, published at `qos` with `retain`, reaches this session, or
    /// `None` if no subscription wants it. `from_self` says whether this session's client
    /// published it (No Local subscriptions skip those).
    pub fn route(&self, topic: &str, qos: QoS, retain: bool, from_self: bool) -> Option<Route> {
        self.route_at(topic, qos, retain, from_self, None)
    }

    /// As [`Subscriptions::route`], for the record at `position` (partition id, offset): a
    /// subscription made after the record was appended does not take it.
    pub fn route_at(
        &self,
        topic: &str,
        qos: QoS,
        retain: bool,
        from_self: bool,
        position: Option<(u32, u64)>,
    ) -> Option<Route> {
        let mut route: Option<Route> = None;
        for subscription in &self.entries {
            if (from_self && subscription.options.no_local) || !topic::matches(&subscription.filter, topic) {
                continue;
            }
            let too_old = position.is_some_and(|(partition, offset)| {
                subscription
                    .since
                    .iter()
                    .any(|&(since_partition, since)| since_partition == partition && offset < since)
            });
            if too_old {
                continue;
            }
            let route = route.get_or_insert(Route { qos: QoS::AtMostOnce, retain: false, identifiers: Vec::new() });
            route.qos = route.qos.max(subscription.options.qos);
            route.retain |= retain && subscription.options.retain_as_published;
            route.identifiers.extend(subscription.identifier);
        }
        route.map(|mut route| {
            route.qos = route.qos.min(qos);
            route
        })
    }
}

/// Where an outbound QoS 1 or 2 message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // named after the packet awaited
pub enum Stage {
    /// QoS 1, sent: PUBACK awaited.
    AwaitPubAck,
    /// QoS 2, sent: PUBREC awaited.
    AwaitPubRec,
    /// QoS 2, PUBREL sent: PUBCOMP awaited.
    AwaitPubComp,
}

/// Where a message was read: (reader key, offset).
pub type Position = (u32, u64);

/// Outbound QoS 1 and 2 messages in flight, bounded by the client's Receive Maximum.
#[derive(Debug)]
pub struct OutboundWindow {
    /// Each message's stage and its (reader key, offset) (`None` for a retained message or a
    /// group's message, which do not hold the session's committed offsets back).
    in_flight: HashMap<u16, (Stage, Option<(u32, u64)>)>,
    next_id: u16,
    window: usize,
}

/// What the shell does after the client acknowledged an outbound message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// Nothing to send; the slot may be free.
    Done,
    /// Send PUBREL for this packet identifier.
    SendPubRel(PacketId),
    /// The identifier was not in flight at this stage (ignored).
    Unknown,
}

impl OutboundWindow {
    /// A window of `window` messages (at least 1).
    pub fn new(window: usize) -> OutboundWindow {
        OutboundWindow { in_flight: HashMap::new(), next_id: 1, window: window.max(1) }
    }

    /// Whether another QoS 1/2 message may be sent now.
    pub fn has_room(&self) -> bool {
        self.in_flight.len() < self.window
    }

    /// The most messages in flight at once.
    pub fn capacity(&self) -> usize {
        self.window
    }

    /// Number of messages in flight.
    pub fn len(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// The lowest offset read by reader `key` still unacknowledged, if any.
    pub fn lowest_offset(&self, key: u32) -> Option<u64> {
        self.in_flight
            .values()
            .filter_map(|(_, position)| position.filter(|(k, _)| *k == key).map(|(_, offset)| offset))
            .min()
    }

    /// Every message in flight as (packet identifier, stage, position), by identifier.
    pub fn in_flight(&self) -> Vec<(u16, Stage, Option<Position>)> {
        let mut all: Vec<_> = self.in_flight.iter().map(|(&id, &(stage, position))| (id, stage, position)).collect();
        all.sort_unstable_by_key(|&(id, ..)| id);
        all
    }

    /// Puts back a message a resumed session had in flight, under its original packet
    /// identifier (MQTT requires the resend to use it), whether or not there is room.
    pub fn restore(&mut self, id: PacketId, stage: Stage, position: Option<(u32, u64)>) {
        self.in_flight.insert(id.get(), (stage, position));
    }

    /// The stage of message `id`, if it is in flight.
    pub fn stage(&self, id: PacketId) -> Option<Stage> {
        self.in_flight.get(&id.get()).map(|&(stage, _)| stage)
    }

    /// Drops message `id` without an acknowledgement (a restored message that can no longer
    /// be sent: expired, or no subscription wants it any more).
    pub fn forget(&mut self, id: PacketId) {
        self.in_flight.remove(&id.get());
    }

    /// Takes a free packet identifier for a message at `qos` (1 or 2), read from `position`
    /// (reader key, offset). Call only when [`OutboundWindow::has_room`].
    pub fn start(&mut self, qos: QoS, position: Option<(u32, u64)>) -> PacketId {
        debug_assert!(self.has_room() && qos != QoS::AtMostOnce);
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if let (Some(packet_id), false) = (PacketId::new(id), self.in_flight.contains_key(&id)) {
                let state = if qos == QoS::ExactlyOnce { Stage::AwaitPubRec } else { Stage::AwaitPubAck };
                self.in_flight.insert(id, (state, position));
                return packet_id;
            }
        }
    }

    /// The client sent PUBACK.
    pub fn on_puback(&mut self, id: PacketId) -> AckOutcome {
        self.finish(id, Stage::AwaitPubAck)
    }

    /// The client sent PUBREC; `failed` when its reason code is an error (the exchange ends).
    pub fn on_pubrec(&mut self, id: PacketId, failed: bool) -> AckOutcome {
        match self.in_flight.get_mut(&id.get()) {
            Some((state @ (Stage::AwaitPubRec | Stage::AwaitPubComp), _)) => {
                if failed {
                    self.in_flight.remove(&id.get());
                    AckOutcome::Done
                } else {
                    *state = Stage::AwaitPubComp;
                    AckOutcome::SendPubRel(id)
                }
            }
            _ => AckOutcome::Unknown,
        }
    }

    /// The client sent PUBCOMP.
    pub fn on_pubcomp(&mut self, id: PacketId) -> AckOutcome {
        self.finish(id, Stage::AwaitPubComp)
    }

    fn finish(&mut self, id: PacketId, expected: Stage) -> AckOutcome {
        if self.in_flight.get(&id.get()).is_some_and(|(state, _)| *state == expected) {
            self.in_flight.remove(&id.get());
            AckOutcome::Done
        } else {
            AckOutcome::Unknown
        }
    }
}

/// Inbound QoS 2 packet identifiers between PUBLISH and PUBREL: exactly once means a
/// re-sent PUBLISH with an identifier still here is not stored again.
///
/// An identifier counts as stored only once its append succeeded (issue 18). Until then it is
/// `appending`: a resend on the same connection waits behind it, but it is not in the session
/// record, so if the append fails or the broker dies first, the client's resend is stored
/// rather than answered as a duplicate of a message that was never kept.
#[derive(Debug)]
pub struct InboundQos2 {
    /// Stored, awaiting PUBREL: the identifiers a session record keeps.
    pending: HashSet<u16>,
    /// Being appended: not durable yet.
    appending: HashSet<u16>,
    limit: usize,
}

/// What to do with an inbound QoS 2 PUBLISH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos2Publish {
    /// First time: append it, then report the outcome ([`InboundQos2::on_stored`] or
    /// [`InboundQos2::on_append_failed`]) before the PUBREC.
    Store,
    /// Already stored or being stored (a resend before PUBREL): PUBREC only, after the
    /// first one.
    Duplicate,
    /// More unreleased messages than our Receive Maximum: DISCONNECT 0x93.
    OverLimit,
}

impl InboundQos2 {
    /// At most `limit` (our Receive Maximum) unreleased messages.
    pub fn new(limit: usize) -> InboundQos2 {
        InboundQos2 { pending: HashSet::new(), appending: HashSet::new(), limit }
    }

    /// A QoS 2 PUBLISH arrived.
    pub fn on_publish(&mut self, id: PacketId) -> Qos2Publish {
        if self.pending.contains(&id.get()) || self.appending.contains(&id.get()) {
            Qos2Publish::Duplicate
        } else if self.pending_len() >= self.limit {
            Qos2Publish::OverLimit
        } else {
            self.appending.insert(id.get());
            Qos2Publish::Store
        }
    }

    /// The append of the PUBLISH `id` succeeded: from now on it is stored.
    pub fn on_stored(&mut self, id: PacketId) {
        if self.appending.remove(&id.get()) {
            self.pending.insert(id.get());
        }
    }

    /// The append of the PUBLISH `id` failed: a resend is a new message.
    pub fn on_append_failed(&mut self, id: PacketId) {
        self.appending.remove(&id.get());
    }

    /// A session resumed with these identifiers still awaiting PUBREL.
    pub fn restore(&mut self, ids: &[u16]) {
        self.pending.extend(ids.iter().copied().filter(|&id| id != 0));
    }

    /// How many messages wait for their PUBREL, counting those still being appended.
    pub fn pending_len(&self) -> usize {
        self.pending.len() + self.appending.len()
    }

    /// The identifiers stored and awaiting PUBREL, sorted (for the session record).
    pub fn pending_ids(&self) -> Vec<u16> {
        let mut ids: Vec<u16> = self.pending.iter().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// PUBREL arrived; returns whether the identifier was pending.
    pub fn on_pubrel(&mut self, id: PacketId) -> bool {
        self.pending.remove(&id.get()) | self.appending.remove(&id.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::RetainHandling;

    fn options(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::SendAtSubscribe,
        }
    }

    #[test]
    fn a_subscription_takes_records_from_where_it_was_made_and_keeps_that_when_replaced() {
        let mut subscriptions = Subscriptions::default();
        let options = SubscriptionOptions { qos: QoS::AtLeastOnce, ..SubscriptionOptions::default() };
        subscriptions.subscribe_since("a/#", options, None, vec![(7, 100)]);
        let at = |offset| subscriptions.route_at("a/b", QoS::AtLeastOnce, false, false, Some((7, offset)));
        assert!(at(99).is_none(), "appended before the subscription");
        assert!(at(100).is_some());
        assert!(
            subscriptions.route_at("a/b", QoS::AtLeastOnce, false, false, Some((8, 0))).is_some(),
            "other partition"
        );
        assert!(subscriptions.route("a/b", QoS::AtLeastOnce, false, false).is_some(), "no position: no limit");
        // Subscribing again (a new QoS) keeps the original start: nothing it had is lost.
        subscriptions.subscribe_since("a/#", SubscriptionOptions::default(), None, vec![(7, 500)]);
        let route = subscriptions.route_at("a/b", QoS::AtLeastOnce, false, false, Some((7, 100)));
        assert_eq!(route.map(|r| r.qos), Some(QoS::AtMostOnce));
    }

    #[test]
    fn overlapping_subscriptions_route_once_at_the_highest_qos_with_all_identifiers() {
        let mut subs = Subscriptions::default();
        subs.subscribe("a/#", options(QoS::AtMostOnce), Some(1));
        subs.subscribe("a/+", options(QoS::ExactlyOnce), Some(2));
        subs.subscribe("a/b", options(QoS::AtLeastOnce), None);
        subs.subscribe("x", options(QoS::ExactlyOnce), Some(3));
        let route = subs.route("a/b", QoS::ExactlyOnce, false, false).unwrap();
        assert_eq!(route, Route { qos: QoS::ExactlyOnce, retain: false, identifiers: vec![1, 2] });
        // Capped by the message's QoS.
        assert_eq!(subs.route("a/b", QoS::AtLeastOnce, false, false).unwrap().qos, QoS::AtLeastOnce);
        assert_eq!(subs.route("b", QoS::AtLeastOnce, false, false), None);
    }

    #[test]
    fn resubscribing_replaces_and_unsubscribe_removes() {
        let mut subs = Subscriptions::default();
        assert!(!subs.subscribe("t", options(QoS::ExactlyOnce), None));
        assert!(subs.subscribe("t", options(QoS::AtMostOnce), None));
        assert_eq!(subs.route("t", QoS::ExactlyOnce, false, false).unwrap().qos, QoS::AtMostOnce);
        assert!(subs.unsubscribe("t"));
        assert!(!subs.unsubscribe("t"));
        assert!(subs.is_empty());
    }

    #[test]
    fn no_local_and_retain_as_published() {
        let mut subs = Subscriptions::default();
        subs.subscribe("t", SubscriptionOptions { no_local: true, ..options(QoS::AtLeastOnce) }, None);
        assert_eq!(subs.route("t", QoS::AtLeastOnce, true, true), None);
        assert!(!subs.route("t", QoS::AtLeastOnce, true, false).unwrap().retain);
        subs.subscribe("#", SubscriptionOptions { retain_as_published: true, ..options(QoS::AtMostOnce) }, None);
        let route = subs.route("t", QoS::AtLeastOnce, true, false).unwrap();
        assert!(route.retain);
        assert_eq!(route.qos, QoS::AtLeastOnce);
        // `$` topics are not matched by a leading wildcard.
        assert_eq!(subs.route("$SYS/x", QoS::AtLeastOnce, false, false), None);
    }

    #[test]
    fn the_outbound_window_bounds_and_walks_both_flows() {
        let mut window = OutboundWindow::new(2);
        let a = window.start(QoS::AtLeastOnce, None);
        let b = window.start(QoS::ExactlyOnce, None);
        assert_ne!(a, b);
        assert!(!window.has_room());
        assert_eq!(window.on_pubcomp(b), AckOutcome::Unknown);
        assert_eq!(window.on_pubrec(b, false), AckOutcome::SendPubRel(b));
        assert_eq!(window.on_puback(a), AckOutcome::Done);
        assert_eq!(window.on_puback(a), AckOutcome::Unknown);
        assert!(window.has_room());
        assert_eq!(window.on_pubcomp(b), AckOutcome::Done);
        assert!(window.is_empty());
    }

    #[test]
    fn the_lowest_unacknowledged_offset_is_per_partition() {
        let mut window = OutboundWindow::new(4);
        let a = window.start(QoS::AtLeastOnce, Some((0, 7)));
        window.start(QoS::AtLeastOnce, Some((1, 3)));
        window.start(QoS::AtLeastOnce, Some((0, 9)));
        window.start(QoS::AtLeastOnce, None);
        assert_eq!(
            (window.lowest_offset(0), window.lowest_offset(1), window.lowest_offset(2)),
            (Some(7), Some(3), None)
        );
        window.on_puback(a);
        assert_eq!(window.lowest_offset(0), Some(9));
    }

    #[test]
    fn packet_ids_wrap_and_skip_those_in_flight() {
        let mut window = OutboundWindow::new(3);
        window.next_id = u16::MAX;
        let last = window.start(QoS::AtLeastOnce, None);
        assert_eq!(last.get(), u16::MAX);
        assert_eq!(window.start(QoS::AtLeastOnce, None).get(), 1);
        window.next_id = u16::MAX;
        assert_eq!(window.start(QoS::AtLeastOnce, None).get(), 2);
    }

    #[test]
    fn inbound_qos2_is_stored_once_until_pubrel() {
        let mut inbound = InboundQos2::new(1);
        let id = PacketId::new(5).unwrap();
        assert_eq!(inbound.on_publish(id), Qos2Publish::Store);
        inbound.on_stored(id);
        assert_eq!(inbound.on_publish(id), Qos2Publish::Duplicate);
        assert_eq!(inbound.on_publish(PacketId::new(6).unwrap()), Qos2Publish::OverLimit);
        assert!(inbound.on_pubrel(id));
        assert!(!inbound.on_pubrel(id));
        assert_eq!(inbound.on_publish(id), Qos2Publish::Store);
    }

    #[test]
    fn issue18_a_qos2_id_is_recorded_only_once_its_append_succeeded() {
        let mut inbound = InboundQos2::new(2);
        let id = PacketId::new(9).unwrap();
        assert_eq!(inbound.on_publish(id), Qos2Publish::Store);
        // A session record written now (a commit, or the broker dying) must not hold it: the
        // client's resend after a restart would be taken as a duplicate of nothing.
        assert!(inbound.pending_ids().is_empty(), "recorded before the append succeeded");
        // On the same connection a resend still waits behind the first append.
        assert_eq!(inbound.on_publish(id), Qos2Publish::Duplicate);
        assert_eq!(inbound.pending_len(), 1, "counts toward the Receive Maximum meanwhile");
        // The append failed: the resend is a new message.
        inbound.on_append_failed(id);
        assert_eq!(inbound.pending_len(), 0);
        assert_eq!(inbound.on_publish(id), Qos2Publish::Store);
        inbound.on_stored(id);
        assert_eq!(inbound.pending_ids(), vec![9]);
        assert_eq!(inbound.on_publish(id), Qos2Publish::Duplicate);
        assert!(inbound.on_pubrel(id));
        assert!(inbound.pending_ids().is_empty());
    }
}
