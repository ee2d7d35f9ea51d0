//! Issue 18, "`segment_bytes` is compared with bytes before compression": a stream with
//! `segment_bytes = 65536` and zstd was reported to roll 924-byte segment files. The roll
//! threshold counts bytes as stored, after compression (as Kafka's `segment.bytes`): with
//! compressible batches each larger than `segment_bytes` before compression, the segment
//! files still fill up to close to `segment_bytes`.

use strata_log::{Compression, Log, LogConfig, Record};

const SEGMENT_BYTES: u64 = 65536;

#[test]
fn issue18_zstd_segments_roll_on_stored_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_bytes: SEGMENT_BYTES, compression: Compression::Zstd, ..LogConfig::default() };
    let log = Log::open(dir.path(), config).unwrap();
    let mut uncompressed = 0u64;
    for batch in 0..300u64 {
        // About 100 KiB of JSON-like telemetry per batch: more than a segment before
        // compression, about a kilobyte after.
        let records: Vec<Record> = (0..100u64)
            .map(|i| {
                let n = batch * 100 + i;
                let value = format!(
                    "{{\"sensor\":\"temperature-{}\",\"reading\":{},\"unit\":\"celsius\",\"site\":\"{}\"}}",
                    n % 13,
                    n % 40,
                    "plant-north-building-7-".repeat(40)
                );
                uncompressed += value.len() as u64;
                Record::new(1_700_000_000_000 + n as i64, value).with_header("mqtt.topic", "plant/north/temp")
            })
            .collect();
        log.append(&records, 1).unwrap();
    }
    log.close().unwrap();

    let mut sizes: Vec<(String, u64)> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().len()))
        .collect();
    sizes.sort();
    let stored: u64 = sizes.iter().map(|(_, len)| len).sum();
    assert!(uncompressed > 300 * SEGMENT_BYTES, "each batch is larger than a segment before compression");
    assert!(stored * 10 < uncompressed, "the data compressed well ({stored} of {uncompressed} bytes)");
    assert!(sizes.len() >= 3, "enough stored bytes for several segments: {sizes:?}");
    let (closed, _active) = sizes.split_at(sizes.len() - 1);
    let largest_batch = stored / 300 * 4;
    for (name, len) in closed {
        assert!(*len <= SEGMENT_BYTES, "{name}: {len} bytes, more than segment_bytes");
        assert!(
            *len + largest_batch >= SEGMENT_BYTES,
            "{name}: {len} bytes; a segment rolls only when the next stored batch would not fit ({} segments)",
            sizes.len()
        );
    }
    assert!(sizes.len() as u64 <= stored / SEGMENT_BYTES + 2, "{} segments for {stored} stored bytes", sizes.len());
}
