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
use crate::broker::Shared;
use crate::codec::{self, ConnAck, Connect, Packet, Properties, ProtocolVersion, Publish, ReasonCode};
use crate::handoff::Handoff;
use crate::interest::ConnectionInterest;
use crate::readers::Readers;
use crate::session::{InboundQos2, OutboundWindow, Subscriptions};
use crate::session_state::{self, NEVER_EXPIRES};
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
            let connack = ConnAck {
                session_present: false,
                reason_code: ReasonCode::UnsupportedProtocolVersion,
                properties: Properties::default(),
            };
            let _ = write_packet(&mut writer, &Packet::ConnAck(connack), ProtocolVersion::V3_1_1).await;
            close_gracefully(reader, writer).await;
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
            let connack = ConnAck { session_present: false, reason_code, properties: Properties::default() };
            // MQTT 3.1.1 gets return code 0x04 (bad user name or password) or 0x05 (not authorized).
            let _ = write_packet(&mut writer, &Packet::ConnAck(connack), version).await;
            close_gracefully(reader, writer).await;
            return;
        }
    };
    let Some(_slot) = slot else {
        tracing::debug!(%peer, "refused: max_connections reached");
        shared.metrics.connection_refused("max_connections");
        let connack = ConnAck {
            session_present: false,
            reason_code: ReasonCode::QuotaExceeded,
            properties: Properties::default(),
        };
        // MQTT 3.1.1 has no 0x97: it goes out as return code 0x03 Server Unavailable.
        let _ = write_packet(&mut writer, &Packet::ConnAck(connack), version).await;
        close_gracefully(reader, writer).await;
        return;
    };

    let mut client_id = connect.client_id.to_string();
    let mut assigned = None;
    // A client id is a key of the session store and of `$sessions`: its length is bounded.
    let too_long = client_id.len() > shared.config.limits.max_client_id_length;
    if too_long || client_id.is_empty() {
        if too_long || (!version.is_v5() && !connect.clean_start) {
            tracing::debug!(%peer, length = client_id.len(), "refused: client id not valid");
            let connack = ConnAck {
                session_present: false,
                reason_code: ReasonCode::ClientIdentifierNotValid,
                properties: Properties::default(),
            };
            let _ = write_packet(&mut writer, &Packet::ConnAck(connack), version).await;
            close_gracefully(reader, writer).await;
            return;
        }
        client_id = shared.assign_client_id();
        assigned = Some(client_id.clone());
    }
    // Issue 22: a new persistent session beyond `max_sessions` is refused; resuming one, or
    // a session that ends with its connection, always gets in.
    let persistent = if version.is_v5() {
        connect.properties.session_expiry_interval.unwrap_or(0) > 0
    } else {
        !connect.clean_start
    };
    if persistent && !shared.may_store_session(&client_id) {
        tracing::warn!(%peer, client_id, "refused: max_sessions reached");
        shared.metrics.connection_refused("max_sessions");
        let connack = ConnAck {
            session_present: false,
            reason_code: ReasonCode::QuotaExceeded,
            properties: Properties::default(),
        };
        // MQTT 3.1.1 has no 0x97: it goes out as return code 0x03 Server Unavailable.
        let _ = write_packet(&mut writer, &Packet::ConnAck(connack), version).await;
        close_gracefully(reader, writer).await;
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
        let connack = ConnAck {
            session_present: false,
            reason_code: ReasonCode::NotAuthorized,
            properties: Properties::default(),
        };
        let _ = write_packet(&mut writer, &Packet::ConnAck(connack), version).await;
        close_gracefully(reader, writer).await;
        return;
    }

    // A client id is tied to its user (issue 22): another user's connection is not taken
    // over, nor its stored session resumed or (clean start) discarded. Both stay as they are.
    let Some(registration) = shared.register(&client_id, user.as_deref()) else {
        tracing::warn!(%peer, client_id, user, "refused: the client id belongs to another user");
        let connack = ConnAck {
            session_present: false,
            reason_code: ReasonCode::NotAuthorized,
            properties: Properties::default(),
        };
        // MQTT 3.1.1: return code 0x05 Not authorized.
        let _ = write_packet(&mut writer, &Packet::ConnAck(connack), version).await;
        close_gracefully(reader, writer).await;
        return;
    };
    if let Some(previous) = registration.previous_finished {
        // The connection taken over saves its session and schedules its will first.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT * 2, previous).await;
    }
    if let Some(will) = shared.take_delayed_will(&client_id)
        && connect.clean_start
    {
        // A clean start ends the previous session, and a session's end sends its will.
        if let Err(error) = Box::pin(shared.publish(&will, &client_id)).await {
            tracing::warn!(client_id, %error, "will not published");
        }
    }
    let mut expiry_interval = match (version.is_v5(), connect.clean_start) {
        (true, _) => connect.properties.session_expiry_interval.unwrap_or(0),
        (false, true) => 0,
        // Issue 22: 3.1.1 cannot say how long; `mqtt.v311_session_expiry` does.
        (false, false) => shared.config.limits.v311_session_expiry.unwrap_or(NEVER_EXPIRES),
    };
    // Boxed, like the final state below: they would otherwise size the connection's task.
    let stored = shared.take_session(&client_id).map(Box::new);
    let had_record = stored.is_some();
    let resumed = if connect.clean_start { None } else { stored };
    if had_record && resumed.is_none() {
        Box::pin(shared.save_session(&client_id, None, false)).await;
    }

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
    let connack = ConnAck { session_present: resumed.is_some(), reason_code: ReasonCode::Success, properties };
    let mut ended: Option<End> = None;
    let mut final_state = None;
    let mut persisted = resumed.is_some();
    // Set when we end the connection: its two halves, to close once the session is saved.
    let mut closing = None;
    if write_packet(&mut writer, &Packet::ConnAck(connack), version).await.is_ok() {
        let _connected = shared.metrics.connection_opened();
        let handoff = Arc::new(Handoff::new(OUTBOUND_QUEUE));
        let receive_maximum =
            if version.is_v5() { connect.properties.receive_maximum.unwrap_or(u16::MAX) } else { u16::MAX };
        let window = receive_maximum.min(shared.config.max_inflight.max(1));
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
            persistent: expiry_interval > 0,
            expiry_interval,
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
        if let Some(End::ClientDisconnect { session_expiry: Some(expiry), .. }) = &ended {
            expiry_interval = *expiry;
        }
        // Taken before leaving the groups: the session keeps its memberships.
        if expiry_interval > 0 {
            Box::pin(outbound.settle_qos2()).await;
            final_state = Some(Box::new(outbound.state(expiry_interval, now_ms().max(1))));
        }
        // What this member held goes to the group's other members; the group's offsets are
        // committed now (batched otherwise).
        if !outbound.memberships.is_empty() {
            Box::pin(outbound.leave_groups()).await;
        }
        persisted |= outbound.last_commit.is_some();
        // Neither an end of stream nor a DISCONNECT from the client: we ended it.
        if !matches!(ended, Some(End::Quiet | End::ClientDisconnect { .. })) {
            closing = Some((inbound.reader, outbound.writer));
        }
    }
    // The will goes out unless the client said DISCONNECT with reason 0x00 (MQTT 3.1.1: any
    // DISCONNECT). With a Will Delay Interval it waits, within the session's lifetime, and is
    // kept in the session record so that a restart does not lose it.
    let will_due = !matches!(&ended, Some(End::ClientDisconnect { with_will: false, .. }));
    let mut will_now = None;
    if let (Some(will), true) = (connect.will, will_due) {
        let delay = will.properties.will_delay_interval.unwrap_or(0).min(if final_state.is_some() {
            expiry_interval
        } else {
            0
        });
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
        match final_state.as_mut() {
            Some(state) if delay > 0 => {
                let due_at_ms = now_ms().saturating_add(i64::from(delay) * 1000);
                state.will = Some(session_state::PendingWill { due_at_ms, publish });
            }
            _ => will_now = Some(publish),
        }
    }
    match &final_state {
        Some(state) => Box::pin(shared.save_session(&client_id, Some(state), true)).await,
        None if persisted => Box::pin(shared.save_session(&client_id, None, false)).await,
        None => {}
    }
    if let Some(will) = final_state.and_then(|state| state.will) {
        shared.delay_will(&client_id, will.publish, will.due_at_ms);
    }
    if let Some(will) = will_now
        && let Err(error) = Box::pin(shared.publish(&will, &client_id)).await
    {
        tracing::warn!(client_id, %error, "will not published");
    }
    shared.unregister(&client_id, registration.connection_id);
    if let Some((reader, writer)) = closing {
        // A new connection with this client id, or one waiting for a free slot, need not
        // wait for the client to close.
        drop(registration._finished);
        drop(_slot);
        close_gracefully(reader, writer).await;
    }
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
