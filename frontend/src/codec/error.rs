//! Why a packet could not be decoded or encoded. A decode error closes the connection that
//! sent the bytes; [`CodecError::reason_code`] is what goes into the DISCONNECT (MQTT 5) or
//! the CONNACK, and MQTT 3.1.1 clients simply see the connection close.

use super::packet::PacketKind;
use super::reason::ReasonCode;

/// A packet that the decoder refused. The message says what was wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The bytes do not parse as the packet they claim to be (reason code 0x81).
    #[error("malformed {packet} packet: {detail}")]
    Malformed {
        /// The packet being decoded.
        packet: PacketKind,
        /// What was wrong.
        detail: String,
    },
    /// The packet parses but breaks a rule of the specification (reason code 0x82).
    #[error("protocol error in {packet} packet: {detail}")]
    Protocol {
        /// The packet being decoded.
        packet: PacketKind,
        /// Which rule was broken.
        detail: String,
    },
    /// The first byte names packet type 0, or AUTH on an MQTT 3 connection (reason code 0x81).
    #[error("malformed packet: first byte 0x{first_byte:02X} names a packet type reserved in {version}")]
    ReservedPacketType {
        /// The first byte of the fixed header.
        first_byte: u8,
        /// The connection's protocol version.
        version: super::ProtocolVersion,
    },
    /// The fixed header announces a packet larger than the negotiated maximum (reason code
    /// 0x95). Raised before any of the body is buffered.
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge {
        /// Total size of the packet, fixed header included.
        size: usize,
        /// The limit in force.
        max: usize,
    },
    /// A CONNECT for a protocol this broker does not speak (reason code 0x84; MQTT 3.1.1
    /// CONNACK return code 0x01).
    #[error(
        "unsupported protocol: CONNECT names protocol {name:?} at level {level}; supported are MQIsdp 3, MQTT 4 and MQTT 5"
    )]
    UnsupportedProtocolVersion {
        /// The protocol name in the CONNECT (lossily decoded for the message).
        name: String,
        /// The protocol level byte in the CONNECT.
        level: u8,
    },
}

impl CodecError {
    /// The MQTT 5 reason code that answers this error.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            CodecError::Malformed { .. } | CodecError::ReservedPacketType { .. } => ReasonCode::MalformedPacket,
            CodecError::Protocol { .. } => ReasonCode::ProtocolError,
            CodecError::PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            CodecError::UnsupportedProtocolVersion { .. } => ReasonCode::UnsupportedProtocolVersion,
        }
    }

    pub(crate) fn malformed(packet: PacketKind, detail: impl Into<String>) -> Self {
        CodecError::Malformed { packet, detail: detail.into() }
    }

    pub(crate) fn protocol(packet: PacketKind, detail: impl Into<String>) -> Self {
        CodecError::Protocol { packet, detail: detail.into() }
    }
}

/// A packet that cannot be put on the wire as given. These are bugs in the caller (the broker
/// built an impossible packet), never a peer's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The packet type or a field of it does not exist in the protocol version asked for.
    #[error("{packet} cannot be encoded for {version}: {detail}")]
    NotInVersion {
        /// The packet being encoded.
        packet: PacketKind,
        /// The protocol version asked for.
        version: super::ProtocolVersion,
        /// What is missing from that version.
        detail: &'static str,
    },
    /// A string or binary field is longer than the 65,535 bytes its length prefix can say.
    #[error("{packet}: {field} is {len} bytes; MQTT allows at most 65535")]
    FieldTooLong {
        /// The packet being encoded.
        packet: PacketKind,
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// The packet would need a remaining length above 268,435,455 bytes.
    #[error("{packet}: remaining length of {len} bytes exceeds the MQTT limit of 268435455")]
    PacketTooLarge {
        /// The packet being encoded.
        packet: PacketKind,
        /// Its remaining length.
        len: usize,
    },
    /// A property is set that the packet (or its Will) cannot carry.
    #[error("{packet}: property {property} is not allowed {}", if *will { "in a Will" } else { "in this packet" })]
    PropertyNotAllowed {
        /// The packet being encoded.
        packet: PacketKind,
        /// The property's name.
        property: &'static str,
        /// Whether it was set in the Will properties of a CONNECT.
        will: bool,
    },
    /// The fields contradict each other or the specification, e.g. a QoS 1 PUBLISH without a
    /// packet identifier.
    #[error("{packet}: {detail}")]
    Invalid {
        /// The packet being encoded.
        packet: PacketKind,
        /// What is inconsistent.
        detail: &'static str,
    },
}
