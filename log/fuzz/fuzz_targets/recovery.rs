//! Damages a valid partition and opens it again. The input is a cut and a list of byte edits
//! applied to a segment of a few batches written once by the log itself (so the fuzzer starts
//! from real structure, not from noise): two bytes give the length to cut the file to, then
//! each three bytes (a position and a value) overwrite one byte. Recovery must never panic;
//! a log it opens must read back whole records, CRC-checked, of the records written at their
//! offsets, and must take a new append at its end; `verify_partition` must not panic either.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use libfuzzer_sys::fuzz_target;
use strata_log::{FlushPolicy, Log, LogConfig, Record};

const SEGMENT: &str = "00000000000000000000.log";
const RECORDS: u64 = 40;

fn config() -> LogConfig {
    LogConfig { flush: FlushPolicy::Never, segment_bytes: 1 << 20, ..LogConfig::default() }
}

fn value(offset: u64) -> Vec<u8> {
    format!("value-{offset}").into_bytes()
}

fn scratch_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("strata-recovery-fuzz-{}-{n}", std::process::id()))
}

/// The bytes of a clean segment of `RECORDS` records in batches of 1 to 4, written once.
fn clean_segment() -> &'static [u8] {
    static SEGMENT_BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    SEGMENT_BYTES.get_or_init(|| {
        let dir = scratch_dir();
        let log = Log::open(&dir, config()).expect("open a new log");
        let mut offset = 0;
        while offset < RECORDS {
            let size = (offset % 4 + 1).min(RECORDS - offset);
            let records: Vec<Record> =
                (offset..offset + size).map(|o| Record::new(1_700_000_000_000 + o as i64, value(o))).collect();
            log.append(&records, 1).expect("append");
            offset += size;
        }
        log.close().expect("close");
        let bytes = std::fs::read(dir.join(SEGMENT)).expect("read the segment");
        let _ = std::fs::remove_dir_all(&dir);
        bytes
    })
}

fn damaged(input: &[u8]) -> Vec<u8> {
    let mut bytes = clean_segment().to_vec();
    let Some((cut, edits)) = input.split_first_chunk::<2>() else { return bytes };
    let cut = usize::from(u16::from_le_bytes(*cut)) % (bytes.len() + 1);
    bytes.truncate(cut);
    for edit in edits.chunks_exact(3) {
        if bytes.is_empty() {
            break;
        }
        let position = usize::from(u16::from_le_bytes([edit[0], edit[1]])) % bytes.len();
        bytes[position] = edit[2];
    }
    bytes
}

fn check(dir: &Path) {
    let _ = strata_log::verify_partition(dir, &mut |_| {});
    let Ok(log) = Log::open(dir, config()) else { return };
    let end = log.offsets().log_end;
    let mut next = log.offsets().log_start;
    while next < end {
        let Ok(fetch) = log.read(next, 1 << 16) else { break };
        let Ok(records) = fetch.records(next) else { break };
        if records.is_empty() {
            break;
        }
        for record in records {
            assert!(record.offset >= next, "offsets go back: {} after {next}", record.offset);
            assert_eq!(&record.value[..], &value(record.offset)[..], "record {} changed", record.offset);
            next = record.offset + 1;
        }
    }
    let appended = log.append(&[Record::new(1, "after recovery")], 2).expect("a recovered log takes appends");
    assert_eq!(appended.base_offset, end, "the append lands at the log end");
    let _ = log.close();
}

fuzz_target!(|input: &[u8]| {
    let dir = scratch_dir();
    std::fs::create_dir_all(&dir).expect("scratch dir");
    std::fs::write(dir.join(SEGMENT), damaged(input)).expect("write the damaged segment");
    check(&dir);
    let _ = std::fs::remove_dir_all(&dir);
});
