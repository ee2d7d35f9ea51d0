//! Validation failures and their reason codes, plus the buffer-handling contract of
//! `decode` and `encode`. Round trips of every packet type live in
//! tests/codec_roundtrip.rs.

use bytes::{Bytes, BytesMut};

use super::*;

const V4: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;
const MAX: usize = 1 << 20;

fn decode_all(bytes: &[u8], version: ProtocolVersion) -> Result<Option<Packet>, CodecError> {
    let mut buf = BytesMut::from(bytes);
    let packet = decode(&mut buf, version, MAX)?;
    if packet.is_some() {
        assert!(buf.is_empty(), "decode left {} bytes", buf.len());
    }
    Ok(packet)
}

fn decode_ok(bytes: &[u8], version: ProtocolVersion) -> Packet {
    match decode_all(bytes, version) {
        Ok(Some(packet)) => packet,
        other => panic!("expected a packet from {bytes:02X?}, got {other:?}"),
    }
}

fn decode_err(bytes: &[u8], version: ProtocolVersion) -> CodecError {
    match decode_all(bytes, version) {
        Err(error) => error,
        other => panic!("expected an error from {bytes:02X?}, got {other:?}"),
    }
}

/// Builds a packet from its first byte and body, computing the Remaining Length.
fn packet(first_byte: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first_byte];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// A v5 QoS 0 PUBLISH to topic "a/b" with the given property bytes and payload "x".
fn v5_publish_with_properties(properties: &[u8]) -> Vec<u8> {
    let mut body = vec![0x00, 0x03, b'a', b'/', b'b', properties.len() as u8];
    body.extend_from_slice(properties);
    body.push(b'x');
    packet(0x30, &body)
}

/// A v5 CONNECT header up to and including the properties, followed by `rest`.
fn v5_connect(flags: u8, properties: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 5, flags, 0x00, 0x3C, properties.len() as u8];
    body.extend_from_slice(properties);
    body.extend_from_slice(rest);
    packet(0x10, &body)
}

fn v4_connect(flags: u8, rest: &[u8]) -> Vec<u8> {
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 4, flags, 0x00, 0x3C];
    body.extend_from_slice(rest);
    packet(0x10, &body)
}

const MALFORMED: ReasonCode = ReasonCode::MalformedPacket;
const PROTOCOL: ReasonCode = ReasonCode::ProtocolError;

