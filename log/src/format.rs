//! The byte layout of record batches and records (docs/format.md), with no I/O.
//!
//! Encoding writes a whole batch into a caller-owned buffer so the writer reuses one
//! allocation; decoding works on `Bytes` so keys and values are slices of the mmap.

use bytes::{Buf, Bytes};

use crate::Compression;

/// Size of the fixed batch header.
pub(crate) const BATCH_HEADER_LEN: usize = 52;
/// The format version written into every batch's `magic` byte. Version 1 batches (written
/// before control batches existed) are read as they are; their control bit is reserved.
pub(crate) const FORMAT_VERSION: u8 = 2;
/// The oldest batch version this code reads.
const OLDEST_FORMAT_VERSION: u8 = 1;
/// `crc_algorithm` value for CRC-32/IEEE as computed by crc32fast.
pub(crate) const CRC32_IEEE: u8 = 1;
const COMPRESSION_MASK: u16 = 0b111;
/// Attribute bit 5 (as in Kafka): a control batch, one entry that carries no user record
/// (Raft's blank and membership entries). Its single record's value is the payload.
const CONTROL_BIT: u16 = 1 << 5;
/// Largest batch accepted: positions in the index are 32 bits.
pub(crate) const MAX_BATCH_LEN: usize = 1 << 30;

/// A record handed to [`crate::Log::append`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The compaction and partitioning key, if any.
    pub key: Option<Bytes>,
    /// The payload; an empty value is a tombstone for compaction.
    pub value: Bytes,
    /// Named values carried with the record (MQTT topic, QoS, properties...).
    pub headers: Vec<Header>,
}

impl Record {
    /// A record with a value and timestamp, no key and no headers.
    pub fn new(timestamp: i64, value: impl Into<Bytes>) -> Self {
        Record { timestamp, key: None, value: value.into(), headers: Vec::new() }
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header { name: name.into(), value: value.into() });
        self
    }

    /// Bytes the record takes in a batch's records section before compression: key, value,
    /// headers and their framing, as the first record of a batch. A later record's offset and
    /// timestamp deltas may take a few bytes more.
    pub fn encoded_len(&self) -> usize {
        let body_len = record_body_len(self, 0, self.timestamp);
        uvarint_len(body_len as u64) + body_len
    }
}

/// One record header. Names are UTF-8 by convention; the log does not check it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Header name.
    pub name: Bytes,
    /// Header value.
    pub value: Bytes,
}

/// A record read back from the log, with its assigned offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    /// The record's offset in the partition.
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The key, if any.
    pub key: Option<Bytes>,
    /// The payload.
    pub value: Bytes,
    /// The headers, in the order they were appended.
    pub headers: Vec<Header>,
}

/// The decoded fixed header of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// Stored CRC.
    pub crc: u32,
    /// Whole batch length in bytes.
    pub batch_length: u32,
    /// Compression of the records section.
    pub compression: Compression,
    /// Offset of the first record.
    pub base_offset: u64,
    /// Term of the leader that wrote the batch.
    pub leader_term: u64,
    /// Last record offset minus base offset.
    pub last_offset_delta: u32,
    /// Number of records stored.
    pub record_count: u32,
    /// Timestamp of the first record.
    pub first_timestamp: i64,
    /// Largest timestamp in the batch.
    pub max_timestamp: i64,
    /// A control batch: one offset, no user records (see [`crate::Log::append_control`]).
    pub control: bool,
}

impl BatchHeader {
    /// Offset of the last record.
    pub fn last_offset(&self) -> u64 {
        self.base_offset + u64::from(self.last_offset_delta)
    }
}

/// Why a run of bytes is not a valid batch. Positions are added by the caller, which knows
/// the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BatchDefect {
    /// Fewer bytes remain than the header or the declared length needs.
    Short,
    /// A header field holds a value this version does not define.
    BadHeader(&'static str),
    /// The stored CRC does not match the bytes.
    CrcMismatch,
}

impl BatchDefect {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            BatchDefect::Short => "batch is cut short",
            BatchDefect::BadHeader(what) => what,
            BatchDefect::CrcMismatch => "CRC mismatch",
        }
    }
}

