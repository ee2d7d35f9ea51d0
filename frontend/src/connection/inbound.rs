//! The inbound half: reads and decodes the client's packets, hands publishes to the
//! partition writer and passes whatever needs an answer to the outbound half, in order.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::oneshot;

use crate::codec::{self, Packet, PacketId, ProtocolVersion, Publish, QoS, ReasonCode, Subscribe};
use crate::handoff::Handoff;
use crate::interest::ConnectionInterest;
use crate::partition::{AppendError, AppendRequest, AppendResult};
use crate::record;
use crate::session::{InboundQos2, Qos2Publish};
use crate::shared::Shared;
use crate::topic;
use crate::topic_alias::InboundAliases;

use super::subscribe::may_subscribe;
use super::{AckPacket, ClientAck, End, ToOutbound, TransportReader, forget_refused_qos2, lock, now_ms, read_more};

pub(super) struct Inbound {
    pub(super) shared: Arc<Shared>,
    pub(super) version: ProtocolVersion,
    pub(super) client_id: String,
    pub(super) keep_alive: u16,
    pub(super) reader: TransportReader,
    pub(super) buf: BytesMut,
    /// See [`read_more`](super::read_more).
    pub(super) read_chunk: usize,
    /// To the outbound half, which this task polls right after this half (`handoff.rs`).
    pub(super) to_outbound: Arc<Handoff<ToOutbound>>,
    /// Shared with the outbound half: SUBSCRIBE's plain filters go in as the packet is read.
    pub(super) interest: Arc<ConnectionInterest>,
    /// Shared with the outbound half, which saves it with the session.
    pub(super) qos2: Arc<Mutex<InboundQos2>>,
    /// Inbound QoS 1 messages not yet PUBACKed; the outbound half counts down as it sends
    /// PUBACK. With the unreleased QoS 2 messages, held to our Receive Maximum.
    pub(super) qos1_unacked: Arc<AtomicUsize>,
    /// The client's topic aliases.
    pub(super) aliases: InboundAliases,
    /// What the ACL lets this client publish and subscribe to (issue 22).
    pub(super) permissions: crate::acl::Permissions,
}

impl Inbound {
    /// Makes the SUBSCRIBE take effect now, as it is decoded (docs/mqtt.md): its plain
    /// filters go in the interest tree, in packet order, so a PUBLISH read after it, even on
    /// this connection, wakes the subscription. Returns each partition's log end, read after
    /// (`interest.rs`): every subscription in the packet (plain, `$stream` at `latest`, a new
    /// `$share` group) starts there, however late the outbound half takes it up. Also says,
    /// for each filter, whether the ACL refuses it (issue 22): a refused filter never goes in.
    pub(super) fn subscribe_decoded(&self, subscribe: &Subscribe) -> (Vec<(u32, u64)>, Vec<bool>) {
        let limits = self.shared.config.limits.topics();
        let mut refused = Vec::with_capacity(subscribe.filters.len());
        for filter in &subscribe.filters {
            let parsed = topic::parse_subscription(&filter.filter, &limits);
            let properties = &subscribe.properties.user_properties;
            let denied =
                parsed.as_ref().is_ok_and(|parsed| !may_subscribe(&self.shared, &self.permissions, parsed, properties));
            if denied {
                self.shared.metrics.acl_denied(false);
                tracing::debug!(client_id = %self.client_id, filter = %filter.filter, "subscription refused by the ACL");
            } else if let Ok(topic::Subscription::Plain(filter)) = parsed {
                self.interest.add(filter);
            }
            refused.push(denied);
        }
        (self.shared.streams.high_watermarks(), refused)
    }

    /// The lock is released before the caller awaits anything.
    pub(super) fn qos2_publish(qos2: &Mutex<InboundQos2>, id: PacketId) -> Qos2Publish {
        lock(qos2).on_publish(id)
    }

    /// Borrows: the reader stays, to be drained when we close ([`close_gracefully`](super::close_gracefully)).
    pub(super) async fn run(&mut self) -> End {
        let end = self.read_loop().await;
        let reason = match &end {
            End::Quiet | End::ClientDisconnect { .. } => None,
            End::Disconnect(reason, why) => Some((*reason, why.clone())),
        };
        self.to_outbound.push(ToOutbound::Close(reason)).await;
        end
    }

