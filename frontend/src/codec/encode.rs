//! Encoding: [`Packet`]s to bytes in a connection's write buffer. Every packet is measured
//! and validated before its first byte is written, so an error leaves the buffer unchanged.
//! A PUBLISH can be written without its payload, for vectored writes that never copy it.

use bytes::{BufMut, BytesMut};

use super::error::EncodeError;
use super::packet::{
    Ack, ConnAck, Connect, Packet, PacketKind, ProtocolVersion, Publish, QoS, SubAck, Subscribe, UnsubAck, Unsubscribe,
};
use super::properties::{Context, Properties, PropertiesLen, field_len};
use super::reason::ReasonCode;
use super::wire::{VARINT_MAX, put_binary, put_string, put_varint, varint_len};

/// Encodes `packet` for a connection speaking `version` and appends it to `buf`.
///
/// A CONNECT is written in the version it names. MQTT 5 fields (properties, reason codes
/// other than those MQTT 3.1.1 can express) are left out when `version` is 3.1 or 3.1.1;
/// AUTH, which MQTT 3 lacks, is refused. On error nothing has been written.
pub fn encode(packet: &Packet, version: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
    match packet {
        Packet::Connect(connect) => encode_connect(connect, buf),
        Packet::ConnAck(connack) => encode_connack(connack, version, buf),
        Packet::Publish(publish) => {
            encode_publish_header(publish, version, buf)?;
            buf.extend_from_slice(&publish.payload);
            Ok(())
        }
        Packet::PubAck(ack) => encode_ack(PacketKind::PubAck, 0x40, ack, version, buf),
        Packet::PubRec(ack) => encode_ack(PacketKind::PubRec, 0x50, ack, version, buf),
        Packet::PubRel(ack) => encode_ack(PacketKind::PubRel, 0x62, ack, version, buf),
        Packet::PubComp(ack) => encode_ack(PacketKind::PubComp, 0x70, ack, version, buf),
        Packet::Subscribe(subscribe) => encode_subscribe(subscribe, version, buf),
        Packet::SubAck(suback) => encode_suback(suback, version, buf),
        Packet::Unsubscribe(unsubscribe) => encode_unsubscribe(unsubscribe, version, buf),
        Packet::UnsubAck(unsuback) => encode_unsuback(unsuback, version, buf),
        Packet::PingReq => {
            buf.extend_from_slice(&[0xC0, 0x00]);
            Ok(())
        }
        Packet::PingResp => {
            buf.extend_from_slice(&[0xD0, 0x00]);
            Ok(())
        }
        Packet::Disconnect(disconnect) => encode_reason_and_properties(
            PacketKind::Disconnect,
            0xE0,
            disconnect.reason_code,
            &disconnect.properties,
            version,
            buf,
        ),
        Packet::Auth(auth) => {
            if !version.is_v5() {
                return Err(EncodeError::NotInVersion {
                    packet: PacketKind::Auth,
                    version,
                    detail: "AUTH exists only in MQTT 5",
                });
            }
            encode_reason_and_properties(PacketKind::Auth, 0xF0, auth.reason_code, &auth.properties, version, buf)
        }
    }
}

/// Writes a PUBLISH without its payload: fixed header (whose Remaining Length counts the
/// payload), Topic Name, Packet Identifier and properties. The caller sends
/// `publish.payload` right after, e.g. as the second buffer of a vectored write.
pub fn encode_publish_header(
    publish: &Publish,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let kind = PacketKind::Publish;
    if (publish.qos == QoS::AtMostOnce) != publish.packet_id.is_none() {
        return Err(EncodeError::Invalid {
            packet: kind,
            detail: "a Packet Identifier must be present exactly when QoS is 1 or 2",
        });
    }
    if publish.dup && publish.qos == QoS::AtMostOnce {
        return Err(EncodeError::Invalid { packet: kind, detail: "DUP must be 0 on a QoS 0 message" });
    }
    if publish.topic.is_empty() && !(version.is_v5() && publish.properties.topic_alias.is_some()) {
        return Err(EncodeError::Invalid { packet: kind, detail: "an empty Topic Name needs an MQTT 5 Topic Alias" });
    }
    let properties = measure(&publish.properties, Context::Packet(kind), version)?;
    let header_body = field_len(publish.topic.len(), "Topic Name", kind)?
        + if publish.packet_id.is_some() { 2 } else { 0 }
        + properties.map_or(0, PropertiesLen::total);
    let remaining = header_body + publish.payload.len();
    let first_byte = 0x30 | (u8::from(publish.dup) << 3) | ((publish.qos as u8) << 1) | u8::from(publish.retain);
    fixed_header(kind, first_byte, remaining, header_body, buf)?;
    put_string(buf, &publish.topic);
    if let Some(packet_id) = publish.packet_id {
        buf.put_u16(packet_id.get());
    }
    write_properties(&publish.properties, properties, buf);
    Ok(())
}

/// Measures properties for MQTT 5, or yields `None` for MQTT 3, which has none.
fn measure(
    properties: &Properties,
    context: Context,
    version: ProtocolVersion,
) -> Result<Option<PropertiesLen>, EncodeError> {
    if version.is_v5() { properties.measure(context).map(Some) } else { Ok(None) }
}

