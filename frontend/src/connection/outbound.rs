//! The outbound half: owns the socket's write side and the session's delivery state. It
//! answers the inbound half in order, delivers, commits a persistent session's offsets and
//! writes everything with vectored I/O.

use std::collections::{HashMap, VecDeque};
use std::io::IoSlice;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::sync::{oneshot, watch};

use crate::codec::{self, Ack, Disconnect, Packet, Properties, ProtocolVersion, ReasonCode, UnsubAck};
use crate::groups::{Group, MemberId, PartitionId};
use crate::handoff::Handoff;
use crate::interest::ConnectionInterest;
use crate::readers::Readers;
use crate::record;
use crate::session::{AckOutcome, InboundQos2, OutboundWindow, Route, Subscriptions};
use crate::session_core::delivery::may_send;
use crate::shared::Shared;
use crate::topic_alias::OutboundAliases;

use super::subscribe::{Membership, next_group_delivery};
use super::{
    AckPacket, CLOSE_TIMEOUT, ClientAck, PendingAck, ToOutbound, TransportWriter, WRITE_CHUNK_BYTES, lock, settle_ack,
};

/// Most messages from the inbound half handled before the outbound half delivers and writes.
const INBOUND_DRAIN: usize = 256;
/// How often a persistent session's committed offset is written to `$sessions` while acks
/// advance it: batched, never per message. A crash redelivers what was acknowledged since.
const OFFSET_COMMIT_INTERVAL: Duration = Duration::from_secs(1);

pub(super) struct Outbound {
    pub(super) shared: Arc<Shared>,
    /// This connection's plain filters in the broker's interest tree, and its wake
    /// (`interest.rs`).
    pub(super) interest: Arc<ConnectionInterest>,
    /// Scratch for [`Outbound::jump_cursors`].
    pub(super) jumps: Vec<(u32, u64)>,
    pub(super) version: ProtocolVersion,
    pub(super) client_id: String,
    /// The verified user (`None`: anonymous), recorded as the session's owner (issue 22).
    pub(super) user: Option<String>,
    pub(super) client_max_packet_size: usize,
    pub(super) writer: TransportWriter,
    pub(super) subscriptions: Subscriptions,
    pub(super) window: OutboundWindow,
    /// One cursor per partition followed: every partition for the plain subscriptions,
    /// plus each `$stream` subscription's own.
    pub(super) readers: Readers,
    /// Whether the session outlives the connection (Session Expiry Interval > 0), so its
    /// subscriptions and offsets are written to `$sessions`.
    pub(super) persistent: bool,
    pub(super) expiry_interval: u32,
    /// The committed offsets last written to `$sessions`.
    pub(super) last_commit: Option<Vec<u64>>,
    pub(super) subscriptions_changed: bool,
    pub(super) qos2: Arc<Mutex<InboundQos2>>,
    /// See `Inbound::qos1_unacked`.
    pub(super) qos1_unacked: Arc<AtomicUsize>,
    /// The topic aliases we send this client.
    pub(super) aliases: OutboundAliases,
    /// `$SYS` refreshes, once a subscription can match them ([`Outbound::follow_sys_if_needed`]).
    pub(super) sys_updates: Option<tokio::sync::broadcast::Receiver<record::StoredMessage>>,
    /// Retained messages matched by a SUBSCRIBE, waiting for room in the window, each with
    /// its offset in `$retained` (`None` for a `$SYS` value, which lives in memory only).
    pub(super) pending_retained: VecDeque<(record::StoredMessage, Route, Option<u64>)>,
    /// The consumer groups (`$share/...`) this connection is a member of.
    pub(super) memberships: Vec<Membership>,
    /// Group messages in flight by packet identifier: whom to tell when they are acknowledged.
    pub(super) group_in_flight: HashMap<u16, (Arc<Group>, MemberId, PartitionId, u64)>,
    /// Acknowledgements of inbound messages, in arrival order.
    pub(super) pending_acks: VecDeque<PendingAck>,
    /// Bytes to write, in order: encoded packets and the payloads they share with the log.
    pub(super) chunks: VecDeque<Bytes>,
    pub(super) chunk_bytes: usize,
    pub(super) scratch: BytesMut,
}

