//! MQTT messages as log records, and back. A PUBLISH becomes one [`Record`]: the payload is
//! the value, the topic, QoS, retain flag, publisher and the MQTT 5 properties that travel
//! with a message are headers. `docs/architecture.md` ("MQTT on the log") lists the layout.

use bytes::Bytes;
use strata_log::{Header, Record, StoredRecord};

use crate::codec::{ByteString, Properties, Publish, QoS};

/// Header holding the topic name (UTF-8). Also the compaction key of `$retained`.
pub const TOPIC: &str = "mqtt.topic";
/// Header holding the QoS the message was published with (one byte: 0, 1 or 2).
pub const QOS: &str = "mqtt.qos";
/// Header present (one byte, 1) only when the message was published with RETAIN set.
pub const RETAIN: &str = "mqtt.retain";
/// Header holding the publisher's client identifier, for No Local.
pub const CLIENT: &str = "mqtt.client";
/// MQTT 5 Payload Format Indicator (one byte).
pub const PAYLOAD_FORMAT: &str = "mqtt.payload_format";
/// MQTT 5 Content Type (UTF-8).
pub const CONTENT_TYPE: &str = "mqtt.content_type";
/// MQTT 5 Response Topic (UTF-8).
pub const RESPONSE_TOPIC: &str = "mqtt.response_topic";
/// MQTT 5 Correlation Data (binary).
pub const CORRELATION_DATA: &str = "mqtt.correlation_data";
/// MQTT 5 Message Expiry as an absolute deadline: 8 bytes, little-endian unix milliseconds.
pub const EXPIRES_AT: &str = "mqtt.expires_at";
/// Prefix of a header carrying one MQTT 5 User Property: `u.<name>` = value, in order.
pub const USER_PREFIX: &str = "u.";

/// Builds the record for a PUBLISH received at `now_ms` from `client_id`.
pub fn to_record(publish: &Publish, client_id: &str, now_ms: i64) -> Record {
    let mut record = Record::new(now_ms, publish.payload.clone())
        .with_header(TOPIC, Bytes::copy_from_slice(publish.topic.as_bytes()))
        .with_header(QOS, vec![publish.qos as u8]);
    if publish.retain {
        record = record.with_header(RETAIN, vec![1u8]);
    }
    record = record.with_header(CLIENT, Bytes::copy_from_slice(client_id.as_bytes()));
    let p = &publish.properties;
    if let Some(indicator) = p.payload_format_indicator {
        record = record.with_header(PAYLOAD_FORMAT, vec![u8::from(indicator)]);
    }
    if let Some(content_type) = &p.content_type {
        record = record.with_header(CONTENT_TYPE, Bytes::copy_from_slice(content_type.as_bytes()));
    }
    if let Some(response_topic) = &p.response_topic {
        record = record.with_header(RESPONSE_TOPIC, Bytes::copy_from_slice(response_topic.as_bytes()));
    }
    if let Some(correlation) = &p.correlation_data {
        record = record.with_header(CORRELATION_DATA, correlation.clone());
    }
    if let Some(seconds) = p.message_expiry_interval {
        let deadline = now_ms.saturating_add(i64::from(seconds) * 1000);
        record = record.with_header(EXPIRES_AT, deadline.to_le_bytes().to_vec());
    }
    for (name, value) in &p.user_properties {
        let mut header = Vec::with_capacity(USER_PREFIX.len() + name.len());
        header.extend_from_slice(USER_PREFIX.as_bytes());
        header.extend_from_slice(name.as_bytes());
        record = record.with_header(header, Bytes::copy_from_slice(value.as_bytes()));
    }
    record
}

/// A stored record read back as an MQTT message, ready to be addressed to a subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Offset in the partition.
    pub offset: u64,
    /// The topic name.
    pub topic: ByteString,
    /// The QoS it was published with.
    pub qos: QoS,
    /// Whether it was published with RETAIN set.
    pub retain: bool,
    /// The publisher's client identifier (empty if the record has none).
    pub client_id: Bytes,
    /// MQTT 5 properties to forward; Message Expiry is left out (see `expires_at`).
    pub properties: Properties,
    /// Absolute expiry deadline in unix milliseconds, if the publisher set one.
    pub expires_at: Option<i64>,
    /// The payload (shares the log's bytes).
    pub payload: Bytes,
}

/// Why a stored record is not an MQTT message. Records written by other tools may lack the
/// headers; they are skipped, never delivered half-formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAMessage(pub &'static str);

/// The MQTT topic among a record's headers, without decoding the rest.
pub fn topic_of(headers: &[Header]) -> Option<&str> {
    let header = headers.iter().find(|h| h.name == TOPIC.as_bytes())?;
    std::str::from_utf8(&header.value).ok()
}

