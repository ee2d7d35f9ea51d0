//! Round trips and robustness of the codec, by property testing:
//! - every packet type, for MQTT 3.1/3.1.1 and 5.0: encode then decode gives back the packet;
//! - decoding arbitrary bytes, or mutated valid encodings, never panics, and whatever does
//!   decode re-encodes to the same packet.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use strata_frontend::codec::{
    Ack, Auth, ByteString, ConnAck, Connect, Disconnect, Packet, PacketId, PacketKind, Properties, ProtocolVersion,
    Publish, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, SubscribeFilter, SubscriptionOptions, UnsubAck,
    Unsubscribe, Will, decode, encode,
};

const MAX_PACKET: usize = 1 << 20;

// ---- Leaf strategies -----------------------------------------------------------------------

/// Any UTF-8 string the specification allows (no U+0000).
fn text() -> impl Strategy<Value = ByteString> {
    "[^\u{0}]{0,12}".prop_map(ByteString::from)
}

/// A Topic Name: at least one character, no wildcards.
fn topic() -> impl Strategy<Value = ByteString> {
    "[^\u{0}+#]{1,16}".prop_map(ByteString::from)
}

fn data(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce), Just(QoS::ExactlyOnce)]
}

fn packet_id() -> impl Strategy<Value = PacketId> {
    (1..=u16::MAX).prop_map(|id| PacketId::new(id).unwrap())
}

fn reason_code(kind: PacketKind) -> impl Strategy<Value = ReasonCode> {
    let allowed: Vec<ReasonCode> = ReasonCode::ALL.iter().copied().filter(|code| code.allowed_in(kind)).collect();
    proptest::sample::select(allowed)
}

// ---- Properties ----------------------------------------------------------------------------

/// Where a property block is, for the specification's table of allowed properties.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Place {
    Packet(PacketKind),
    Will,
}

/// Section 2.2.2.2, restated here as the test's oracle.
fn allowed(id: u8, place: Place) -> bool {
    use PacketKind::*;
    let kind = match place {
        Place::Will => return matches!(id, 0x01 | 0x02 | 0x03 | 0x08 | 0x09 | 0x18 | 0x26),
        Place::Packet(kind) => kind,
    };
    let kinds: &[PacketKind] = match id {
        0x01 | 0x02 | 0x03 | 0x08 | 0x09 | 0x23 => &[Publish],
        0x0B => &[Publish, Subscribe],
        0x11 => &[Connect, ConnAck, Disconnect],
        0x12 | 0x13 | 0x1A | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => &[ConnAck],
        0x15 | 0x16 => &[Connect, ConnAck, Auth],
        0x17 | 0x19 => &[Connect],
        0x1C => &[ConnAck, Disconnect],
        0x1F => &[ConnAck, PubAck, PubRec, PubRel, PubComp, SubAck, UnsubAck, Disconnect, Auth],
        0x21 | 0x22 | 0x27 => &[Connect, ConnAck],
        0x26 => &[
            Connect,
            ConnAck,
            Publish,
            PubAck,
            PubRec,
            PubRel,
            PubComp,
            Subscribe,
            SubAck,
            Unsubscribe,
            UnsubAck,
            Disconnect,
            Auth,
        ],
        _ => &[],
    };
    kinds.contains(&kind)
}

