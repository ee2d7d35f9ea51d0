//! One MQTT connection: the CONNECT handshake, then two halves in one task. The inbound half
//! reads and decodes packets, hands publishes to the partition writer and passes everything
//! that needs an answer to the outbound half. The outbound half owns the socket's write side
//! and the session's delivery state: it answers in order, follows the partition's tail for
//! the session's subscriptions and writes each delivery as header + shared payload bytes with
//! vectored I/O.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};

use crate::auth::Verdict;
use crate::codec::{
    self, Ack, ConnAck, Connect, Disconnect, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS, ReasonCode,
    RetainHandling, SubAck, Subscribe, UnsubAck, Unsubscribe,
};
use crate::groups::{Group, GroupDelivery, MemberId, PartitionId};
use crate::handoff::Handoff;
use crate::interest::ConnectionInterest;
use crate::partition::{AppendError, AppendRequest, AppendResult};
use crate::readers::{self, BufferedRecord, Readers};
use crate::record;
use crate::replay;
use crate::session::{AckOutcome, InboundQos2, OutboundWindow, Qos2Publish, Route, Stage, Subscriptions};
use crate::session_state::{self, NEVER_EXPIRES, SessionState};
use crate::shared::Shared;
use crate::topic;
use crate::topic_alias::{InboundAliases, OutboundAliases, OutboundTopic};

/// A connection starts reading up to this many bytes at a time: an idle connection holds no
/// bigger buffer.
const READ_CHUNK_MIN: usize = 256;
/// While every read fills the room it had (a client sending flat out), the room doubles up to
/// this, so that a busy publisher costs few reads.
const READ_CHUNK_MAX: usize = 64 << 10;
/// How long a new connection has to send its CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection beyond `max_connections` may take to send the CONNECT we refuse.
const REFUSAL_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

