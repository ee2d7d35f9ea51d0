//! Decoding: bytes from a connection's read buffer to [`Packet`]s. The fixed header is
//! checked (type, flags, size limit) as soon as it has arrived, before the body is buffered;
//! the body is then split off the buffer and parsed without copying payloads.

use bytes::{Buf, BytesMut};
use bytestring::ByteString;

use super::error::CodecError;
use super::packet::{
    Ack, Auth, ConnAck, Connect, Disconnect, Packet, PacketId, PacketKind, ProtocolVersion, Publish, QoS,
    RetainHandling, SubAck, Subscribe, SubscribeFilter, SubscriptionOptions, UnsubAck, Unsubscribe, Will,
};
use super::properties::{Context, Properties};
use super::reason::ReasonCode;
use super::wire::{Reader, Varint, parse_varint};

/// Decodes the next packet from the front of `buf`.
///
/// Returns `Ok(None)` and leaves `buf` untouched while the packet is incomplete; on success
/// the packet's bytes are split off the front of `buf`, and the packet's strings and payload
/// are slices of them. `version` is the connection's protocol version as set by its CONNECT
/// (a CONNECT itself decodes by the version it names). `max_packet_size` bounds the whole
/// packet, fixed header included; a larger one fails with [`CodecError::PacketTooLarge`] as
/// soon as its fixed header is read.
///
/// After an error the connection must be closed: the buffer is left where the bad packet
/// starts.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: usize,
) -> Result<Option<Packet>, CodecError> {
    let Some(&first_byte) = buf.first() else {
        return Ok(None);
    };
    let kind = match PacketKind::from_type_nibble(first_byte >> 4) {
        Some(PacketKind::Auth) if !version.is_v5() => None,
        kind => kind,
    };
    let Some(kind) = kind else {
        return Err(CodecError::ReservedPacketType { first_byte, version });
    };
    check_flags(kind, first_byte & 0x0F)?;
    let (remaining_len, len_bytes) = match parse_varint(&buf[1..], kind, "Remaining Length")? {
        Varint::Complete(value, len_bytes) => (value as usize, len_bytes),
        Varint::Incomplete => return Ok(None),
    };
    let header_len = 1 + len_bytes;
    let size = header_len + remaining_len;
    if size > max_packet_size {
        return Err(CodecError::PacketTooLarge { size, max: max_packet_size });
    }
    if buf.len() < size {
        return Ok(None);
    }
    let mut frame = buf.split_to(size).freeze();
    frame.advance(header_len);
    let mut reader = Reader::new(frame, kind);
    let packet = decode_body(kind, first_byte & 0x0F, &mut reader, version)?;
    if !reader.is_empty() {
        return Err(CodecError::malformed(
            kind,
            format!("{} unexpected bytes after the packet's fields", reader.remaining()),
        ));
    }
    Ok(Some(packet))
}

/// Fixed header flags (section 2.1.3): fixed values for all but PUBLISH.
fn check_flags(kind: PacketKind, flags: u8) -> Result<(), CodecError> {
    let expected = match kind {
        PacketKind::Publish => {
            let qos = (flags >> 1) & 0b11;
            if qos == 3 {
                return Err(CodecError::malformed(kind, "QoS bits are 3, which is reserved [MQTT-3.3.1-4]"));
            }
            if qos == 0 && flags & 0b1000 != 0 {
                return Err(CodecError::malformed(kind, "DUP is set on a QoS 0 message [MQTT-3.3.1-2]"));
            }
            return Ok(());
        }
        PacketKind::PubRel | PacketKind::Subscribe | PacketKind::Unsubscribe => 0b0010,
        _ => 0,
    };
    if flags == expected {
        Ok(())
    } else {
        Err(CodecError::malformed(
            kind,
            format!("reserved fixed header flags are 0b{flags:04b}, must be 0b{expected:04b} [MQTT-2.1.3-1]"),
        ))
    }
}

