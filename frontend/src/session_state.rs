//! What a persistent session keeps between connections, and its encoding as the value of a
//! `$sessions` record (key = client id; an empty value is the tombstone that ends it). Pure:
//! no I/O. The decisions a resumed session takes (where to read from, what counts as a
//! redelivery) are functions here so they are tested without sockets.
//!
//! Encoding, version 3, all integers little-endian (docs/format.md has the table):
//! `u8 version=2, u32 expiry_interval, i64 disconnected_at_ms,
//!  u16 n, n × (u16 len, filter UTF-8, u8 options, u32 identifier (0 = none)),
//!  u16 n, n × (u16 len, stream UTF-8, u32 partition, u64 committed, u64 read_up_to,
//!              u16 len, `$stream` filter UTF-8 (empty = the plain subscriptions' reader)),
//!  u16 n, n × u16 QoS 2 packet id awaiting PUBREL,
//!  u16 n, n × (u16 packet id, u8 stage (1 PUBACK, 2 PUBREC, 3 PUBCOMP awaited),
//!              u16 position index (0xFFFF = none), u64 offset),
//!  u8 has_will, [i64 due_at_ms, u32 len, the will as an MQTT 5 PUBLISH packet],
//!  u8 owner (0 = not recorded, 1 = anonymous, 2 = a user), [u16 len, user name UTF-8]`.
//! Version 2 is the same without the owner byte; it is still read (owner not recorded).
//! `options` is QoS in bits 0-1, No Local bit 2, Retain As Published bit 3, Retain Handling
//! bits 4-5, as on the wire. Subscriptions include `$share/...` and `$stream/...` filters.

use bytes::BytesMut;

use crate::codec::{self, Packet, ProtocolVersion, Publish, QoS, RetainHandling, SubscriptionOptions};
use crate::session::Stage;

/// Session Expiry Interval meaning "never expires" (MQTT 5 0xFFFFFFFF; an MQTT 3.1.1
/// persistent session with `mqtt.v311_session_expiry` = 0).
pub const NEVER_EXPIRES: u32 = u32::MAX;

const VERSION: u8 = 3;
/// The version before the owner was recorded (issue 22): still read.
const VERSION_WITHOUT_OWNER: u8 = 2;

/// Position index meaning "no position" in an in-flight entry.
const NO_POSITION: u16 = u16::MAX;
/// In an encoded in-flight entry, this index says the offset is in `$retained`: the message
/// was a retained one. Position indexes stay below it (a session never follows 65,534
/// partitions; `SessionState::encode` drops entries that would need such an index).
const RETAINED_POSITION: u16 = u16::MAX - 1;

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
    /// Where the reader was: messages from `committed` up to here were sent before. Those
    /// still in flight go out again with DUP set and their packet identifiers; the rest were
    /// acknowledged (or not wanted) and are skipped.
    pub read_up_to: u64,
    /// The `$stream/...` subscription this reader serves; `None` for the reader of the plain
    /// subscriptions.
    pub subscription: Option<String>,
}

/// An outbound QoS 1/2 message in flight when the session was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    /// Its packet identifier (never 0).
    pub packet_id: u16,
    /// What the client still owes us for it.
    pub stage: Stage,
    /// Index into [`SessionState::positions`] of the reader that read it, with its offset;
    /// `None` for a message no reader position holds (a retained or a group's message).
    pub position: Option<(u16, u64)>,
    /// For a retained message, its offset in `$retained`: sent again on resume if it is
    /// still its topic's retained message.
    pub retained_offset: Option<u64>,
}

/// A will waiting out its Will Delay Interval when the session was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingWill {
    /// When it is published (unix ms), unless the client comes back first.
    pub due_at_ms: i64,
    /// The will as it will be published.
    pub publish: Publish,
}

/// Whom a session belongs to (issue 22): a client id is tied to the user that made its
/// session, so that another user can neither take it over nor resume it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Owner {
    /// A record written before owners were recorded: any user may resume it; the session
    /// is then saved with that user as its owner.
    #[default]
    NotRecorded,
    /// The verified user name; `None` for an anonymous client.
    User(Option<String>),
}

impl Owner {
    /// Whether a client authenticated as `user` (`None`: anonymous) may use this client id.
    pub fn admits(&self, user: Option<&str>) -> bool {
        match self {
            Owner::NotRecorded => true,
            Owner::User(owner) => owner.as_deref() == user,
        }
    }
}