/// Parses the fixed header at the start of `bytes` without checking the CRC.
pub(crate) fn parse_header(bytes: &[u8]) -> Result<BatchHeader, BatchDefect> {
    if bytes.len() < BATCH_HEADER_LEN {
        return Err(BatchDefect::Short);
    }
    let mut b = &bytes[..BATCH_HEADER_LEN];
    let crc = b.get_u32_le();
    let batch_length = b.get_u32_le();
    let magic = b.get_u8();
    let crc_algorithm = b.get_u8();
    let attributes = b.get_u16_le();
    if (batch_length as usize) < BATCH_HEADER_LEN || batch_length as usize > MAX_BATCH_LEN {
        return Err(BatchDefect::BadHeader("batch length out of range"));
    }
    if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&magic) {
        return Err(BatchDefect::BadHeader("unknown format version"));
    }
    if crc_algorithm != CRC32_IEEE {
        return Err(BatchDefect::BadHeader("unknown CRC algorithm"));
    }
    let defined = if magic >= 2 { COMPRESSION_MASK | CONTROL_BIT } else { COMPRESSION_MASK };
    if attributes & !defined != 0 {
        return Err(BatchDefect::BadHeader("reserved attribute bits set"));
    }
    let compression = match attributes & COMPRESSION_MASK {
        0 => Compression::None,
        1 => Compression::Zstd,
        _ => return Err(BatchDefect::BadHeader("unknown compression")),
    };
    let header = BatchHeader {
        crc,
        batch_length,
        compression,
        base_offset: b.get_u64_le(),
        leader_term: b.get_u64_le(),
        last_offset_delta: b.get_u32_le(),
        record_count: b.get_u32_le(),
        first_timestamp: b.get_i64_le(),
        max_timestamp: b.get_i64_le(),
        control: attributes & CONTROL_BIT != 0,
    };
    if header.control && (header.record_count != 1 || header.last_offset_delta != 0) {
        return Err(BatchDefect::BadHeader("a control batch holds exactly one entry"));
    }
    if header.record_count == 0 || u64::from(header.record_count) > u64::from(header.last_offset_delta) + 1 {
        return Err(BatchDefect::BadHeader("record count does not fit the offset range"));
    }
    if header.base_offset.checked_add(u64::from(header.last_offset_delta)).is_none() {
        return Err(BatchDefect::BadHeader("offset overflows"));
    }
    Ok(header)
}

/// Parses and CRC-checks the batch at the start of `bytes`. On success the header is
/// returned; the batch occupies `header.batch_length` bytes.
pub(crate) fn check_batch(bytes: &[u8]) -> Result<BatchHeader, BatchDefect> {
    let header = parse_header(bytes)?;
    let len = header.batch_length as usize;
    if bytes.len() < len {
        return Err(BatchDefect::Short);
    }
    if crc32fast::hash(&bytes[4..len]) != header.crc {
        return Err(BatchDefect::CrcMismatch);
    }
    Ok(header)
}

/// Encodes `records` as one batch with offsets starting at `base_offset`, replacing the
/// contents of `out`. `scratch` holds the uncompressed records when compressing.
pub(crate) fn encode_batch(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    records: &[Record],
    base_offset: u64,
    leader_term: u64,
    compression: Compression,
) -> BatchHeader {
    debug_assert!(!records.is_empty(), "callers reject empty batches");
    let template = BatchHeader {
        crc: 0,
        batch_length: 0,
        compression,
        base_offset,
        leader_term,
        last_offset_delta: (records.len() - 1) as u32,
        record_count: records.len() as u32,
        first_timestamp: records[0].timestamp,
        max_timestamp: 0,
        control: false,
    };
    encode_with(out, scratch, template, records.iter().enumerate().map(|(delta, r)| (delta as u64, r)))
}

/// Encodes a control batch: one offset, one record whose value is `payload`, never
/// compressed (it is small, and the replication layer reads it back often).
pub(crate) fn encode_control_batch(
    out: &mut Vec<u8>,
    base_offset: u64,
    leader_term: u64,
    timestamp: i64,
    payload: Bytes,
) -> BatchHeader {
    let template = BatchHeader {
        crc: 0,
        batch_length: 0,
        compression: Compression::None,
        base_offset,
        leader_term,
        last_offset_delta: 0,
        record_count: 1,
        first_timestamp: timestamp,
        max_timestamp: 0,
        control: true,
    };
    let record = Record::new(timestamp, payload);
    encode_with(out, &mut Vec::new(), template, std::iter::once((0, &record)))
}

