//! Releasing mapped pages while a writer appends (rolling segments) and readers read must not
//! change what the readers see: every reader gets every record, in order, with its content.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
};

use strata_log::{FlushPolicy, Log, LogConfig, Record};

const RECORDS_PER_BATCH: u64 = 16;
const BATCHES: u64 = 1024;
const READERS: usize = 3;
const PASSES: usize = 2;

fn value_of(offset: u64) -> Vec<u8> {
    let stamp = format!("{offset:016x}");
    stamp.bytes().cycle().take(500 + (offset % 500) as usize).collect()
}

#[test]
fn readers_see_every_record_while_pages_are_released() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        LogConfig { segment_bytes: 1 << 20, segment_ms: None, flush: FlushPolicy::Never, ..Default::default() };
    let log = Log::open(dir.path(), config).unwrap();
    let total = BATCHES * RECORDS_PER_BATCH;
    let done = Arc::new(AtomicBool::new(false));

    let releaser = {
        let (log, done) = (log.clone(), Arc::clone(&done));
        thread::spawn(move || {
            let mut releases = 0u64;
            while !done.load(Ordering::Acquire) {
                log.release_mapped_pages_for_tests();
                releases += 1;
                thread::yield_now();
            }
            releases
        })
    };
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let log = log.clone();
            thread::spawn(move || {
                for _ in 0..PASSES {
                    let mut next = 0;
                    while next < total {
                        let fetch = log.read(next, 64 << 10).unwrap();
                        if fetch.batches.is_empty() {
                            // Caught up with the writer: wait for more (bounded by the writer).
                            thread::yield_now();
                            continue;
                        }
                        for record in fetch.records(next).unwrap() {
                            assert_eq!(record.offset, next, "records out of order");
                            assert_eq!(&record.value[..], &value_of(next)[..], "content of offset {next}");
                            next += 1;
                        }
                    }
                }
            })
        })
        .collect();

    for batch in 0..BATCHES {
        let records: Vec<Record> = (0..RECORDS_PER_BATCH)
            .map(|i| Record::new(1_700_000_000_000, value_of(batch * RECORDS_PER_BATCH + i)))
            .collect();
        log.append(&records, 0).unwrap();
    }
    for reader in readers {
        reader.join().expect("a reader failed");
    }
    done.store(true, Ordering::Release);
    let releases = releaser.join().unwrap();
    assert!(releases > 0);
    assert!(log.segment_count() > 4, "the writer rolled segments during the test");
    log.close().unwrap();
}
