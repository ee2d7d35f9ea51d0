//! Delivery: reading the cursors' partitions and queueing PUBLISH packets within the
//! window, and the messages of consumer groups and retained messages.

use std::sync::Arc;

use crate::codec::{self, PacketId, Publish, QoS};
use crate::groups::GroupDelivery;
use crate::readers::{self, BufferedRecord};
use crate::record;
use crate::replay;
use crate::session::{Route, Stage};
use crate::session_core::delivery::{
    CursorContext, GroupStep, Step, Target, may_send, plan_group, plan_record, qos0_max_lag, qos0_skip_to,
    redelivery_over,
};
use crate::topic_alias::OutboundTopic;

use super::outbound::Outbound;
use super::{WRITE_CHUNK_BYTES, now_ms};

/// Bytes read from the log per fetch for delivery.
const FETCH_BYTES: usize = 256 << 10;

impl Outbound {
    /// Queues one message a group handed to this member.
    pub(super) fn deliver_group(&mut self, index: usize, delivery: GroupDelivery) {
        let membership = &self.memberships[index];
        let (group, member) = (Arc::clone(&membership.group), membership.member);
        let GroupDelivery { partition, offset, message, redelivery } = delivery;
        let step = plan_group(membership.options, membership.identifier, &message, redelivery, now_ms());
        // Room in its queue: the group may hand out more.
        group.poke();
        let GroupStep::Send { route, expiry, dup } = step else {
            group.ack(member, partition, offset);
            return;
        };
        match self.queue_publish(message, route, expiry, None, dup, None) {
            Some(packet_id) => {
                self.group_in_flight.insert(packet_id, (group, member, partition, offset));
            }
            // QoS 0 (or not sent: too large for the client): done with it.
            None => group.ack(member, partition, offset),
        }
    }

    /// The client finished with our message `packet_id`: a group's message is acknowledged.
    pub(super) fn group_done(&mut self, packet_id: PacketId) {
        if let Some((group, member, partition, offset)) = self.group_in_flight.remove(&packet_id.get()) {
            group.ack(member, partition, offset);
            group.poke();
        }
    }

    /// Sends again, under its packet identifier and with DUP set, a retained message a
    /// resumed session had in flight. Only if it is still its topic's retained message and a
    /// subscription still matches it: a newer one comes through the stream like any publish,
    /// and a deleted one is not sent.
    pub(super) fn resend_retained(&mut self, id: PacketId, stage: Stage, offset: u64) {
        let qos = if stage == Stage::AwaitPubRec { QoS::ExactlyOnce } else { QoS::AtLeastOnce };
        let Some(message) = self.shared.retained_at(offset) else { return };
        let Some(route) = self.subscriptions.route(&message.topic, message.qos, true, false) else { return };
        let Ok(expiry) = record::remaining_expiry(message.expires_at, now_ms()) else { return };
        let position = Some((readers::RETAINED_KEY, offset));
        self.window.restore(id, stage, position);
        let route = Route { qos, retain: true, ..route };
        if self.queue_publish(message, route, expiry, position, true, Some(id)).is_none() {
            self.window.forget(id);
        }
    }

    /// Moves the plain cursors that had read to the end up to the first record a wake
    /// reported in their partition: what lies between matched none of this connection's
    /// filters (`interest.rs` says why nothing is skipped that should not be).
    pub(super) fn jump_cursors(&mut self) {
        self.interest.wake.take_into(&mut self.jumps);
        if self.jumps.is_empty() {
            return;
        }
        for cursor in &mut self.readers.cursors {
            let Some(&(_, offset)) = self.jumps.iter().find(|(id, _)| *id == cursor.partition.id) else { continue };
            if cursor.replay.is_some() || !cursor.reached_end || offset <= cursor.next {
                continue;
            }
            debug_assert!(cursor.buffered.is_empty(), "a cursor at the end holds nothing read ahead");
            cursor.next = offset;
            cursor.buffered_end = offset;
            cursor.caught_up = false;
            cursor.reached_end = false;
        }
    }

