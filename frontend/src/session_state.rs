//! What a persistent session keeps between connections, and its encoding as the value of a
//! `$sessions` record (key = client id; an empty value is the tombstone that ends it). Pure:
//! no I/O. The decisions a resumed session takes (where to read from, what counts as a
//! redelivery) are functions here so they are tested without sockets.
//!
//! Encoding, version 1, all integers little-endian:
//! `u8 version=1, u32 expiry_interval, i64 disconnected_at_ms,
//!  u16 n, n × (u16 len, filter UTF-8, u8 options, u32 identifier (0 = none)),
//!  u16 n, n × (u16 len, stream UTF-8, u32 partition, u64 committed, u64 read_up_to),
//!  u16 n, n × u16 QoS 2 packet id awaiting PUBREL`.
//! `options` is QoS in bits 0-1, No Local bit 2, Retain As Published bit 3, Retain Handling
//! bits 4-5, as on the wire.

use crate::codec::{QoS, RetainHandling, SubscriptionOptions};

/// Session Expiry Interval meaning "never expires" (MQTT 5 0xFFFFFFFF; every MQTT 3.1.1
/// persistent session).
pub const NEVER_EXPIRES: u32 = u32::MAX;

const VERSION: u8 = 1;

/// One subscription kept by a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSubscription {
    /// The topic filter.
    pub filter: String,
    /// Its options as granted.
    pub options: SubscriptionOptions,
    /// Its Subscription Identifier.
    pub identifier: Option<u32>,
}

/// A session's position in one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPosition {
    /// Stream name.
    pub stream: String,
    /// Partition number.
    pub partition: u32,
    /// The lowest unacknowledged offset: a resumed session reads from here.
    pub committed: u64,
    /// Where the reader was: QoS 1/2 messages below this were sent before, and go out again
    /// with DUP set.
    pub read_up_to: u64,
}

/// A persistent session as stored in `$sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionState {
    /// Session Expiry Interval in seconds; [`NEVER_EXPIRES`] for never.
    pub expiry_interval: u32,
    /// When the client disconnected (unix ms); 0 while it was connected when written.
    pub disconnected_at_ms: i64,
    /// Subscriptions, in the order made.
    pub subscriptions: Vec<StoredSubscription>,
    /// Per-partition positions.
    pub positions: Vec<PartitionPosition>,
    /// Inbound QoS 2 packet identifiers stored but not yet released by PUBREL.
    pub qos2_awaiting_pubrel: Vec<u16>,
}

/// A `$sessions` value that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("session record: {0}")]
pub struct BadSessionRecord(&'static str);

impl SessionState {
    /// Whether the session has expired at `now_ms` (only once disconnected).
    pub fn expired(&self, now_ms: i64) -> bool {
        self.expiry_interval != NEVER_EXPIRES
            && now_ms >= self.disconnected_at_ms.saturating_add(i64::from(self.expiry_interval) * 1000)
    }

    /// Encodes the session as a `$sessions` record value (never empty).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(VERSION);
        out.extend_from_slice(&self.expiry_interval.to_le_bytes());
        out.extend_from_slice(&self.disconnected_at_ms.to_le_bytes());
        put_len(&mut out, self.subscriptions.len());
        for s in &self.subscriptions {
            put_str(&mut out, &s.filter);
            let o = s.options;
            out.push(
                o.qos as u8
                    | u8::from(o.no_local) << 2
                    | u8::from(o.retain_as_published) << 3
                    | (o.retain_handling as u8) << 4,
            );
            out.extend_from_slice(&s.identifier.unwrap_or(0).to_le_bytes());
        }
        put_len(&mut out, self.positions.len());
        for p in &self.positions {
            put_str(&mut out, &p.stream);
            out.extend_from_slice(&p.partition.to_le_bytes());
            out.extend_from_slice(&p.committed.to_le_bytes());
            out.extend_from_slice(&p.read_up_to.to_le_bytes());
        }
        put_len(&mut out, self.qos2_awaiting_pubrel.len());
        for id in &self.qos2_awaiting_pubrel {
            out.extend_from_slice(&id.to_le_bytes());
        }
        out
    }

    /// Decodes a `$sessions` record value.
    pub fn decode(bytes: &[u8]) -> Result<SessionState, BadSessionRecord> {
        let mut r = Reader(bytes);
        if r.u8()? != VERSION {
            return Err(BadSessionRecord("unknown version"));
        }
        let expiry_interval = r.u32()?;
        let disconnected_at_ms = r.u64()? as i64;
        let mut subscriptions = Vec::new();
        for _ in 0..r.u16()? {
            let filter = r.string()?;
            let bits = r.u8()?;
            let qos = QoS::from_u8(bits & 3).ok_or(BadSessionRecord("bad QoS"))?;
            let retain_handling = match (bits >> 4) & 3 {
                0 => RetainHandling::SendAtSubscribe,
                1 => RetainHandling::SendAtSubscribeIfNew,
                2 => RetainHandling::DoNotSend,
                _ => return Err(BadSessionRecord("bad Retain Handling")),
            };
            let options = SubscriptionOptions {
                qos,
                no_local: bits & 4 != 0,
                retain_as_published: bits & 8 != 0,
                retain_handling,
            };
            let identifier = Some(r.u32()?).filter(|&id| id != 0);
            subscriptions.push(StoredSubscription { filter, options, identifier });
        }
        let mut positions = Vec::new();
        for _ in 0..r.u16()? {
            let stream = r.string()?;
            let partition = r.u32()?;
            let committed = r.u64()?;
            let read_up_to = r.u64()?;
            positions.push(PartitionPosition { stream, partition, committed, read_up_to });
        }
        let mut qos2_awaiting_pubrel = Vec::new();
        for _ in 0..r.u16()? {
            qos2_awaiting_pubrel.push(r.u16()?);
        }
        if !r.0.is_empty() {
            return Err(BadSessionRecord("trailing bytes"));
        }
        Ok(SessionState { expiry_interval, disconnected_at_ms, subscriptions, positions, qos2_awaiting_pubrel })
    }
}

