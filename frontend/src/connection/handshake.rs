//! The CONNECT handshake and the session's life around the connection: authentication,
//! the admission limits, takeover, resuming or discarding a stored session; at the end,
//! saving the session and sending the will.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;

use crate::auth::Verdict;
use crate::codec::{self, ConnAck, Connect, Packet, Properties, ProtocolVersion, Publish, ReasonCode};
use crate::handoff::Handoff;
use crate::interest::ConnectionInterest;
use crate::readers::Readers;
use crate::session::{InboundQos2, OutboundWindow, Subscriptions};
use crate::session_core::connect::{
    self, Admission, ClientId, ConnectRequest, DelayedWill, Ending, RecordAction, SessionEnd, SessionLimits,
    SessionPlan, StoredSession, WillAction,
};
use crate::session_state::{self, SessionState};
use crate::shared::Shared;
use crate::topic_alias::{InboundAliases, OutboundAliases};

use super::inbound::Inbound;
use super::outbound::Outbound;
use super::{
    CLOSE_TIMEOUT, End, OUTBOUND_QUEUE, READ_CHUNK_MIN, TransportReader, TransportWriter, close_gracefully, now_ms,
    read_more, write_packet,
};

/// How long a new connection has to send its CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection beyond `max_connections` may take to send the CONNECT we refuse.
const REFUSAL_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) fn refusal_reason(refusal: crate::limits::PeerRefusal) -> &'static str {
    match refusal {
        crate::limits::PeerRefusal::TooMany => "per_ip",
        crate::limits::PeerRefusal::TooFast => "rate",
    }
}