    /// Reads from the partition and queues deliveries until caught up, the window is full
    /// or enough bytes wait to be written.
    pub(super) fn deliver(&mut self) -> Result<(), strata_log::LogError> {
        let now = now_ms();
        while self.chunk_bytes < WRITE_CHUNK_BYTES {
            match self.pending_retained.front() {
                Some((_, route, _)) if may_send(route.qos, &self.window) => {}
                _ => break,
            }
            let Some((message, route, retained_offset)) = self.pending_retained.pop_front() else { break };
            if let Ok(expiry) = record::remaining_expiry(message.expires_at, now) {
                // In flight under `$retained`'s offset, so that a resumed session sends it again.
                let position = retained_offset.map(|offset| (readers::RETAINED_KEY, offset));
                self.queue_publish(message, route, expiry, position, false, None);
            }
        }
        self.readers.refresh(&self.shared.streams);
        let count = self.readers.cursors.len();
        let first = self.readers.next_turn;
        self.readers.next_turn = self.readers.next_turn.wrapping_add(1);
        for turn in 0..count {
            if self.chunk_bytes >= WRITE_CHUNK_BYTES || !(self.window.has_room() || self.readers.redelivering()) {
                break;
            }
            self.deliver_from((first + turn) % count)?;
        }
        Ok(())
    }

    /// Queues one cursor's deliveries until it is caught up, the window is full or enough
    /// bytes wait to be written. Records come from what the cursor read ahead; the log is read
    /// (and decoded) again only once that is drained, so freeing one slot of a full window
    /// costs one record, not a fetch.
    pub(super) fn deliver_from(&mut self, index: usize) -> Result<(), strata_log::LogError> {
        let cursor = &mut self.readers.cursors[index];
        let (partition, replay, mut next) = (Arc::clone(&cursor.partition), cursor.replay.clone(), cursor.next);
        let (key, redeliver_below) = (cursor.key, cursor.redeliver_below);
        let mut buffered = std::mem::take(&mut cursor.buffered);
        let mut resend = std::mem::take(&mut cursor.resend);
        let mut buffered_end = cursor.buffered_end;
        let mut caught_up = false;
        let now = now_ms();
        // A live reader that can only lose QoS 0 messages may skip ahead instead of lagging.
        let configured_lag = self.shared.config.limits.qos0_max_lag;
        let qos0_max_lag = qos0_max_lag(replay.is_some(), self.subscriptions.max_qos(), configured_lag);
        // Below `redeliver_below` the window already holds what is resent: no room needed.
        while self.chunk_bytes < WRITE_CHUNK_BYTES
            && (self.window.has_room() || !redelivery_over(next, redeliver_below))
        {
            let Some(front) = buffered.front() else {
                next = next.max(buffered_end);
                if let Some(max_lag) = qos0_max_lag {
                    let high_watermark = partition.committed();
                    if let Some(to) = qos0_skip_to(next, high_watermark, max_lag, redeliver_below) {
                        self.shared.metrics.qos0_skipped(to - next);
                        next = to;
                    }
                }
                let fetch = partition.read(next, FETCH_BYTES)?;
                if next < fetch.log_start {
                    // Retention removed what this reader had not read yet; live delivery goes
                    // on from what is left.
                    next = fetch.log_start;
                    continue;
                }
                let Some(fetch_end) = fetch.next_offset() else {
                    caught_up = true;
                    break;
                };
                buffered.extend(fetch.records(next)?.into_iter().map(|stored| BufferedRecord {
                    offset: stored.offset,
                    timestamp: stored.timestamp,
                    message: record::from_record(stored).ok(),
                }));
                buffered_end = fetch_end;
                continue;
            };
            let (offset, timestamp) = (front.offset, front.timestamp);
            let target = match &replay {
                None => Target::Plain { subscriptions: &self.subscriptions, partition_id: partition.id },
                Some(replay) => Target::Replay(replay),
            };
            let context = CursorContext {
                target,
                client_id: self.client_id.as_bytes(),
                window: &self.window,
                redeliver_below,
                now_ms: now,
            };
            let (route, expiry, resend_id) = match plan_record(&context, offset, front.message.as_ref(), &mut resend) {
                Step::WindowFull => break,
                Step::Skip { forget } | Step::Expired { forget } => {
                    if let Some(id) = forget {
                        self.window.forget(id);
                    }
                    buffered.pop_front();
                    next = offset + 1;
                    continue;
                }
                Step::Send { route, expiry, resend } => (route, expiry, resend),
            };
            let mut message = buffered.pop_front().and_then(|b| b.message).expect("front holds a message");
            next = offset + 1;
            if let (Some(replay), true) = (&replay, self.version.is_v5()) {
                add_stream_properties(&mut message, replay, partition.number, offset, timestamp);
            }
            let sent = self.queue_publish(message, route, expiry, Some((key, offset)), false, resend_id);
            if let (Some(id), None) = (resend_id, sent) {
                self.window.forget(id);
            }
        }
        if buffered.is_empty() {
            next = next.max(buffered_end);
        }
        if redelivery_over(next, redeliver_below) {
            // Whatever is left was removed by retention before it could be resent.
            for (_, id) in resend.drain() {
                self.window.forget(id);
            }
        }
        let cursor = &mut self.readers.cursors[index];
        cursor.next = next;
        cursor.buffered = buffered;
        cursor.resend = resend;
        cursor.buffered_end = buffered_end;
        cursor.caught_up = caught_up;
        cursor.reached_end = caught_up;
        Ok(())
    }