fn decode_body(kind: PacketKind, flags: u8, r: &mut Reader, version: ProtocolVersion) -> Result<Packet, CodecError> {
    Ok(match kind {
        PacketKind::Connect => Packet::Connect(Box::new(connect(r)?)),
        PacketKind::ConnAck => Packet::ConnAck(connack(r, version)?),
        PacketKind::Publish => Packet::Publish(publish(flags, r, version)?),
        PacketKind::PubAck => Packet::PubAck(ack(r, version)?),
        PacketKind::PubRec => Packet::PubRec(ack(r, version)?),
        PacketKind::PubRel => Packet::PubRel(ack(r, version)?),
        PacketKind::PubComp => Packet::PubComp(ack(r, version)?),
        PacketKind::Subscribe => Packet::Subscribe(subscribe(r, version)?),
        PacketKind::SubAck => Packet::SubAck(suback(r, version)?),
        PacketKind::Unsubscribe => Packet::Unsubscribe(unsubscribe(r, version)?),
        PacketKind::UnsubAck => Packet::UnsubAck(unsuback(r, version)?),
        PacketKind::PingReq => Packet::PingReq,
        PacketKind::PingResp => Packet::PingResp,
        PacketKind::Disconnect => {
            let (reason_code, properties) = reason_and_properties(r, version)?;
            Packet::Disconnect(Disconnect { reason_code, properties })
        }
        PacketKind::Auth => {
            let (reason_code, properties) = reason_and_properties(r, version)?;
            check_auth_data(&properties, kind)?;
            Packet::Auth(Auth { reason_code, properties })
        }
    })
}

fn properties(r: &mut Reader, version: ProtocolVersion) -> Result<Properties, CodecError> {
    if version.is_v5() { Properties::decode(r, Context::Packet(r.kind)) } else { Ok(Properties::default()) }
}

fn packet_id(r: &mut Reader) -> Result<PacketId, CodecError> {
    let raw = r.u16("Packet Identifier")?;
    PacketId::new(raw).ok_or_else(|| CodecError::protocol(r.kind, "Packet Identifier is 0 [MQTT-2.2.1-3]"))
}

fn reason_code(r: &mut Reader) -> Result<ReasonCode, CodecError> {
    let raw = r.u8("Reason Code")?;
    match ReasonCode::from_u8(raw) {
        Some(code) if code.allowed_in(r.kind) => Ok(code),
        _ => Err(CodecError::malformed(r.kind, format!("reason code 0x{raw:02X} is not defined for {}", r.kind))),
    }
}

/// Authentication Data without an Authentication Method is a Protocol Error (3.1.2.11.10).
fn check_auth_data(properties: &Properties, kind: PacketKind) -> Result<(), CodecError> {
    if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
        return Err(CodecError::protocol(kind, "Authentication Data without Authentication Method"));
    }
    Ok(())
}

/// A Topic Name as PUBLISH and Will carry it: no wildcards ([MQTT-3.3.2-2]). A name with
/// one is not "correctly formed", so this is a Malformed Packet rather than 0x90.
fn topic_name(r: &mut Reader, what: &str) -> Result<ByteString, CodecError> {
    let topic = r.string(what)?;
    if let Some(&wildcard) = topic.as_bytes().iter().find(|&&byte| byte == b'+' || byte == b'#') {
        let wildcard = char::from(wildcard);
        return Err(CodecError::malformed(r.kind, format!("{what} {topic:?} contains the wildcard {wildcard:?}")));
    }
    Ok(topic)
}