fn write_properties(properties: &Properties, len: Option<PropertiesLen>, buf: &mut BytesMut) {
    if let Some(len) = len {
        properties.write(buf, len);
    }
}

/// Checks the Remaining Length, reserves room for what the caller writes next (`to_write`
/// body bytes) and writes the fixed header.
fn fixed_header(
    kind: PacketKind,
    first_byte: u8,
    remaining: usize,
    to_write: usize,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    if remaining > VARINT_MAX as usize {
        return Err(EncodeError::PacketTooLarge { packet: kind, len: remaining });
    }
    buf.reserve(1 + varint_len(remaining as u32) + to_write);
    buf.put_u8(first_byte);
    put_varint(buf, remaining as u32);
    Ok(())
}

fn check_reason(kind: PacketKind, code: ReasonCode) -> Result<(), EncodeError> {
    if code.allowed_in(kind) {
        Ok(())
    } else {
        Err(EncodeError::Invalid { packet: kind, detail: "the reason code is not one this packet may carry" })
    }
}

fn encode_connect(connect: &Connect, buf: &mut BytesMut) -> Result<(), EncodeError> {
    let kind = PacketKind::Connect;
    let version = connect.protocol;
    if connect.password.is_some() && connect.username.is_none() && !version.is_v5() {
        return Err(EncodeError::NotInVersion {
            packet: kind,
            version,
            detail: "a Password requires a User Name before MQTT 5",
        });
    }
    let name = version.protocol_name();
    let properties = measure(&connect.properties, Context::Packet(kind), version)?;
    let mut len = 2 + name.len() + 1 + 1 + 2 + properties.map_or(0, PropertiesLen::total);
    len += field_len(connect.client_id.len(), "Client Identifier", kind)?;
    let mut will_properties = None;
    if let Some(will) = &connect.will {
        will_properties = measure(&will.properties, Context::Will, version)?;
        len += will_properties.map_or(0, PropertiesLen::total)
            + field_len(will.topic.len(), "Will Topic", kind)?
            + field_len(will.payload.len(), "Will Payload", kind)?;
    }
    if let Some(username) = &connect.username {
        len += field_len(username.len(), "User Name", kind)?;
    }
    if let Some(password) = &connect.password {
        len += field_len(password.len(), "Password", kind)?;
    }

    let mut flags = 0u8;
    if connect.clean_start {
        flags |= 0b0000_0010;
    }
    if let Some(will) = &connect.will {
        flags |= 0b0000_0100 | ((will.qos as u8) << 3);
        if will.retain {
            flags |= 0b0010_0000;
        }
    }
    if connect.password.is_some() {
        flags |= 0b0100_0000;
    }
    if connect.username.is_some() {
        flags |= 0b1000_0000;
    }

    fixed_header(kind, 0x10, len, len, buf)?;
    put_string(buf, name);
    buf.put_u8(version.level());
    buf.put_u8(flags);
    buf.put_u16(connect.keep_alive);
    write_properties(&connect.properties, properties, buf);
    put_string(buf, &connect.client_id);
    if let Some(will) = &connect.will {
        write_properties(&will.properties, will_properties, buf);
        put_string(buf, &will.topic);
        put_binary(buf, &will.payload);
    }
    if let Some(username) = &connect.username {
        put_string(buf, username);
    }
    if let Some(password) = &connect.password {
        put_binary(buf, password);
    }
    Ok(())
}

fn encode_connack(connack: &ConnAck, version: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
    let kind = PacketKind::ConnAck;
    if connack.session_present && connack.reason_code != ReasonCode::Success {
        return Err(EncodeError::Invalid { packet: kind, detail: "Session Present must be 0 on a refused connection" });
    }
    let properties = measure(&connack.properties, Context::Packet(kind), version)?;
    let code = if version.is_v5() {
        check_reason(kind, connack.reason_code)?;
        connack.reason_code.as_u8()
    } else {
        connack.reason_code.to_v3_connack()
    };
    let len = 2 + properties.map_or(0, PropertiesLen::total);
    fixed_header(kind, 0x20, len, len, buf)?;
    buf.put_u8(u8::from(connack.session_present));
    buf.put_u8(code);
    write_properties(&connack.properties, properties, buf);
    Ok(())
}

fn encode_ack(
    kind: PacketKind,
    first_byte: u8,
    ack: &Ack,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    if !version.is_v5() {
        buf.extend_from_slice(&[first_byte, 2]);
        buf.put_u16(ack.packet_id.get());
        return Ok(());
    }
    check_reason(kind, ack.reason_code)?;
    let (tail_len, properties) = tail(kind, ack.reason_code, &ack.properties)?;
    let len = 2 + tail_len;
    fixed_header(kind, first_byte, len, len, buf)?;
    buf.put_u16(ack.packet_id.get());
    write_tail(ack.reason_code, &ack.properties, tail_len, properties, buf);
    Ok(())
}

