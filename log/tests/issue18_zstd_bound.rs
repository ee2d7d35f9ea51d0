//! Issue 18, "zstd decompression is unbounded": a batch's zstd frame is decoded only up to
//! the size the frame declares. Crafted batches (valid header and CRC, as damage or a hostile
//! file could produce) whose frame expands past its declared size, or declares none, are
//! refused as corruption naming the file and the batch's position, instead of being
//! decompressed whole into memory. The batches are built by hand from docs/format.md.

use std::io::Write;
use std::path::Path;

use strata_log::{Compression, Log, LogConfig, LogError, Record};

const T0: i64 = 1_700_000_000_000;

fn put_uvarint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// The records section of one record at offset delta 0 and timestamp `T0`, with `value`.
fn one_record(value: &[u8]) -> Vec<u8> {
    let mut body = vec![0u8, 0, 0]; // offset delta, timestamp delta, no key
    put_uvarint(&mut body, value.len() as u64);
    body.extend_from_slice(value);
    body.push(0); // no headers
    let mut section = Vec::new();
    put_uvarint(&mut section, body.len() as u64);
    section.extend_from_slice(&body);
    section
}

/// A zstd-compressed batch of one record at offset 0 whose records section is `frame`.
fn zstd_batch(frame: &[u8]) -> Vec<u8> {
    let mut batch = vec![0u8; 52];
    let len = (52 + frame.len()) as u32;
    batch[4..8].copy_from_slice(&len.to_le_bytes());
    batch[8] = 1; // format version
    batch[9] = 1; // CRC-32/IEEE
    batch[10..12].copy_from_slice(&1u16.to_le_bytes()); // zstd
    batch[12..20].copy_from_slice(&0u64.to_le_bytes()); // base offset
    batch[20..28].copy_from_slice(&1u64.to_le_bytes()); // leader term
    batch[28..32].copy_from_slice(&0u32.to_le_bytes()); // last offset delta
    batch[32..36].copy_from_slice(&1u32.to_le_bytes()); // record count
    batch[36..44].copy_from_slice(&T0.to_le_bytes());
    batch[44..52].copy_from_slice(&T0.to_le_bytes());
    batch.extend_from_slice(frame);
    let crc = crc32fast::hash(&batch[4..]);
    batch[0..4].copy_from_slice(&crc.to_le_bytes());
    batch
}

fn frame(content: &[u8], declare_size: bool) -> Vec<u8> {
    let mut encoder = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
    encoder.include_contentsize(declare_size).unwrap();
    if declare_size {
        encoder.set_pledged_src_size(Some(content.len() as u64)).unwrap();
    }
    encoder.write_all(content).unwrap();
    encoder.finish().unwrap()
}

/// Writes `batch` as the only segment of a partition in `dir`, opens it and reads it back.
fn read_back(dir: &Path, batch: &[u8]) -> Result<Vec<strata_log::StoredRecord>, LogError> {
    std::fs::write(dir.join("00000000000000000000.log"), batch).unwrap();
    let log = Log::open(dir, LogConfig { compression: Compression::Zstd, ..LogConfig::default() }).unwrap();
    assert_eq!(log.offsets().log_end, 1, "recovery keeps the batch: its header and CRC are valid");
    log.read(0, 1 << 20).unwrap().records(0)
}

fn assert_refused(result: Result<Vec<strata_log::StoredRecord>, LogError>, reason: &str) {
    match result {
        Err(error @ LogError::Corrupt { .. }) => {
            let message = error.to_string();
            assert!(message.contains("00000000000000000000.log"), "{message:?} names the file");
            assert!(message.contains("at byte 0"), "{message:?} names the position");
            assert!(message.contains(reason), "{message:?} says {reason:?}");
        }
        other => panic!("expected the batch refused as corrupt ({reason}), got {other:?}"),
    }
}

#[test]
fn issue18_zstd_frame_expanding_past_its_declared_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // A valid frame declaring exactly one small record, followed by a second frame that
    // expands to 16 MiB: whole-input decoding would allocate it all, and the record decoder
    // would stop after its one record and never notice.
    let mut crafted = frame(&one_record(b"hello"), true);
    crafted.extend_from_slice(&frame(&vec![0u8; 16 << 20], false));
    assert_refused(read_back(dir.path(), &zstd_batch(&crafted)), "past its declared size");
}

#[test]
fn issue18_zstd_frame_without_a_declared_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let crafted = frame(&one_record(&vec![7u8; 1 << 20]), false);
    assert_refused(read_back(dir.path(), &zstd_batch(&crafted)), "does not declare");
}

#[test]
fn issue18_zstd_batches_the_log_writes_still_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig { compression: Compression::Zstd, ..LogConfig::default() }).unwrap();
    let records: Vec<Record> = (0..100).map(|i| Record::new(T0 + i, vec![b'a' + (i % 26) as u8; 3000])).collect();
    log.append(&records, 1).unwrap();
    // The hand-built frame reads back too: the test's encoder matches the format.
    let fetch = log.read(0, 1 << 20).unwrap();
    assert_eq!(fetch.records(0).unwrap().len(), 100);
    log.close().unwrap();
    let other = tempfile::tempdir().unwrap();
    let good = read_back(other.path(), &zstd_batch(&frame(&one_record(b"hello"), true))).unwrap();
    assert_eq!((good.len(), &good[0].value[..], good[0].timestamp), (1, &b"hello"[..], T0));
}