/// Re-encodes the surviving `records` of a stored batch (compaction). The batch keeps its
/// base offset, last offset, term and compression, so offsets and batch boundaries survive.
pub(crate) fn encode_rewritten_batch(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    original: &BatchHeader,
    records: &[StoredRecord],
) -> BatchHeader {
    debug_assert!(!records.is_empty(), "a batch with no survivors is dropped, not rewritten");
    debug_assert!(records.iter().all(|r| r.offset >= original.base_offset && r.offset <= original.last_offset()));
    let template =
        BatchHeader { record_count: records.len() as u32, first_timestamp: records[0].timestamp, ..*original };
    encode_with(out, scratch, template, records.iter().map(|r| (r.offset - original.base_offset, r)))
}

/// The fields the record encoder needs, from a new or a stored record.
trait RecordFields {
    fn timestamp(&self) -> i64;
    fn key(&self) -> Option<&Bytes>;
    fn value(&self) -> &Bytes;
    fn headers(&self) -> &[Header];
}

impl RecordFields for Record {
    fn timestamp(&self) -> i64 {
        self.timestamp
    }
    fn key(&self) -> Option<&Bytes> {
        self.key.as_ref()
    }
    fn value(&self) -> &Bytes {
        &self.value
    }
    fn headers(&self) -> &[Header] {
        &self.headers
    }
}

impl RecordFields for StoredRecord {
    fn timestamp(&self) -> i64 {
        self.timestamp
    }
    fn key(&self) -> Option<&Bytes> {
        self.key.as_ref()
    }
    fn value(&self) -> &Bytes {
        &self.value
    }
    fn headers(&self) -> &[Header] {
        &self.headers
    }
}

