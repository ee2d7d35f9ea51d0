//! The MQTT codec: MQTT 3.1, 3.1.1 and 5.0 control packets to and from bytes.
//!
//! [`decode`] reads one packet at a time from a connection's `BytesMut` read buffer. It waits
//! (returns `Ok(None)`) until a packet is complete, refuses one larger than the negotiated
//! maximum as soon as its fixed header arrives, and hands out the PUBLISH topic and payload as
//! slices of the buffer. Anything the specification calls malformed or a protocol error comes
//! back as a [`CodecError`] whose [`CodecError::reason_code`] is what the connection is closed
//! with. [`encode`] writes packets into a `BytesMut`; [`encode_publish_header`] writes a
//! PUBLISH without its payload so that the payload `Bytes` can follow in a vectored write.
//!
//! The codec is symmetric (it decodes what it encodes, for both sides of a connection) and
//! stateless: what depends on the session (Topic Alias Maximum, Receive Maximum, a second
//! CONNECT, Subscription Identifiers sent by a client) is checked by the session layer.
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use strata_frontend::codec::{self, Packet, ProtocolVersion, Publish, QoS, PacketId, Properties};
//!
//! let publish = Publish {
//!     dup: false,
//!     qos: QoS::AtLeastOnce,
//!     retain: false,
//!     topic: "sensors/1/temp".into(),
//!     packet_id: PacketId::new(7),
//!     properties: Properties::default(),
//!     payload: Bytes::from_static(b"21.5"),
//! };
//! let mut buf = BytesMut::new();
//! codec::encode(&Packet::Publish(publish.clone()), ProtocolVersion::V5, &mut buf).unwrap();
//!
//! // A partial packet is not consumed.
//! let mut partial = BytesMut::from(&buf[..5]);
//! assert_eq!(codec::decode(&mut partial, ProtocolVersion::V5, 1 << 20).unwrap(), None);
//! assert_eq!(partial.len(), 5);
//!
//! let decoded = codec::decode(&mut buf, ProtocolVersion::V5, 1 << 20).unwrap();
//! assert_eq!(decoded, Some(Packet::Publish(publish)));
//! assert!(buf.is_empty());
//!
//! // A DISCONNECT with no body, then an oversized packet.
//! let mut input = BytesMut::from(&[0xE0, 0x00, 0x30, 0xFF, 0x7F][..]);
//! assert!(matches!(codec::decode(&mut input, ProtocolVersion::V5, 1024), Ok(Some(Packet::Disconnect(_)))));
//! let error = codec::decode(&mut input, ProtocolVersion::V5, 1024).unwrap_err();
//! assert_eq!(error.reason_code(), codec::ReasonCode::PacketTooLarge);
//! ```

mod decode;
mod encode;
mod error;
mod packet;
mod properties;
mod reason;
mod wire;

#[cfg(test)]
mod tests;

pub use bytestring::ByteString;
pub use decode::decode;
pub use encode::{encode, encode_publish_header};
pub use error::{CodecError, EncodeError};
pub use packet::{
    Ack, Auth, ConnAck, Connect, Disconnect, Packet, PacketId, PacketKind, ProtocolVersion, Publish, QoS,
    RetainHandling, SubAck, Subscribe, SubscribeFilter, SubscriptionOptions, UnsubAck, Unsubscribe, Will,
};
pub use properties::{Properties, PropertyValues};
pub use reason::ReasonCode;