fn connect(r: &mut Reader) -> Result<Connect, CodecError> {
    let name = r.binary("Protocol Name")?;
    let level = r.u8("Protocol Level")?;
    let protocol = match (&name[..], level) {
        (b"MQTT", 4) => ProtocolVersion::V3_1_1,
        (b"MQTT", 5) => ProtocolVersion::V5,
        (b"MQIsdp", 3) => ProtocolVersion::V3_1,
        _ => {
            return Err(CodecError::UnsupportedProtocolVersion {
                name: String::from_utf8_lossy(&name).into_owned(),
                level,
            });
        }
    };
    let flags = r.u8("Connect Flags")?;
    if flags & 0b0000_0001 != 0 {
        return Err(CodecError::malformed(r.kind, "the reserved Connect Flags bit is set [MQTT-3.1.2-3]"));
    }
    let clean_start = flags & 0b0000_0010 != 0;
    let will_flag = flags & 0b0000_0100 != 0;
    let will_qos_bits = (flags >> 3) & 0b11;
    let will_retain = flags & 0b0010_0000 != 0;
    let has_password = flags & 0b0100_0000 != 0;
    let has_username = flags & 0b1000_0000 != 0;
    let Some(will_qos) = QoS::from_u8(will_qos_bits) else {
        return Err(CodecError::malformed(r.kind, "Will QoS is 3 [MQTT-3.1.2-12]"));
    };
    if !will_flag && (will_qos_bits != 0 || will_retain) {
        return Err(CodecError::malformed(r.kind, "Will QoS or Will Retain set without the Will Flag [MQTT-3.1.2-11]"));
    }
    if has_password && !has_username && !protocol.is_v5() {
        return Err(CodecError::protocol(r.kind, "Password Flag set without User Name Flag [MQTT-3.1.2-22]"));
    }
    let keep_alive = r.u16("Keep Alive")?;
    let properties = properties(r, protocol)?;
    check_auth_data(&properties, r.kind)?;
    let client_id = r.string("Client Identifier")?;
    let will = if will_flag {
        let properties = if protocol.is_v5() { Properties::decode(r, Context::Will)? } else { Properties::default() };
        let topic = topic_name(r, "Will Topic")?;
        if topic.is_empty() {
            return Err(CodecError::protocol(r.kind, "Will Topic is empty [MQTT-4.7.3-1]"));
        }
        let payload = r.binary("Will Payload")?;
        Some(Will { topic, payload, qos: will_qos, retain: will_retain, properties })
    } else {
        None
    };
    let username = if has_username { Some(r.string("User Name")?) } else { None };
    let password = if has_password { Some(r.binary("Password")?) } else { None };
    Ok(Connect { protocol, clean_start, keep_alive, client_id, will, username, password, properties })
}

fn connack(r: &mut Reader, version: ProtocolVersion) -> Result<ConnAck, CodecError> {
    let flags = r.u8("Connect Acknowledge Flags")?;
    if flags & 0b1111_1110 != 0 {
        return Err(CodecError::malformed(r.kind, "reserved Connect Acknowledge Flags bits are set [MQTT-3.2.2-1]"));
    }
    let session_present = flags & 1 != 0;
    let reason_code = if version.is_v5() {
        reason_code(r)?
    } else {
        let raw = r.u8("Connect Return code")?;
        ReasonCode::from_v3_connack(raw)
            .ok_or_else(|| CodecError::malformed(r.kind, format!("Connect Return code {raw} is reserved")))?
    };
    if session_present && reason_code != ReasonCode::Success {
        return Err(CodecError::protocol(r.kind, "Session Present is set on a refused connection [MQTT-3.2.2-6]"));
    }
    let properties = properties(r, version)?;
    check_auth_data(&properties, r.kind)?;
    Ok(ConnAck { session_present, reason_code, properties })
}

fn publish(flags: u8, r: &mut Reader, version: ProtocolVersion) -> Result<Publish, CodecError> {
    let dup = flags & 0b1000 != 0;
    let retain = flags & 0b0001 != 0;
    // check_flags has ruled out QoS 3.
    let qos = QoS::from_u8((flags >> 1) & 0b11).unwrap_or_default();
    let topic = topic_name(r, "Topic Name")?;
    let packet_id = if qos == QoS::AtMostOnce { None } else { Some(packet_id(r)?) };
    let properties = properties(r, version)?;
    if topic.is_empty() && properties.topic_alias.is_none() {
        let detail = if version.is_v5() {
            "Topic Name is empty and there is no Topic Alias"
        } else {
            "Topic Name is empty [MQTT-4.7.3-1]"
        };
        return Err(CodecError::protocol(r.kind, detail));
    }
    let payload = r.rest();
    Ok(Publish { dup, qos, retain, topic, packet_id, properties, payload })
}

