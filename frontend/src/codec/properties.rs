//! MQTT 5 properties (section 2.2.2): one struct for all packets, with the specification's
//! table of which property may appear in which packet enforced in both directions. MQTT 3
//! packets carry none, so for them this stays empty.

use std::fmt;
use std::ops::{Deref, DerefMut};

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::error::{CodecError, EncodeError};
use super::packet::{PacketKind, QoS};
use super::wire::{Reader, VARINT_MAX, put_binary, put_string, put_varint, varint_len};

/// Where a property block sits: in a packet, or in the Will part of a CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Context {
    Packet(PacketKind),
    Will,
}

impl Context {
    fn kind(self) -> PacketKind {
        match self {
            Context::Packet(kind) => kind,
            Context::Will => PacketKind::Connect,
        }
    }

    fn describe(self) -> String {
        match self {
            Context::Packet(kind) => kind.to_string(),
            Context::Will => "the Will of a CONNECT".to_string(),
        }
    }
}

/// Whether property `id` may appear in `context` (the table of section 2.2.2.2).
fn allowed(id: u8, context: Context) -> bool {
    use PacketKind::*;
    let Context::Packet(kind) = context else {
        return matches!(id, 0x01 | 0x02 | 0x03 | 0x08 | 0x09 | 0x18 | 0x26);
    };
    match id {
        0x01 | 0x02 | 0x03 | 0x08 | 0x09 | 0x23 => kind == Publish,
        0x0B => matches!(kind, Publish | Subscribe),
        0x11 => matches!(kind, Connect | ConnAck | Disconnect),
        0x12 | 0x13 | 0x1A | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => kind == ConnAck,
        0x15 | 0x16 => matches!(kind, Connect | ConnAck | Auth),
        0x17 | 0x19 => kind == Connect,
        0x1C => matches!(kind, ConnAck | Disconnect),
        0x1F => matches!(kind, ConnAck | PubAck | PubRec | PubRel | PubComp | SubAck | UnsubAck | Disconnect | Auth),
        0x21 | 0x22 | 0x27 => matches!(kind, Connect | ConnAck),
        0x26 => kind != PingReq && kind != PingResp,
        _ => false,
    }
}

/// How one single-valued property is read, sized and written.
trait PropertyValue: Sized {
    fn read(reader: &mut Reader, name: &str) -> Result<Self, CodecError>;
    fn wire_len(&self, name: &'static str, kind: PacketKind) -> Result<usize, EncodeError>;
    fn write(&self, buf: &mut BytesMut);
}

/// Byte properties that are flags: 0 or 1, anything else is a Protocol Error.
impl PropertyValue for bool {
    fn read(reader: &mut Reader, name: &str) -> Result<Self, CodecError> {
        match reader.u8(name)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(CodecError::protocol(reader.kind, format!("{name} is {other}; only 0 and 1 are allowed"))),
        }
    }
    fn wire_len(&self, _: &'static str, _: PacketKind) -> Result<usize, EncodeError> {
        Ok(1)
    }
    fn write(&self, buf: &mut BytesMut) {
        buf.put_u8(u8::from(*self));
    }
}

/// Maximum QoS: 0 or 1 ([MQTT-3.2.2-9] makes 2 the default, sent by leaving it out).
impl PropertyValue for QoS {
    fn read(reader: &mut Reader, name: &str) -> Result<Self, CodecError> {
        match reader.u8(name)? {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            other => Err(CodecError::protocol(reader.kind, format!("{name} is {other}; only 0 and 1 are allowed"))),
        }
    }
    fn wire_len(&self, _: &'static str, kind: PacketKind) -> Result<usize, EncodeError> {
        if *self == QoS::ExactlyOnce {
            return Err(EncodeError::Invalid { packet: kind, detail: "Maximum QoS can only be 0 or 1" });
        }
        Ok(1)
    }
    fn write(&self, buf: &mut BytesMut) {
        buf.put_u8(*self as u8);
    }
}

impl PropertyValue for u16 {
    fn read(reader: &mut Reader, name: &str) -> Result<Self, CodecError> {
        reader.u16(name)
    }
    fn wire_len(&self, _: &'static str, _: PacketKind) -> Result<usize, EncodeError> {
        Ok(2)
    }
    fn write(&self, buf: &mut BytesMut) {
        buf.put_u16(*self);
    }
}