/// Runs a connection over any byte stream to the end. Never panics on input; errors close
/// only this connection. `certificate`: the client certificate rustls verified (mTLS), if any.
pub(crate) async fn run_transport(
    mut reader: TransportReader,
    mut writer: TransportWriter,
    peer: SocketAddr,
    certificate: Option<crate::tls::ClientCertificate>,
    shared: Arc<Shared>,
) {
    // Counted until this task ends: shutdown waits for it.
    let _active = shared.shutdown.track();
    // Counted from accept, not from CONNECT, so that sockets that never send one are held to
    // the limits too. An address over its limits is closed at once, with no work for it.
    let _peer_slot = match shared.peers.admit(peer.ip(), std::time::Instant::now()) {
        Ok(slot) => slot,
        Err(refusal) => {
            tracing::debug!(%peer, ?refusal, "refused: per-address connection limit");
            shared.metrics.connection_refused(refusal_reason(refusal));
            return;
        }
    };
    // Held until the connection ends; beyond `max_connections` the client is refused below,
    // once its CONNECT says which protocol to refuse it in (within a short time).
    let slot = shared.connections.try_acquire(shared.config.limits.max_connections);
    let connect_timeout = if slot.is_some() { CONNECT_TIMEOUT } else { REFUSAL_CONNECT_TIMEOUT };
    let mut buf = BytesMut::with_capacity(READ_CHUNK_MIN);
    let mut read_chunk = READ_CHUNK_MIN;
    let max_packet_size = shared.config.max_packet_size as usize;
    let connect = match tokio::time::timeout(
        connect_timeout,
        read_connect(&mut reader, &mut buf, &mut read_chunk, max_packet_size),
    )
    .await
    {
        // Boxed: kept to the end (for the will), it would otherwise size the task.
        Ok(Ok(connect)) => Box::new(connect),
        Ok(Err(Refusal::UnsupportedProtocol)) => {
            // Answered as a 3.1.1 server would: return code 0x01.
            refuse(reader, writer, ProtocolVersion::V3_1_1, ReasonCode::UnsupportedProtocolVersion).await;
            return;
        }
        Ok(Err(Refusal::Close(why))) => {
            tracing::debug!(%peer, why, "closing before CONNECT");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "no CONNECT in time");
            return;
        }
    };
    let version = connect.protocol;
    let user = match authenticate(&shared, &connect, peer, certificate.as_ref()).await {
        Ok(user) => user,
        Err(reason_code) => {
            // MQTT 3.1.1 gets return code 0x04 (bad user name or password) or 0x05 (not authorized).
            refuse(reader, writer, version, reason_code).await;
            return;
        }
    };
    let Some(_slot) = slot else {
        tracing::debug!(%peer, "refused: max_connections reached");
        shared.metrics.connection_refused("max_connections");
        // MQTT 3.1.1 has no 0x97: it goes out as return code 0x03 Server Unavailable.
        refuse(reader, writer, version, ReasonCode::QuotaExceeded).await;
        return;
    };

    // What the CONNECT alone decides (`session_core::connect`); the shell looks up the rest.
    let plan = match connect::admit(&connect_request(&connect), &session_limits(&shared)) {
        Admission::Accept(plan) => plan,
        Admission::ClientIdNotValid => {
            tracing::debug!(%peer, length = connect.client_id.len(), "refused: client id not valid");
            refuse(reader, writer, version, ReasonCode::ClientIdentifierNotValid).await;
            return;
        }
    };
    let (client_id, assigned) = match plan.client_id {
        ClientId::AsSent => (connect.client_id.to_string(), None),
        ClientId::Assign => {
            let assigned = shared.assign_client_id();
            (assigned.clone(), Some(assigned))
        }
    };
    // Issue 22: a new persistent session beyond `max_sessions` is refused; resuming one, or
    // a session that ends with its connection, always gets in.
    // Held until the connection ends: by then its session is stored, and counts by itself.
    let reservation = if plan.persistent { shared.reserve_session(&client_id) } else { None };
    if plan.persistent && reservation.is_none() {
        tracing::warn!(%peer, client_id, "refused: max_sessions reached");
        shared.metrics.connection_refused("max_sessions");
        // MQTT 3.1.1 has no 0x97: it goes out as return code 0x03 Server Unavailable.
        refuse(reader, writer, version, ReasonCode::QuotaExceeded).await;
        return;
    }
    // What this client may read and write (issue 22), with its user and client id in the
    // ACL's patterns. A will it may not publish refuses the CONNECT, as in Mosquitto: the
    // client learns at once, rather than its will vanishing when it is needed.
    // Taken now and kept: a reloaded ACL file (SIGHUP) applies to the connections after it.
    let permissions = shared
        .auth
        .acl()
        .map_or_else(crate::acl::Permissions::allow_all, |acl| acl.for_client(user.as_deref(), &client_id));
    if let Some(will) = &connect.will
        && !permissions.may_publish(&will.topic)
    {
        shared.metrics.acl_denied(true);
        tracing::warn!(%peer, client_id, user, topic = %will.topic, "refused: the will's topic is not writable");
        refuse(reader, writer, version, ReasonCode::NotAuthorized).await;
        return;
    }

    // A client id is tied to its user (issue 22): another user's connection is not taken
    // over, nor its stored session resumed or (clean start) discarded. Both stay as they are.
    let Some(registration) = shared.register(&client_id, user.as_deref()) else {
        tracing::warn!(%peer, client_id, user, "refused: the client id belongs to another user");
        // MQTT 3.1.1: return code 0x05 Not authorized.
        refuse(reader, writer, version, ReasonCode::NotAuthorized).await;
        return;
    };
    if let Some(previous) = registration.previous_finished {
        // The connection taken over saves its session and schedules its will first.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT * 2, previous).await;
    }
    if let Some(will) = shared.take_delayed_will(&client_id) {
        match plan.delayed_will() {
            DelayedWill::PublishNow => {
                if let Err(error) = Box::pin(shared.publish(&will, &client_id)).await {
                    tracing::warn!(client_id, %error, "will not published");
                }
            }
            DelayedWill::Cancel => {}
        }
    }
    // Boxed, like the final state below: they would otherwise size the connection's task.
    let stored = shared.take_session(&client_id, registration.connection_id).await.map(Box::new);
    let stored_session = plan.stored_session(stored.is_some());
    let resumed = match stored_session {
        StoredSession::Resume => stored,
        StoredSession::Discard => {
            drop(stored);
            Box::pin(shared.save_session(&client_id, None)).await;
            None
        }
        StoredSession::None => None,
    };

    let mut properties = Properties::default();
    if version.is_v5() {
        if let Some(assigned) = assigned {
            properties.assigned_client_identifier = Some(assigned.into());
        }
        properties.receive_maximum = Some(shared.config.receive_maximum);
        properties.maximum_packet_size = Some(shared.config.max_packet_size);
        properties.retain_available = Some(true);
        properties.shared_subscription_available = Some(true);
        properties.subscription_identifier_available = Some(true);
        properties.wildcard_subscription_available = Some(true);
        let limits = &shared.config.limits;
        properties.topic_alias_maximum = (limits.topic_alias_maximum > 0).then_some(limits.topic_alias_maximum);
        if let (keep_alive, true) = limits.keep_alive(connect.keep_alive) {
            properties.server_keep_alive = Some(keep_alive);
        }
    }
    let connack =
        ConnAck { session_present: stored_session.session_present(), reason_code: ReasonCode::Success, properties };
    let mut final_state = None;
    let mut persisted = resumed.is_some();
    // Set when we end the connection: its two halves, to close once the session is saved.
    let mut closing = None;
    let end = if write_packet(&mut writer, &Packet::ConnAck(connack), version).await.is_ok() {
        let _connected = shared.metrics.connection_opened();
        let handoff = Arc::new(Handoff::new(OUTBOUND_QUEUE));
        let window = SessionPlan::outbound_window(
            version.is_v5(),
            connect.properties.receive_maximum,
            shared.config.max_inflight,
        );
        let qos2 = InboundQos2::new(usize::from(shared.config.receive_maximum));
        let qos2 = Arc::new(Mutex::new(qos2));
        let qos1_unacked = Arc::new(AtomicUsize::new(0));
        let interest = Arc::new(ConnectionInterest::new(shared.streams.append_signal(), registration.connection_id));
        let mut outbound = Outbound {
            shared: Arc::clone(&shared),
            interest: Arc::clone(&interest),
            jumps: Vec::new(),
            version,
            client_id: client_id.clone(),
            user: user.clone(),
            client_max_packet_size: connect.properties.maximum_packet_size.map_or(usize::MAX, |m| m as usize),
            writer,
            subscriptions: Subscriptions::default(),
            window: OutboundWindow::new(usize::from(window)),
            readers: Readers::default(),
            persistent: plan.expiry_interval > 0,
            expiry_interval: plan.expiry_interval,
            last_commit: None,
            subscriptions_changed: false,
            qos2: Arc::clone(&qos2),
            qos1_unacked: Arc::clone(&qos1_unacked),
            aliases: OutboundAliases::new(if version.is_v5() {
                connect.properties.topic_alias_maximum.unwrap_or(0)
            } else {
                0
            }),
            sys_updates: None,
            pending_retained: VecDeque::new(),
            memberships: Vec::new(),
            group_in_flight: HashMap::new(),
            pending_acks: VecDeque::new(),
            chunks: VecDeque::new(),
            chunk_bytes: 0,
            scratch: BytesMut::new(),
        };
        if let Some(session) = &resumed {
            outbound.resume(session, &permissions);
        }
        let mut inbound = Inbound {
            shared: Arc::clone(&shared),
            version,
            client_id: client_id.clone(),
            // Server Keep Alive (MQTT 5 only: a 3.1.1 client could not be told).
            keep_alive: if version.is_v5() {
                shared.config.limits.keep_alive(connect.keep_alive).0
            } else {
                connect.keep_alive
            },
            reader,
            buf,
            read_chunk,
            to_outbound: Arc::clone(&handoff),
            interest,
            qos2,
            qos1_unacked,
            aliases: InboundAliases::new(shared.config.limits.topic_alias_maximum),
            permissions,
        };
        let mut ended = None;
        {
            let outbound_run = outbound.run(&handoff, registration.taken_over);
            let inbound_run = inbound.run();
            tokio::pin!(outbound_run, inbound_run);
            // Biased: when the inbound half ended first, its ending is known here.
            tokio::select! {
                biased;
                end = &mut inbound_run => {
                    ended = Some(end);
                    // The inbound half queued its last word (if any); let the outbound half write it.
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, outbound_run).await;
                }
                () = &mut outbound_run => {}
            }
        }
        let end = plan.end(ending(ended.as_ref()));
        // Taken before leaving the groups: the session keeps its memberships.
        if end.keep_session {
            Box::pin(outbound.settle_qos2()).await;
            final_state = Some(Box::new(outbound.state(end.expiry_interval, now_ms().max(1))));
        }
        // What this member held goes to the group's other members; the group's offsets are
        // committed now (batched otherwise).
        if !outbound.memberships.is_empty() {
            Box::pin(outbound.leave_groups()).await;
        }
        persisted |= outbound.last_commit.is_some();
        if end.close_transport {
            closing = Some((inbound.reader, outbound.writer));
        }
        end
    } else {
        plan.end(Ending::NotConnected)
    };
    Box::pin(finish_session(&shared, &client_id, connect.will, end, final_state, persisted)).await;
    // The session first: one of the two shows its owner to a CONNECT with its client id.
    shared.sessions.release(&client_id, registration.connection_id);
    drop(reservation);
    shared.clients.unregister(&client_id, registration.connection_id);
    if let Some((reader, writer)) = closing {
        // A new connection with this client id, or one waiting for a free slot, need not
        // wait for the client to close.
        drop(registration._finished);
        drop(_slot);
        close_gracefully(reader, writer).await;
    }
}

