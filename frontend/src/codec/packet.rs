//! The packets as the broker sees them: one set of types for MQTT 3.1, 3.1.1 and 5.0.
//! Fields that only MQTT 5 has (properties, most reason codes) are left at their defaults
//! when decoding an older version and ignored when encoding for one.

use std::fmt;
use std::num::NonZeroU16;

use bytes::Bytes;
use bytestring::ByteString;

use super::properties::Properties;
use super::reason::ReasonCode;

/// A Packet Identifier; the specification forbids 0 wherever one is carried.
pub type PacketId = NonZeroU16;

/// The protocol spoken on a connection, fixed by its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtocolVersion {
    /// MQTT 3.1: protocol name "MQIsdp", level 3. On the wire it matches 3.1.1 apart from
    /// the CONNECT header.
    V3_1,
    /// MQTT 3.1.1: protocol name "MQTT", level 4.
    V3_1_1,
    /// MQTT 5.0: protocol name "MQTT", level 5.
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte of CONNECT.
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V3_1 => 3,
            ProtocolVersion::V3_1_1 => 4,
            ProtocolVersion::V5 => 5,
        }
    }

    /// The protocol name of CONNECT.
    pub fn protocol_name(self) -> &'static str {
        match self {
            ProtocolVersion::V3_1 => "MQIsdp",
            ProtocolVersion::V3_1_1 | ProtocolVersion::V5 => "MQTT",
        }
    }

    /// Whether this is MQTT 5, the only version with properties and reason codes.
    pub fn is_v5(self) -> bool {
        self == ProtocolVersion::V5
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProtocolVersion::V3_1 => "MQTT 3.1",
            ProtocolVersion::V3_1_1 => "MQTT 3.1.1",
            ProtocolVersion::V5 => "MQTT 5.0",
        })
    }
}

/// Quality of Service level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum QoS {
    /// At most once (0).
    #[default]
    AtMostOnce = 0,
    /// At least once (1).
    AtLeastOnce = 1,
    /// Exactly once (2).
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for the two-bit value, or `None` for the forbidden value 3.
    pub fn from_u8(value: u8) -> Option<QoS> {
        match value {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// The fifteen MQTT control packet types, for messages and for the reason-code tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // the names are the specification's
pub enum PacketKind {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
    Auth = 15,
}

impl PacketKind {
    /// The kind for the high nibble of the first byte; `None` for the reserved value 0.
    pub fn from_type_nibble(nibble: u8) -> Option<PacketKind> {
        use PacketKind::*;
        Some(match nibble {
            1 => Connect,
            2 => ConnAck,
            3 => Publish,
            4 => PubAck,
            5 => PubRec,
            6 => PubRel,
            7 => PubComp,
            8 => Subscribe,
            9 => SubAck,
            10 => Unsubscribe,
            11 => UnsubAck,
            12 => PingReq,
            13 => PingResp,
            14 => Disconnect,
            15 => Auth,
            _ => return None,
        })
    }
}

impl fmt::Display for PacketKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PacketKind::Connect => "CONNECT",
            PacketKind::ConnAck => "CONNACK",
            PacketKind::Publish => "PUBLISH",
            PacketKind::PubAck => "PUBACK",
            PacketKind::PubRec => "PUBREC",
            PacketKind::PubRel => "PUBREL",
            PacketKind::PubComp => "PUBCOMP",
            PacketKind::Subscribe => "SUBSCRIBE",
            PacketKind::SubAck => "SUBACK",
            PacketKind::Unsubscribe => "UNSUBSCRIBE",
            PacketKind::UnsubAck => "UNSUBACK",
            PacketKind::PingReq => "PINGREQ",
            PacketKind::PingResp => "PINGRESP",
            PacketKind::Disconnect => "DISCONNECT",
            PacketKind::Auth => "AUTH",
        })
    }
}

/// One MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // each variant is the packet of the same name
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(Ack),
    PubRec(Ack),
    PubRel(Ack),
    PubComp(Ack),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    /// MQTT 5 only.
    Auth(Auth),
}

impl Packet {
    /// The packet's type.
    pub fn kind(&self) -> PacketKind {
        match self {
            Packet::Connect(_) => PacketKind::Connect,
            Packet::ConnAck(_) => PacketKind::ConnAck,
            Packet::Publish(_) => PacketKind::Publish,
            Packet::PubAck(_) => PacketKind::PubAck,
            Packet::PubRec(_) => PacketKind::PubRec,
            Packet::PubRel(_) => PacketKind::PubRel,
            Packet::PubComp(_) => PacketKind::PubComp,
            Packet::Subscribe(_) => PacketKind::Subscribe,
            Packet::SubAck(_) => PacketKind::SubAck,
            Packet::Unsubscribe(_) => PacketKind::Unsubscribe,
            Packet::UnsubAck(_) => PacketKind::UnsubAck,
            Packet::PingReq => PacketKind::PingReq,
            Packet::PingResp => PacketKind::PingResp,
            Packet::Disconnect(_) => PacketKind::Disconnect,
            Packet::Auth(_) => PacketKind::Auth,
        }
    }
}