/// Whether a CONNECT authenticated as `user` may use its client id (issue 22): take over
/// `live`, the owner of the connection that has it now, and resume or (clean start) discard
/// `stored`, the owner of its stored session. Clean start or not, another user's session is
/// left alone: discarding it would be as much a takeover as resuming it.
pub fn may_claim(user: Option<&str>, live: Option<&Owner>, stored: Option<&Owner>) -> bool {
    [live, stored].into_iter().flatten().all(|owner| owner.admits(user))
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
    /// Outbound QoS 1/2 messages unacknowledged, by packet identifier.
    pub in_flight: Vec<InFlight>,
    /// The will, when the connection ended with a Will Delay Interval still running.
    pub will: Option<PendingWill>,
    /// Whom the session belongs to.
    pub owner: Owner,
}

/// A `$sessions` value that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("session record: {0}")]
pub struct BadSessionRecord(&'static str);

impl SessionState {
    /// Whether the session has expired at `now_ms` (only once disconnected).
    pub fn expired(&self, now_ms: i64) -> bool {
        self.expires_at_ms().is_some_and(|at| now_ms >= at)
    }

    /// When the session expires (unix ms), counted from its disconnection; `None` for never.
    pub fn expires_at_ms(&self) -> Option<i64> {
        (self.expiry_interval != NEVER_EXPIRES)
            .then(|| self.disconnected_at_ms.saturating_add(i64::from(self.expiry_interval) * 1000))
    }

    /// Forgets stream `stream`, which was deleted: the session's positions in it, the
    /// messages in flight that were read from those positions, and its `$stream/<stream>`
    /// subscriptions, as a connected session's cursors drop them. In-flight entries point at
    /// positions by index, so the ones kept are renumbered. A stream created again under the
    /// name is then read from its start. Returns whether anything changed.
    pub fn forget_stream(&mut self, stream: &str) -> bool {
        let before = (self.subscriptions.len(), self.positions.len(), self.in_flight.len());
        // Old index → new index, `None` for a position that goes.
        let mut kept = 0;
        let renumbered: Vec<Option<u16>> = self
            .positions
            .iter()
            .map(|position| {
                if position.stream == stream {
                    return None;
                }
                kept += 1;
                u16::try_from(kept - 1).ok()
            })
            .collect();
        self.positions.retain(|position| position.stream != stream);
        self.in_flight.retain_mut(|entry| match entry.position {
            None => true,
            Some((index, offset)) => match renumbered.get(usize::from(index)).copied().flatten() {
                Some(index) => {
                    entry.position = Some((index, offset));
                    true
                }
                None => false,
            },
        });
        let replays = format!("$stream/{stream}");
        self.subscriptions.retain(|s| {
            !(s.filter == replays || s.filter.strip_prefix(&replays).is_some_and(|rest| rest.starts_with('/')))
        });
        debug_assert!(
            self.in_flight.iter().all(|e| e.position.is_none_or(|(i, _)| usize::from(i) < self.positions.len()))
        );
        before != (self.subscriptions.len(), self.positions.len(), self.in_flight.len())
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
            put_str(&mut out, p.subscription.as_deref().unwrap_or(""));
        }
        put_len(&mut out, self.qos2_awaiting_pubrel.len());
        for id in &self.qos2_awaiting_pubrel {
            out.extend_from_slice(&id.to_le_bytes());
        }
        let in_flight: Vec<&InFlight> =
            self.in_flight.iter().filter(|e| e.position.is_none_or(|(index, _)| index < RETAINED_POSITION)).collect();
        put_len(&mut out, in_flight.len());
        for entry in in_flight {
            out.extend_from_slice(&entry.packet_id.to_le_bytes());
            out.push(match entry.stage {
                Stage::AwaitPubAck => 1,
                Stage::AwaitPubRec => 2,
                Stage::AwaitPubComp => 3,
            });
            let (index, offset) = match (entry.position, entry.retained_offset) {
                (Some(position), _) => position,
                (None, Some(offset)) => (RETAINED_POSITION, offset),
                (None, None) => (NO_POSITION, 0),
            };
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
        }
        match self.will.as_ref().and_then(|will| encode_will(&will.publish).map(|bytes| (will.due_at_ms, bytes))) {
            Some((due_at_ms, bytes)) => {
                out.push(1);
                out.extend_from_slice(&due_at_ms.to_le_bytes());
                out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                out.extend_from_slice(&bytes);
            }
            None => out.push(0),
        }
        match &self.owner {
            Owner::NotRecorded => out.push(0),
            Owner::User(None) => out.push(1),
            Owner::User(Some(user)) => {
                out.push(2);
                put_str(&mut out, user);
            }
        }
        out
    }

    /// Decodes a `$sessions` record value.
    pub fn decode(bytes: &[u8]) -> Result<SessionState, BadSessionRecord> {
        let mut r = Reader(bytes);
        let version = r.u8()?;
        if version != VERSION && version != VERSION_WITHOUT_OWNER {
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
            let subscription = Some(r.string()?).filter(|s| !s.is_empty());
            positions.push(PartitionPosition { stream, partition, committed, read_up_to, subscription });
        }
        let mut qos2_awaiting_pubrel = Vec::new();
        for _ in 0..r.u16()? {
            qos2_awaiting_pubrel.push(r.u16()?);
        }
        let mut in_flight = Vec::new();
        for _ in 0..r.u16()? {
            let packet_id = r.u16()?;
            if packet_id == 0 {
                return Err(BadSessionRecord("packet identifier 0"));
            }
            let stage = match r.u8()? {
                1 => Stage::AwaitPubAck,
                2 => Stage::AwaitPubRec,
                3 => Stage::AwaitPubComp,
                _ => return Err(BadSessionRecord("bad in-flight stage")),
            };
            let index = r.u16()?;
            let offset = r.u64()?;
            let entry = match index {
                NO_POSITION => InFlight { packet_id, stage, position: None, retained_offset: None },
                RETAINED_POSITION => InFlight { packet_id, stage, position: None, retained_offset: Some(offset) },
                index if usize::from(index) < positions.len() => {
                    InFlight { packet_id, stage, position: Some((index, offset)), retained_offset: None }
                }
                _ => return Err(BadSessionRecord("in-flight position out of range")),
            };
            in_flight.push(entry);
        }
        let will = match r.u8()? {
            0 => None,
            1 => {
                let due_at_ms = r.u64()? as i64;
                let len = r.u32()? as usize;
                let publish = decode_will(r.take(len)?).ok_or(BadSessionRecord("bad will"))?;
                Some(PendingWill { due_at_ms, publish })
            }
            _ => return Err(BadSessionRecord("bad will flag")),
        };
        let owner = match version {
            VERSION_WITHOUT_OWNER => Owner::NotRecorded,
            _ => match r.u8()? {
                0 => Owner::NotRecorded,
                1 => Owner::User(None),
                2 => Owner::User(Some(r.string()?)),
                _ => return Err(BadSessionRecord("bad owner")),
            },
        };
        if !r.0.is_empty() {
            return Err(BadSessionRecord("trailing bytes"));
        }
        Ok(SessionState {
            expiry_interval,
            disconnected_at_ms,
            subscriptions,
            positions,
            qos2_awaiting_pubrel,
            in_flight,
            will,
            owner,
        })
    }
}