    /// Queues one PUBLISH; a retained message (RETAIN set by a SUBSCRIBE) holds no offset.
    /// `resend` is the packet identifier a resumed session's message keeps (DUP set); it is
    /// already in the window. `dup` sets DUP on a message sent under a new identifier. Returns the packet identifier, or `None` for QoS 0 or when the
    /// message is too large for the client.
    pub(super) fn queue_publish(
        &mut self,
        message: record::StoredMessage,
        route: Route,
        expiry: Option<u32>,
        position: Option<(u32, u64)>,
        dup: bool,
        resend: Option<PacketId>,
    ) -> Option<u16> {
        let mut properties = message.properties;
        if self.version.is_v5() {
            properties.message_expiry_interval = expiry;
            properties.subscription_identifiers = route.identifiers;
        }
        let mut publish = Publish {
            dup: dup || resend.is_some(),
            qos: route.qos,
            retain: route.retain,
            topic: message.topic,
            packet_id: None,
            properties,
            payload: message.payload,
        };
        let start = self.scratch.len();
        // Measure first: a message larger than the client accepts is not sent to it. The
        // packet identifier is a placeholder of the same size.
        if route.qos != QoS::AtMostOnce {
            publish.packet_id = PacketId::new(1);
        }
        if codec::encode_publish_header(&publish, self.version, &mut self.scratch).is_err() {
            self.scratch.truncate(start);
            return None;
        }
        let size = self.scratch.len() - start + publish.payload.len();
        self.scratch.truncate(start);
        if size > self.client_max_packet_size {
            return None;
        }
        if route.qos != QoS::AtMostOnce {
            publish.packet_id = Some(resend.unwrap_or_else(|| self.window.start(route.qos, position)));
        }
        let packet_id = publish.packet_id.map(PacketId::get);
        if self.version.is_v5() {
            match self.aliases.topic(&publish.topic) {
                OutboundTopic::Plain => {}
                OutboundTopic::SetAlias(alias) => publish.properties.topic_alias = Some(alias),
                OutboundTopic::UseAlias(alias) => {
                    publish.properties.topic_alias = Some(alias);
                    publish.topic = codec::ByteString::new();
                }
            }
        }
        if codec::encode_publish_header(&publish, self.version, &mut self.scratch).is_err() {
            self.scratch.truncate(start);
            return None;
        }
        let header = self.scratch.split().freeze();
        self.chunk_bytes += header.len() + publish.payload.len();
        self.shared.metrics.sent(publish.qos, publish.payload.len());
        self.chunks.push_back(header);
        if !publish.payload.is_empty() {
            self.chunks.push_back(publish.payload);
        }
        packet_id
    }
}

/// Adds the `stream-*` user properties of a record read by a `$stream` subscription.
pub(super) fn add_stream_properties(
    message: &mut record::StoredMessage,
    replay: &replay::ReplaySubscription,
    partition: u32,
    offset: u64,
    timestamp: i64,
) {
    let key = replay.compaction_key.as_deref().and_then(|name| {
        message.properties.user_properties.iter().find(|(n, _)| &n[..] == name).map(|(_, v)| v.clone())
    });
    let user_properties = &mut message.properties.user_properties;
    user_properties.push((replay::STREAM_OFFSET.into(), offset.to_string().into()));
    user_properties.push((replay::STREAM_PARTITION.into(), partition.to_string().into()));
    user_properties.push((replay::STREAM_TIMESTAMP.into(), timestamp.to_string().into()));
    if let Some(key) = key {
        user_properties.push((replay::STREAM_KEY.into(), key));
    }
}
