//! One MQTT connection: the CONNECT handshake, then two halves in one task. The inbound half
//! reads and decodes packets, hands publishes to the partition writer and passes everything
//! that needs an answer to the outbound half. The outbound half owns the socket's write side
//! and the session's delivery state: it answers in order, follows the partition's tail for
//! the session's subscriptions and writes each delivery as header + shared payload bytes with
//! vectored I/O.

mod delivery;
mod handshake;
mod inbound;
mod outbound;
mod resume;
mod subscribe;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::codec::{self, Packet, PacketId, ProtocolVersion, ReasonCode, Subscribe, Unsubscribe};
use crate::partition::{AppendError, AppendResult};
use crate::session::InboundQos2;
use crate::shared::Shared;

pub(crate) use handshake::run_transport;

/// A connection starts reading up to this many bytes at a time: an idle connection holds no
/// bigger buffer.
const READ_CHUNK_MIN: usize = 256;
/// While every read fills the room it had (a client sending flat out), the room doubles up to
/// this, so that a busy publisher costs few reads.
const READ_CHUNK_MAX: usize = 64 << 10;
/// How long a closing connection may take to write its last packets.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long, and for how many bytes at most, a connection we end keeps reading (and
/// dropping) what the client still sends; see [`close_gracefully`].
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
const DRAIN_BYTES: usize = 64 << 10;
/// Messages queued from the inbound half to the outbound half.
const OUTBOUND_QUEUE: usize = 1024;
/// Write buffer size at which delivery pauses to write.
const WRITE_CHUNK_BYTES: usize = 512 << 10;

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
    /// SUBSCRIBE was decoded (see [`Inbound::subscribe_decoded`](inbound::Inbound::subscribe_decoded)) and which filters the ACL
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
