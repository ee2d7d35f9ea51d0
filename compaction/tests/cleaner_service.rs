//! The maintenance service's cleaner: a registered compacted partition with dirty segments is
//! cleaned in the background and its state reports it; `compact_now` cleans on demand; shutdown
//! joins the threads and lets go of the logs.

mod common;

use std::{sync::mpsc, thread, time::Duration};

use bytes::Bytes;
use common::*;
use strata_compaction::{
    CleanupPolicy, CompactionConfig, CompactionError, Maintenance, MaintenanceConfig, PartitionSettings, TOPIC_HEADER,
};
use strata_log::{Log, LogConfig, RetentionPolicy};

const SEGMENT_BYTES: u64 = 1024;
const WAIT: Duration = Duration::from_secs(10);

/// `count` updates of eight topics (every 11th a tombstone), stamped an hour ago: dirty, and
/// with tombstones younger than the default `delete_retention_ms`.
fn fill(log: &Log, model: &mut Model, count: u64) {
    let timestamp = wall_clock_ms() - 3600 * 1000;
    for _ in 0..count {
        let seq = model.len() as u64;
        let topic = format!("home/room-{}/temp", (seq * 5 + seq / 8) % 8);
        let value = if seq % 11 == 10 { Bytes::new() } else { Bytes::from(format!("{topic}={seq}")) };
        model.append(log, vec![keyed(TOPIC_HEADER, &topic, value, timestamp)]);
    }
}

fn settings() -> PartitionSettings {
    PartitionSettings {
        cleanup_policy: CleanupPolicy::Compact,
        retention: RetentionPolicy::default(),
        compaction: CompactionConfig { segment_bytes: 4 * SEGMENT_BYTES, ..Default::default() },
    }
}

fn config() -> LogConfig {
    log_config(SEGMENT_BYTES)
}

/// The partition holds each key's latest record below `cut` (tombstones kept) and everything
/// from `cut` on.
fn assert_cleaned_to(log: &Log, model: &Model, cut: u64) {
    let records = read_all(log);
    assert_records_match_model(model, &records);
    assert_offsets(&records, &model.expected_after_clean(cut, i64::MIN), "after cleaning");
    assert_latest_per_key(model, &records);
}

/// Shuts the service down on another thread and waits (bounded) for it to return.
fn shutdown_joins(maintenance: Maintenance) {
    let (done, joined) = mpsc::channel();
    thread::spawn(move || {
        maintenance.shutdown();
        done.send(()).unwrap();
    });
    joined.recv_timeout(Duration::from_secs(30)).expect("shutdown joins the maintenance threads");
}

#[test]
fn a_dirty_compacted_partition_is_cleaned_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    let mut model = Model::new(TOPIC_HEADER);
    fill(&log, &mut model, 150);
    let sealed_end = log.sealed_segments().last().unwrap().next_offset();
    let size_before = log.size_bytes();
    assert!(log.sealed_segments().len() >= 8);

    let maintenance = Maintenance::start(MaintenanceConfig {
        retention_check_interval: Duration::from_secs(3600),
        cleaner_threads: 1,
        cleaner_throttle_bytes_per_sec: None,
        cleaner_backoff: Duration::from_millis(50),
        ..Default::default()
    })
    .unwrap();
    maintenance.register("home", log.clone(), settings()).unwrap();
    assert!(maintenance.cleaner_state("elsewhere").is_none());
    wait_until("a background cleaning", WAIT, || maintenance.cleaner_state("home").unwrap().runs > 0);

    let state = maintenance.cleaner_state("home").unwrap();
    assert_eq!(state.last_error, None);
    assert_eq!(state.cleaned_up_to, sealed_end, "{state:?}");
    assert_eq!(log.offsets().cleaned_up_to, sealed_end);
    assert!(state.last_run_ms > 0 && state.last_bytes_freed > 0, "{state:?}");
    assert_eq!(state.last_bytes_freed, size_before - log.size_bytes(), "{state:?}");
    let totals = maintenance.totals();
    assert_eq!(totals.compaction_runs, state.runs, "{totals:?}");
    assert_eq!(totals.compaction_bytes_freed, state.last_bytes_freed, "{totals:?}");
    assert!(totals.compaction_bytes_read >= size_before - log.segment_summaries().last().unwrap().size_bytes);
    assert_eq!((totals.retention_segments_deleted, totals.retention_bytes_deleted), (0, 0));
    assert_cleaned_to(&log, &model, sealed_end);
    assert_eq!(swap_leftovers(dir.path()), Vec::<String>::new());

    // Nothing dirty is left, so the cleaner leaves the partition alone.
    assert_eq!(maintenance.compact_now("home").unwrap().passes, 0);

    shutdown_joins(maintenance);
    // The service let go of its handle: the partition closes and reopens with its progress.
    log.close().unwrap();
    drop(log);
    assert_sound(dir.path());
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.offsets().cleaned_up_to, sealed_end, "cleaned_up_to is persisted");
    assert_cleaned_to(&log, &model, sealed_end);
}