fn ack(r: &mut Reader, version: ProtocolVersion) -> Result<Ack, CodecError> {
    let packet_id = packet_id(r)?;
    let (reason_code, properties) = reason_and_properties(r, version)?;
    Ok(Ack { packet_id, reason_code, properties })
}

/// The optional Reason Code and properties that end PUBACK, PUBREC, PUBREL, PUBCOMP,
/// DISCONNECT and AUTH in MQTT 5: both may be left out when they are Success and empty.
fn reason_and_properties(r: &mut Reader, version: ProtocolVersion) -> Result<(ReasonCode, Properties), CodecError> {
    if !version.is_v5() || r.is_empty() {
        return Ok((ReasonCode::Success, Properties::default()));
    }
    let code = reason_code(r)?;
    let properties = if r.is_empty() { Properties::default() } else { Properties::decode(r, Context::Packet(r.kind))? };
    Ok((code, properties))
}

fn subscribe(r: &mut Reader, version: ProtocolVersion) -> Result<Subscribe, CodecError> {
    let packet_id = packet_id(r)?;
    let properties = properties(r, version)?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string("Topic Filter")?;
        let byte = r.u8("Subscription Options")?;
        let reserved = if version.is_v5() { 0b1100_0000 } else { 0b1111_1100 };
        if byte & reserved != 0 {
            return Err(CodecError::malformed(
                r.kind,
                format!("reserved Subscription Options bits are set in 0x{byte:02X} for {filter:?} [MQTT-3.8.3-5]"),
            ));
        }
        let Some(qos) = QoS::from_u8(byte & 0b11) else {
            return Err(CodecError::malformed(r.kind, format!("Maximum QoS is 3 for {filter:?}")));
        };
        let retain_handling = match (byte >> 4) & 0b11 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendAtSubscribeIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(CodecError::protocol(r.kind, format!("Retain Handling is 3 for {filter:?}"))),
        };
        let options = SubscriptionOptions {
            qos,
            no_local: byte & 0b0000_0100 != 0,
            retain_as_published: byte & 0b0000_1000 != 0,
            retain_handling,
        };
        if options.no_local && filter.starts_with("$share/") {
            return Err(CodecError::protocol(
                r.kind,
                format!("No Local is set on the shared subscription {filter:?} [MQTT-3.8.3-4]"),
            ));
        }
        filters.push(SubscribeFilter { filter, options });
    }
    if filters.is_empty() {
        return Err(CodecError::protocol(r.kind, "no Topic Filter [MQTT-3.8.3-2]"));
    }
    Ok(Subscribe { packet_id, properties, filters })
}

fn suback(r: &mut Reader, version: ProtocolVersion) -> Result<SubAck, CodecError> {
    let packet_id = packet_id(r)?;
    let properties = properties(r, version)?;
    let mut reason_codes = Vec::with_capacity(r.remaining());
    while !r.is_empty() {
        let code = if version.is_v5() {
            reason_code(r)?
        } else {
            let raw = r.u8("Return Code")?;
            ReasonCode::from_v3_suback(raw)
                .ok_or_else(|| CodecError::malformed(r.kind, format!("SUBACK return code 0x{raw:02X} is reserved")))?
        };
        reason_codes.push(code);
    }
    Ok(SubAck { packet_id, properties, reason_codes })
}

fn unsubscribe(r: &mut Reader, version: ProtocolVersion) -> Result<Unsubscribe, CodecError> {
    let packet_id = packet_id(r)?;
    let properties = properties(r, version)?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(r.string("Topic Filter")?);
    }
    if filters.is_empty() {
        return Err(CodecError::protocol(r.kind, "no Topic Filter [MQTT-3.10.3-2]"));
    }
    Ok(Unsubscribe { packet_id, properties, filters })
}

fn unsuback(r: &mut Reader, version: ProtocolVersion) -> Result<UnsubAck, CodecError> {
    let packet_id = packet_id(r)?;
    let properties = properties(r, version)?;
    let mut reason_codes = Vec::new();
    if version.is_v5() {
        while !r.is_empty() {
            reason_codes.push(reason_code(r)?);
        }
    }
    Ok(UnsubAck { packet_id, properties, reason_codes })
}