/// Encodes a batch from `template` (offsets, term, compression, record count, first
/// timestamp) and `(offset delta, record)` pairs; fills in length, max timestamp and CRC.
fn encode_with<'r, R: RecordFields + 'r>(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    template: BatchHeader,
    records: impl Iterator<Item = (u64, &'r R)> + Clone,
) -> BatchHeader {
    let first_timestamp = template.first_timestamp;
    let max_timestamp = records.clone().map(|(_, r)| r.timestamp()).max().unwrap_or(first_timestamp);
    out.clear();
    out.resize(BATCH_HEADER_LEN, 0);
    match template.compression {
        Compression::None => encode_records(out, records, first_timestamp),
        Compression::Zstd => {
            scratch.clear();
            encode_records(scratch, records, first_timestamp);
            // Level 1: compression happens on the append path, so speed matters more than ratio.
            let compressed =
                zstd::bulk::compress(scratch, 1).expect("zstd compression of an in-memory buffer cannot fail");
            out.extend_from_slice(&compressed);
        }
    }
    let header = BatchHeader { crc: 0, batch_length: out.len() as u32, max_timestamp, ..template };
    write_header(out, &header);
    let crc = crc32fast::hash(&out[4..]);
    out[0..4].copy_from_slice(&crc.to_le_bytes());
    BatchHeader { crc, ..header }
}

fn write_header(out: &mut [u8], h: &BatchHeader) {
    let compression: u16 = match h.compression {
        Compression::None => 0,
        Compression::Zstd => 1,
    };
    let attributes = if h.control { compression | CONTROL_BIT } else { compression };
    out[4..8].copy_from_slice(&h.batch_length.to_le_bytes());
    out[8] = FORMAT_VERSION;
    out[9] = CRC32_IEEE;
    out[10..12].copy_from_slice(&attributes.to_le_bytes());
    out[12..20].copy_from_slice(&h.base_offset.to_le_bytes());
    out[20..28].copy_from_slice(&h.leader_term.to_le_bytes());
    out[28..32].copy_from_slice(&h.last_offset_delta.to_le_bytes());
    out[32..36].copy_from_slice(&h.record_count.to_le_bytes());
    out[36..44].copy_from_slice(&h.first_timestamp.to_le_bytes());
    out[44..52].copy_from_slice(&h.max_timestamp.to_le_bytes());
}

fn encode_records<'r, R: RecordFields + 'r>(
    out: &mut Vec<u8>,
    records: impl Iterator<Item = (u64, &'r R)>,
    first_timestamp: i64,
) {
    for (delta, record) in records {
        let body_len = record_body_len(record, delta, first_timestamp);
        put_uvarint(out, body_len as u64);
        let start = out.len();
        put_uvarint(out, delta);
        put_svarint(out, record.timestamp().wrapping_sub(first_timestamp));
        match record.key() {
            None => put_uvarint(out, 0),
            Some(key) => {
                put_uvarint(out, key.len() as u64 + 1);
                out.extend_from_slice(key);
            }
        }
        put_uvarint(out, record.value().len() as u64);
        out.extend_from_slice(record.value());
        put_uvarint(out, record.headers().len() as u64);
        for header in record.headers() {
            put_uvarint(out, header.name.len() as u64);
            out.extend_from_slice(&header.name);
            put_uvarint(out, header.value.len() as u64);
            out.extend_from_slice(&header.value);
        }
        debug_assert_eq!(out.len() - start, body_len);
    }
}

fn record_body_len(record: &impl RecordFields, delta: u64, first_timestamp: i64) -> usize {
    let key_len = record.key().map_or(uvarint_len(0), |k| uvarint_len(k.len() as u64 + 1) + k.len());
    let headers: usize = record
        .headers()
        .iter()
        .map(|h| uvarint_len(h.name.len() as u64) + h.name.len() + uvarint_len(h.value.len() as u64) + h.value.len())
        .sum();
    uvarint_len(delta)
        + uvarint_len(zigzag(record.timestamp().wrapping_sub(first_timestamp)))
        + key_len
        + uvarint_len(record.value().len() as u64)
        + record.value().len()
        + uvarint_len(record.headers().len() as u64)
        + headers
}

/// Returns the records section of a CRC-checked batch, decompressed if needed.
pub(crate) fn records_section(batch: &Bytes, header: &BatchHeader) -> Result<Bytes, &'static str> {
    let body = batch.slice(BATCH_HEADER_LEN..header.batch_length as usize);
    match header.compression {
        Compression::None => Ok(body),
        Compression::Zstd => decompress_bounded(&body).map(Bytes::from),
    }
}

/// Decodes a batch's zstd frame, bounded by the size the frame declares (every frame the log
/// writes declares it). Damaged or hostile bytes could otherwise expand without limit: a
/// few kilobytes of frame can stand for gigabytes. So a frame that declares no size or more
/// than a batch may hold is refused, decoding stops one byte past the declared size, and
/// any output but exactly that size is refused as corrupt; memory grows with the output
/// actually produced, not with the claim.
fn decompress_bounded(frame: &[u8]) -> Result<Vec<u8>, &'static str> {
    use std::io::Read;
    let declared = match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(size)) => size,
        Ok(None) => return Err("zstd frame does not declare its decompressed size"),
        Err(_) => return Err("zstd frame header is damaged"),
    };
    if declared > MAX_BATCH_LEN as u64 {
        return Err("zstd frame declares more than a batch may hold");
    }
    let decoder = zstd::stream::read::Decoder::with_buffer(frame).map_err(|_| "zstd frame does not decode")?;
    let mut out = Vec::with_capacity((declared as usize).min(1 << 20));
    decoder.take(declared + 1).read_to_end(&mut out).map_err(|_| "zstd frame does not decode")?;
    match (out.len() as u64).cmp(&declared) {
        std::cmp::Ordering::Equal => Ok(out),
        std::cmp::Ordering::Greater => Err("zstd frame decodes past its declared size"),
        std::cmp::Ordering::Less => Err("zstd frame decodes short of its declared size"),
    }
}

/// Iterates the records of a records section.
pub(crate) struct RecordDecoder {
    section: Bytes,
    header: BatchHeader,
    remaining: u32,
    last_delta: Option<u64>,
}

impl RecordDecoder {
    pub(crate) fn new(section: Bytes, header: BatchHeader) -> Self {
        RecordDecoder { section, header, remaining: header.record_count, last_delta: None }
    }