/// What the session decisions need of the CONNECT.
fn connect_request(connect: &Connect) -> ConnectRequest {
    ConnectRequest {
        v5: connect.protocol.is_v5(),
        clean_start: connect.clean_start,
        client_id_len: connect.client_id.len(),
        session_expiry_interval: connect.properties.session_expiry_interval,
        will_delay: connect.will.as_ref().map(|will| will.properties.will_delay_interval.unwrap_or(0)),
    }
}

fn session_limits(shared: &Shared) -> SessionLimits {
    SessionLimits {
        max_client_id_length: shared.config.limits.max_client_id_length,
        v311_session_expiry: shared.config.limits.v311_session_expiry,
    }
}

/// How the connection ended, for the session: `ended` is the inbound half's ending when it
/// stopped first (`None`: the outbound half stopped first, or the CONNACK was not written).
fn ending(ended: Option<&End>) -> Ending {
    match ended {
        Some(End::Quiet) => Ending::Quiet,
        Some(&End::ClientDisconnect { with_will, session_expiry }) => {
            Ending::ClientDisconnect { with_will, session_expiry }
        }
        Some(End::Disconnect(..)) | None => Ending::Server,
    }
}

/// Performs what the session's end calls for: the will goes out now, or waits (with a Will
/// Delay Interval, within the session's life) in the saved session record so that a restart
/// does not lose it; the record is saved, deleted or left alone.
async fn finish_session(
    shared: &Arc<Shared>,
    client_id: &str,
    will: Option<codec::Will>,
    end: SessionEnd,
    mut final_state: Option<Box<SessionState>>,
    persisted: bool,
) {
    let mut will_now = None;
    if let Some(will) = will {
        let mut properties = will.properties;
        properties.will_delay_interval = None;
        let publish = Publish {
            dup: false,
            qos: will.qos,
            retain: will.retain,
            topic: will.topic,
            packet_id: None,
            properties,
            payload: will.payload,
        };
        match (end.will(now_ms()), final_state.as_mut()) {
            (WillAction::None, _) => {}
            (WillAction::Delay { due_at_ms }, Some(state)) => {
                state.will = Some(session_state::PendingWill { due_at_ms, publish });
            }
            // A delay comes only with a kept session, whose state is taken.
            (WillAction::PublishNow | WillAction::Delay { .. }, _) => will_now = Some(publish),
        }
    }
    match (end.record(persisted), &final_state) {
        (RecordAction::Save, Some(state)) => Box::pin(shared.save_session(client_id, Some(state))).await,
        (RecordAction::Delete, _) => Box::pin(shared.save_session(client_id, None)).await,
        // `Save` comes only with a kept session, whose state is taken.
        (RecordAction::Save, None) | (RecordAction::Nothing, _) => {}
    }
    if let Some(will) = final_state.and_then(|state| state.will) {
        shared.delay_will(client_id, will.publish, will.due_at_ms);
    }
    if let Some(will) = will_now
        && let Err(error) = Box::pin(shared.publish(&will, client_id)).await
    {
        tracing::warn!(client_id, %error, "will not published");
    }
}