    pub(super) async fn read_loop(&mut self) -> End {
        // Keep alive: the client must send something within 1.5 times its interval. One timer
        // for the whole connection, pushed back before each wait: moving a deadline later is
        // an atomic store in tokio, where a timeout per wait takes the timer wheel's lock twice.
        let idle_limit = (self.keep_alive > 0).then(|| Duration::from_millis(u64::from(self.keep_alive) * 1500));
        let keep_alive = tokio::time::sleep(idle_limit.unwrap_or(Duration::MAX / 4));
        tokio::pin!(keep_alive);
        let max_packet_size = self.shared.config.max_packet_size as usize;
        loop {
            loop {
                match codec::decode(&mut self.buf, self.version, max_packet_size) {
                    Ok(Some(packet)) => {
                        if let Some(end) = self.handle(packet).await {
                            return end;
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        tracing::debug!(client_id = %self.client_id, %error, "closing on a bad packet");
                        return End::Disconnect(error.reason_code(), error.to_string());
                    }
                }
            }
            // Counted from when this wait begins, as time spent handling packets is ours.
            if let Some(limit) = idle_limit {
                keep_alive.as_mut().reset(tokio::time::Instant::now() + limit);
            }
            let read = tokio::select! {
                biased;
                read = read_more(&mut self.reader, &mut self.buf, &mut self.read_chunk) => read,
                () = &mut keep_alive, if idle_limit.is_some() => {
                    let why = format!("nothing received for 1.5 x the keep alive of {} s", self.keep_alive);
                    return End::Disconnect(ReasonCode::KeepAliveTimeout, why);
                }
            };
            match read {
                Ok(0) | Err(_) => return End::Quiet,
                Ok(_) => {}
            }
        }
    }

    /// Handles one packet; `Some` ends the connection.
    pub(super) async fn handle(&mut self, packet: Packet) -> Option<End> {
        let message = match packet {
            Packet::Publish(publish) => return self.publish(publish).await,
            Packet::PubRel(ack) => {
                let reason = if lock(&self.qos2).on_pubrel(ack.packet_id) {
                    ReasonCode::Success
                } else {
                    ReasonCode::PacketIdentifierNotFound
                };
                // A PUBCOMP goes out after the PUBRECs queued before it.
                ToOutbound::Ack {
                    packet: AckPacket::PubComp,
                    packet_id: ack.packet_id,
                    reason,
                    durable: None,
                    received: None,
                }
            }
            Packet::PubAck(ack) => ToOutbound::ClientAck(ClientAck::PubAck, ack.packet_id),
            Packet::PubRec(ack) => {
                ToOutbound::ClientAck(ClientAck::PubRec { failed: ack.reason_code.is_error() }, ack.packet_id)
            }
            Packet::PubComp(ack) => ToOutbound::ClientAck(ClientAck::PubComp, ack.packet_id),
            Packet::Subscribe(subscribe) => {
                let (since, refused) = self.subscribe_decoded(&subscribe);
                ToOutbound::Subscribe(Box::new((subscribe, since, refused)))
            }
            Packet::Unsubscribe(unsubscribe) => ToOutbound::Unsubscribe(Box::new(unsubscribe)),
            Packet::PingReq => ToOutbound::PingResp,
            Packet::Disconnect(disconnect) => {
                return Some(End::ClientDisconnect {
                    with_will: disconnect.reason_code == ReasonCode::DisconnectWithWillMessage,
                    session_expiry: disconnect.properties.session_expiry_interval,
                });
            }
            // A second CONNECT, packets only a server sends, or AUTH without an
            // authentication method in the CONNECT.
            Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp
            | Packet::Auth(_) => {
                let why = format!("a client may not send {:?} here", packet.kind());
                return Some(End::Disconnect(ReasonCode::ProtocolError, why));
            }
        };
        self.to_outbound.push(message).await;
        None
    }

    pub(super) async fn publish(&mut self, publish: Publish) -> Option<End> {
        let received = std::time::Instant::now();
        let mut publish = publish;
        // The alias is resolved here and never stored.
        match self.aliases.resolve(&publish.topic, publish.properties.topic_alias.take()) {
            Ok(topic) => publish.topic = topic,
            Err(why) => return Some(End::Disconnect(ReasonCode::TopicAliasInvalid, why)),
        }
        if let Err(error) = topic::validate_topic_name(&publish.topic, &self.shared.config.limits.topics()) {
            return Some(End::Disconnect(ReasonCode::TopicNameInvalid, format!("invalid topic name: {error}")));
        }
        let (packet, packet_id) = match (publish.qos, publish.packet_id) {
            (QoS::AtMostOnce, _) | (_, None) => (None, None),
            (QoS::AtLeastOnce, Some(id)) => {
                let unreleased = lock(&self.qos2).pending_len();
                let unacked = self.qos1_unacked.fetch_add(1, Ordering::AcqRel);
                if unacked + unreleased >= usize::from(self.shared.config.receive_maximum) {
                    let why = "more unacknowledged QoS 1 and 2 messages than our Receive Maximum".to_owned();
                    return Some(End::Disconnect(ReasonCode::ReceiveMaximumExceeded, why));
                }
                (Some(AckPacket::PubAck), Some(id))
            }
            (QoS::ExactlyOnce, Some(id)) => match Self::qos2_publish(&self.qos2, id) {
                Qos2Publish::Store => (Some(AckPacket::PubRec), Some(id)),
                Qos2Publish::Duplicate => {
                    let message = ToOutbound::Ack {
                        packet: AckPacket::PubRec,
                        packet_id: id,
                        reason: ReasonCode::Success,
                        durable: None,
                        received: None,
                    };
                    self.to_outbound.push(message).await;
                    return None;
                }
                Qos2Publish::OverLimit => {
                    let why = "more unreleased QoS 2 messages than our Receive Maximum".to_owned();
                    return Some(End::Disconnect(ReasonCode::ReceiveMaximumExceeded, why));
                }
            },
        };
        if !self.permissions.may_publish(&publish.topic) {
            return self.deny(packet, packet_id, &publish.topic).await;
        }
        self.shared.metrics.received(publish.qos, publish.payload.len());
        let record = record::to_record(&publish, &self.client_id, now_ms());
        // Room under the retained limits, held until the message is applied (or not stored).
        let shared = publish.retain.then(|| Arc::clone(&self.shared));
        let reservation = match &shared {
            Some(shared) => match shared.reserve_retained(&publish.topic, publish.payload.len()) {
                Some(reservation) => Some(reservation),
                None => return self.over_retained_quota(packet, packet_id, &publish.topic).await,
            },
            None => None,
        };
        if publish.retain {
            // Into `$retained` durably before the stream append, so that its acknowledgement
            // also covers the retained copy. Retained publishes are rare; waiting here only
            // holds this connection's reads.
            if let Err(error) = Box::pin(self.shared.store_retained(record.clone())).await {
                tracing::error!(client_id = %self.client_id, %error, "storing a retained message failed");
                return self.refuse(packet, packet_id, &error).await;
            }
        }
        drop(reservation);
        let crate::streams::Routed::Local(partition) =
            self.shared.streams.route(&publish.topic, &publish.properties.user_properties);
        // A lone publish (nothing more read behind it) is appended at once when nothing is
        // queued ahead; a burst goes through the writer thread, which batches it.
        let record = match self.buf.is_empty() {
            true => match partition.try_append_now(record) {
                Ok(Ok(_)) => {
                    if packet.is_some() {
                        // The append woke the subscribers' tasks; let them write the message
                        // before this task writes its PUBACK, as the delivery is what the
                        // end-to-end latency waits for.
                        tokio::task::yield_now().await;
                    }
                    // Already in the log: nothing to wait for before acknowledging.
                    return self.acknowledge(packet, packet_id, None, received).await;
                }
                // The append has logged the error.
                Ok(Err(error)) => return self.refuse(packet, packet_id, &error).await,
                Err(record) => record,
            },
            false => record,
        };
        let (durable, durable_rx) = match packet {
            Some(_) => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        // A full queue holds this connection's reads back: backpressure on the socket.
        if partition.send(AppendRequest { record, durable }).await.is_err() {
            return Some(End::Disconnect(ReasonCode::ServerShuttingDown, "the partition writer stopped".to_owned()));
        }
        self.acknowledge(packet, packet_id, durable_rx, received).await
    }

    /// A publish that could not be stored (issue 18). QoS 0 promised nothing. An MQTT 5
    /// client gets its PUBACK or PUBREC with the failure's reason code (0x97 Quota exceeded
    /// for a full disk) and keeps its connection; an MQTT 3.1.1 client, whose
    /// acknowledgements cannot say no, is disconnected.
    pub(super) async fn refuse(
        &mut self,
        packet: Option<AckPacket>,
        packet_id: Option<PacketId>,
        error: &AppendError,
    ) -> Option<End> {
        let (Some(packet), Some(packet_id)) = (packet, packet_id) else { return None };
        if !self.version.is_v5() {
            return Some(End::Disconnect(ReasonCode::UnspecifiedError, "a publish could not be stored".into()));
        }
        forget_refused_qos2(&self.qos2, packet, packet_id);
        let reason = error.reason_code();
        let message = ToOutbound::Ack { packet, packet_id, reason, durable: None, received: None };
        self.to_outbound.push(message).await;
        None
    }

    /// A publish the ACL refuses, or to a `$` topic (issue 22): never stored, counted. An
    /// MQTT 5 client gets PUBACK or PUBREC 0x87 Not authorized. MQTT 3.1.1 acknowledgements
    /// cannot say no: the message is dropped and acknowledged as usual (as Mosquitto does),
    /// so that the client does not resend it forever; a QoS 2 exchange completes normally.
    pub(super) async fn deny(
        &mut self,
        packet: Option<AckPacket>,
        packet_id: Option<PacketId>,
        topic: &str,
    ) -> Option<End> {
        self.shared.metrics.acl_denied(true);
        tracing::debug!(client_id = %self.client_id, topic, "publish refused by the ACL");
        self.acknowledge_unstored(packet, packet_id, ReasonCode::NotAuthorized).await
    }

    /// A retained publish beyond `max_retained_messages` or `max_retained_bytes` (issue 22):
    /// refused whole, neither retained nor delivered, so that the publisher learns. An MQTT 5
    /// client gets PUBACK or PUBREC 0x97 Quota exceeded; an MQTT 3.1.1 one cannot be told,
    /// so the message is dropped and acknowledged as usual (as for an ACL refusal).
    pub(super) async fn over_retained_quota(
        &mut self,
        packet: Option<AckPacket>,
        packet_id: Option<PacketId>,
        topic: &str,
    ) -> Option<End> {
        tracing::warn!(client_id = %self.client_id, topic, "retained publish refused: max_retained_messages or max_retained_bytes reached");
        self.acknowledge_unstored(packet, packet_id, ReasonCode::QuotaExceeded).await
    }

    /// Answers a publish that was not stored: `v5_reason` for an MQTT 5 client (its QoS 2 id
    /// is then free again); a 3.1.1 client, which cannot be told, gets a plain acknowledgement
    /// so that it does not resend forever.
    pub(super) async fn acknowledge_unstored(
        &mut self,
        packet: Option<AckPacket>,
        packet_id: Option<PacketId>,
        v5_reason: ReasonCode,
    ) -> Option<End> {
        let (Some(packet), Some(packet_id)) = (packet, packet_id) else { return None };
        let reason = if self.version.is_v5() {
            forget_refused_qos2(&self.qos2, packet, packet_id);
            v5_reason
        } else {
            ReasonCode::Success
        };
        let message = ToOutbound::Ack { packet, packet_id, reason, durable: None, received: None };
        self.to_outbound.push(message).await;
        None
    }

    /// Queues the PUBACK or PUBREC of a stored publish for the outbound half, which sends it
    /// once `durable_rx` says the record is durable.
    pub(super) async fn acknowledge(
        &mut self,
        packet: Option<AckPacket>,
        packet_id: Option<PacketId>,
        durable_rx: Option<oneshot::Receiver<AppendResult>>,
        received: std::time::Instant,
    ) -> Option<End> {
        if let (Some(packet), Some(packet_id)) = (packet, packet_id) {
            let message = ToOutbound::Ack {
                packet,
                packet_id,
                reason: ReasonCode::Success,
                durable: durable_rx,
                received: Some(received),
            };
            self.to_outbound.push(message).await;
            return None;
        }
        None
    }
}