#[test]
fn compact_now_cleans_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    let mut model = Model::new(TOPIC_HEADER);
    // The background cleaner looks once as it starts, finds no partition, and sleeps for an
    // hour (the pause lets it take that look first): only `compact_now` cleans here.
    let maintenance = Maintenance::start(MaintenanceConfig {
        retention_check_interval: Duration::from_secs(3600),
        cleaner_threads: 1,
        cleaner_throttle_bytes_per_sec: None,
        cleaner_backoff: Duration::from_secs(3600),
        ..Default::default()
    })
    .unwrap();
    thread::sleep(Duration::from_millis(100));
    maintenance.register("home", log.clone(), settings()).unwrap();
    assert!(
        matches!(maintenance.compact_now("garage"), Err(CompactionError::UnknownPartition(name)) if name == "garage")
    );

    fill(&log, &mut model, 120);
    let first_end = log.sealed_segments().last().unwrap().next_offset();
    let outcome = maintenance.compact_now("home").unwrap();
    assert!(outcome.passes >= 1 && outcome.records_superseded > 0 && outcome.bytes_freed() > 0, "{outcome:?}");
    assert_eq!(outcome.cleaned_up_to, first_end);
    let state = maintenance.cleaner_state("home").unwrap();
    assert_eq!(
        (state.cleaned_up_to, state.last_bytes_freed, state.runs),
        (first_end, outcome.bytes_freed(), u64::from(outcome.passes))
    );
    assert_cleaned_to(&log, &model, first_end);

    // More updates dirty it again; the next call cleans them into the clean part.
    fill(&log, &mut model, 120);
    let second_end = log.sealed_segments().last().unwrap().next_offset();
    assert!(second_end > first_end);
    let again = maintenance.compact_now("home").unwrap();
    assert!(again.passes >= 1 && again.records_superseded > 0, "{again:?}");
    assert_eq!(again.cleaned_up_to, second_end);
    let state = maintenance.cleaner_state("home").unwrap();
    assert_eq!(state.runs, u64::from(outcome.passes + again.passes));
    assert_eq!(maintenance.totals().compaction_runs, state.runs);
    assert_eq!(maintenance.totals().compaction_bytes_freed, outcome.bytes_freed() + again.bytes_freed());
    assert_cleaned_to(&log, &model, second_end);

    // Unregistering a partition makes it unknown to the service.
    assert!(maintenance.unregister("home"));
    assert!(maintenance.cleaner_state("home").is_none());
    assert!(matches!(maintenance.compact_now("home"), Err(CompactionError::UnknownPartition(_))));
    shutdown_joins(maintenance);
    log.close().unwrap();
    drop(log);
    assert_sound(dir.path());
}

#[test]
fn compact_now_during_a_background_pass_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    let mut model = Model::new(TOPIC_HEADER);
    fill(&log, &mut model, 60);
    let sealed_end = log.sealed_segments().last().unwrap().next_offset();
    // A throttle slow enough that the background pass takes a few seconds.
    let maintenance = Maintenance::start(MaintenanceConfig {
        retention_check_interval: Duration::from_secs(3600),
        cleaner_threads: 1,
        cleaner_throttle_bytes_per_sec: Some(4096),
        cleaner_backoff: Duration::from_millis(50),
        ..Default::default()
    })
    .unwrap();
    maintenance.register("home", log.clone(), settings()).unwrap();
    // Cleaned files exist only while a pass is rewriting: the background cleaner is mid-pass.
    wait_until("the background pass to start rewriting", Duration::from_secs(30), || {
        swap_leftovers(dir.path()).iter().any(|f| f.ends_with(".log.cleaned"))
    });
    // The partition is registered, so compact_now must not call it unknown; once the running
    // pass is done, nothing is left to clean.
    let outcome = maintenance.compact_now("home").unwrap_or_else(|e| panic!("compact_now mid-pass: {e}"));
    assert_eq!(outcome.passes, 0, "{outcome:?}");
    assert_eq!(log.offsets().cleaned_up_to, sealed_end);
    assert_cleaned_to(&log, &model, sealed_end);
    shutdown_joins(maintenance);
}
