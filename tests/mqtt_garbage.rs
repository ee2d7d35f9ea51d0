//! Garbage on raw TCP: random bytes, truncated, malformed and oversized packets. The broker
//! answers an MQTT 5 client with the codec's reason code in a DISCONNECT (an MQTT 3.1.1
//! client just sees the close), keeps serving everyone else and loses no stored data.

#[path = "common/broker.rs"]
mod broker;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use broker::ServeProcess;
use bytes::{Bytes, BytesMut};
use strata_frontend::codec::{self, Connect, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS};

fn connect(port: u16, version: ProtocolVersion, client_id: &str) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let connect = Connect {
        protocol: version,
        clean_start: true,
        keep_alive: 60,
        client_id: client_id.into(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    };
    send(&mut stream, &Packet::Connect(Box::new(connect)), version);
    match read_packet(&mut stream, version) {
        Some(Packet::ConnAck(connack)) => assert!(!connack.reason_code.is_error()),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    stream
}

fn send(stream: &mut TcpStream, packet: &Packet, version: ProtocolVersion) {
    let mut buf = BytesMut::new();
    codec::encode(packet, version, &mut buf).unwrap();
    stream.write_all(&buf).unwrap();
}

/// The next packet, or `None` once the broker closed the connection.
fn read_packet(stream: &mut TcpStream, version: ProtocolVersion) -> Option<Packet> {
    let mut buf = BytesMut::new();
    loop {
        if let Some(packet) = codec::decode(&mut buf, version, 1 << 24).unwrap() {
            return Some(packet);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("reading from the broker: {e}"),
        }
    }
}

fn publish_qos1(stream: &mut TcpStream, version: ProtocolVersion, topic: &str, payload: &'static [u8]) {
    let publish = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: topic.into(),
        packet_id: PacketId::new(1),
        properties: Properties::default(),
        payload: Bytes::from_static(payload),
    };
    send(stream, &Packet::Publish(publish), version);
    match read_packet(stream, version) {
        Some(Packet::PubAck(ack)) => assert!(!ack.reason_code.is_error()),
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

fn expect_disconnect(stream: &mut TcpStream, reason: u8) {
    match read_packet(stream, ProtocolVersion::V5) {
        Some(Packet::Disconnect(disconnect)) => assert_eq!(disconnect.reason_code.as_u8(), reason),
        other => panic!("expected DISCONNECT 0x{reason:02X}, got {other:?}"),
    }
    assert!(read_packet(stream, ProtocolVersion::V5).is_none(), "closed after DISCONNECT");
}

/// xorshift64: deterministic "random" bytes, so a failure can be replayed.
fn random_bytes(state: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            *state as u8
        })
        .collect()
}

#[test]
fn garbage_closes_only_the_offending_connection_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = ServeProcess::start(dir.path());
    let port = broker.port();

    // A well-behaved client, connected throughout.
    let mut good = connect(port, ProtocolVersion::V5, "good");
    publish_qos1(&mut good, ProtocolVersion::V5, "g/before", b"before");

    // Random bytes as the first packet, on many connections.
    let mut state = 0x9E37_79B9_7F4A_7C15;
    for i in 0..40 {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let bytes = random_bytes(&mut state, 1 + (i * 37) % 600);
        let _ = stream.write_all(&bytes);
    }

    // Random bytes after a valid CONNECT: MQTT 3.1.1 is closed without a word.
    for _ in 0..10 {
        let mut stream = connect(port, ProtocolVersion::V3_1_1, "");
        let mut bytes = random_bytes(&mut state, 64);
        bytes[0] = 0x00; // packet type 0 is reserved: always malformed
        stream.write_all(&bytes).unwrap();
        assert!(read_packet(&mut stream, ProtocolVersion::V3_1_1).is_none(), "3.1.1: just closed");
    }

    // MQTT 5: a PUBLISH whose topic runs past the packet → DISCONNECT 0x81 Malformed Packet.
    let mut stream = connect(port, ProtocolVersion::V5, "malformed");
    stream.write_all(&[0x30, 0x02, 0x00, 0x05]).unwrap();
    expect_disconnect(&mut stream, 0x81);

    // MQTT 5: a PUBLISH announcing 2 MB, over the 1 MiB maximum → 0x95 Packet Too Large,
    // before the body is even sent.
    let mut stream = connect(port, ProtocolVersion::V5, "oversized");
    stream.write_all(&[0x32, 0x80, 0x89, 0x7A]).unwrap();
    expect_disconnect(&mut stream, 0x95);

    // MQTT 5: a second CONNECT → 0x82 Protocol Error.
    let mut stream = connect(port, ProtocolVersion::V5, "twice");
    let again = Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 60,
        client_id: "twice".into(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    };
    send(&mut stream, &Packet::Connect(Box::new(again)), ProtocolVersion::V5);
    expect_disconnect(&mut stream, 0x82);

    // A truncated PUBLISH, then the client goes away: nothing is stored.
    let mut stream = connect(port, ProtocolVersion::V5, "truncated");
    stream.write_all(&[0x32, 0x20, 0x00, 0x09, b't', b'r', b'u', b'n']).unwrap();
    drop(stream);

    // The good client never noticed.
    publish_qos1(&mut good, ProtocolVersion::V5, "g/after", b"after");
    assert!(broker.is_running(), "the broker survived");
    drop(good);

    // Stop cleanly and read the partition: exactly the two acknowledged messages.
    assert!(broker.stop().success());
    let log = strata_log::Log::open(dir.path().join("default/0"), strata_log::LogConfig::default()).unwrap();
    let records = log.read(0, 1 << 20).unwrap().records(0).unwrap();
    let payloads: Vec<&[u8]> = records.iter().map(|r| &r.value[..]).collect();
    assert_eq!(payloads, vec![&b"before"[..], &b"after"[..]]);
}
