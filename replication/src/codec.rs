//! Pure conversions, with no I/O: openraft's types to and from the protobuf messages of
//! `strata.cluster.v1`, and Raft entries to and from record batches of the partition log.
//!
//! The mapping between entries and batches: entry index = offset. A run of consecutive
//! normal entries of one term becomes one batch of records carrying that term, so the payload
//! is written once. A blank or membership entry becomes a control batch of one offset, whose
//! payload is [`encode_control`]'s bytes.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use openraft::{BasicNode, EntryPayload};
use prost::Message;
use strata_log::{Header, Record};
use strata_proto::cluster::v1 as pb;

use crate::types::{Entry, LogId, Membership, Vote, log_id};

/// A message from a peer that does not hold what the protocol requires.
#[derive(Debug, thiserror::Error)]
#[error("malformed message: {0}")]
pub(crate) struct CodecError(pub &'static str);

pub(crate) fn vote_to_pb(vote: &Vote) -> pb::Vote {
    pb::Vote { term: vote.leader_id.term, node_id: vote.leader_id.voted_for, committed: vote.committed }
}

pub(crate) fn vote_from_pb(vote: Option<pb::Vote>) -> Result<Vote, CodecError> {
    let vote = vote.ok_or(CodecError("no vote"))?;
    let mut out = Vote::default();
    out.leader_id.term = vote.term;
    out.leader_id.voted_for = vote.node_id;
    out.committed = vote.committed;
    Ok(out)
}

pub(crate) fn log_id_to_pb(id: &LogId) -> pb::LogId {
    pb::LogId { term: id.leader_id.term, index: id.index }
}

pub(crate) fn log_id_from_pb(id: pb::LogId) -> LogId {
    log_id(id.term, id.index)
}

pub(crate) fn record_to_pb(record: &Record) -> pb::Record {
    pb::Record {
        timestamp: record.timestamp,
        key: record.key.clone(),
        value: record.value.clone(),
        headers: record.headers.iter().map(|h| pb::Header { name: h.name.clone(), value: h.value.clone() }).collect(),
    }
}

pub(crate) fn record_from_pb(record: pb::Record) -> Record {
    Record {
        timestamp: record.timestamp,
        key: record.key,
        value: record.value,
        headers: record.headers.into_iter().map(|h| Header { name: h.name, value: h.value }).collect(),
    }
}

pub(crate) fn membership_to_pb(membership: &Membership) -> pb::Membership {
    pb::Membership {
        configs: membership
            .get_joint_config()
            .iter()
            .map(|set| pb::VoterSet { node_ids: set.iter().copied().collect() })
            .collect(),
        nodes: membership.nodes().map(|(id, node)| pb::Node { node_id: *id, addr: node.addr.clone() }).collect(),
    }
}

pub(crate) fn membership_from_pb(membership: pb::Membership) -> Result<Membership, CodecError> {
    let configs: Vec<BTreeSet<u64>> =
        membership.configs.into_iter().map(|set| set.node_ids.into_iter().collect()).collect();
    if configs.is_empty() || configs.iter().any(BTreeSet::is_empty) {
        return Err(CodecError("a membership with an empty voter set"));
    }
    let nodes: BTreeMap<u64, BasicNode> =
        membership.nodes.into_iter().map(|n| (n.node_id, BasicNode { addr: n.addr })).collect();
    if configs.iter().flatten().any(|id| !nodes.contains_key(id)) {
        return Err(CodecError("a membership voter without an address"));
    }
    Ok(Membership::new(configs, nodes))
}

pub(crate) fn entry_to_pb(entry: &Entry) -> pb::Entry {
    let payload = match &entry.payload {
        EntryPayload::Normal(record) => pb::entry::Payload::Record(record_to_pb(record)),
        EntryPayload::Blank => pb::entry::Payload::Blank(pb::Empty {}),
        EntryPayload::Membership(m) => pb::entry::Payload::Membership(membership_to_pb(m)),
    };
    pb::Entry { term: entry.log_id.leader_id.term, index: entry.log_id.index, payload: Some(payload) }
}

pub(crate) fn entry_from_pb(entry: pb::Entry) -> Result<Entry, CodecError> {
    let payload = match entry.payload.ok_or(CodecError("an entry without a payload"))? {
        pb::entry::Payload::Record(record) => EntryPayload::Normal(record_from_pb(record)),
        pb::entry::Payload::Blank(_) => EntryPayload::Blank,
        pb::entry::Payload::Membership(m) => EntryPayload::Membership(membership_from_pb(m)?),
    };
    Ok(Entry { log_id: log_id(entry.term, entry.index), payload })
}

/// The payload of a control batch: a kind byte, then for a membership its protobuf.
const CONTROL_BLANK: u8 = b'B';
const CONTROL_MEMBERSHIP: u8 = b'M';

/// The control-batch payload of a blank or membership entry; `None` for a normal entry.
pub(crate) fn encode_control(payload: &EntryPayload<crate::TypeConfig>) -> Option<Bytes> {
    match payload {
        EntryPayload::Normal(_) => None,
        EntryPayload::Blank => Some(Bytes::from_static(&[CONTROL_BLANK])),
        EntryPayload::Membership(m) => {
            let mut out = vec![CONTROL_MEMBERSHIP];
            out.extend_from_slice(&membership_to_pb(m).encode_to_vec());
            Some(Bytes::from(out))
        }
    }
}

/// The entry payload a control batch stores.
pub(crate) fn decode_control(payload: &[u8]) -> Result<EntryPayload<crate::TypeConfig>, CodecError> {
    match payload.split_first() {
        Some((&CONTROL_BLANK, [])) => Ok(EntryPayload::Blank),
        Some((&CONTROL_MEMBERSHIP, rest)) => {
            let m =
                pb::Membership::decode(rest).map_err(|_| CodecError("a membership control batch does not decode"))?;
            Ok(EntryPayload::Membership(membership_from_pb(m)?))
        }
        _ => Err(CodecError("an unknown control batch")),
    }
}

/// One write into the partition log.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum LogWrite {
    /// A batch of user records at `base`, one offset each, written by a leader of `term`.
    Records { base: u64, term: u64, records: Vec<Record> },
    /// A control batch of one offset.
    Control { offset: u64, term: u64, payload: Bytes },
}