#[test]
fn validation_failures_map_to_their_reason_codes() {
    let client_id = [0x00, 0x01, b'c'];
    let cases: Vec<(&str, Vec<u8>, ProtocolVersion, ReasonCode)> = vec![
        // Fixed header.
        ("packet type 0 is reserved", vec![0x00, 0x00], V5, MALFORMED),
        ("AUTH does not exist in 3.1.1", vec![0xF0, 0x00], V4, MALFORMED),
        ("PINGREQ with a flag bit", vec![0xC1, 0x00], V4, MALFORMED),
        ("SUBSCRIBE without its 0b0010 flags", packet(0x80, &[0x00, 0x01, 0x00, 0x01, b'a', 0x00]), V4, MALFORMED),
        ("PUBREL with flags 0", vec![0x60, 0x02, 0x00, 0x01], V4, MALFORMED),
        ("PUBLISH with QoS 3", packet(0x36, &[0x00, 0x01, b'a', 0x00, 0x01]), V4, MALFORMED),
        ("PUBLISH QoS 0 with DUP", packet(0x38, &[0x00, 0x01, b'a']), V4, MALFORMED),
        ("Remaining Length of five bytes", vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], V4, MALFORMED),
        ("Remaining Length not minimal", vec![0xC0, 0x80, 0x00], V4, MALFORMED),
        // Lengths and strings.
        ("string longer than the packet", packet(0x30, &[0x00, 0x09, b'a']), V4, MALFORMED),
        ("topic that is not UTF-8", packet(0x30, &[0x00, 0x03, b'a', 0xFF, b'b']), V4, MALFORMED),
        ("topic with an unpaired surrogate", packet(0x30, &[0x00, 0x03, 0xED, 0xA0, 0x80]), V4, MALFORMED),
        ("topic with U+0000", packet(0x30, &[0x00, 0x03, b'a', 0x00, b'b']), V4, MALFORMED),
        ("topic with the + wildcard", packet(0x30, &[0x00, 0x03, b'a', b'/', b'+']), V4, MALFORMED),
        ("topic with the # wildcard", packet(0x30, &[0x00, 0x03, b'a', b'/', b'#']), V5, MALFORMED),
        ("empty topic in 3.1.1", packet(0x30, &[0x00, 0x00, b'x']), V4, PROTOCOL),
        ("empty topic without Topic Alias", packet(0x30, &[0x00, 0x00, 0x00, b'x']), V5, PROTOCOL),
        ("PINGREQ with a body", vec![0xC0, 0x01, 0x00], V4, MALFORMED),
        ("3.1.1 DISCONNECT with a body", vec![0xE0, 0x01, 0x00], V4, MALFORMED),
        ("3.1.1 PUBACK with a reason code", vec![0x40, 0x03, 0x00, 0x01, 0x00], V4, MALFORMED),
        // Packet identifiers.
        ("PUBLISH QoS 1 with packet id 0", packet(0x32, &[0x00, 0x01, b'a', 0x00, 0x00]), V4, PROTOCOL),
        ("PUBACK with packet id 0", vec![0x40, 0x02, 0x00, 0x00], V4, PROTOCOL),
        ("SUBSCRIBE with packet id 0", packet(0x82, &[0x00, 0x00, 0x00, 0x01, b'a', 0x00]), V4, PROTOCOL),
        ("UNSUBACK with packet id 0", vec![0xB0, 0x02, 0x00, 0x00], V4, PROTOCOL),
        // Properties.
        ("Session Expiry Interval in a PUBLISH", v5_publish_with_properties(&[0x11, 0, 0, 0, 1]), V5, MALFORMED),
        ("unknown property 0x7F", v5_publish_with_properties(&[0x7F, 0x00]), V5, MALFORMED),
        (
            "Message Expiry Interval twice",
            v5_publish_with_properties(&[0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2]),
            V5,
            PROTOCOL,
        ),
        ("Payload Format Indicator 2", v5_publish_with_properties(&[0x01, 0x02]), V5, PROTOCOL),
        ("Subscription Identifier 0", v5_publish_with_properties(&[0x0B, 0x00]), V5, PROTOCOL),
        ("property cut off", v5_publish_with_properties(&[0x02, 0x00]), V5, MALFORMED),
        ("Property Length past the packet end", packet(0x30, &[0x00, 0x01, b'a', 0x09, 0x01]), V5, MALFORMED),
        ("Receive Maximum 0", v5_connect(0x02, &[0x21, 0x00, 0x00], &client_id), V5, PROTOCOL),
        ("Maximum Packet Size 0", v5_connect(0x02, &[0x27, 0, 0, 0, 0], &client_id), V5, PROTOCOL),
        ("Request Problem Information 2", v5_connect(0x02, &[0x17, 0x02], &client_id), V5, PROTOCOL),
        ("Authentication Data without Method", v5_connect(0x02, &[0x16, 0x00, 0x01, 0xAB], &client_id), V5, PROTOCOL),
        ("Topic Alias in a CONNECT", v5_connect(0x02, &[0x23, 0x00, 0x01], &client_id), V5, MALFORMED),
        (
            "Will Delay Interval in the CONNECT properties",
            v5_connect(0x02, &[0x18, 0, 0, 0, 1], &client_id),
            V5,
            MALFORMED,
        ),
        (
            "Session Expiry Interval in Will properties",
            v5_connect(0x06, &[], &[0x00, 0x01, b'c', 0x05, 0x11, 0, 0, 0, 1, 0x00, 0x01, b't', 0x00, 0x00]),
            V5,
            MALFORMED,
        ),
        // CONNECT.
        ("reserved Connect Flags bit", v4_connect(0x03, &client_id), V4, MALFORMED),
        ("Will QoS 3", v4_connect(0x1E, &client_id), V4, MALFORMED),
        ("Will Retain without Will Flag", v4_connect(0x22, &client_id), V4, MALFORMED),
        ("Will QoS without Will Flag", v4_connect(0x0A, &client_id), V4, MALFORMED),
        ("3.1.1 password without user name", v4_connect(0x42, &[0x00, 0x01, b'c', 0x00, 0x01, 0xFF]), V4, PROTOCOL),
        (
            "Will Topic with a wildcard",
            v4_connect(0x06, &[0x00, 0x01, b'c', 0x00, 0x01, b'#', 0x00, 0x00]),
            V4,
            MALFORMED,
        ),
        ("client id that is not UTF-8", v4_connect(0x02, &[0x00, 0x01, 0xC3]), V4, MALFORMED),
        (
            "protocol level 6",
            packet(0x10, &[0x00, 0x04, b'M', b'Q', b'T', b'T', 6, 0x02, 0x00, 0x3C, 0x00, 0x01, b'c']),
            V5,
            ReasonCode::UnsupportedProtocolVersion,
        ),
        (
            "MQIsdp at level 4",
            packet(0x10, &[0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 4, 0x02, 0x00, 0x3C, 0x00, 0x01, b'c']),
            V4,
            ReasonCode::UnsupportedProtocolVersion,
        ),
        ("trailing bytes after CONNECT", v4_connect(0x02, &[0x00, 0x01, b'c', 0x00]), V4, MALFORMED),
        // CONNACK.
        ("CONNACK reserved flags", vec![0x20, 0x02, 0x02, 0x00], V4, MALFORMED),
        ("3.1.1 CONNACK return code 6", vec![0x20, 0x02, 0x00, 0x06], V4, MALFORMED),
        ("Session Present on a refusal", vec![0x20, 0x03, 0x01, 0x87, 0x00], V5, PROTOCOL),
        ("CONNACK reason code 0x04", vec![0x20, 0x03, 0x00, 0x04, 0x00], V5, MALFORMED),
        // SUBSCRIBE and friends.
        ("SUBSCRIBE without filters", packet(0x82, &[0x00, 0x01]), V4, PROTOCOL),
        ("v5 SUBSCRIBE without filters", packet(0x82, &[0x00, 0x01, 0x00]), V5, PROTOCOL),
        ("SUBSCRIBE filter without options", packet(0x82, &[0x00, 0x01, 0x00, 0x01, b'a']), V4, MALFORMED),
        ("3.1.1 subscription options bit 2", packet(0x82, &[0x00, 0x01, 0x00, 0x01, b'a', 0x04]), V4, MALFORMED),
        ("v5 subscription options bit 6", packet(0x82, &[0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x40]), V5, MALFORMED),
        ("subscription QoS 3", packet(0x82, &[0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x03]), V5, MALFORMED),
        ("Retain Handling 3", packet(0x82, &[0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x30]), V5, PROTOCOL),
        (
            "No Local on a shared subscription",
            packet(0x82, &[0x00, 0x01, 0x00, 0x00, 0x09, b'$', b's', b'h', b'a', b'r', b'e', b'/', b'g', b'/', 0x04]),
            V5,
            PROTOCOL,
        ),
        (
            "two Subscription Identifiers",
            packet(0x82, &[0x00, 0x01, 0x04, 0x0B, 0x01, 0x0B, 0x02, 0x00, 0x01, b'a', 0x00]),
            V5,
            PROTOCOL,
        ),
        ("UNSUBSCRIBE without filters", packet(0xA2, &[0x00, 0x01]), V4, PROTOCOL),
        ("3.1.1 SUBACK return code 3", vec![0x90, 0x03, 0x00, 0x01, 0x03], V4, MALFORMED),
        ("v5 SUBACK reason code 0x92", vec![0x90, 0x04, 0x00, 0x01, 0x00, 0x92], V5, MALFORMED),
        // Acks, DISCONNECT, AUTH.
        ("PUBACK reason code 0x04", vec![0x40, 0x03, 0x00, 0x01, 0x04], V5, MALFORMED),
        ("PUBREL reason code 0x10", vec![0x62, 0x03, 0x00, 0x01, 0x10], V5, MALFORMED),
        ("DISCONNECT reason code 0x18", vec![0xE0, 0x01, 0x18], V5, MALFORMED),
        ("DISCONNECT with an undefined reason code", vec![0xE0, 0x01, 0x03], V5, MALFORMED),
        ("AUTH reason code 0x87", vec![0xF0, 0x01, 0x87], V5, MALFORMED),
        ("Topic Alias in AUTH", vec![0xF0, 0x05, 0x18, 0x03, 0x23, 0x00, 0x01], V5, MALFORMED),
        ("AUTH data without method", vec![0xF0, 0x06, 0x18, 0x04, 0x16, 0x00, 0x01, 0xAA], V5, PROTOCOL),
    ];
    let mut failures = Vec::new();
    for (name, bytes, version, expected) in &cases {
        match decode_all(bytes, *version) {
            Err(error) if error.reason_code() == *expected => {}
            other => failures.push(format!("{name}: expected {expected}, got {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn error_messages_say_what_and_where() {
    let error = decode_err(&packet(0x30, &[0x00, 0x03, b'a', b'/', b'+']), V4);
    assert_eq!(error.to_string(), r#"malformed PUBLISH packet: Topic Name "a/+" contains the wildcard '+'"#);
    let error = decode_err(&v5_publish_with_properties(&[0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2]), V5);
    assert_eq!(
        error.to_string(),
        "protocol error in PUBLISH packet: Message Expiry Interval appears more than once in PUBLISH"
    );
    let error = decode_err(&[0x40, 0x02, 0x00, 0x00], V4);
    assert_eq!(error.to_string(), "protocol error in PUBACK packet: Packet Identifier is 0 [MQTT-2.2.1-3]");
}

#[test]
fn packet_too_large_is_refused_from_the_fixed_header_alone() {
    // Only the fixed header of a 16,387-byte PUBLISH has arrived.
    let mut buf = BytesMut::from(&[0x30, 0x80, 0x80, 0x01][..]);
    let error = decode(&mut buf, V5, 16_384).unwrap_err();
    assert_eq!(error, CodecError::PacketTooLarge { size: 16_388, max: 16_384 });
    assert_eq!(error.reason_code(), ReasonCode::PacketTooLarge);
    assert_eq!(error.to_string(), "packet of 16388 bytes exceeds the maximum packet size of 16384 bytes");
    // The limit counts the fixed header: a 10-byte packet fits a limit of 10, not of 9.
    let ping_sized = packet(0x30, &[0x00, 0x01, b'a', 1, 2, 3, 4, 5]);
    assert_eq!(ping_sized.len(), 10);
    assert!(decode(&mut BytesMut::from(&ping_sized[..]), V4, 10).unwrap().is_some());
    assert!(matches!(
        decode(&mut BytesMut::from(&ping_sized[..]), V4, 9),
        Err(CodecError::PacketTooLarge { size: 10, max: 9 })
    ));
}

#[test]
fn a_partial_packet_returns_none_and_consumes_nothing() {
    let full = v5_connect(0xC2, &[0x11, 0, 0, 0, 10], &[0x00, 0x01, b'c', 0x00, 0x01, b'u', 0x00, 0x02, 0xFF, 0x00]);
    decode_ok(&full, V5);
    for cut in 0..full.len() {
        let mut buf = BytesMut::from(&full[..cut]);
        assert_eq!(decode(&mut buf, V5, MAX), Ok(None), "prefix of {cut} bytes");
        assert_eq!(&buf[..], &full[..cut], "prefix of {cut} bytes was modified");
    }
}

#[test]
fn consecutive_packets_decode_one_at_a_time() {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&[0xC0, 0x00]);
    buf.extend_from_slice(&packet(0x32, &[0x00, 0x01, b'a', 0x00, 0x07, b'h', b'i']));
    buf.extend_from_slice(&[0xE0, 0x00, 0xD0]);
    assert_eq!(decode(&mut buf, V4, MAX), Ok(Some(Packet::PingReq)));
    let Ok(Some(Packet::Publish(publish))) = decode(&mut buf, V4, MAX) else { panic!("expected a PUBLISH") };
    assert_eq!(publish.packet_id, PacketId::new(7));
    assert_eq!(&publish.payload[..], b"hi");
    assert_eq!(decode(&mut buf, V4, MAX), Ok(Some(Packet::Disconnect(Disconnect::default()))));
    assert_eq!(decode(&mut buf, V4, MAX), Ok(None));
    assert_eq!(&buf[..], &[0xD0]);
}

#[test]
fn publish_topic_and_payload_are_slices_of_the_read_buffer() {
    let bytes = packet(0x30, &[0x00, 0x03, b'a', b'/', b'b', b'p', b'a', b'y']);
    let mut buf = BytesMut::from(&bytes[..]);
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let Ok(Some(Packet::Publish(publish))) = decode(&mut buf, V4, MAX) else { panic!("expected a PUBLISH") };
    assert!(range.contains(&(publish.payload.as_ptr() as usize)), "payload was copied");
    assert!(range.contains(&(publish.topic.as_bytes().as_ptr() as usize)), "topic was copied");
    assert_eq!(&*publish.topic, "a/b");
}

#[test]
fn empty_topic_with_topic_alias_is_accepted() {
    let bytes = packet(0x30, &[0x00, 0x00, 0x03, 0x23, 0x00, 0x05, b'x']);
    let Packet::Publish(publish) = decode_ok(&bytes, V5) else { panic!("expected a PUBLISH") };
    assert!(publish.topic.is_empty());
    assert_eq!(publish.properties.topic_alias, Some(5));
}

#[test]
fn v5_acks_may_leave_out_reason_code_and_properties() {
    let Packet::PubAck(ack) = decode_ok(&[0x40, 0x02, 0x00, 0x01], V5) else { panic!() };
    assert_eq!(ack.reason_code, ReasonCode::Success);
    let Packet::PubRec(ack) = decode_ok(&[0x50, 0x03, 0x00, 0x01, 0x10], V5) else { panic!() };
    assert_eq!(ack.reason_code, ReasonCode::NoMatchingSubscribers);
    let Packet::Disconnect(disconnect) = decode_ok(&[0xE0, 0x01, 0x04], V5) else { panic!() };
    assert_eq!(disconnect.reason_code, ReasonCode::DisconnectWithWillMessage);
    // And the encoder leaves them out when it can.
    let mut buf = BytesMut::new();
    encode(&Packet::PubAck(Ack::success(PacketId::new(1).unwrap())), V5, &mut buf).unwrap();
    encode(&Packet::Disconnect(Disconnect::default()), V5, &mut buf).unwrap();
    encode(&Packet::Auth(Auth::default()), V5, &mut buf).unwrap();
    assert_eq!(&buf[..], &[0x40, 0x02, 0x00, 0x01, 0xE0, 0x00, 0xF0, 0x00]);
}

fn sample_publish(qos: QoS) -> Publish {
    let mut properties = Properties::default();
    properties.message_expiry_interval = Some(60);
    properties.user_properties.push(("k".into(), "v".into()));
    Publish {
        dup: false,
        qos,
        retain: true,
        topic: "sensors/7".into(),
        packet_id: if qos == QoS::AtMostOnce { None } else { PacketId::new(42) },
        properties,
        payload: Bytes::from(vec![0xAB; 300]),
    }
}

#[test]
fn publish_header_plus_payload_equals_the_whole_packet() {
    for version in [V4, V5] {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let publish = sample_publish(qos);
            let mut whole = BytesMut::new();
            encode(&Packet::Publish(publish.clone()), version, &mut whole).unwrap();
            let mut header = BytesMut::new();
            encode_publish_header(&publish, version, &mut header).unwrap();
            header.extend_from_slice(&publish.payload);
            assert_eq!(whole, header);
        }
    }
}

#[test]
fn encode_refuses_impossible_packets_and_writes_nothing() {
    let mut buf = BytesMut::from(&b"kept"[..]);
    let mut no_packet_id = sample_publish(QoS::AtLeastOnce);
    no_packet_id.packet_id = None;
    assert!(matches!(encode(&Packet::Publish(no_packet_id), V5, &mut buf), Err(EncodeError::Invalid { .. })));
    assert!(matches!(encode(&Packet::Auth(Auth::default()), V4, &mut buf), Err(EncodeError::NotInVersion { .. })));
    let mut connack =
        ConnAck { session_present: false, reason_code: ReasonCode::Success, properties: Properties::default() };
    connack.properties.topic_alias = Some(3);
    let error = encode(&Packet::ConnAck(connack), V5, &mut buf).unwrap_err();
    assert_eq!(error.to_string(), "CONNACK: property Topic Alias is not allowed in this packet");
    let mut long_topic = sample_publish(QoS::AtMostOnce);
    long_topic.topic = "t".repeat(70_000).into();
    assert!(matches!(encode(&Packet::Publish(long_topic), V4, &mut buf), Err(EncodeError::FieldTooLong { .. })));
    let refused =
        ConnAck { session_present: false, reason_code: ReasonCode::GrantedQos1, properties: Properties::default() };
    assert!(matches!(encode(&Packet::ConnAck(refused), V5, &mut buf), Err(EncodeError::Invalid { .. })));
    assert_eq!(&buf[..], b"kept");
}

#[test]
fn v3_connack_and_suback_codes_map_both_ways() {
    let mut buf = BytesMut::new();
    let connack =
        ConnAck { session_present: false, reason_code: ReasonCode::Banned, properties: Properties::default() };
    encode(&Packet::ConnAck(connack), V4, &mut buf).unwrap();
    assert_eq!(&buf[..], &[0x20, 0x02, 0x00, 0x05]);
    let Packet::ConnAck(decoded) = decode_ok(&buf, V4) else { panic!() };
    assert_eq!(decoded.reason_code, ReasonCode::NotAuthorized);

    let suback = SubAck {
        packet_id: PacketId::new(9).unwrap(),
        properties: Properties::default(),
        reason_codes: vec![ReasonCode::GrantedQos2, ReasonCode::QuotaExceeded],
    };
    buf.clear();
    encode(&Packet::SubAck(suback), V4, &mut buf).unwrap();
    assert_eq!(&buf[..], &[0x90, 0x04, 0x00, 0x09, 0x02, 0x80]);
}

#[test]
fn mqtt_3_1_connect_round_trips_with_its_own_protocol_name() {
    let connect = Connect {
        protocol: ProtocolVersion::V3_1,
        clean_start: true,
        keep_alive: 30,
        client_id: "legacy".into(),
        will: None,
        username: Some("u".into()),
        password: Some(Bytes::from_static(&[0xFF, 0x00, 0x80])),
        properties: Properties::default(),
    };
    let mut buf = BytesMut::new();
    encode(&Packet::Connect(Box::new(connect.clone())), V4, &mut buf).unwrap();
    assert_eq!(&buf[2..11], &[0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 3]);
    assert_eq!(decode_ok(&buf, V5), Packet::Connect(Box::new(connect)));
}

#[test]
fn topic_alias_0_parses_for_the_session_to_refuse() {
    // The session answers it with 0x94 Topic Alias Invalid (MQTT 5, 3.3.2.3.4).
    let mut input = BytesMut::from(&v5_publish_with_properties(&[0x23, 0x00, 0x00])[..]);
    match decode(&mut input, V5, 1 << 20) {
        Ok(Some(Packet::Publish(publish))) => assert_eq!(publish.properties.topic_alias, Some(0)),
        other => panic!("expected a PUBLISH, got {other:?}"),
    }
}