impl PropertyValue for u32 {
    fn read(reader: &mut Reader, name: &str) -> Result<Self, CodecError> {
        reader.u32(name)
    }
    fn wire_len(&self, _: &'static str, _: PacketKind) -> Result<usize, EncodeError> {
        Ok(4)
    }
    fn write(&self, buf: &mut BytesMut) {
        buf.put_u32(*self);
    }
}

impl PropertyValue for ByteString {
    fn read(reader: &mut Reader, name: &str) -> Result<Self, CodecError> {
        reader.string(name)
    }
    fn wire_len(&self, name: &'static str, kind: PacketKind) -> Result<usize, EncodeError> {
        field_len(self.len(), name, kind)
    }
    fn write(&self, buf: &mut BytesMut) {
        put_string(buf, self);
    }
}

impl PropertyValue for Bytes {
    fn read(reader: &mut Reader, name: &str) -> Result<Self, CodecError> {
        reader.binary(name)
    }
    fn wire_len(&self, name: &'static str, kind: PacketKind) -> Result<usize, EncodeError> {
        field_len(self.len(), name, kind)
    }
    fn write(&self, buf: &mut BytesMut) {
        put_binary(buf, self);
    }
}

/// Encoded size of a length-prefixed field, refusing one too long for its prefix.
pub(crate) fn field_len(len: usize, field: &'static str, packet: PacketKind) -> Result<usize, EncodeError> {
    if len > usize::from(u16::MAX) {
        return Err(EncodeError::FieldTooLong { packet, field, len });
    }
    Ok(2 + len)
}