    fn decode_one(&mut self) -> Result<StoredRecord, &'static str> {
        let body_len = get_uvarint(&mut self.section)? as usize;
        if body_len > self.section.len() {
            return Err("record length runs past the batch");
        }
        let mut body = self.section.split_to(body_len);
        let delta = get_uvarint(&mut body)?;
        if delta > u64::from(self.header.last_offset_delta) || self.last_delta.is_some_and(|last| delta <= last) {
            return Err("record offset delta out of order");
        }
        self.last_delta = Some(delta);
        let timestamp = self.header.first_timestamp.wrapping_add(unzigzag(get_uvarint(&mut body)?));
        let key = match get_uvarint(&mut body)? {
            0 => None,
            n => Some(take(&mut body, (n - 1) as usize)?),
        };
        let value_len = get_uvarint(&mut body)? as usize;
        let value = take(&mut body, value_len)?;
        let header_count = get_uvarint(&mut body)?;
        // Each header takes at least two bytes, which bounds the allocation by the input.
        if header_count > body.len() as u64 / 2 {
            return Err("header count runs past the record");
        }
        let mut headers = Vec::with_capacity(header_count as usize);
        for _ in 0..header_count {
            let name_len = get_uvarint(&mut body)? as usize;
            let name = take(&mut body, name_len)?;
            let value_len = get_uvarint(&mut body)? as usize;
            let value = take(&mut body, value_len)?;
            headers.push(Header { name, value });
        }
        if !body.is_empty() {
            return Err("record has trailing bytes");
        }
        Ok(StoredRecord { offset: self.header.base_offset + delta, timestamp, key, value, headers })
    }
}

impl Iterator for RecordDecoder {
    type Item = Result<StoredRecord, &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let result = self.decode_one();
        if result.is_err() {
            self.remaining = 0;
        }
        Some(result)
    }
}

fn take(buf: &mut Bytes, len: usize) -> Result<Bytes, &'static str> {
    if len > buf.len() {
        return Err("field length runs past the record");
    }
    Ok(buf.split_to(len))
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn unzigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

fn uvarint_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

fn put_uvarint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_svarint(out: &mut Vec<u8>, n: i64) {
    put_uvarint(out, zigzag(n));
}