/// The MQTT 5 Reason Code and properties that may be left out when they say nothing:
/// returns their encoded size and the measured properties, if written.
fn tail(
    kind: PacketKind,
    code: ReasonCode,
    properties: &Properties,
) -> Result<(usize, Option<PropertiesLen>), EncodeError> {
    if properties.is_empty() {
        return Ok((usize::from(code != ReasonCode::Success), None));
    }
    let measured = properties.measure(Context::Packet(kind))?;
    Ok((1 + measured.total(), Some(measured)))
}

fn write_tail(
    code: ReasonCode,
    properties: &Properties,
    tail_len: usize,
    measured: Option<PropertiesLen>,
    buf: &mut BytesMut,
) {
    if tail_len > 0 {
        buf.put_u8(code.as_u8());
    }
    write_properties(properties, measured, buf);
}

fn encode_reason_and_properties(
    kind: PacketKind,
    first_byte: u8,
    code: ReasonCode,
    properties: &Properties,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    if !version.is_v5() {
        buf.extend_from_slice(&[first_byte, 0]);
        return Ok(());
    }
    check_reason(kind, code)?;
    let (len, measured) = tail(kind, code, properties)?;
    fixed_header(kind, first_byte, len, len, buf)?;
    write_tail(code, properties, len, measured, buf);
    Ok(())
}

fn encode_subscribe(subscribe: &Subscribe, version: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
    let kind = PacketKind::Subscribe;
    if subscribe.filters.is_empty() {
        return Err(EncodeError::Invalid { packet: kind, detail: "a SUBSCRIBE needs at least one Topic Filter" });
    }
    let properties = measure(&subscribe.properties, Context::Packet(kind), version)?;
    let mut len = 2 + properties.map_or(0, PropertiesLen::total);
    for filter in &subscribe.filters {
        len += field_len(filter.filter.len(), "Topic Filter", kind)? + 1;
        if version.is_v5() && filter.options.no_local && filter.filter.starts_with("$share/") {
            return Err(EncodeError::Invalid {
                packet: kind,
                detail: "No Local cannot be set on a shared subscription",
            });
        }
    }
    fixed_header(kind, 0x82, len, len, buf)?;
    buf.put_u16(subscribe.packet_id.get());
    write_properties(&subscribe.properties, properties, buf);
    for filter in &subscribe.filters {
        put_string(buf, &filter.filter);
        let options = filter.options;
        let mut byte = options.qos as u8;
        if version.is_v5() {
            byte |= (u8::from(options.no_local) << 2)
                | (u8::from(options.retain_as_published) << 3)
                | ((options.retain_handling as u8) << 4);
        }
        buf.put_u8(byte);
    }
    Ok(())
}

fn encode_suback(suback: &SubAck, version: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
    let kind = PacketKind::SubAck;
    let properties = measure(&suback.properties, Context::Packet(kind), version)?;
    if version.is_v5() {
        for &code in &suback.reason_codes {
            check_reason(kind, code)?;
        }
    }
    let len = 2 + properties.map_or(0, PropertiesLen::total) + suback.reason_codes.len();
    fixed_header(kind, 0x90, len, len, buf)?;
    buf.put_u16(suback.packet_id.get());
    write_properties(&suback.properties, properties, buf);
    for &code in &suback.reason_codes {
        buf.put_u8(if version.is_v5() { code.as_u8() } else { code.to_v3_suback() });
    }
    Ok(())
}

fn encode_unsubscribe(
    unsubscribe: &Unsubscribe,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let kind = PacketKind::Unsubscribe;
    if unsubscribe.filters.is_empty() {
        return Err(EncodeError::Invalid { packet: kind, detail: "an UNSUBSCRIBE needs at least one Topic Filter" });
    }
    let properties = measure(&unsubscribe.properties, Context::Packet(kind), version)?;
    let mut len = 2 + properties.map_or(0, PropertiesLen::total);
    for filter in &unsubscribe.filters {
        len += field_len(filter.len(), "Topic Filter", kind)?;
    }
    fixed_header(kind, 0xA2, len, len, buf)?;
    buf.put_u16(unsubscribe.packet_id.get());
    write_properties(&unsubscribe.properties, properties, buf);
    for filter in &unsubscribe.filters {
        put_string(buf, filter);
    }
    Ok(())
}

fn encode_unsuback(unsuback: &UnsubAck, version: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
    let kind = PacketKind::UnsubAck;
    if !version.is_v5() {
        buf.extend_from_slice(&[0xB0, 2]);
        buf.put_u16(unsuback.packet_id.get());
        return Ok(());
    }
    let properties = unsuback.properties.measure(Context::Packet(kind))?;
    for &code in &unsuback.reason_codes {
        check_reason(kind, code)?;
    }
    let len = 2 + properties.total() + unsuback.reason_codes.len();
    fixed_header(kind, 0xB0, len, len, buf)?;
    buf.put_u16(unsuback.packet_id.get());
    unsuback.properties.write(buf, properties);
    buf.extend(unsuback.reason_codes.iter().map(|code| code.as_u8()));
    Ok(())
}