macro_rules! properties {
    ($($(#[doc = $doc:literal])* $field:ident: $ty:ty = $id:literal, $name:literal;)*) => {
        /// The values of MQTT 5 properties: each field is one property of the specification.
        /// Reached through [`Properties`], which keeps them out of line.
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct PropertyValues {
            $(
                #[doc = concat!($name, " (", stringify!($id), ").")]
                $(#[doc = $doc])*
                pub $field: Option<$ty>,
            )*
            /// Subscription Identifier (0x0B): any number in a PUBLISH, at most one in a
            /// SUBSCRIBE; each between 1 and 268,435,455.
            pub subscription_identifiers: Vec<u32>,
            /// User Property (0x26): name/value pairs, order kept, repeats allowed.
            pub user_properties: Vec<(ByteString, ByteString)>,
        }

        impl PropertyValues {
            /// No property set; what an empty [`Properties`] dereferences to.
            pub const EMPTY: PropertyValues = PropertyValues {
                $($field: None,)*
                subscription_identifiers: Vec::new(),
                user_properties: Vec::new(),
            };

            /// Whether no property is set.
            pub fn is_empty(&self) -> bool {
                $(self.$field.is_none() &&)* self.subscription_identifiers.is_empty() && self.user_properties.is_empty()
            }

            fn read_one(&mut self, id: u32, reader: &mut Reader, context: Context) -> Result<(), CodecError> {
                let kind = context.kind();
                let Ok(id_byte) = u8::try_from(id) else {
                    return Err(CodecError::malformed(kind, format!("unknown property identifier 0x{id:X}")));
                };
                if !allowed(id_byte, context) {
                    let name = match id_byte {
                        $($id => Some($name),)*
                        0x0B => Some("Subscription Identifier"),
                        0x26 => Some("User Property"),
                        _ => None,
                    };
                    return Err(CodecError::malformed(
                        kind,
                        match name {
                            Some(name) => format!("{name} (0x{id_byte:02X}) is not allowed in {}", context.describe()),
                            None => format!("unknown property identifier 0x{id_byte:02X}"),
                        },
                    ));
                }
                match id_byte {
                    $(
                        $id => {
                            if self.$field.is_some() {
                                return Err(CodecError::protocol(
                                    kind,
                                    format!("{} appears more than once in {}", $name, context.describe()),
                                ));
                            }
                            self.$field = Some(<$ty as PropertyValue>::read(reader, $name)?);
                        }
                    )*
                    0x0B => {
                        let value = reader.varint("Subscription Identifier")?;
                        if value == 0 {
                            return Err(CodecError::protocol(kind, "Subscription Identifier is 0"));
                        }
                        if kind == PacketKind::Subscribe && !self.subscription_identifiers.is_empty() {
                            return Err(CodecError::protocol(kind, "Subscription Identifier appears more than once"));
                        }
                        self.subscription_identifiers.push(value);
                    }
                    _ => {
                        let name = reader.string("User Property name")?;
                        let value = reader.string("User Property value")?;
                        self.user_properties.push((name, value));
                    }
                }
                Ok(())
            }

            /// Size of the properties themselves, without the Property Length in front.
            fn content_len(&self, context: Context) -> Result<usize, EncodeError> {
                let kind = context.kind();
                let mut len = 0;
                $(
                    if let Some(value) = &self.$field {
                        check_allowed($id, context, $name)?;
                        len += 1 + value.wire_len($name, kind)?;
                    }
                )*
                if !self.subscription_identifiers.is_empty() {
                    check_allowed(0x0B, context, "Subscription Identifier")?;
                    if kind == PacketKind::Subscribe && self.subscription_identifiers.len() > 1 {
                        return Err(EncodeError::Invalid {
                            packet: kind,
                            detail: "a SUBSCRIBE carries at most one Subscription Identifier",
                        });
                    }
                    for &id in &self.subscription_identifiers {
                        if id == 0 || id > VARINT_MAX {
                            return Err(EncodeError::Invalid {
                                packet: kind,
                                detail: "Subscription Identifier must be between 1 and 268435455",
                            });
                        }
                        len += 1 + varint_len(id);
                    }
                }
                if !self.user_properties.is_empty() {
                    check_allowed(0x26, context, "User Property")?;
                    for (name, value) in &self.user_properties {
                        len += 1 + field_len(name.len(), "User Property name", kind)?
                            + field_len(value.len(), "User Property value", kind)?;
                    }
                }
                Ok(len)
            }

            fn write_content(&self, buf: &mut BytesMut) {
                $(
                    if let Some(value) = &self.$field {
                        buf.put_u8($id);
                        value.write(buf);
                    }
                )*
                for &id in &self.subscription_identifiers {
                    buf.put_u8(0x0B);
                    put_varint(buf, id);
                }
                for (name, value) in &self.user_properties {
                    buf.put_u8(0x26);
                    put_string(buf, name);
                    put_string(buf, value);
                }
            }
        }
    };
}

fn check_allowed(id: u8, context: Context, property: &'static str) -> Result<(), EncodeError> {
    if allowed(id, context) {
        Ok(())
    } else {
        Err(EncodeError::PropertyNotAllowed { packet: context.kind(), property, will: context == Context::Will })
    }
}

properties! {
    payload_format_indicator: bool = 0x01, "Payload Format Indicator";
    message_expiry_interval: u32 = 0x02, "Message Expiry Interval";
    content_type: ByteString = 0x03, "Content Type";
    response_topic: ByteString = 0x08, "Response Topic";
    correlation_data: Bytes = 0x09, "Correlation Data";
    session_expiry_interval: u32 = 0x11, "Session Expiry Interval";
    assigned_client_identifier: ByteString = 0x12, "Assigned Client Identifier";
    server_keep_alive: u16 = 0x13, "Server Keep Alive";
    authentication_method: ByteString = 0x15, "Authentication Method";
    authentication_data: Bytes = 0x16, "Authentication Data";
    request_problem_information: bool = 0x17, "Request Problem Information";
    will_delay_interval: u32 = 0x18, "Will Delay Interval";
    request_response_information: bool = 0x19, "Request Response Information";
    response_information: ByteString = 0x1A, "Response Information";
    server_reference: ByteString = 0x1C, "Server Reference";
    reason_string: ByteString = 0x1F, "Reason String";
    /// Never 0.
    receive_maximum: u16 = 0x21, "Receive Maximum";
    topic_alias_maximum: u16 = 0x22, "Topic Alias Maximum";
    /// Never 0.
    topic_alias: u16 = 0x23, "Topic Alias";
    /// 0 or 1 only.
    maximum_qos: QoS = 0x24, "Maximum QoS";
    retain_available: bool = 0x25, "Retain Available";
    /// Never 0.
    maximum_packet_size: u32 = 0x27, "Maximum Packet Size";
    wildcard_subscription_available: bool = 0x28, "Wildcard Subscription Available";
    subscription_identifier_available: bool = 0x29, "Subscription Identifier Available";
    shared_subscription_available: bool = 0x2A, "Shared Subscription Available";
}

/// MQTT 5 properties of a packet or of a Will. Read and set them as fields
/// (`properties.topic_alias`, through [`PropertyValues`]); decoding rejects a property that
/// its packet may not carry.
///
/// Most packets carry none, so the values live behind a pointer that stays null until a
/// property is set: an empty `Properties` costs one word and no allocation.
#[derive(Clone, Default)]
pub struct Properties {
    values: Option<Box<PropertyValues>>,
}

impl Deref for Properties {
    type Target = PropertyValues;

    fn deref(&self) -> &PropertyValues {
        static EMPTY: PropertyValues = PropertyValues::EMPTY;
        self.values.as_deref().unwrap_or(&EMPTY)
    }
}

impl DerefMut for Properties {
    fn deref_mut(&mut self) -> &mut PropertyValues {
        self.values.get_or_insert_with(Default::default)
    }
}

impl PartialEq for Properties {
    fn eq(&self, other: &Properties) -> bool {
        **self == **other
    }
}

impl Eq for Properties {}

impl fmt::Debug for Properties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() { f.write_str("Properties {}") } else { fmt::Debug::fmt(&**self, f) }
    }
}

impl From<PropertyValues> for Properties {
    fn from(values: PropertyValues) -> Properties {
        Properties { values: Some(Box::new(values)) }
    }
}

impl Properties {
    /// Reads a Property Length and the properties it covers.
    pub(crate) fn decode(reader: &mut Reader, context: Context) -> Result<Properties, CodecError> {
        let len = reader.varint("Property Length")? as usize;
        if len == 0 {
            return Ok(Properties::default());
        }
        let mut block = reader.sub_reader(len, "property block")?;
        let mut values = Box::<PropertyValues>::default();
        while !block.is_empty() {
            let id = block.varint("property identifier")?;
            values.read_one(id, &mut block, context)?;
        }
        values.check_values(context.kind())?;
        Ok(Properties { values: Some(values) })
    }

    /// Validates the properties for encoding in `context` and measures them.
    pub(crate) fn measure(&self, context: Context) -> Result<PropertiesLen, EncodeError> {
        let content = match &self.values {
            Some(values) => values.content_len(context)?,
            None => 0,
        };
        if content > VARINT_MAX as usize {
            return Err(EncodeError::PacketTooLarge { packet: context.kind(), len: content });
        }
        Ok(PropertiesLen { content })
    }

    /// Writes Property Length and properties, as measured by [`Properties::measure`].
    pub(crate) fn write(&self, buf: &mut BytesMut, len: PropertiesLen) {
        put_varint(buf, len.content as u32);
        if let Some(values) = &self.values {
            let start = buf.len();
            values.write_content(buf);
            debug_assert_eq!(buf.len() - start, len.content, "property length mismatch");
        }
    }
}

impl PropertyValues {
    /// The values the specification forbids although they parse.
    fn check_values(&self, kind: PacketKind) -> Result<(), CodecError> {
        let zero = |name: &str| Err(CodecError::protocol(kind, format!("{name} is 0, which is not allowed")));
        if self.receive_maximum == Some(0) {
            return zero("Receive Maximum");
        }
        if self.maximum_packet_size == Some(0) {
            return zero("Maximum Packet Size");
        }
        // Topic Alias 0 parses; the session refuses it with 0x94 Topic Alias Invalid.
        Ok(())
    }
}

/// The measured size of a property block.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PropertiesLen {
    content: usize,
}

impl PropertiesLen {
    /// Size on the wire, Property Length included.
    pub(crate) fn total(self) -> usize {
        varint_len(self.content as u32) + self.content
    }
}