/// A will as an MQTT 5 PUBLISH packet: the codec already writes every property a will can
/// carry. `None` only if it cannot be encoded (it was decoded from a CONNECT, so it can).
fn encode_will(will: &Publish) -> Option<Vec<u8>> {
    let mut publish = will.clone();
    publish.dup = false;
    publish.packet_id = (publish.qos != QoS::AtMostOnce).then(|| codec::PacketId::new(1)).flatten();
    let mut buf = BytesMut::new();
    codec::encode(&Packet::Publish(publish), ProtocolVersion::V5, &mut buf).ok()?;
    Some(buf.to_vec())
}

fn decode_will(bytes: &[u8]) -> Option<Publish> {
    let mut buf = BytesMut::from(bytes);
    match codec::decode(&mut buf, ProtocolVersion::V5, usize::MAX) {
        Ok(Some(Packet::Publish(mut publish))) if buf.is_empty() => {
            publish.packet_id = None;
            Some(publish)
        }
        _ => None,
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

/// A persistent session as last written to `$sessions`.
#[derive(Debug, Clone, Default)]
pub(crate) struct SessionView {
    pub(crate) filters: Vec<String>,
    pub(crate) positions: Vec<PartitionPosition>,
}

impl SessionView {
    pub(crate) fn of(state: &SessionState) -> SessionView {
        SessionView {
            filters: state.subscriptions.iter().map(|s| s.filter.clone()).collect(),
            positions: state.positions.clone(),
        }
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
            positions: vec![
                PartitionPosition {
                    stream: "default".into(),
                    partition: 0,
                    committed: 17,
                    read_up_to: 42,
                    subscription: None,
                },
                PartitionPosition {
                    stream: "orders".into(),
                    partition: 3,
                    committed: 5,
                    read_up_to: 9,
                    subscription: Some("$stream/orders/eu/#".into()),
                },
            ],
            qos2_awaiting_pubrel: vec![1, 65_535],
            in_flight: vec![
                InFlight { packet_id: 7, stage: Stage::AwaitPubAck, position: Some((0, 17)), retained_offset: None },
                InFlight { packet_id: 8, stage: Stage::AwaitPubComp, position: Some((1, 6)), retained_offset: None },
                InFlight { packet_id: 9, stage: Stage::AwaitPubAck, position: None, retained_offset: Some(41) },
                InFlight { packet_id: 65_535, stage: Stage::AwaitPubRec, position: None, retained_offset: None },
            ],
            will: Some(PendingWill { due_at_ms: 1_700_000_030_000, publish: will() }),
            owner: Owner::User(Some("alice".into())),
        }
    }

    fn will() -> Publish {
        let mut properties = crate::codec::Properties::default();
        properties.content_type = Some("text/plain".into());
        properties.message_expiry_interval = Some(600);
        properties.user_properties = vec![("k".into(), "v".into())];
        Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: "clients/c1/status".into(),
            packet_id: None,
            properties,
            payload: bytes::Bytes::from_static(b"offline"),
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
        versioned[0] = 4;
        assert!(SessionState::decode(&versioned).is_err());
        let mut longer = bytes;
        longer.push(0);
        assert!(SessionState::decode(&longer).is_err());
    }

    #[test]
    fn auth_the_owner_round_trips_and_version_2_records_have_none_recorded() {
        let anonymous = SessionState { owner: Owner::User(None), ..sample() };
        assert_eq!(SessionState::decode(&anonymous.encode()), Ok(anonymous));
        // A version 2 record is a version 3 one without its owner byte.
        let legacy = SessionState { owner: Owner::NotRecorded, ..sample() };
        let mut bytes = legacy.encode();
        assert_eq!(bytes.pop(), Some(0));
        bytes[0] = 2;
        assert_eq!(SessionState::decode(&bytes), Ok(legacy));
        // ...and a version 3 record without it is cut short.
        bytes[0] = 3;
        assert!(SessionState::decode(&bytes).is_err());
    }

    #[test]
    fn auth_a_client_id_is_claimed_only_by_the_user_that_owns_it() {
        let alice = Owner::User(Some("alice".into()));
        let anonymous = Owner::User(None);
        // Nobody has it.
        assert!(may_claim(Some("bob"), None, None));
        assert!(may_claim(None, None, None));
        // A live connection: only its own user takes it over.
        assert!(may_claim(Some("alice"), Some(&alice), None));
        assert!(!may_claim(Some("bob"), Some(&alice), None));
        assert!(!may_claim(None, Some(&alice), None));
        assert!(!may_claim(Some("alice"), Some(&anonymous), None));
        assert!(may_claim(None, Some(&anonymous), None));
        // A stored session: only its own user resumes (or discards) it.
        assert!(may_claim(Some("alice"), None, Some(&alice)));
        assert!(!may_claim(Some("bob"), None, Some(&alice)));
        assert!(!may_claim(Some("Alice"), None, Some(&alice)));
        assert!(!may_claim(Some("alice"), None, Some(&anonymous)));
        // A session written before owners were recorded: anyone.
        assert!(may_claim(Some("bob"), None, Some(&Owner::NotRecorded)));
        assert!(may_claim(None, None, Some(&Owner::NotRecorded)));
        // Both must admit.
        assert!(!may_claim(Some("bob"), Some(&alice), Some(&Owner::NotRecorded)));
        assert!(!may_claim(Some("alice"), Some(&alice), Some(&Owner::User(Some("bob".into())))));
    }

    #[test]
    fn in_flight_entries_must_point_at_a_stored_position() {
        let mut state = sample();
        state.in_flight[0].position = Some((2, 17));
        assert_eq!(SessionState::decode(&state.encode()), Err(BadSessionRecord("in-flight position out of range")));
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

    #[test]
    fn issue18_forgetting_a_deleted_stream_renumbers_what_is_in_flight() {
        let mut state = sample();
        state.subscriptions.push(StoredSubscription {
            filter: "$stream/default/x/#".into(),
            options: SubscriptionOptions::default(),
            identifier: None,
        });
        state.subscriptions.push(StoredSubscription {
            filter: "$stream/defaults".into(),
            options: SubscriptionOptions::default(),
            identifier: None,
        });
        assert!(state.forget_stream("default"));
        // `orders` was position 1; its message in flight now points at index 0.
        assert_eq!(state.positions.len(), 1);
        assert_eq!(state.positions[0].stream, "orders");
        let kept: Vec<(u16, Option<(u16, u64)>)> = state.in_flight.iter().map(|e| (e.packet_id, e.position)).collect();
        assert_eq!(
            kept,
            vec![(8, Some((0, 6))), (9, None), (65_535, None)],
            "the default message went, the rest stayed"
        );
        let filters: Vec<&str> = state.subscriptions.iter().map(|s| s.filter.as_str()).collect();
        assert_eq!(filters, vec!["a/+/c", "#", "$stream/defaults"], "only the deleted stream's replays went");
        // What is stored decodes again: every index points at a stored position.
        assert_eq!(SessionState::decode(&state.encode()), Ok(state.clone()));
        assert!(!state.forget_stream("default"), "nothing left to forget");
        assert!(!state.forget_stream("unknown"));
    }
}