/// CONNECT (section 3.1). It carries its own protocol version, so it decodes the same way
/// whatever version the decoder was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol name and level.
    pub protocol: ProtocolVersion,
    /// Clean Session (3.1.1) or Clean Start (5.0).
    pub clean_start: bool,
    /// Keep Alive in seconds; 0 turns it off.
    pub keep_alive: u16,
    /// Client Identifier; may be empty.
    pub client_id: ByteString,
    /// Will Message, if the Will Flag is set.
    pub will: Option<Will>,
    /// User Name.
    pub username: Option<ByteString>,
    /// Password: binary data, not necessarily UTF-8.
    pub password: Option<Bytes>,
    /// CONNECT properties (MQTT 5).
    pub properties: Properties,
}

/// The Will Message of a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Will Topic.
    pub topic: ByteString,
    /// Will Payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will Retain.
    pub retain: bool,
    /// Will Properties (MQTT 5).
    pub properties: Properties,
}

/// CONNACK (section 3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Session Present.
    pub session_present: bool,
    /// Connect Reason Code. For MQTT 3.1.1 it maps to return codes 0 to 5 (Success,
    /// UnsupportedProtocolVersion, ClientIdentifierNotValid, ServerUnavailable,
    /// BadUserNameOrPassword, NotAuthorized).
    pub reason_code: ReasonCode,
    /// CONNACK properties (MQTT 5).
    pub properties: Properties,
}

/// PUBLISH (section 3.3). Topic and payload are slices of the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP flag.
    pub dup: bool,
    /// QoS level.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic Name; empty only when MQTT 5 Topic Alias stands in for it.
    pub topic: ByteString,
    /// Packet Identifier: present exactly when QoS is 1 or 2.
    pub packet_id: Option<PacketId>,
    /// PUBLISH properties (MQTT 5).
    pub properties: Properties,
    /// Application Message.
    pub payload: Bytes,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP (sections 3.4 to 3.7): the [`Packet`] variant says
/// which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Packet Identifier of the PUBLISH (or PUBREC / PUBREL) acknowledged.
    pub packet_id: PacketId,
    /// Reason Code (MQTT 5; Success in 3.1.1).
    pub reason_code: ReasonCode,
    /// Properties (MQTT 5).
    pub properties: Properties,
}

impl Ack {
    /// A successful acknowledgement without properties.
    pub fn success(packet_id: PacketId) -> Ack {
        Ack { packet_id, reason_code: ReasonCode::Success, properties: Properties::default() }
    }
}

/// Retain Handling subscription option (MQTT 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// 1: send them only if the subscription did not exist.
    SendAtSubscribeIfNew = 1,
    /// 2: do not send them.
    DoNotSend = 2,
}

/// Subscription Options (section 3.8.3.1). MQTT 3.1.1 carries only the QoS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS.
    pub qos: QoS,
    /// No Local.
    pub no_local: bool,
    /// Retain As Published.
    pub retain_as_published: bool,
    /// Retain Handling.
    pub retain_handling: RetainHandling,
}

/// One Topic Filter of a SUBSCRIBE. The filter's syntax (wildcard placement, `$share`
/// form) is left to the subscription layer, which answers a bad one with reason code 0x8F in
/// the SUBACK instead of closing the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeFilter {
    /// Topic Filter.
    pub filter: ByteString,
    /// Subscription Options.
    pub options: SubscriptionOptions,
}

/// SUBSCRIBE (section 3.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet Identifier.
    pub packet_id: PacketId,
    /// SUBSCRIBE properties (MQTT 5).
    pub properties: Properties,
    /// At least one filter.
    pub filters: Vec<SubscribeFilter>,
}

/// SUBACK (section 3.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet Identifier of the SUBSCRIBE.
    pub packet_id: PacketId,
    /// SUBACK properties (MQTT 5).
    pub properties: Properties,
    /// One per filter. MQTT 3.1.1 return codes map to Success, GrantedQos1, GrantedQos2 and
    /// UnspecifiedError (0x80 Failure).
    pub reason_codes: Vec<ReasonCode>,
}

/// UNSUBSCRIBE (section 3.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet Identifier.
    pub packet_id: PacketId,
    /// UNSUBSCRIBE properties (MQTT 5).
    pub properties: Properties,
    /// At least one filter.
    pub filters: Vec<ByteString>,
}

/// UNSUBACK (section 3.11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet Identifier of the UNSUBSCRIBE.
    pub packet_id: PacketId,
    /// UNSUBACK properties (MQTT 5).
    pub properties: Properties,
    /// One per filter (MQTT 5); empty in 3.1.1, whose UNSUBACK carries none.
    pub reason_codes: Vec<ReasonCode>,
}

/// DISCONNECT (section 3.14).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// Disconnect Reason Code (MQTT 5; Normal disconnection in 3.1.1).
    pub reason_code: ReasonCode,
    /// DISCONNECT properties (MQTT 5).
    pub properties: Properties,
}

/// AUTH (section 3.15), MQTT 5 only.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// Authenticate Reason Code.
    pub reason_code: ReasonCode,
    /// AUTH properties.
    pub properties: Properties,
}