/// Arbitrary values for every property, then cleared where `place` does not allow them.
fn properties(place: Place) -> impl Strategy<Value = Properties> {
    use proptest::option::of;
    let scalars = (
        (of(any::<bool>()), of(any::<u32>()), of(text()), of(text()), of(data(8)), of(any::<u32>())),
        (of(text()), of(any::<u16>()), of(text()), of(data(8)), of(any::<bool>()), of(any::<u32>())),
        (of(any::<bool>()), of(text()), of(text()), of(text()), of(1..=u16::MAX), of(any::<u16>())),
        (of(1..=u16::MAX), of(prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)]), of(any::<bool>())),
        (of(1..=u32::MAX), of(any::<bool>()), of(any::<bool>()), of(any::<bool>())),
    );
    let lists = (vec(1..=268_435_455u32, 0..3), vec((text(), text()), 0..4));
    (scalars, lists).prop_map(
        move |(((a, b, c, d, e, f), (g, h, i, j, k, l), (m, n, o, p, q, r), (s, t, u), (v, w, x, y)), (ids, users))| {
            let mut props = Properties::default();
            macro_rules! set {
            ($($field:ident = $value:expr, $id:literal;)*) => {
                $(if allowed($id, place) { props.$field = $value; })*
            };
        }
            set! {
                payload_format_indicator = a, 0x01;
                message_expiry_interval = b, 0x02;
                content_type = c, 0x03;
                response_topic = d, 0x08;
                correlation_data = e, 0x09;
                session_expiry_interval = f, 0x11;
                assigned_client_identifier = g, 0x12;
                server_keep_alive = h, 0x13;
                authentication_method = i, 0x15;
                authentication_data = j, 0x16;
                request_problem_information = k, 0x17;
                will_delay_interval = l, 0x18;
                request_response_information = m, 0x19;
                response_information = n, 0x1A;
                server_reference = o, 0x1C;
                reason_string = p, 0x1F;
                receive_maximum = q, 0x21;
                topic_alias_maximum = r, 0x22;
                topic_alias = s, 0x23;
                maximum_qos = t, 0x24;
                retain_available = u, 0x25;
                maximum_packet_size = v, 0x27;
                wildcard_subscription_available = w, 0x28;
                subscription_identifier_available = x, 0x29;
                shared_subscription_available = y, 0x2A;
            }
            if allowed(0x0B, place) {
                props.subscription_identifiers = ids;
                if place == Place::Packet(PacketKind::Subscribe) {
                    props.subscription_identifiers.truncate(1);
                }
            }
            if allowed(0x26, place) {
                props.user_properties = users;
            }
            // Authentication Data needs an Authentication Method.
            if props.authentication_data.is_some() && props.authentication_method.is_none() {
                props.authentication_method = Some("method".into());
            }
            props
        },
    )
}

/// Properties for `kind` in MQTT 5, none before it.
fn properties_for(kind: PacketKind, v5: bool) -> BoxedStrategy<Properties> {
    if v5 { properties(Place::Packet(kind)).boxed() } else { Just(Properties::default()).boxed() }
}

// ---- Packets -------------------------------------------------------------------------------

fn connect(v5: bool) -> impl Strategy<Value = Packet> {
    let protocol = if v5 {
        Just(ProtocolVersion::V5).boxed()
    } else {
        prop_oneof![Just(ProtocolVersion::V3_1), Just(ProtocolVersion::V3_1_1)].boxed()
    };
    let will_properties = if v5 { properties(Place::Will).boxed() } else { Just(Properties::default()).boxed() };
    let will = proptest::option::of(
        (topic(), data(32), qos(), any::<bool>(), will_properties)
            .prop_map(|(topic, payload, qos, retain, properties)| Will { topic, payload, qos, retain, properties }),
    );
    (
        protocol,
        any::<bool>(),
        any::<u16>(),
        text(),
        will,
        proptest::option::of(text()),
        proptest::option::of(data(16)),
        properties_for(PacketKind::Connect, v5),
    )
        .prop_map(
            move |(protocol, clean_start, keep_alive, client_id, will, username, mut password, properties)| {
                if !v5 && username.is_none() {
                    password = None;
                }
                Packet::Connect(Box::new(Connect {
                    protocol,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                }))
            },
        )
}

fn connack(v5: bool) -> impl Strategy<Value = Packet> {
    let code = if v5 {
        reason_code(PacketKind::ConnAck).boxed()
    } else {
        proptest::sample::select(vec![
            ReasonCode::Success,
            ReasonCode::UnsupportedProtocolVersion,
            ReasonCode::ClientIdentifierNotValid,
            ReasonCode::ServerUnavailable,
            ReasonCode::BadUserNameOrPassword,
            ReasonCode::NotAuthorized,
        ])
        .boxed()
    };
    (any::<bool>(), code, properties_for(PacketKind::ConnAck, v5)).prop_map(
        |(session_present, reason_code, properties)| {
            let session_present = session_present && reason_code == ReasonCode::Success;
            Packet::ConnAck(ConnAck { session_present, reason_code, properties })
        },
    )
}