/// Refuses the CONNECT with CONNACK `reason_code` (in 3.1.1, the return code the codec maps
/// it to) and closes.
async fn refuse(
    reader: TransportReader,
    mut writer: TransportWriter,
    version: ProtocolVersion,
    reason_code: ReasonCode,
) {
    let connack = ConnAck { session_present: false, reason_code, properties: Properties::default() };
    let _ = write_packet(&mut writer, &Packet::ConnAck(connack), version).await;
    close_gracefully(reader, writer).await;
}

/// Checks the CONNECT's credentials (or, with `use_identity_as_username`, the TLS client's
/// certificate): `Ok` with the verified user name (`None`: anonymous), or `Err(reason)`
/// refusing the client with that CONNACK reason code. Hashing runs on a blocking thread: it
/// is slow on purpose. The refusal is counted and logged with the user name, never the
/// password.
pub(super) async fn authenticate(
    shared: &Arc<Shared>,
    connect: &Connect,
    peer: SocketAddr,
    certificate: Option<&crate::tls::ClientCertificate>,
) -> Result<Option<String>, ReasonCode> {
    let username = connect.username.as_ref().map(|name| name.to_string());
    // The users in force now (a SIGHUP may reload the password file).
    let auth = shared.auth.authenticator();
    let by_certificate = auth.decide_by_certificate(certificate.map(|c| c.common_name.as_deref()));
    let verdict = if let Some(verdict) = by_certificate {
        verdict
    } else if auth.verifies(username.as_deref()) {
        let (auth, password) = (Arc::clone(&auth), connect.password.clone());
        let user = username.clone();
        tokio::task::spawn_blocking(move || auth.decide(user.as_deref(), password.as_deref()))
            .await
            .unwrap_or(Verdict::BadCredentials)
    } else {
        auth.decide(username.as_deref(), connect.password.as_deref())
    };
    let client_id = &*connect.client_id;
    match verdict {
        Verdict::Accept { user } => Ok(user),
        Verdict::BadCredentials => {
            shared.metrics.auth_failed(true);
            tracing::warn!(%peer, client_id, username, "refused: bad user name or password");
            Err(ReasonCode::BadUserNameOrPassword)
        }
        Verdict::AnonymousRefused => {
            shared.metrics.auth_failed(false);
            tracing::warn!(%peer, client_id, "refused: anonymous clients are not allowed");
            Err(ReasonCode::NotAuthorized)
        }
        Verdict::NoCertificateName => {
            shared.metrics.auth_failed(false);
            tracing::warn!(%peer, client_id, "refused: the client certificate has no CN to use as the user name");
            Err(ReasonCode::NotAuthorized)
        }
    }
}

/// Why a connection ends before CONNECT is accepted.
pub(super) enum Refusal {
    UnsupportedProtocol,
    Close(&'static str),
}

pub(super) async fn read_connect(
    reader: &mut TransportReader,
    buf: &mut BytesMut,
    read_chunk: &mut usize,
    max: usize,
) -> Result<Connect, Refusal> {
    loop {
        match codec::decode(buf, ProtocolVersion::V3_1_1, max) {
            Ok(Some(Packet::Connect(connect))) => return Ok(*connect),
            Ok(Some(_)) => return Err(Refusal::Close("first packet is not CONNECT")),
            Ok(None) => {}
            Err(codec::CodecError::UnsupportedProtocolVersion { .. }) => return Err(Refusal::UnsupportedProtocol),
            Err(_) => return Err(Refusal::Close("malformed CONNECT")),
        }
        match read_more(reader, buf, read_chunk).await {
            Ok(0) | Err(_) => return Err(Refusal::Close("closed before CONNECT")),
            Ok(_) => {}
        }
    }
}