/// Reads a stored record back as a message.
pub fn from_record(record: StoredRecord) -> Result<StoredMessage, NotAMessage> {
    let mut topic = None;
    let mut qos = QoS::AtMostOnce;
    let mut retain = false;
    let mut client_id = Bytes::new();
    let mut expires_at = None;
    let mut properties = Properties::default();
    for Header { name, value } in record.headers {
        match &name[..] {
            n if n == TOPIC.as_bytes() => {
                topic = Some(ByteString::try_from(value).map_err(|_| NotAMessage("topic is not UTF-8"))?);
            }
            n if n == QOS.as_bytes() => {
                qos = value.first().copied().and_then(QoS::from_u8).ok_or(NotAMessage("bad QoS header"))?;
            }
            n if n == RETAIN.as_bytes() => retain = value.first() == Some(&1),
            n if n == CLIENT.as_bytes() => client_id = value,
            n if n == PAYLOAD_FORMAT.as_bytes() => {
                properties.payload_format_indicator = Some(value.first().copied().unwrap_or(0) != 0);
            }
            n if n == CONTENT_TYPE.as_bytes() => properties.content_type = Some(utf8(value)?),
            n if n == RESPONSE_TOPIC.as_bytes() => properties.response_topic = Some(utf8(value)?),
            n if n == CORRELATION_DATA.as_bytes() => properties.correlation_data = Some(value),
            n if n == EXPIRES_AT.as_bytes() => {
                let bytes: [u8; 8] = value[..].try_into().map_err(|_| NotAMessage("bad expiry header"))?;
                expires_at = Some(i64::from_le_bytes(bytes));
            }
            n if n.starts_with(USER_PREFIX.as_bytes()) => {
                let name = utf8(name.slice(USER_PREFIX.len()..))?;
                properties.user_properties.push((name, utf8(value)?));
            }
            _ => {}
        }
    }
    let topic = topic.ok_or(NotAMessage("no mqtt.topic header"))?;
    Ok(StoredMessage {
        offset: record.offset,
        topic,
        qos,
        retain,
        client_id,
        properties,
        expires_at,
        payload: record.value,
    })
}

fn utf8(bytes: Bytes) -> Result<ByteString, NotAMessage> {
    ByteString::try_from(bytes).map_err(|_| NotAMessage("header is not UTF-8"))
}

/// A message whose Message Expiry Interval has passed: it is not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired;

/// The Message Expiry Interval to forward at `now_ms` (whole seconds, rounded up): `Ok(None)`
/// when the message has no expiry.
pub fn remaining_expiry(expires_at: Option<i64>, now_ms: i64) -> Result<Option<u32>, Expired> {
    match expires_at {
        None => Ok(None),
        Some(deadline) if deadline <= now_ms => Err(Expired),
        Some(deadline) => {
            let seconds = (deadline - now_ms + 999) / 1000;
            Ok(Some(u32::try_from(seconds).unwrap_or(u32::MAX)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::PacketId;

    fn stored(record: Record, offset: u64) -> StoredRecord {
        StoredRecord {
            offset,
            timestamp: record.timestamp,
            key: record.key,
            value: record.value,
            headers: record.headers,
        }
    }

    #[test]
    fn a_v5_publish_round_trips_through_a_record() {
        let mut properties = Properties::default();
        properties.payload_format_indicator = Some(true);
        properties.content_type = Some("text/plain".into());
        properties.response_topic = Some("replies/1".into());
        properties.correlation_data = Some(Bytes::from_static(b"\x00\x01"));
        properties.message_expiry_interval = Some(60);
        properties.user_properties = vec![("b".into(), "2".into()), ("a".into(), "1".into()), ("b".into(), "3".into())];
        let publish = Publish {
            dup: false,
            qos: QoS::ExactlyOnce,
            retain: true,
            topic: "a/b".into(),
            packet_id: PacketId::new(9),
            properties: properties.clone(),
            payload: Bytes::from_static(b"hello"),
        };
        let record = to_record(&publish, "client-1", 1_000);
        let message = from_record(stored(record, 42)).unwrap();
        assert_eq!(message.offset, 42);
        assert_eq!(&message.topic[..], "a/b");
        assert_eq!(message.qos, QoS::ExactlyOnce);
        assert!(message.retain);
        assert_eq!(&message.client_id[..], b"client-1");
        assert_eq!(message.expires_at, Some(61_000));
        assert_eq!(&message.payload[..], b"hello");
        properties.message_expiry_interval = None;
        assert_eq!(message.properties, properties);
    }

    #[test]
    fn retain_header_only_when_set() {
        let publish = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "t".into(),
            packet_id: None,
            properties: Properties::default(),
            payload: Bytes::new(),
        };
        let record = to_record(&publish, "c", 5);
        assert!(record.headers.iter().all(|h| &h.name[..] != RETAIN.as_bytes()));
        assert_eq!(record.timestamp, 5);
    }

    #[test]
    fn expiry_counts_down_and_then_drops() {
        assert_eq!(remaining_expiry(None, 10), Ok(None));
        assert_eq!(remaining_expiry(Some(10_000), 8_500), Ok(Some(2)));
        assert_eq!(remaining_expiry(Some(10_000), 10_000), Err(Expired));
    }

    #[test]
    fn a_record_without_topic_is_not_a_message() {
        let record = Record::new(1, "x");
        assert!(from_record(stored(record, 0)).is_err());
    }
}