fn publish(v5: bool) -> impl Strategy<Value = Packet> {
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic(),
        any::<bool>(),
        packet_id(),
        properties_for(PacketKind::Publish, v5),
        data(64),
    )
        .prop_map(|(dup, qos, retain, topic, drop_topic, id, properties, payload)| {
            let qos_0 = qos == QoS::AtMostOnce;
            // With a Topic Alias the name may be left out.
            let topic = if drop_topic && properties.topic_alias.is_some() { ByteString::new() } else { topic };
            Packet::Publish(Publish {
                dup: dup && !qos_0,
                qos,
                retain,
                topic,
                packet_id: if qos_0 { None } else { Some(id) },
                properties,
                payload,
            })
        })
}

fn ack(kind: PacketKind, v5: bool) -> impl Strategy<Value = Packet> {
    let code = if v5 { reason_code(kind).boxed() } else { Just(ReasonCode::Success).boxed() };
    (packet_id(), code, properties_for(kind, v5)).prop_map(move |(packet_id, reason_code, properties)| {
        let ack = Ack { packet_id, reason_code, properties };
        match kind {
            PacketKind::PubAck => Packet::PubAck(ack),
            PacketKind::PubRec => Packet::PubRec(ack),
            PacketKind::PubRel => Packet::PubRel(ack),
            _ => Packet::PubComp(ack),
        }
    })
}

fn subscribe(v5: bool) -> impl Strategy<Value = Packet> {
    let options = (
        qos(),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![
            Just(RetainHandling::SendAtSubscribe),
            Just(RetainHandling::SendAtSubscribeIfNew),
            Just(RetainHandling::DoNotSend)
        ],
    )
        .prop_map(move |(qos, no_local, retain_as_published, retain_handling)| {
            if v5 {
                SubscriptionOptions { qos, no_local, retain_as_published, retain_handling }
            } else {
                SubscriptionOptions { qos, ..SubscriptionOptions::default() }
            }
        });
    let filter = (prop_oneof![text(), "\\$share/[a-z]{1,4}/[a-z/+#]{1,8}".prop_map(ByteString::from)], options)
        .prop_map(|(filter, mut options)| {
            if filter.starts_with("$share/") {
                options.no_local = false;
            }
            SubscribeFilter { filter, options }
        });
    (packet_id(), properties_for(PacketKind::Subscribe, v5), vec(filter, 1..5))
        .prop_map(|(packet_id, properties, filters)| Packet::Subscribe(Subscribe { packet_id, properties, filters }))
}

fn suback(v5: bool) -> impl Strategy<Value = Packet> {
    let code = if v5 {
        reason_code(PacketKind::SubAck).boxed()
    } else {
        proptest::sample::select(vec![
            ReasonCode::Success,
            ReasonCode::GrantedQos1,
            ReasonCode::GrantedQos2,
            ReasonCode::UnspecifiedError,
        ])
        .boxed()
    };
    (packet_id(), properties_for(PacketKind::SubAck, v5), vec(code, 1..5)).prop_map(
        |(packet_id, properties, reason_codes)| Packet::SubAck(SubAck { packet_id, properties, reason_codes }),
    )
}

fn unsubscribe(v5: bool) -> impl Strategy<Value = Packet> {
    (packet_id(), properties_for(PacketKind::Unsubscribe, v5), vec(text(), 1..5)).prop_map(
        |(packet_id, properties, filters)| Packet::Unsubscribe(Unsubscribe { packet_id, properties, filters }),
    )
}

fn unsuback(v5: bool) -> impl Strategy<Value = Packet> {
    let codes = if v5 { vec(reason_code(PacketKind::UnsubAck), 1..5).boxed() } else { Just(Vec::new()).boxed() };
    (packet_id(), properties_for(PacketKind::UnsubAck, v5), codes).prop_map(|(packet_id, properties, reason_codes)| {
        Packet::UnsubAck(UnsubAck { packet_id, properties, reason_codes })
    })
}

