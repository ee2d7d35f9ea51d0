//! The bench's MQTT connections: raw TCP sockets speaking our codec, with batched writes.

use super::*;

/// The read side of a connection: the socket half and its buffer.
pub(super) struct PacketReader {
    pub(super) reader: OwnedReadHalf,
    pub(super) read_buf: BytesMut,
    pub(super) version: ProtocolVersion,
}

/// One MQTT connection.
pub(super) struct Connection {
    pub(super) rx: PacketReader,
    pub(super) writer: OwnedWriteHalf,
    pub(super) version: ProtocolVersion,
}

/// Socket buffer sizes for a connection; `None` leaves the kernel's autotuning.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct SocketBuffers {
    pub(super) send: Option<u32>,
    pub(super) receive: Option<u32>,
}

/// Opens a TCP connection with TCP_NODELAY (and `buffers`, set before connecting so the
/// window is sized from the start), sends CONNECT (clean start, keep alive off) and waits for
/// a successful CONNACK.
pub(super) async fn connect(
    target: SocketAddr,
    login: &Login,
    client_id: &str,
    buffers: SocketBuffers,
) -> anyhow::Result<Connection> {
    let version = login.version;
    let socket =
        if target.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.context("creating a socket")?;
    if let Some(bytes) = buffers.send {
        socket.set_send_buffer_size(bytes).context("setting SO_SNDBUF")?;
    }
    if let Some(bytes) = buffers.receive {
        socket.set_recv_buffer_size(bytes).context("setting SO_RCVBUF")?;
    }
    let stream = socket.connect(target).await.with_context(|| format!("connecting to {target}"))?;
    stream.set_nodelay(true).context("setting TCP_NODELAY")?;
    let (reader, mut writer) = stream.into_split();
    let connect = Connect {
        protocol: version,
        clean_start: true,
        keep_alive: 0,
        client_id: client_id.into(),
        will: None,
        username: login.username.clone(),
        password: login.password.clone(),
        properties: Properties::default(),
    };
    let mut out = BytesMut::with_capacity(64);
    codec::encode(&Packet::Connect(Box::new(connect)), version, &mut out).context("encoding CONNECT")?;
    writer.write_all(&out).await.context("sending CONNECT")?;
    let mut connection =
        Connection { rx: PacketReader { reader, read_buf: BytesMut::with_capacity(4096), version }, writer, version };
    match connection.rx.next_packet().await? {
        Some(Packet::ConnAck(connack)) if !connack.reason_code.is_error() => Ok(connection),
        Some(Packet::ConnAck(connack)) => {
            bail!("{client_id}: the broker refused the connection: {:?}", connack.reason_code)
        }
        Some(other) => bail!("{client_id}: expected CONNACK, got {}", other.kind()),
        None => bail!("{client_id}: the broker closed the connection before CONNACK"),
    }
}

impl PacketReader {
    /// The next packet, or `None` at end of stream.
    pub(super) async fn next_packet(&mut self) -> anyhow::Result<Option<Packet>> {
        loop {
            if let Some(packet) = codec::decode(&mut self.read_buf, self.version, MAX_INCOMING_PACKET)? {
                return Ok(Some(packet));
            }
            if self.reader.read_buf(&mut self.read_buf).await.context("reading from the broker")? == 0 {
                return Ok(None);
            }
        }
    }
}

impl Connection {
    pub(super) async fn subscribe(&mut self, filter: &str, qos: QoS) -> anyhow::Result<()> {
        let subscribe = Subscribe {
            packet_id: PacketId::MIN,
            properties: Properties::default(),
            filters: vec![SubscribeFilter {
                filter: filter.into(),
                options: SubscriptionOptions { qos, ..SubscriptionOptions::default() },
            }],
        };
        let mut out = BytesMut::new();
        codec::encode(&Packet::Subscribe(subscribe), self.version, &mut out).context("encoding SUBSCRIBE")?;
        self.writer.write_all(&out).await.context("sending SUBSCRIBE")?;
        match self.rx.next_packet().await? {
            Some(Packet::SubAck(suback)) => match suback.reason_codes.first() {
                Some(code) if !code.is_error() => Ok(()),
                code => bail!("the broker refused the subscription to {filter}: {code:?}"),
            },
            Some(other) => bail!("expected SUBACK, got {}", other.kind()),
            None => bail!("the broker closed the connection before SUBACK"),
        }
    }
}

pub(super) async fn send_disconnect(writer: &mut OwnedWriteHalf, version: ProtocolVersion) {
    let mut out = BytesMut::new();
    if codec::encode(&Packet::Disconnect(Disconnect::default()), version, &mut out).is_ok() {
        let _ = writer.write_all(&out).await;
    }
    let _ = writer.shutdown().await;
}