fn get_uvarint(buf: &mut Bytes) -> Result<u64, &'static str> {
    let mut value = 0u64;
    for i in 0..10 {
        if buf.is_empty() {
            return Err("varint runs past the record");
        }
        let byte = buf.get_u8();
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint longer than 10 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sets a header byte and recomputes the CRC, as a writer of that header would have.
    fn with_byte(mut batch: Vec<u8>, at: usize, value: u8) -> Vec<u8> {
        batch[at] = value;
        let crc = crc32fast::hash(&batch[4..]);
        batch[0..4].copy_from_slice(&crc.to_le_bytes());
        batch
    }

    #[test]
    fn a_control_batch_is_one_offset_with_its_payload_and_the_control_bit() {
        let mut out = Vec::new();
        let header = encode_control_batch(&mut out, 17, 5, 1_000, Bytes::from_static(b"membership"));
        assert_eq!(out[8], FORMAT_VERSION);
        assert_eq!(u16::from_le_bytes([out[10], out[11]]), CONTROL_BIT);
        let checked = check_batch(&out).unwrap();
        assert_eq!(checked, header);
        assert!(checked.control);
        assert_eq!((checked.base_offset, checked.last_offset(), checked.record_count), (17, 17, 1));
        assert_eq!(checked.leader_term, 5);
        let bytes = Bytes::from(out);
        let decoded: Vec<_> =
            RecordDecoder::new(records_section(&bytes, &checked).unwrap(), checked).map(Result::unwrap).collect();
        assert_eq!(decoded.len(), 1);
        assert_eq!(&decoded[0].value[..], b"membership");
    }

    #[test]
    fn version_1_batches_still_parse_but_cannot_be_control_batches() {
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        let header = encode_batch(&mut out, &mut scratch, &sample(), 40, 3, Compression::None);
        let v1 = with_byte(out.clone(), 8, 1);
        let parsed = check_batch(&v1).unwrap();
        assert_eq!(parsed, BatchHeader { crc: parsed.crc, ..header }, "a version-1 batch reads as before");
        let v1_control = with_byte(v1, 10, CONTROL_BIT as u8);
        assert_eq!(check_batch(&v1_control), Err(BatchDefect::BadHeader("reserved attribute bits set")));
        assert_eq!(check_batch(&with_byte(out.clone(), 8, 3)), Err(BatchDefect::BadHeader("unknown format version")));
        // The control bit on a batch of three records is refused.
        let three = with_byte(out, 10, CONTROL_BIT as u8);
        assert_eq!(check_batch(&three), Err(BatchDefect::BadHeader("a control batch holds exactly one entry")));
    }

    fn sample() -> Vec<Record> {
        vec![
            Record::new(1_000, "a").with_key("k1").with_header("topic", "x/y"),
            Record::new(900, Bytes::new()),
            Record::new(i64::MAX, vec![7u8; 300]).with_key(Bytes::new()),
        ]
    }

    #[test]
    fn batch_round_trips_with_and_without_compression() {
        for compression in [Compression::None, Compression::Zstd] {
            let (mut out, mut scratch) = (Vec::new(), Vec::new());
            let records = sample();
            let header = encode_batch(&mut out, &mut scratch, &records, 40, 3, compression);
            let checked = check_batch(&out).unwrap();
            assert_eq!(checked, header);
            assert_eq!(checked.last_offset(), 42);
            assert_eq!(checked.max_timestamp, i64::MAX);
            let bytes = Bytes::from(out);
            let section = records_section(&bytes, &checked).unwrap();
            let decoded: Vec<_> = RecordDecoder::new(section, checked).map(Result::unwrap).collect();
            assert_eq!(decoded.len(), 3);
            for (i, (got, want)) in decoded.iter().zip(&records).enumerate() {
                assert_eq!(got.offset, 40 + i as u64);
                assert_eq!(got.timestamp, want.timestamp);
                assert_eq!(got.key, want.key);
                assert_eq!(got.value, want.value);
                assert_eq!(got.headers, want.headers);
            }
        }
    }

    #[test]
    fn a_lone_record_takes_its_encoded_len_in_a_batch() {
        for record in sample() {
            let (mut out, mut scratch) = (Vec::new(), Vec::new());
            encode_batch(&mut out, &mut scratch, std::slice::from_ref(&record), 0, 1, Compression::None);
            assert_eq!(out.len() - BATCH_HEADER_LEN, record.encoded_len(), "{record:?}");
        }
    }

    #[test]
    fn rewritten_batch_keeps_offsets_and_bounds() {
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        let original = encode_batch(&mut out, &mut scratch, &sample(), 100, 4, Compression::Zstd);
        let bytes = Bytes::from(out.clone());
        let all: Vec<_> =
            RecordDecoder::new(records_section(&bytes, &original).unwrap(), original).map(Result::unwrap).collect();
        let survivors = vec![all[1].clone()];
        let rewritten = encode_rewritten_batch(&mut out, &mut scratch, &original, &survivors);
        let checked = check_batch(&out).unwrap();
        assert_eq!(checked, rewritten);
        assert_eq!((checked.base_offset, checked.last_offset(), checked.leader_term), (100, 102, 4));
        assert_eq!(checked.record_count, 1);
        assert_eq!(checked.max_timestamp, 900);
        let bytes = Bytes::from(out);
        let decoded: Vec<_> =
            RecordDecoder::new(records_section(&bytes, &checked).unwrap(), checked).map(Result::unwrap).collect();
        assert_eq!(decoded, survivors);
    }

    #[test]
    fn every_flipped_byte_is_caught() {
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        encode_batch(&mut out, &mut scratch, &sample(), 0, 0, Compression::None);
        for i in 0..out.len() {
            let mut damaged = out.clone();
            damaged[i] ^= 0x40;
            assert!(check_batch(&damaged).is_err(), "flip at byte {i} went unnoticed");
        }
    }

    #[test]
    fn varints_round_trip_at_the_edges() {
        for n in [0u64, 1, 127, 128, 16_383, 16_384, u64::MAX] {
            let mut out = Vec::new();
            put_uvarint(&mut out, n);
            assert_eq!(out.len(), uvarint_len(n));
            assert_eq!(get_uvarint(&mut Bytes::from(out)).unwrap(), n);
        }
        for n in [0i64, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(n)), n);
        }
    }
}