fn disconnect(v5: bool) -> impl Strategy<Value = Packet> {
    let code = if v5 { reason_code(PacketKind::Disconnect).boxed() } else { Just(ReasonCode::Success).boxed() };
    (code, properties_for(PacketKind::Disconnect, v5))
        .prop_map(|(reason_code, properties)| Packet::Disconnect(Disconnect { reason_code, properties }))
}

fn auth() -> impl Strategy<Value = Packet> {
    (reason_code(PacketKind::Auth), properties(Place::Packet(PacketKind::Auth)))
        .prop_map(|(reason_code, properties)| Packet::Auth(Auth { reason_code, properties }))
}

/// Any packet that `version` can carry.
fn any_packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = version.is_v5();
    let common = prop_oneof![
        connect(v5),
        connack(v5),
        publish(v5),
        ack(PacketKind::PubAck, v5),
        ack(PacketKind::PubRec, v5),
        ack(PacketKind::PubRel, v5),
        ack(PacketKind::PubComp, v5),
        subscribe(v5),
        suback(v5),
        unsubscribe(v5),
        unsuback(v5),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect(v5),
    ];
    if v5 { prop_oneof![14 => common, 1 => auth()].boxed() } else { common.boxed() }
}

fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![Just(ProtocolVersion::V3_1_1), Just(ProtocolVersion::V5)]
}

fn version_and_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    version().prop_flat_map(|version| (Just(version), any_packet(version)))
}

fn encoded(packet: &Packet, version: ProtocolVersion) -> BytesMut {
    let mut buf = BytesMut::new();
    encode(packet, version, &mut buf).unwrap_or_else(|error| panic!("encode {packet:?}: {error}"));
    buf
}

/// Decodes packets from `buf` until it is empty, incomplete or invalid; every packet that
/// decodes must survive a re-encode and decode unchanged.
fn decode_everything(mut buf: BytesMut, version: ProtocolVersion, max: usize) -> Result<(), TestCaseError> {
    loop {
        let before = buf.len();
        match decode(&mut buf, version, max) {
            Ok(Some(packet)) => {
                prop_assert!(buf.len() < before, "a decoded packet consumed nothing");
                let mut again = encoded(&packet, version);
                let redecoded = decode(&mut again, version, usize::MAX);
                prop_assert_eq!(redecoded, Ok(Some(packet)));
            }
            Ok(None) => {
                prop_assert_eq!(buf.len(), before, "an incomplete packet consumed bytes");
                return Ok(());
            }
            Err(error) => {
                // Every refusal names one of the reason codes a decoder may answer with.
                prop_assert!(matches!(error.reason_code().as_u8(), 0x81 | 0x82 | 0x84 | 0x95));
                return Ok(());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn every_packet_round_trips((version, packet) in version_and_packet()) {
        let mut buf = encoded(&packet, version);
        let total = buf.len();
        prop_assert_eq!(decode(&mut buf, version, total), Ok(Some(packet)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn every_packet_round_trips_one_byte_at_a_time((version, packet) in version_and_packet()) {
        let bytes = encoded(&packet, version);
        let mut buf = BytesMut::new();
        for (index, byte) in bytes.iter().enumerate() {
            buf.extend_from_slice(&[*byte]);
            let result = decode(&mut buf, version, MAX_PACKET);
            if index + 1 < bytes.len() {
                prop_assert_eq!(result, Ok(None));
            } else {
                prop_assert_eq!(result, Ok(Some(packet.clone())));
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..512), version in version(), max in 2usize..1024) {
        decode_everything(BytesMut::from(&bytes[..]), version, max)?;
    }

    #[test]
    fn mutated_packets_never_panic(
        (version, packet) in version_and_packet(),
        mutations in vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..4),
    ) {
        let mut bytes = encoded(&packet, version).to_vec();
        for (index, value, how) in mutations {
            if bytes.is_empty() {
                break;
            }
            let at = index.index(bytes.len());
            match how {
                0 => bytes[at] = value,
                1 => bytes[at] ^= 1 << (value % 8),
                2 => bytes.insert(at, value),
                _ => { bytes.remove(at); }
            }
        }
        decode_everything(BytesMut::from(&bytes[..]), version, MAX_PACKET)?;
    }
}