/// The committed offset of a session's reader: its lowest unacknowledged offset, or where it
/// will read next when nothing is in flight.
pub fn committed_offset(lowest_in_flight: Option<u64>, next_offset: u64) -> u64 {
    lowest_in_flight.map_or(next_offset, |lowest| lowest.min(next_offset))
}

/// Whether a QoS 1/2 message at `offset` goes out as a redelivery (DUP set): the session
/// had read up to `read_up_to` before it was resumed, so it may have been sent already.
pub fn is_redelivery(offset: u64, read_up_to: u64) -> bool {
    offset < read_up_to
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&(len.min(usize::from(u16::MAX)) as u16).to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Topic filters and stream names are at most 65,535 bytes (the codec's limit).
    let bytes = &s.as_bytes()[..s.len().min(usize::from(u16::MAX))];
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], BadSessionRecord> {
        if self.0.len() < n {
            return Err(BadSessionRecord("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, BadSessionRecord> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, BadSessionRecord> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().map_err(|_| BadSessionRecord("truncated"))?))
    }
    fn u32(&mut self) -> Result<u32, BadSessionRecord> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| BadSessionRecord("truncated"))?))
    }
    fn u64(&mut self) -> Result<u64, BadSessionRecord> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| BadSessionRecord("truncated"))?))
    }
    fn string(&mut self) -> Result<String, BadSessionRecord> {
        let len = usize::from(self.u16()?);
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| BadSessionRecord("not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SessionState {
        SessionState {
            expiry_interval: 3600,
            disconnected_at_ms: 1_700_000_000_123,
            subscriptions: vec![
                StoredSubscription {
                    filter: "a/+/c".into(),
                    options: SubscriptionOptions {
                        qos: QoS::ExactlyOnce,
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: RetainHandling::DoNotSend,
                    },
                    identifier: Some(268_435_455),
                },
                StoredSubscription { filter: "#".into(), options: SubscriptionOptions::default(), identifier: None },
            ],
            positions: vec![PartitionPosition {
                stream: "default".into(),
                partition: 0,
                committed: 17,
                read_up_to: 42,
            }],
            qos2_awaiting_pubrel: vec![1, 65_535],
        }
    }

    #[test]
    fn session_state_round_trips() {
        let state = sample();
        assert_eq!(SessionState::decode(&state.encode()), Ok(state));
        let empty = SessionState::default();
        assert_eq!(SessionState::decode(&empty.encode()), Ok(empty));
    }

    #[test]
    fn damaged_session_records_are_refused_not_misread() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert!(SessionState::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut versioned = bytes.clone();
        versioned[0] = 2;
        assert!(SessionState::decode(&versioned).is_err());
        let mut longer = bytes;
        longer.push(0);
        assert!(SessionState::decode(&longer).is_err());
    }

    #[test]
    fn expiry_counts_from_the_disconnect_and_never_for_persistent_3_1_1_sessions() {
        let mut state = SessionState { expiry_interval: 10, disconnected_at_ms: 1_000, ..Default::default() };
        assert!(!state.expired(10_999));
        assert!(state.expired(11_000));
        state.expiry_interval = NEVER_EXPIRES;
        assert!(!state.expired(i64::MAX));
    }

    #[test]
    fn the_committed_offset_is_the_lowest_unacknowledged_and_redelivery_is_below_the_read_position() {
        assert_eq!(committed_offset(None, 50), 50);
        assert_eq!(committed_offset(Some(12), 50), 12);
        assert!(is_redelivery(12, 50));
        assert!(!is_redelivery(50, 50));
    }
}
