//! A raw MQTT client for end-to-end tests that need control no ready-made client gives
//! (many messages in flight, topic aliases, limits): `strata_frontend::codec` over a
//! `TcpStream`. Every read has a deadline, so a test never hangs.
#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use strata_frontend::codec::{
    self, Ack, ConnAck, Connect, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS, Subscribe,
    SubscribeFilter, SubscriptionOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const DEADLINE: Duration = Duration::from_secs(30);

pub struct RawClient {
    stream: TcpStream,
    buf: BytesMut,
    pub version: ProtocolVersion,
}

pub fn id(n: u16) -> PacketId {
    PacketId::new(n).expect("packet ids start at 1")
}

impl RawClient {
    /// Connects and sends CONNECT; the caller reads the CONNACK.
    pub async fn connect_with(
        addr: SocketAddr,
        version: ProtocolVersion,
        client_id: &str,
        keep_alive: u16,
        properties: Properties,
    ) -> RawClient {
        Self::send_connect(addr, version, client_id, true, keep_alive, properties).await
    }

    /// Connects and sends a clean-start CONNECT with a user name and password (either may be
    /// absent); the caller reads the CONNACK.
    pub async fn connect_login(
        addr: SocketAddr,
        version: ProtocolVersion,
        client_id: &str,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) -> RawClient {
        let stream =
            tokio::time::timeout(DEADLINE, TcpStream::connect(addr)).await.expect("connect in time").expect("connect");
        let mut client = RawClient { stream, buf: BytesMut::new(), version };
        let connect = Connect {
            protocol: version,
            clean_start: true,
            keep_alive: 60,
            client_id: client_id.into(),
            will: None,
            username: username.map(Into::into),
            password: password.map(Bytes::copy_from_slice),
            properties: Properties::default(),
        };
        client.send(&Packet::Connect(Box::new(connect))).await;
        client
    }

    /// Connects and sends this CONNECT as it is (a will, a login); the caller reads the
    /// CONNACK.
    pub async fn connect_raw(addr: SocketAddr, connect: Connect) -> RawClient {
        let stream =
            tokio::time::timeout(DEADLINE, TcpStream::connect(addr)).await.expect("connect in time").expect("connect");
        let mut client = RawClient { stream, buf: BytesMut::new(), version: connect.protocol };
        client.send(&Packet::Connect(Box::new(connect))).await;
        client
    }

    async fn send_connect(
        addr: SocketAddr,
        version: ProtocolVersion,
        client_id: &str,
        clean_start: bool,
        keep_alive: u16,
        properties: Properties,
    ) -> RawClient {
        let stream =
            tokio::time::timeout(DEADLINE, TcpStream::connect(addr)).await.expect("connect in time").expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let mut client = RawClient { stream, buf: BytesMut::new(), version };
        let connect = Connect {
            protocol: version,
            clean_start,
            keep_alive,
            client_id: client_id.into(),
            will: None,
            username: None,
            password: None,
            properties,
        };
        client.send(&Packet::Connect(Box::new(connect))).await;
        client
    }

    /// Reads the CONNACK and expects it to be successful.
    async fn accepted(mut self, client_id: &str) -> (RawClient, ConnAck) {
        match self.recv().await {
            Some(Packet::ConnAck(connack)) if !connack.reason_code.is_error() => (self, connack),
            other => panic!("{client_id}: expected a successful CONNACK, got {other:?}"),
        }
    }

    /// Connects to resume (or start) a persistent session: clean start off and, for MQTT 5, a
    /// Session Expiry Interval of an hour. Expects a successful CONNACK.
    pub async fn connect_persistent(
        addr: SocketAddr,
        version: ProtocolVersion,
        client_id: &str,
    ) -> (RawClient, ConnAck) {
        let mut properties = Properties::default();
        if version == ProtocolVersion::V5 {
            properties.session_expiry_interval = Some(3600);
        }
        Self::send_connect(addr, version, client_id, false, 60, properties).await.accepted(client_id).await
    }

    /// Connects with clean start and keep alive 60 and expects a successful CONNACK.
    pub async fn connect(addr: SocketAddr, version: ProtocolVersion, client_id: &str) -> (RawClient, ConnAck) {
        Self::connect_props(addr, version, client_id, Properties::default()).await
    }

    pub async fn connect_props(
        addr: SocketAddr,
        version: ProtocolVersion,
        client_id: &str,
        properties: Properties,
    ) -> (RawClient, ConnAck) {
        Self::connect_with(addr, version, client_id, 60, properties).await.accepted(client_id).await
    }

    pub async fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        codec::encode(packet, self.version, &mut out).expect("encode");
        self.stream.write_all(&out).await.expect("write");
    }

    /// Sends several packets in one write.
    pub async fn send_all(&mut self, packets: &[Packet]) {
        let mut out = BytesMut::new();
        for packet in packets {
            codec::encode(packet, self.version, &mut out).expect("encode");
        }
        self.stream.write_all(&out).await.expect("write");
    }

    /// The next packet if one arrives within `wait`; `None` if none does (or the broker
    /// closed the connection).
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Packet> {
        tokio::time::timeout(wait, self.recv()).await.ok().flatten()
    }

    /// The next packet; `None` once the broker closed the connection.
    pub async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(DEADLINE, async {
            loop {
                match codec::decode(&mut self.buf, self.version, usize::MAX >> 4) {
                    Ok(Some(packet)) => return Some(packet),
                    Ok(None) => {}
                    Err(error) => panic!("the broker sent a bad packet: {error}"),
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("a packet or the close within the deadline")
    }

    pub async fn subscribe(
        &mut self,
        packet_id: u16,
        filters: &[(&str, QoS)],
        properties: Properties,
    ) -> Vec<codec::ReasonCode> {
        let subscribe = Subscribe {
            packet_id: id(packet_id),
            properties,
            filters: filters
                .iter()
                .map(|(filter, qos)| SubscribeFilter {
                    filter: (*filter).into(),
                    options: SubscriptionOptions { qos: *qos, ..SubscriptionOptions::default() },
                })
                .collect(),
        };
        self.send(&Packet::Subscribe(subscribe)).await;
        match self.recv().await {
            Some(Packet::SubAck(suback)) => suback.reason_codes,
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }
}

pub fn publish(topic: &str, qos: QoS, packet_id: Option<u16>, payload: impl Into<Bytes>) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id: packet_id.map(id),
        properties: Properties::default(),
        payload: payload.into(),
    }
}

pub fn ack(packet_id: PacketId) -> Ack {
    Ack::success(packet_id)
}