fn refusal_reason(refusal: crate::limits::PeerRefusal) -> &'static str {
    match refusal {
        crate::limits::PeerRefusal::TooMany => "per_ip",
        crate::limits::PeerRefusal::TooFast => "rate",
    }
}
/// How long a closing connection may take to write its last packets.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long, and for how many bytes at most, a connection we end keeps reading (and
/// dropping) what the client still sends; see [`close_gracefully`].
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
const DRAIN_BYTES: usize = 64 << 10;
/// Messages queued from the inbound half to the outbound half.
const OUTBOUND_QUEUE: usize = 1024;
/// Most messages from the inbound half handled before the outbound half delivers and writes.
const INBOUND_DRAIN: usize = 256;
/// Bytes read from the log per fetch for delivery.
const FETCH_BYTES: usize = 256 << 10;
/// Write buffer size at which delivery pauses to write.
const WRITE_CHUNK_BYTES: usize = 512 << 10;
/// How often a persistent session's committed offset is written to `$sessions` while acks
/// advance it: batched, never per message. A crash redelivers what was acknowledged since.
const OFFSET_COMMIT_INTERVAL: Duration = Duration::from_secs(1);

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The read side of a connection's byte stream: a TCP socket, or the MQTT bytes carried by a
/// WebSocket's binary frames (`websocket.rs`). All protocol logic is the same for both.
pub(crate) type TransportReader = Box<dyn AsyncRead + Send + Unpin>;
/// The write side of a connection's byte stream.
pub(crate) type TransportWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// Runs an MQTT-over-TCP connection to the end. The socket comes with TCP_NODELAY and
/// SO_RCVBUF set, inherited from the listener (`listen::mqtt_listener`).
pub(crate) async fn run(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let (reader, writer) = stream.into_split();
    // One span per TCP connection, for trace export (`[telemetry]`); disabled, it costs nothing.
    let span = tracing::info_span!("mqtt.connection", %peer);
    // Boxed where it is made: wrapped by value, the large connection future would be laid out
    // twice in the spawned task (and copied on every spawn).
    let connection = Box::pin(run_transport(Box::new(reader), Box::new(writer), peer, None, shared));
    tracing::Instrument::instrument(connection, span).await;
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
async fn authenticate(
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

/// Whether the ACL lets a client read what `subscription` would deliver (issue 22): a plain
/// filter, or a `$share` group's filter, must be readable throughout. A `$stream` replay
/// delivers the stream's topics that match its filter: either that filter, or every topic
/// filter of the stream, must be readable (the default stream, and a stream with no topic
/// filters, may hold any topic: `#`). `user_properties` are the SUBSCRIBE's (the replay's
/// start).
fn may_subscribe(
    shared: &Shared,
    permissions: &crate::acl::Permissions,
    subscription: &topic::Subscription<'_>,
    user_properties: &[(codec::ByteString, codec::ByteString)],
) -> bool {
    match *subscription {
        topic::Subscription::Plain(filter) | topic::Subscription::Shared { filter, .. } => {
            permissions.may_read_filter(filter)
        }
        topic::Subscription::Stream { stream, filter } => {
            // A request that does not parse is refused later with its own reason.
            let Ok(request) = replay::parse_request(stream, filter, user_properties) else {
                return true;
            };
            if permissions.may_read_filter(&request.filter) {
                return true;
            }
            match shared.streams.get(stream) {
                Some(stream) if stream.name != crate::DEFAULT_STREAM && !stream.topics.is_empty() => {
                    stream.topics.iter().all(|topics| permissions.may_read_filter(topics))
                }
                Some(_) => permissions.may_read_filter("#"),
                // Unknown: not authorized, which does not tell whether it exists.
                None => false,
            }
        }
    }
}

/// Why a connection ends before CONNECT is accepted.
enum Refusal {
    UnsupportedProtocol,
    Close(&'static str),
}

async fn read_connect(
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

/// Reads what the transport has into `buf`, first making room for `read_chunk` bytes when
/// less than half that is free. A read that fills all the room doubles `read_chunk`.
async fn read_more(reader: &mut TransportReader, buf: &mut BytesMut, read_chunk: &mut usize) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < *read_chunk / 2 {
        buf.reserve(*read_chunk);
    }
    let room = buf.capacity() - buf.len();
    let read = reader.read_buf(buf).await?;
    if read == room {
        *read_chunk = (*read_chunk * 2).min(READ_CHUNK_MAX);
    }
    Ok(read)
}

/// Ends a connection we close with a reason code, once that DISCONNECT or CONNACK is written.
/// Closing a socket with unread input makes the kernel send RST instead of a plain end of
/// stream, and a client still writing (PUBRELs, more PUBLISHes) then fails with EPIPE or a
/// reset before it reads our last packet. So: shut down the write side (the client reads the
/// packet, then end of stream), read and drop what the client sends until it closes, and
/// only then close, bounded by [`DRAIN_TIMEOUT`] and `DRAIN_BYTES`.
async fn close_gracefully(mut reader: TransportReader, mut writer: TransportWriter) {
    let drain = async {
        let _ = writer.shutdown().await;
        // On the heap: this runs once per connection, and would otherwise size its task.
        let mut discard = vec![0u8; 4096];
        let mut left = DRAIN_BYTES;
        while left > 0 {
            match reader.read(&mut discard[..left.min(4096)]).await {
                Ok(0) | Err(_) => break,
                Ok(read) => left = left.saturating_sub(read),
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
}

async fn write_packet(writer: &mut TransportWriter, packet: &Packet, version: ProtocolVersion) -> std::io::Result<()> {
    let mut buf = BytesMut::new();
    codec::encode(packet, version, &mut buf).map_err(std::io::Error::other)?;
    writer.write_all(&buf).await
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// What the inbound half asks of the outbound half.
enum ToOutbound {
    /// Acknowledge an inbound message, after `durable` completes if there is one.
    Ack {
        packet: AckPacket,
        packet_id: PacketId,
        reason: ReasonCode,
        durable: Option<oneshot::Receiver<AppendResult>>,
        /// When the PUBLISH arrived, for the publish-to-ack latency; `None` for other acks.
        received: Option<std::time::Instant>,
    },
    /// The client acknowledged one of our messages: PUBACK, PUBREC (with whether its reason
    /// code is an error) or PUBCOMP. Only what the window needs, so that every queued message
    /// stays small (the queue holds up to `OUTBOUND_QUEUE` of them).
    ClientAck(ClientAck, PacketId),
    /// Boxed for the same reason: rare and large. With each partition's log end when the
    /// SUBSCRIBE was decoded (see [`Inbound::subscribe_decoded`]) and which filters the ACL
    /// refuses.
    Subscribe(Box<DecodedSubscribe>),
    Unsubscribe(Box<Unsubscribe>),
    PingResp,
    /// Close the connection, with this DISCONNECT reason code and string for an MQTT 5 client.
    Close(Option<(ReasonCode, String)>),
}

/// A SUBSCRIBE, each partition's log end when it was decoded, and which of its filters the
/// ACL refuses.
type DecodedSubscribe = (Subscribe, Vec<(u32, u64)>, Vec<bool>);

#[derive(Debug, Clone, Copy)]
#[allow(clippy::enum_variant_names)] // the packets' names in the specification
enum ClientAck {
    PubAck,
    PubRec { failed: bool },
    PubComp,
}

#[derive(Debug, Clone, Copy)]
#[allow(clippy::enum_variant_names)] // the packets' names in the specification
enum AckPacket {
    PubAck,
    PubRec,
    PubComp,
}

struct PendingAck {
    packet: AckPacket,
    packet_id: PacketId,
    reason: ReasonCode,
    durable: Option<oneshot::Receiver<AppendResult>>,
    received: Option<std::time::Instant>,
}

/// Settles an acknowledgement whose append has finished (`None`: the writer went away
/// without saying). A record that was not stored gets, for an MQTT 5 client, the failure's
/// reason code instead of success (issue 18); an MQTT 3.1.1 client must be disconnected
/// instead: `Err` with the DISCONNECT reason.
fn settle_ack(
    version: ProtocolVersion,
    qos2: &Mutex<InboundQos2>,
    ack: &mut PendingAck,
    outcome: Option<AppendResult>,
) -> Result<(), ReasonCode> {
    let error = match outcome {
        Some(Ok(_)) => return Ok(()),
        Some(Err(error)) => error,
        None => AppendError::failed("the partition writer stopped"),
    };
    // Not stored: a resend of this QoS 2 id is a new message, whatever happens next.
    forget_refused_qos2(qos2, ack.packet, ack.packet_id);
    if !version.is_v5() {
        return Err(ReasonCode::UnspecifiedError);
    }
    ack.reason = error.reason_code();
    Ok(())
}

/// A PUBREC with an error code ends the QoS 2 exchange: the identifier is free, and the
/// client's next PUBLISH with it is a new message to store, not a duplicate.
fn forget_refused_qos2(qos2: &Mutex<InboundQos2>, packet: AckPacket, packet_id: PacketId) {
    if matches!(packet, AckPacket::PubRec) {
        lock(qos2).on_append_failed(packet_id);
    }
}

struct Inbound {
    shared: Arc<Shared>,
    version: ProtocolVersion,
    client_id: String,
    keep_alive: u16,
    reader: TransportReader,
    buf: BytesMut,
    /// See [`read_more`].
    read_chunk: usize,
    /// To the outbound half, which this task polls right after this half (`handoff.rs`).
    to_outbound: Arc<Handoff<ToOutbound>>,
    /// Shared with the outbound half: SUBSCRIBE's plain filters go in as the packet is read.
    interest: Arc<ConnectionInterest>,
    /// Shared with the outbound half, which saves it with the session.
    qos2: Arc<Mutex<InboundQos2>>,
    /// Inbound QoS 1 messages not yet PUBACKed; the outbound half counts down as it sends
    /// PUBACK. With the unreleased QoS 2 messages, held to our Receive Maximum.
    qos1_unacked: Arc<AtomicUsize>,
    /// The client's topic aliases.
    aliases: InboundAliases,
    /// What the ACL lets this client publish and subscribe to (issue 22).
    permissions: crate::acl::Permissions,
}

/// How the inbound half ends.
enum End {
    /// The network connection closed without a DISCONNECT (the will goes out).
    Quiet,
    /// The client sent DISCONNECT; `with_will` for MQTT 5 reason 0x04.
    ClientDisconnect {
        with_will: bool,
        /// A new Session Expiry Interval sent with the DISCONNECT (MQTT 5).
        session_expiry: Option<u32>,
    },
    /// We close with this reason code and reason string (sent as DISCONNECT to MQTT 5
    /// clients).
    Disconnect(ReasonCode, String),
}

impl Inbound {
    /// Makes the SUBSCRIBE take effect now, as it is decoded (docs/mqtt.md): its plain
    /// filters go in the interest tree, in packet order, so a PUBLISH read after it, even on
    /// this connection, wakes the subscription. Returns each partition's log end, read after
    /// (`interest.rs`): every subscription in the packet (plain, `$stream` at `latest`, a new
    /// `$share` group) starts there, however late the outbound half takes it up. Also says,
    /// for each filter, whether the ACL refuses it (issue 22): a refused filter never goes in.
    fn subscribe_decoded(&self, subscribe: &Subscribe) -> (Vec<(u32, u64)>, Vec<bool>) {
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
    fn qos2_publish(qos2: &Mutex<InboundQos2>, id: PacketId) -> Qos2Publish {
        lock(qos2).on_publish(id)
    }

    /// Borrows: the reader stays, to be drained when we close ([`close_gracefully`]).
    async fn run(&mut self) -> End {
        let end = self.read_loop().await;
        let reason = match &end {
            End::Quiet | End::ClientDisconnect { .. } => None,
            End::Disconnect(reason, why) => Some((*reason, why.clone())),
        };
        self.to_outbound.push(ToOutbound::Close(reason)).await;
        end
    }

    async fn read_loop(&mut self) -> End {
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
    async fn handle(&mut self, packet: Packet) -> Option<End> {
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

    async fn publish(&mut self, publish: Publish) -> Option<End> {
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
        if publish.retain && !self.shared.retained_fits(&publish.topic, publish.payload.len()) {
            return self.over_retained_quota(packet, packet_id, &publish.topic).await;
        }
        if publish.retain {
            // Into `$retained` durably before the stream append, so that its acknowledgement
            // also covers the retained copy. Retained publishes are rare; waiting here only
            // holds this connection's reads.
            if let Err(error) = Box::pin(self.shared.store_retained(record.clone())).await {
                tracing::error!(client_id = %self.client_id, %error, "storing a retained message failed");
                return self.refuse(packet, packet_id, &error).await;
            }
        }
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
    async fn refuse(
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
    async fn deny(&mut self, packet: Option<AckPacket>, packet_id: Option<PacketId>, topic: &str) -> Option<End> {
        self.shared.metrics.acl_denied(true);
        tracing::debug!(client_id = %self.client_id, topic, "publish refused by the ACL");
        self.acknowledge_unstored(packet, packet_id, ReasonCode::NotAuthorized).await
    }

    /// A retained publish beyond `max_retained_messages` or `max_retained_bytes` (issue 22):
    /// refused whole, neither retained nor delivered, so that the publisher learns. An MQTT 5
    /// client gets PUBACK or PUBREC 0x97 Quota exceeded; an MQTT 3.1.1 one cannot be told,
    /// so the message is dropped and acknowledged as usual (as for an ACL refusal).
    async fn over_retained_quota(
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
    async fn acknowledge_unstored(
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
    async fn acknowledge(
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

struct Outbound {
    shared: Arc<Shared>,
    /// This connection's plain filters in the broker's interest tree, and its wake
    /// (`interest.rs`).
    interest: Arc<ConnectionInterest>,
    /// Scratch for [`Outbound::jump_cursors`].
    jumps: Vec<(u32, u64)>,
    version: ProtocolVersion,
    client_id: String,
    /// The verified user (`None`: anonymous), recorded as the session's owner (issue 22).
    user: Option<String>,
    client_max_packet_size: usize,
    writer: TransportWriter,
    subscriptions: Subscriptions,
    window: OutboundWindow,
    /// One cursor per partition followed: every partition for the plain subscriptions,
    /// plus each `$stream` subscription's own.
    readers: Readers,
    /// Whether the session outlives the connection (Session Expiry Interval > 0), so its
    /// subscriptions and offsets are written to `$sessions`.
    persistent: bool,
    expiry_interval: u32,
    /// The committed offsets last written to `$sessions`.
    last_commit: Option<Vec<u64>>,
    subscriptions_changed: bool,
    qos2: Arc<Mutex<InboundQos2>>,
    /// See `Inbound::qos1_unacked`.
    qos1_unacked: Arc<AtomicUsize>,
    /// The topic aliases we send this client.
    aliases: OutboundAliases,
    /// `$SYS` refreshes, once a subscription can match them ([`Outbound::follow_sys_if_needed`]).
    sys_updates: Option<tokio::sync::broadcast::Receiver<record::StoredMessage>>,
    /// Retained messages matched by a SUBSCRIBE, waiting for room in the window, each with
    /// its offset in `$retained` (`None` for a `$SYS` value, which lives in memory only).
    pending_retained: VecDeque<(record::StoredMessage, Route, Option<u64>)>,
    /// The consumer groups (`$share/...`) this connection is a member of.
    memberships: Vec<Membership>,
    /// Group messages in flight by packet identifier: whom to tell when they are acknowledged.
    group_in_flight: HashMap<u16, (Arc<Group>, MemberId, PartitionId, u64)>,
    /// Acknowledgements of inbound messages, in arrival order.
    pending_acks: VecDeque<PendingAck>,
    /// Bytes to write, in order: encoded packets and the payloads they share with the log.
    chunks: VecDeque<Bytes>,
    chunk_bytes: usize,
    scratch: BytesMut,
}

/// This connection's membership of one consumer group.
struct Membership {
    /// The filter exactly as subscribed (`$share/<group>/<filter>`), for UNSUBSCRIBE.
    subscribed_as: String,
    group: Arc<Group>,
    member: MemberId,
    /// The messages the group handed to this member, bounded by its window.
    queue: mpsc::Receiver<GroupDelivery>,
    options: codec::SubscriptionOptions,
    identifier: Option<u32>,
}

/// The next message any group handed to this connection, with the membership's index.
async fn next_group_delivery(memberships: &mut [Membership]) -> (usize, GroupDelivery) {
    std::future::poll_fn(|cx| {
        for (index, membership) in memberships.iter_mut().enumerate() {
            if let std::task::Poll::Ready(Some(delivery)) = membership.queue.poll_recv(cx) {
                return std::task::Poll::Ready((index, delivery));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

impl Outbound {
    /// Joins the group of `$share/<group>/<filter>` (or updates the options of this
    /// connection's membership), or says why not. A group made now starts at `since`
    /// (partition id, offset) where it lists the partition, else at its end.
    fn join_group(
        &mut self,
        subscribed_as: &str,
        group: &str,
        filter: &str,
        options: codec::SubscriptionOptions,
        identifier: Option<u32>,
        since: &[(u32, u64)],
    ) -> Result<(), String> {
        if let Some(existing) = self.memberships.iter_mut().find(|m| m.subscribed_as == subscribed_as) {
            existing.options = options;
            existing.identifier = identifier;
            return Ok(());
        }
        let group = self.shared.group(group, filter, since)?;
        let member = self.shared.next_member_id();
        let queue = group.join(member, self.window.capacity());
        self.memberships.push(Membership {
            subscribed_as: subscribed_as.to_owned(),
            group,
            member,
            queue,
            options,
            identifier,
        });
        Ok(())
    }

    /// Every filter this session holds, as subscribed: plain, `$share` and `$stream`.
    fn subscribed_filters(&self) -> HashSet<String> {
        let plain = self.subscriptions.entries().map(|(filter, _, _)| filter);
        let groups = self.memberships.iter().map(|m| m.subscribed_as.as_str());
        let replays = self.readers.cursors.iter().filter_map(|c| c.replay.as_ref().map(|r| r.subscribed_as.as_str()));
        plain.chain(groups).chain(replays).map(str::to_owned).collect()
    }

    /// Leaves the group subscribed as `filter`; returns whether there was one.
    fn leave_group(&mut self, filter: &str) -> bool {
        let Some(index) = self.memberships.iter().position(|m| m.subscribed_as == filter) else { return false };
        let membership = self.memberships.remove(index);
        membership.group.leave(membership.member);
        true
    }

    /// Leaves every group and commits their offsets durably (at disconnect).
    async fn leave_groups(&mut self) {
        for membership in std::mem::take(&mut self.memberships) {
            membership.group.leave(membership.member);
            membership.group.commit(true).await;
        }
    }

    /// Queues one message a group handed to this member.
    fn deliver_group(&mut self, index: usize, delivery: GroupDelivery) {
        let membership = &self.memberships[index];
        let (group, member) = (Arc::clone(&membership.group), membership.member);
        let GroupDelivery { partition, offset, message, redelivery } = delivery;
        let route = Route {
            qos: membership.options.qos.min(message.qos),
            retain: message.retain && membership.options.retain_as_published,
            identifiers: membership.identifier.into_iter().collect(),
        };
        // Room in its queue: the group may hand out more.
        group.poke();
        let Ok(expiry) = record::remaining_expiry(message.expires_at, now_ms()) else {
            group.ack(member, partition, offset);
            return;
        };
        let dup = route.qos != QoS::AtMostOnce && redelivery;
        match self.queue_publish(message, route, expiry, None, dup, None) {
            Some(packet_id) => {
                self.group_in_flight.insert(packet_id, (group, member, partition, offset));
            }
            // QoS 0 (or not sent: too large for the client): done with it.
            None => group.ack(member, partition, offset),
        }
    }

    /// The client finished with our message `packet_id`: a group's message is acknowledged.
    fn group_done(&mut self, packet_id: PacketId) {
        if let Some((group, member, partition, offset)) = self.group_in_flight.remove(&packet_id.get()) {
            group.ack(member, partition, offset);
            group.poke();
        }
    }

    /// The session as it stands, for `$sessions`; `disconnected_at_ms` 0 while connected.
    fn state(&self, expiry_interval: u32, disconnected_at_ms: i64) -> SessionState {
        let positions = self.readers.positions(&self.window);
        let stored = |filter: &str, options, identifier| session_state::StoredSubscription {
            filter: filter.to_owned(),
            options,
            identifier,
        };
        let mut subscriptions: Vec<_> = self
            .subscriptions
            .entries()
            .map(|(filter, options, identifier)| stored(filter, options, identifier))
            .collect();
        subscriptions.extend(self.memberships.iter().map(|m| stored(&m.subscribed_as, m.options, m.identifier)));
        for replay in self.readers.cursors.iter().filter_map(|c| c.replay.as_ref()) {
            if !subscriptions.iter().any(|s| s.filter == replay.subscribed_as) {
                subscriptions.push(stored(&replay.subscribed_as, replay.options, replay.identifier));
            }
        }
        // Positions are in cursor order, so a cursor's index is its position's index.
        let index_of = |key: u32| self.readers.cursors.iter().position(|c| c.key == key);
        let in_flight = self
            .window
            .in_flight()
            .into_iter()
            .map(|(packet_id, stage, position)| match position {
                Some((readers::RETAINED_KEY, offset)) => {
                    session_state::InFlight { packet_id, stage, position: None, retained_offset: Some(offset) }
                }
                _ => session_state::InFlight {
                    packet_id,
                    stage,
                    position: position.and_then(|(key, offset)| Some((u16::try_from(index_of(key)?).ok()?, offset))),
                    retained_offset: None,
                },
            })
            .collect();
        SessionState {
            expiry_interval,
            disconnected_at_ms,
            subscriptions,
            positions,
            qos2_awaiting_pubrel: lock(&self.qos2).pending_ids(),
            in_flight,
            will: None,
            owner: session_state::Owner::User(self.user.clone()),
        }
    }

    /// Takes up a stored session: its subscriptions (plain, `$share` and `$stream`), each
    /// reader where it stood, and its messages in flight under their packet identifiers.
    /// PUBREL goes out again for those whose PUBREC had arrived.
    /// The stored subscriptions the ACL no longer lets this client read (another user, or
    /// another ACL file since) are dropped (issue 22).
    fn resume(&mut self, session: &SessionState, permissions: &crate::acl::Permissions) {
        lock(&self.qos2).restore(&session.qos2_awaiting_pubrel);
        let mut resumed: Vec<readers::Resumed> = session
            .positions
            .iter()
            .map(|position| readers::Resumed { position: position.clone(), resend: HashMap::new() })
            .collect();
        for entry in &session.in_flight {
            // An index past the positions (never in a decoded record) points at nothing.
            if let (Some((index, offset)), Some(id), false) =
                (entry.position, PacketId::new(entry.packet_id), entry.stage == Stage::AwaitPubComp)
                && let Some(resumed) = resumed.get_mut(usize::from(index))
            {
                resumed.resend.insert(offset, id);
            }
        }
        let limits = self.shared.config.limits.topics();
        for subscription in &session.subscriptions {
            let (filter, options, identifier) = (&subscription.filter, subscription.options, subscription.identifier);
            let parsed = topic::parse_subscription(filter, &limits);
            if let Ok(parsed) = &parsed
                && !may_subscribe(&self.shared, permissions, parsed, &[])
            {
                self.shared.metrics.acl_denied(false);
                tracing::warn!(client_id = %self.client_id, filter, "resumed subscription dropped: not authorized");
                // A replay's stored positions go with it.
                resumed.retain(|r| r.position.subscription.as_ref() != Some(filter));
                self.subscriptions_changed = true;
                continue;
            }
            match parsed {
                Ok(topic::Subscription::Plain(plain)) => {
                    self.follow_sys_if_needed(plain);
                    // Before the cursors read the high watermark (`interest.rs`).
                    self.interest.add(plain);
                    self.subscriptions.subscribe(plain, options, identifier);
                }
                Ok(topic::Subscription::Shared { group, filter: inner }) => {
                    if let Err(why) = self.join_group(filter, group, inner, options, identifier, &[]) {
                        tracing::warn!(client_id = %self.client_id, filter, why, "resumed session left a group");
                    }
                }
                Ok(topic::Subscription::Stream { stream, filter: inner }) => {
                    let mut starts = Vec::new();
                    while let Some(i) = resumed.iter().position(|r| r.position.subscription.as_ref() == Some(filter)) {
                        let start = resumed.swap_remove(i);
                        let partition =
                            self.shared.streams.get(stream).and_then(|s| {
                                s.partitions.iter().find(|p| p.number == start.position.partition).cloned()
                            });
                        if let Some(partition) = partition {
                            starts.push((partition, readers::ReplayStart::Resumed(start)));
                        }
                    }
                    match replay::parse_request(stream, inner, &[]) {
                        Ok(request) => {
                            let subscription = replay::ReplaySubscription {
                                subscribed_as: filter.clone(),
                                compaction_key: self.shared.streams.get(stream).and_then(|s| s.compaction_key.clone()),
                                stream: request.stream,
                                filter: request.filter,
                                options,
                                identifier,
                            };
                            self.readers.add_replay(subscription, starts);
                        }
                        Err(why) => tracing::warn!(client_id = %self.client_id, filter, why, "replay not resumed"),
                    }
                }
                Err(_) => tracing::warn!(client_id = %self.client_id, filter, "stored filter no longer valid"),
            }
        }
        if !self.subscriptions.is_empty() {
            // A partition the session never saw (a stream added since) starts at its end.
            self.readers.follow_all(&self.shared.streams, &mut resumed);
        }
        for entry in &session.in_flight {
            let Some(id) = PacketId::new(entry.packet_id) else { continue };
            let position = entry.position.and_then(|(index, offset)| {
                Some((self.readers.key_of(session.positions.get(usize::from(index))?)?, offset))
            });
            match (entry.stage, position, entry.retained_offset) {
                (Stage::AwaitPubComp, _, _) => {
                    self.window.restore(id, entry.stage, position);
                    self.queue(&Packet::PubRel(Ack::success(id)));
                }
                (_, Some(position), _) => self.window.restore(id, entry.stage, Some(position)),
                (_, None, Some(offset)) => self.resend_retained(id, entry.stage, offset),
                // A group's message: the group hands it to a member again.
                (_, None, None) => {}
            }
        }
        // The stored record may hold a will this connection cancelled, and the new session
        // starts with a write of its own.
        self.subscriptions_changed = true;
    }

    /// Sends again, under its packet identifier and with DUP set, a retained message a
    /// resumed session had in flight. Only if it is still its topic's retained message and a
    /// subscription still matches it: a newer one comes through the stream like any publish,
    /// and a deleted one is not sent.
    fn resend_retained(&mut self, id: PacketId, stage: Stage, offset: u64) {
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

    /// Writes the session to `$sessions` if its subscriptions changed, or (with `offsets`)
    /// if its committed offset moved since the last write.
    async fn commit(&mut self, offsets: bool) {
        if !self.persistent {
            return;
        }
        let committed = self.readers.committed(&self.window);
        if !self.subscriptions_changed && (!offsets || self.last_commit.as_ref() == Some(&committed)) {
            return;
        }
        let state = self.state(self.expiry_interval, 0);
        // Boxed, as the other rare awaits here: inline, they would grow every connection's task.
        Box::pin(self.shared.save_session(&self.client_id, Some(&state), false)).await;
        self.last_commit = Some(committed);
        self.subscriptions_changed = false;
    }

    async fn run(&mut self, from_inbound: &Handoff<ToOutbound>, mut taken_over: oneshot::Receiver<()>) {
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
            let retained_ready = !self.pending_retained.is_empty()
                && (self.window.has_room()
                    || self.pending_retained.front().is_some_and(|(_, r, _)| r.qos == QoS::AtMostOnce));
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
    fn queue(&mut self, packet: &Packet) {
        if let Err(error) = codec::encode(packet, self.version, &mut self.scratch) {
            tracing::error!(client_id = %self.client_id, %error, "cannot encode");
            return;
        }
        let bytes = self.scratch.split().freeze();
        self.chunk_bytes += bytes.len();
        self.chunks.push_back(bytes);
    }

    fn handle(&mut self, message: ToOutbound) -> Result<(), ReasonCode> {
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

    /// Starts taking `$SYS` refreshes when `filter` can match a `$SYS` topic: only a filter
    /// whose first level is `$SYS` can (MQTT-4.7.2-1). Connections that never ask for them
    /// do not wait on the channel at all.
    fn follow_sys_if_needed(&mut self, filter: &str) {
        if self.sys_updates.is_none() && filter.split('/').next() == Some("$SYS") {
            self.sys_updates = Some(self.shared.sys.subscribe());
        }
    }

    /// `since`: each partition's high watermark when the inbound half read the SUBSCRIBE;
    /// `refused`: the filters the ACL refuses, answered 0x87 (0x80 for MQTT 3.1.1).
    fn subscribe(&mut self, subscribe: Subscribe, since: Vec<(u32, u64)>, refused: &[bool]) {
        let identifier = subscribe.properties.subscription_identifiers.first().copied();
        let limits = self.shared.config.limits.topics();
        let mut reason_codes = Vec::with_capacity(subscribe.filters.len());
        let mut refusals = Vec::new();
        // Issue 22: a new filter beyond `max_subscriptions_per_client` is refused; one held
        // already is replaced in place and takes no more room.
        let max_subscriptions = self.shared.config.limits.max_subscriptions_per_client;
        let mut held = max_subscriptions.map(|_| self.subscribed_filters()).unwrap_or_default();
        for (index, filter) in subscribe.filters.iter().enumerate() {
            let over_quota = max_subscriptions.is_some_and(|max| !held.contains(&*filter.filter) && held.len() >= max);
            let code = match topic::parse_subscription(&filter.filter, &limits) {
                Ok(_) if refused.get(index).copied().unwrap_or(false) => {
                    refusals.push(format!("{}: not authorized", filter.filter));
                    ReasonCode::NotAuthorized
                }
                Ok(_) if over_quota => {
                    // The inbound half put a plain filter in the interest tree as it decoded it.
                    self.interest.remove(&filter.filter);
                    refusals.push(format!("{}: max_subscriptions_per_client reached", filter.filter));
                    ReasonCode::QuotaExceeded
                }
                Ok(topic::Subscription::Plain(plain)) => {
                    // Before the latest values are taken below, so that no refresh is missed.
                    self.follow_sys_if_needed(plain);
                    // Again: an UNSUBSCRIBE read after this SUBSCRIBE's filters went in may have
                    // taken them out. Then appends on it went unreported for a while, and no
                    // cursor may jump over them: each reads on from where it stands instead.
                    if self.interest.add(plain) {
                        for cursor in self.readers.cursors.iter_mut().filter(|c| c.replay.is_none()) {
                            cursor.reached_end = false;
                        }
                    }
                    // From where the partitions ended when the SUBSCRIBE was read: a cursor
                    // still behind does not hand the new subscription older messages.
                    let existed = self.subscriptions.subscribe_since(plain, filter.options, identifier, since.clone());
                    let send_retained = match filter.options.retain_handling {
                        RetainHandling::SendAtSubscribe => true,
                        RetainHandling::SendAtSubscribeIfNew => !existed,
                        RetainHandling::DoNotSend => false,
                    };
                    if send_retained {
                        // Sent after the SUBACK (queued below), with RETAIN set.
                        for (message, retained_offset) in self.shared.retained_matching(plain) {
                            let route = Route {
                                qos: filter.options.qos.min(message.qos),
                                retain: true,
                                identifiers: identifier.into_iter().collect(),
                            };
                            self.pending_retained.push_back((message, route, retained_offset));
                        }
                    }
                    match filter.options.qos {
                        QoS::AtMostOnce => ReasonCode::GRANTED_QOS_0,
                        QoS::AtLeastOnce => ReasonCode::GrantedQos1,
                        QoS::ExactlyOnce => ReasonCode::GrantedQos2,
                    }
                }
                // A consumer group: no retained messages are sent to it, and it has no entry in the
                // session's plain subscriptions.
                Ok(topic::Subscription::Shared { group, filter: inner }) => {
                    match self.join_group(&filter.filter, group, inner, filter.options, identifier, &since) {
                        Ok(()) => granted(filter.options.qos),
                        Err(why) => {
                            refusals.push(why);
                            ReasonCode::ImplementationSpecificError
                        }
                    }
                }
                Ok(topic::Subscription::Stream { stream, filter: inner }) => {
                    let subscription = (filter.options, identifier);
                    match self.subscribe_stream(&filter.filter, stream, inner, subscription, &subscribe, &since) {
                        Ok(()) => granted(filter.options.qos),
                        Err((code, why)) => {
                            refusals.push(why);
                            code
                        }
                    }
                }
                Err(_) => ReasonCode::TopicFilterInvalid,
            };
            if max_subscriptions.is_some() && !code.is_error() {
                held.insert(filter.filter.to_string());
            }
            reason_codes.push(code);
        }
        if !self.subscriptions.is_empty() {
            // Live delivery starts at each partition's end.
            // From where the partitions ended when the SUBSCRIBE was read.
            let mut starts = readers::Resumed::from_high_watermarks(&self.shared.streams, &since);
            self.readers.follow_all(&self.shared.streams, &mut starts);
        }
        let mut properties = Properties::default();
        if !refusals.is_empty() && self.version.is_v5() {
            let mut why = refusals.join("; ");
            if let Some((cut, _)) = why.char_indices().nth(1024) {
                why.truncate(cut);
            }
            properties.reason_string = Some(why.into());
        }
        let suback = SubAck { packet_id: subscribe.packet_id, properties, reason_codes };
        self.queue(&Packet::SubAck(suback));
    }

    /// At the end of a persistent session's connection: the inbound QoS 2 messages whose
    /// PUBREC was not sent yet count as stored if their append succeeds (waited for, within
    /// [`CLOSE_TIMEOUT`]), so the session record keeps their ids and the client's resend is
    /// not stored twice. A failed or unfinished append leaves the id out: the resend is stored.
    /// (A failed append was already forgotten, and its `durable` cleared, where it failed.)
    async fn settle_qos2(&mut self) {
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
    fn release_ready_acks(&mut self) -> Result<(), ReasonCode> {
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

    /// Moves the plain cursors that had read to the end up to the first record a wake
    /// reported in their partition: what lies between matched none of this connection's
    /// filters (`interest.rs` says why nothing is skipped that should not be).
    fn jump_cursors(&mut self) {
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
    fn deliver(&mut self) -> Result<(), strata_log::LogError> {
        let now = now_ms();
        while self.chunk_bytes < WRITE_CHUNK_BYTES {
            match self.pending_retained.front() {
                Some((_, route, _)) if route.qos == QoS::AtMostOnce || self.window.has_room() => {}
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
    fn deliver_from(&mut self, index: usize) -> Result<(), strata_log::LogError> {
        let cursor = &mut self.readers.cursors[index];
        let (partition, replay, mut next) = (Arc::clone(&cursor.partition), cursor.replay.clone(), cursor.next);
        let (key, redeliver_below) = (cursor.key, cursor.redeliver_below);
        let mut buffered = std::mem::take(&mut cursor.buffered);
        let mut resend = std::mem::take(&mut cursor.resend);
        let mut buffered_end = cursor.buffered_end;
        let mut caught_up = false;
        let now = now_ms();
        // A live reader that can only lose QoS 0 messages may skip ahead instead of lagging.
        let qos0_max_lag = match (&replay, self.subscriptions.max_qos()) {
            (None, QoS::AtMostOnce) => self.shared.config.limits.qos0_max_lag,
            _ => None,
        };
        // Below `redeliver_below` the window already holds what is resent: no room needed.
        while self.chunk_bytes < WRITE_CHUNK_BYTES && (self.window.has_room() || next < redeliver_below) {
            let Some(front) = buffered.front_mut() else {
                next = next.max(buffered_end);
                if let Some(max_lag) = qos0_max_lag {
                    let high_watermark = partition.committed();
                    if high_watermark.saturating_sub(next) > max_lag && next >= redeliver_below {
                        // Keep the newest half of the allowed lag: the freshest messages go
                        // out, and the next skip is not one fetch away.
                        let to = high_watermark - max_lag / 2;
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
            // Below where the resumed session had read, only what was in flight goes out again;
            // the rest was acknowledged (or was QoS 0, or not wanted).
            let redelivery = session_state::is_redelivery(offset, redeliver_below);
            let resend_id = if redelivery { resend.remove(&offset) } else { None };
            let route = match &front.message {
                Some(_) if redelivery && resend_id.is_none() => None,
                None => None,
                Some(message) => {
                    let from_self = message.client_id == self.client_id.as_bytes();
                    match &replay {
                        None => self.subscriptions.route_at(
                            &message.topic,
                            message.qos,
                            message.retain,
                            from_self,
                            Some((partition.id, offset)),
                        ),
                        Some(replay) => replay.route(&message.topic, message.qos, message.retain, from_self),
                    }
                }
            };
            // A resent message keeps the QoS it first went out with.
            let route = match (route, resend_id.map(|id| self.window.stage(id))) {
                (Some(route), Some(Some(Stage::AwaitPubAck))) => Some(Route { qos: QoS::AtLeastOnce, ..route }),
                (Some(route), Some(Some(Stage::AwaitPubRec))) => Some(Route { qos: QoS::ExactlyOnce, ..route }),
                (route, None) => route,
                // Acknowledged meanwhile, or no longer wanted.
                (_, Some(_)) => None,
            };
            let Some(route) = route else {
                if let Some(id) = resend_id {
                    self.window.forget(id);
                }
                buffered.pop_front();
                next = offset + 1;
                continue;
            };
            if resend_id.is_none() && route.qos != QoS::AtMostOnce && !self.window.has_room() {
                break;
            }
            let mut message = buffered.pop_front().and_then(|b| b.message).expect("front holds a message");
            next = offset + 1;
            let Ok(expiry) = record::remaining_expiry(message.expires_at, now) else {
                if let Some(id) = resend_id {
                    self.window.forget(id);
                }
                continue;
            };
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
        if next >= redeliver_below {
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

    /// Starts the `$stream` subscription `subscribed_as` (`$stream/<stream>/<inner>`) with
    /// its options and Subscription Identifier, or says why not: its SUBACK reason code and
    /// reason string. `latest` is the log end in `since`, taken when the SUBSCRIBE was decoded.
    fn subscribe_stream(
        &mut self,
        subscribed_as: &str,
        stream: &str,
        inner: &str,
        (options, identifier): (codec::SubscriptionOptions, Option<u32>),
        subscribe: &Subscribe,
        since: &[(u32, u64)],
    ) -> Result<(), replay::Refusal> {
        let request = replay::parse_request(stream, inner, &subscribe.properties.user_properties)
            .map_err(|why| (ReasonCode::ImplementationSpecificError, why))?;
        if topic::validate_topic_filter(&request.filter, &self.shared.config.limits.topics()).is_err() {
            return Err((ReasonCode::TopicFilterInvalid, format!("{subscribed_as}: invalid topic filter")));
        }
        let starts = replay::resolve(&self.shared.streams, &request, since)?;
        let compaction_key = self.shared.streams.get(stream).and_then(|s| s.compaction_key.clone());
        let subscription = replay::ReplaySubscription {
            subscribed_as: subscribed_as.to_owned(),
            stream: request.stream,
            filter: request.filter,
            options,
            identifier,
            compaction_key,
        };
        let starts = starts.into_iter().map(|(partition, next)| (partition, readers::ReplayStart::At(next))).collect();
        self.readers.add_replay(subscription, starts);
        Ok(())
    }

    /// Queues one PUBLISH; a retained message (RETAIN set by a SUBSCRIBE) holds no offset.
    /// `resend` is the packet identifier a resumed session's message keeps (DUP set); it is
    /// already in the window. `dup` sets DUP on a message sent under a new identifier. Returns the packet identifier, or `None` for QoS 0 or when the
    /// message is too large for the client.
    fn queue_publish(
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

    /// Writes the queue with vectored writes; the payloads go out from the log's bytes.
    async fn flush(&mut self) -> std::io::Result<()> {
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
    async fn disconnect(&mut self, reason: ReasonCode, mut why: String) {
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

/// The SUBACK reason code granting `qos`.
fn granted(qos: QoS) -> ReasonCode {
    match qos {
        QoS::AtMostOnce => ReasonCode::GRANTED_QOS_0,
        QoS::AtLeastOnce => ReasonCode::GrantedQos1,
        QoS::ExactlyOnce => ReasonCode::GrantedQos2,
    }
}

/// Adds the `stream-*` user properties of a record read by a `$stream` subscription.
fn add_stream_properties(
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