/// Groups entries (consecutive indexes) into the fewest writes: each run of normal entries of
/// one term is one batch; each blank or membership entry is its own control batch.
pub(crate) fn plan_writes(entries: impl IntoIterator<Item = Entry>) -> Vec<LogWrite> {
    let mut writes = Vec::new();
    for entry in entries {
        let term = entry.log_id.leader_id.term;
        let index = entry.log_id.index;
        if let Some(payload) = encode_control(&entry.payload) {
            writes.push(LogWrite::Control { offset: index, term, payload });
            continue;
        }
        let EntryPayload::Normal(record) = entry.payload else { unreachable!("control entries are handled above") };
        match writes.last_mut() {
            Some(LogWrite::Records { base, term: run_term, records })
                if *run_term == term && *base + records.len() as u64 == index =>
            {
                records.push(record)
            }
            _ => writes.push(LogWrite::Records { base: index, term, records: vec![record] }),
        }
    }
    writes
}

/// The entries one stored batch holds: one per record, or one for a control batch.
pub(crate) fn entries_of_write(write: LogWrite) -> Result<Vec<Entry>, CodecError> {
    match write {
        LogWrite::Records { base, term, records } => Ok(records
            .into_iter()
            .enumerate()
            .map(|(i, record)| Entry { log_id: log_id(term, base + i as u64), payload: EntryPayload::Normal(record) })
            .collect()),
        LogWrite::Control { offset, term, payload } => {
            Ok(vec![Entry { log_id: log_id(term, offset), payload: decode_control(&payload)? }])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(term: u64, index: u64, value: &'static str) -> Entry {
        Entry { log_id: log_id(term, index), payload: EntryPayload::Normal(Record::new(index as i64, value)) }
    }

    fn membership() -> Membership {
        Membership::new(
            vec![BTreeSet::from([1, 2, 3])],
            BTreeMap::from([
                (1, BasicNode::new("127.0.0.1:1")),
                (2, BasicNode::new("127.0.0.1:2")),
                (3, BasicNode::new("127.0.0.1:3")),
                (4, BasicNode::new("127.0.0.1:4")),
            ]),
        )
    }

    #[test]
    fn a_run_of_one_term_is_one_batch_and_a_new_term_starts_another() {
        let entries = vec![normal(1, 5, "a"), normal(1, 6, "b"), normal(2, 7, "c"), normal(2, 8, "d")];
        let writes = plan_writes(entries.clone());
        assert_eq!(writes.len(), 2);
        match &writes[0] {
            LogWrite::Records { base, term, records } => {
                assert_eq!((*base, *term, records.len()), (5, 1, 2));
                assert_eq!(&records[1].value[..], b"b");
            }
            other => panic!("expected records, got {other:?}"),
        }
        match &writes[1] {
            LogWrite::Records { base, term, records } => assert_eq!((*base, *term, records.len()), (7, 2, 2)),
            other => panic!("expected records, got {other:?}"),
        }
        let back: Vec<Entry> = writes.into_iter().flat_map(|w| entries_of_write(w).unwrap()).collect();
        assert_eq!(back, entries);
    }

    #[test]
    fn blank_and_membership_entries_are_control_batches_of_one_offset() {
        let entries = vec![
            Entry { log_id: log_id(0, 0), payload: EntryPayload::Membership(membership()) },
            Entry { log_id: log_id(1, 1), payload: EntryPayload::Blank },
            normal(1, 2, "x"),
            Entry { log_id: log_id(1, 3), payload: EntryPayload::Blank },
            normal(1, 4, "y"),
        ];
        let writes = plan_writes(entries.clone());
        let shape: Vec<(bool, u64)> = writes
            .iter()
            .map(|w| match w {
                LogWrite::Records { base, .. } => (false, *base),
                LogWrite::Control { offset, .. } => (true, *offset),
            })
            .collect();
        // A control batch in the middle of a term splits its records into two batches.
        assert_eq!(shape, vec![(true, 0), (true, 1), (false, 2), (true, 3), (false, 4)]);
        let back: Vec<Entry> = writes.into_iter().flat_map(|w| entries_of_write(w).unwrap()).collect();
        assert_eq!(back, entries);
    }

    #[test]
    fn entries_survive_the_wire_encoding() {
        let record = Record::new(42, "v").with_key("k").with_header("topic", "a/b");
        let entries = vec![
            Entry { log_id: log_id(3, 9), payload: EntryPayload::Normal(record) },
            Entry { log_id: log_id(3, 10), payload: EntryPayload::Blank },
            Entry { log_id: log_id(4, 11), payload: EntryPayload::Membership(membership()) },
        ];
        for entry in entries {
            let wire = entry_to_pb(&entry).encode_to_vec();
            let back = entry_from_pb(pb::Entry::decode(&wire[..]).unwrap()).unwrap();
            assert_eq!(back, entry);
        }
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert!(decode_control(b"").is_err());
        assert!(decode_control(b"Bx").is_err());
        assert!(decode_control(b"M\xff\xff").is_err());
        assert!(entry_from_pb(pb::Entry { term: 1, index: 1, payload: None }).is_err());
        let voter_without_address = pb::Membership {
            configs: vec![pb::VoterSet { node_ids: vec![1, 2] }],
            nodes: vec![pb::Node { node_id: 1, addr: "a".into() }],
        };
        assert!(membership_from_pb(voter_without_address).is_err());
        assert!(vote_from_pb(None).is_err());
    }
}