impl Outbound {
    /// Writes the session to `$sessions` if its subscriptions changed, or (with `offsets`)
    /// if its committed offset moved since the last write.
    pub(super) async fn commit(&mut self, offsets: bool) {
        if !self.persistent {
            return;
        }
        let committed = self.readers.committed(&self.window);
        if !self.subscriptions_changed && (!offsets || self.last_commit.as_ref() == Some(&committed)) {
            return;
        }
        let state = self.state(self.expiry_interval, 0);
        // Boxed, as the other rare awaits here: inline, they would grow every connection's task.
        Box::pin(self.shared.save_session(&self.client_id, Some(&state))).await;
        self.last_commit = Some(committed);
        self.subscriptions_changed = false;
    }

    pub(super) async fn run(&mut self, from_inbound: &Handoff<ToOutbound>, mut taken_over: oneshot::Receiver<()>) {
        let mut stopping = self.shared.shutdown.subscribe();
        // Checked once at once: shutdown may have begun before this connection subscribed.
        stopping.mark_changed();
        // One future for the whole connection: made anew on every pass, it would register
        // with (and leave) the broker-wide watch each time, taking its lock twice.
        let stop_requested = async move { while stopping.changed().await.is_ok() && !*stopping.borrow_and_update() {} };
        tokio::pin!(stop_requested);
        // Held only while a `$stream` cursor reads: every append notifies each receiver.
        let mut appended: Option<watch::Receiver<u64>> = None;
        let interest = Arc::clone(&self.interest);
        // Only a persistent session commits offsets: the others need no timer.
        let mut commit_tick = self.persistent.then(|| {
            let mut tick = tokio::time::interval(OFFSET_COMMIT_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick
        });
        loop {
            self.commit(false).await;
            if let Err(reason) = self.release_ready_acks() {
                Box::pin(self.disconnect(reason, "a publish could not be stored".into())).await;
                return;
            }
            // Anything appended after this point wakes the wait below.
            let replays_before = self.readers.cursors.iter().any(|c| c.replay.is_some());
            match &mut appended {
                Some(receiver) if replays_before => _ = receiver.borrow_and_update(),
                None if replays_before => appended = Some(self.shared.streams.appended()),
                _ => appended = None,
            }
            self.jump_cursors();
            if let Err(error) = self.deliver() {
                tracing::error!(client_id = %self.client_id, %error, "reading the partition failed");
                Box::pin(self.disconnect(ReasonCode::UnspecifiedError, "reading the log failed".into())).await;
                return;
            }
            if self.flush().await.is_err() {
                return;
            }
            let can_deliver = !self.readers.is_empty() && (self.window.has_room() || self.readers.redelivering());
            let replays = self.readers.cursors.iter().any(|c| c.replay.is_some());
            // A `$stream` cursor that appeared during this pass: go round once to subscribe.
            let unwatched_replays = replays && appended.is_none();
            let caught_up = self.readers.all_caught_up();
            let retained_ready = self.pending_retained.front().is_some_and(|(_, r, _)| may_send(r.qos, &self.window));
            let group_ready = !self.memberships.is_empty() && self.window.has_room();
            let memberships = &mut self.memberships;
            let front_durable = self.pending_acks.front_mut().and_then(|ack| ack.durable.as_mut());
            let has_front = front_durable.is_some();
            let sys_updates = self.sys_updates.as_mut();
            let follows_sys = sys_updates.is_some();
            tokio::select! {
                biased;
                () = &mut stop_requested => {
                    Box::pin(self.disconnect(ReasonCode::ServerShuttingDown, "the server is shutting down".into())).await;
                    return;
                }
                update = async { sys_updates.expect("guarded").recv().await }, if follows_sys => {
                    // `$SYS` refreshes come from memory, never from a log (`sys_topics.rs`).
                    if let Ok(message) = update
                        && let Some(route) = self.subscriptions.route(&message.topic, message.qos, false, false)
                    {
                        self.pending_retained.push_back((message, route, None));
                    }
                }
                _ = &mut taken_over => {
                    let why = format!("another connection took over client id {}", self.client_id);
                    Box::pin(self.disconnect(ReasonCode::SessionTakenOver, why)).await;
                    return;
                }
                outcome = async { front_durable.expect("guarded").await }, if has_front => {
                    let ack = self.pending_acks.front_mut().expect("guarded");
                    ack.durable = None;
                    if let Err(reason) = settle_ack(self.version, &self.qos2, ack, outcome.ok()) {
                        tracing::error!(client_id = %self.client_id, "a publish was not stored");
                        Box::pin(self.disconnect(reason, "a publish could not be stored".into())).await;
                        return;
                    }
                }
                () = from_inbound.queued() => {
                    // Take everything already waiting too, so that a burst of acknowledgements
                    // costs one pass of delivery and one write, not one per packet.
                    let mut message = from_inbound.pop();
                    let mut taken = 0;
                    loop {
                        match message {
                            None => break,
                            Some(ToOutbound::Close(reason)) => {
                                if let Some((reason, why)) = reason {
                                    Box::pin(self.disconnect(reason, why)).await;
                                }
                                return;
                            }
                            Some(message) => {
                                if let Err(reason) = self.handle(message) {
                                    Box::pin(self.disconnect(reason, "protocol error".into())).await;
                                    return;
                                }
                            }
                        }
                        taken += 1;
                        if taken >= INBOUND_DRAIN || self.chunk_bytes >= WRITE_CHUNK_BYTES {
                            break;
                        }
                        message = from_inbound.pop();
                    }
                }
                (index, delivery) = next_group_delivery(memberships), if group_ready => {
                    self.deliver_group(index, delivery);
                }
                // Plain subscriptions are woken only by appends on topics they match; `$stream`
                // cursors read everything, so any append wakes them.
                () = interest.wake.notify.notified(), if can_deliver && caught_up => self.readers.wake(),
                _ = async { appended.as_mut().expect("guarded").changed().await },
                    if can_deliver && caught_up && replays && !unwatched_replays => self.readers.wake(),
                // More is already in the log: go round and deliver it.
                () = std::future::ready(()), if (can_deliver && !caught_up) || retained_ready || unwatched_replays => {}
                _ = async { commit_tick.as_mut().expect("guarded").tick().await }, if commit_tick.is_some() => {
                    self.commit(true).await
                }
            }
        }
    }

    /// Encodes `packet` at the end of the write queue.
    pub(super) fn queue(&mut self, packet: &Packet) {
        if let Err(error) = codec::encode(packet, self.version, &mut self.scratch) {
            tracing::error!(client_id = %self.client_id, %error, "cannot encode");
            return;
        }
        let bytes = self.scratch.split().freeze();
        self.chunk_bytes += bytes.len();
        self.chunks.push_back(bytes);
    }

    pub(super) fn handle(&mut self, message: ToOutbound) -> Result<(), ReasonCode> {
        match message {
            ToOutbound::Ack { packet, packet_id, reason, durable, received } => {
                self.pending_acks.push_back(PendingAck { packet, packet_id, reason, durable, received });
            }
            ToOutbound::ClientAck(ack, packet_id) => {
                let outcome = match ack {
                    ClientAck::PubAck => self.window.on_puback(packet_id),
                    ClientAck::PubRec { failed } => self.window.on_pubrec(packet_id, failed),
                    ClientAck::PubComp => self.window.on_pubcomp(packet_id),
                };
                match outcome {
                    AckOutcome::SendPubRel(id) => self.queue(&Packet::PubRel(Ack::success(id))),
                    AckOutcome::Done => self.group_done(packet_id),
                    AckOutcome::Unknown => {}
                }
            }
            ToOutbound::Subscribe(subscribe) => {
                let (subscribe, since, refused) = *subscribe;
                self.subscribe(subscribe, since, &refused);
                self.subscriptions_changed = true;
            }
            ToOutbound::Unsubscribe(unsubscribe) => {
                self.subscriptions_changed = true;
                let reason_codes = unsubscribe
                    .filters
                    .iter()
                    .map(|filter| {
                        self.interest.remove(filter);
                        if self.subscriptions.unsubscribe(filter)
                            | self.readers.remove_replay(filter)
                            | self.leave_group(filter)
                        {
                            ReasonCode::Success
                        } else {
                            ReasonCode::NoSubscriptionExisted
                        }
                    })
                    .collect();
                if self.subscriptions.is_empty() {
                    self.readers.stop_following_all();
                }
                let unsuback =
                    UnsubAck { packet_id: unsubscribe.packet_id, properties: Properties::default(), reason_codes };
                self.queue(&Packet::UnsubAck(unsuback));
            }
            ToOutbound::PingResp => self.queue(&Packet::PingResp),
            ToOutbound::Close(_) => {}
        }
        Ok(())
    }

    /// At the end of a persistent session's connection: the inbound QoS 2 messages whose
    /// PUBREC was not sent yet count as stored if their append succeeds (waited for, within
    /// [`CLOSE_TIMEOUT`]), so the session record keeps their ids and the client's resend is
    /// not stored twice. A failed or unfinished append leaves the id out: the resend is stored.
    /// (A failed append was already forgotten, and its `durable` cleared, where it failed.)
    pub(super) async fn settle_qos2(&mut self) {
        let deadline = tokio::time::Instant::now() + CLOSE_TIMEOUT;
        for ack in &mut self.pending_acks {
            if !matches!(ack.packet, AckPacket::PubRec) || ack.reason.is_error() {
                continue;
            }
            let stored = match ack.durable.as_mut() {
                None => true,
                Some(durable) => matches!(tokio::time::timeout_at(deadline, durable).await, Ok(Ok(Ok(_)))),
            };
            if stored {
                lock(&self.qos2).on_stored(ack.packet_id);
            }
        }
    }

    /// Queues the acknowledgements at the front whose records are durable (or that wait for
    /// nothing), in order.
    pub(super) fn release_ready_acks(&mut self) -> Result<(), ReasonCode> {
        while let Some(front) = self.pending_acks.front_mut() {
            if let Some(durable) = &mut front.durable {
                let outcome = match durable.try_recv() {
                    Ok(outcome) => Some(outcome),
                    Err(oneshot::error::TryRecvError::Closed) => None,
                    Err(oneshot::error::TryRecvError::Empty) => return Ok(()),
                };
                front.durable = None;
                settle_ack(self.version, &self.qos2, front, outcome)?;
            }
            let ack = self.pending_acks.pop_front().expect("front exists");
            match ack.packet {
                AckPacket::PubAck => _ = self.qos1_unacked.fetch_sub(1, Ordering::AcqRel),
                // Stored only now that the append succeeded, before the PUBREC says so
                // (`InboundQos2`): a session record written from here on keeps the id.
                AckPacket::PubRec if ack.reason.is_error() => lock(&self.qos2).on_append_failed(ack.packet_id),
                AckPacket::PubRec => lock(&self.qos2).on_stored(ack.packet_id),
                AckPacket::PubComp => {}
            }
            if let Some(received) = ack.received {
                self.shared.metrics.publish_acked(received.elapsed());
            }
            let body = Ack { reason_code: ack.reason, ..Ack::success(ack.packet_id) };
            let packet = match ack.packet {
                AckPacket::PubAck => Packet::PubAck(body),
                AckPacket::PubRec => Packet::PubRec(body),
                AckPacket::PubComp => Packet::PubComp(body),
            };
            self.queue(&packet);
        }
        Ok(())
    }

    /// Writes the queue with vectored writes; the payloads go out from the log's bytes.
    pub(super) async fn flush(&mut self) -> std::io::Result<()> {
        let write_timeout = self.shared.config.limits.write_timeout;
        while !self.chunks.is_empty() {
            let slices: Vec<IoSlice<'_>> = self.chunks.iter().take(64).map(|c| IoSlice::new(c)).collect();
            let write = self.writer.write_vectored(&slices);
            // Issue 22: a client that stops reading fills the socket's buffers and then holds
            // this connection (and what it has queued) for ever; each write that makes no
            // progress for `write_timeout` ends the connection instead.
            let mut written = match write_timeout {
                Some(limit) => tokio::time::timeout(limit, write).await.map_err(|_| {
                    tracing::warn!(client_id = %self.client_id, ?limit, "closing: the client stopped reading (write_timeout)");
                    std::io::Error::from(std::io::ErrorKind::TimedOut)
                })??,
                None => write.await?,
            };
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            self.chunk_bytes = self.chunk_bytes.saturating_sub(written);
            while written > 0 {
                let front = self.chunks.front_mut().expect("written bytes came from a chunk");
                if written >= front.len() {
                    written -= front.len();
                    self.chunks.pop_front();
                } else {
                    front.advance(written);
                    written = 0;
                }
            }
        }
        self.chunk_bytes = 0;
        Ok(())
    }

    /// Sends DISCONNECT with `reason` and the reason string `why` to an MQTT 5 client (MQTT 3
    /// has none) and ends.
    pub(super) async fn disconnect(&mut self, reason: ReasonCode, mut why: String) {
        if self.version.is_v5() {
            if let Some((cut, _)) = why.char_indices().nth(256) {
                why.truncate(cut);
            }
            let mut properties = Properties::default();
            properties.reason_string = Some(why.into());
            let disconnect = Disconnect { reason_code: reason, properties };
            self.queue(&Packet::Disconnect(disconnect));
        }
        let _ = self.flush().await;
        let _ = self.writer.shutdown().await;
    }
}
