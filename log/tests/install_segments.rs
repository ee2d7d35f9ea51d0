//! Snapshots made of segment files: a leader's `Log::snapshot_files` staged into a follower's
//! partition and swapped in by `Log::install_segments`. The follower then holds the leader's
//! records at their offsets and goes on appending; an install stopped by a crash at any step
//! reopens as the old log (before its commit point) or the new one (after it), never a mix;
//! damaged staged files are refused. Also the maintenance limit Raft puts on retention.

use std::{
    fs,
    io::{Read, Seek, SeekFrom},
    path::Path,
};

use strata_log::{
    FlushPolicy, HighWatermarkMode, InstallStep, Log, LogConfig, LogError, Record, RetentionPolicy, SnapshotInfo,
    StoredRecord,
};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 256,
        flush: FlushPolicy::Never,
        high_watermark: HighWatermarkMode::SetByCaller,
        ..LogConfig::default()
    }
}

/// A leader's log over several segments in terms 1 to 3, a control batch at each term
/// change, everything committed; then retention removes its first segments.
fn build_leader(dir: &Path) -> Log {
    let log = Log::open(dir, config()).unwrap();
    for term in 1..=3u64 {
        log.append_control(term, format!("blank of term {term}")).unwrap();
        for i in 0..40 {
            log.append(
                &[Record::new(1_000 + i, vec![term as u8; 60]), Record::new(1_001 + i, format!("{term}-{i}"))],
                term,
            )
            .unwrap();
        }
    }
    let end = log.offsets().log_end;
    log.set_high_watermark(end).unwrap();
    let deleted = log.apply_retention(&strata_log::plan_retention(
        &log.segment_summaries()[..3],
        &RetentionPolicy { retention_ms: None, retention_bytes: Some(0), retention_messages: None },
        0,
        end,
    ));
    assert_eq!(deleted.unwrap().segments_deleted, 2, "the test wants a leader whose log does not start at 0");
    log
}

/// A follower with a log of its own, unrelated to the leader's, ending below it.
fn build_follower(dir: &Path) -> Log {
    let log = Log::open(dir, config()).unwrap();
    for i in 0..30 {
        log.append(&[Record::new(i, format!("old {i}"))], 1).unwrap();
    }
    log.set_high_watermark(20).unwrap();
    log
}

fn all_records(log: &Log) -> Vec<StoredRecord> {
    let mut out = Vec::new();
    let mut next = log.offsets().log_start;
    loop {
        let fetch = log.read(next, 1 << 20).unwrap();
        let records = fetch.records(next).unwrap();
        let Some(last) = records.last() else { return out };
        next = last.offset + 1;
        out.extend(records);
    }
}

/// Copies the leader's snapshot files up to `last` into the follower's staging directory, as
/// the receiving side of a snapshot does.
fn stage(leader: &Log, follower: &Log, last: u64) -> SnapshotInfo {
    let snapshot = leader.snapshot_files(last).unwrap().expect("a snapshot");
    fs::create_dir_all(follower.staging_dir()).unwrap();
    for mut file in snapshot.files {
        let mut bytes = vec![0; file.len as usize];
        file.file.seek(SeekFrom::Start(0)).unwrap();
        file.file.read_exact(&mut bytes).unwrap();
        fs::write(follower.staging_segment_path(file.base_offset), bytes).unwrap();
    }
    snapshot.info
}

fn segment_count(dir: &Path) -> usize {
    fs::read_dir(dir).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "log")).count()
}

fn assert_installed(follower: &Log, leader_records: &[StoredRecord], info: &SnapshotInfo) {
    let offsets = follower.offsets();
    assert_eq!((offsets.log_start, offsets.high_watermark, offsets.log_end), (info.log_start, info.end, info.end));
    let expected: Vec<_> = leader_records.iter().filter(|r| r.offset < info.end).cloned().collect();
    assert_eq!(all_records(follower), expected, "the follower holds the leader's records at their offsets");
    assert_eq!(follower.last_term_and_offset(), Some((info.last_term, info.end - 1)));
    assert_eq!(follower.last_purged(), info.last_purged);
    assert!(!follower.staging_dir().exists());
    // It goes on from the tail.
    follower.append_at(info.end, 4, &[Record::new(7, "after the snapshot")]).unwrap();
    follower.set_high_watermark(info.end + 1).unwrap();
    let last = follower.read(info.end, 1 << 20).unwrap().records(info.end).unwrap();
    assert_eq!(&last[0].value[..], b"after the snapshot");
}

#[test]
fn a_follower_installs_the_leaders_segments_and_goes_on() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let leader = build_leader(leader_dir.path());
    let leader_records = all_records(&leader);
    let follower = build_follower(follower_dir.path());
    // A cut in the middle of a batch: the snapshot ends with the batch before it.
    let last = leader.offsets().log_end - 2;
    let info = stage(&leader, &follower, last);
    assert_eq!(info.end, last, "the batch holding `last` goes past it, so the snapshot ends before it");
    assert_eq!(info.log_start, leader.offsets().log_start);
    assert!(info.log_start > 0 && info.last_purged.is_some());
    follower.install_segments(&info).unwrap();
    assert!(segment_count(follower_dir.path()) > 2, "several segments were installed");
    assert_installed(&follower, &leader_records, &info);
    follower.close().unwrap();
    drop(follower);
    let reopened = Log::open(follower_dir.path(), config()).unwrap();
    assert_eq!(reopened.offsets().log_end, info.end + 1);
    let mut expected: Vec<_> = leader_records.iter().filter(|r| r.offset < info.end).cloned().collect();
    expected.push(all_records(&reopened).last().unwrap().clone());
    assert_eq!(all_records(&reopened), expected);
    reopened.close().unwrap();
    let report = strata_log::verify_partition(follower_dir.path(), &mut |_| {}).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[test]
fn readers_of_the_old_log_keep_their_batches() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let leader = build_leader(leader_dir.path());
    let follower = build_follower(follower_dir.path());
    let before = follower.read(0, 1 << 20).unwrap();
    let info = stage(&leader, &follower, leader.offsets().log_end - 1);
    follower.install_segments(&info).unwrap();
    assert_eq!(&before.records(0).unwrap()[0].value[..], b"old 0");
}

#[test]
fn an_install_stopped_after_its_commit_point_reopens_as_the_new_log() {
    for step in
        [InstallStep::MetaWritten, InstallStep::OldDeleted, InstallStep::StagingRenamed, InstallStep::FilesMoved]
    {
        let leader_dir = tempfile::tempdir().unwrap();
        let follower_dir = tempfile::tempdir().unwrap();
        let leader = build_leader(leader_dir.path());
        let leader_records = all_records(&leader);
        let follower = build_follower(follower_dir.path());
        let info = stage(&leader, &follower, leader.offsets().log_end - 1);
        follower.install_segments_with_crash_at(&info, step).unwrap();
        assert!(matches!(follower.append(&[Record::new(0, "x")], 5), Err(LogError::Closed { .. })), "{step:?}");
        drop(follower);
        let reopened = Log::open(follower_dir.path(), config()).unwrap();
        assert_installed(&reopened, &leader_records, &info);
        assert!(!follower_dir.path().join("snapshot.install").exists(), "{step:?}");
    }
}

#[test]
fn an_install_stopped_before_its_commit_point_reopens_as_the_old_log() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let leader = build_leader(leader_dir.path());
    let follower = build_follower(follower_dir.path());
    let old_records = all_records(&follower);
    let info = stage(&leader, &follower, leader.offsets().log_end - 1);
    follower.install_segments_with_crash_at(&info, InstallStep::Verified).unwrap();
    drop(follower);
    let reopened = Log::open(follower_dir.path(), config()).unwrap();
    assert_eq!(reopened.offsets().log_end, 30);
    // The high watermark is not persisted on every move; a crash may leave an older one.
    reopened.set_high_watermark(20).unwrap();
    assert_eq!(all_records(&reopened), old_records);
    assert!(!reopened.staging_dir().exists(), "open removes what an uncommitted install staged");
    // The next try succeeds.
    let leader_records = all_records(&leader);
    let info = stage(&leader, &reopened, leader.offsets().log_end - 1);
    reopened.install_segments(&info).unwrap();
    assert_installed(&reopened, &leader_records, &info);
}

#[test]
fn a_damaged_staged_segment_is_refused_and_the_old_log_stays() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let leader = build_leader(leader_dir.path());
    let follower = build_follower(follower_dir.path());
    let old_records = all_records(&follower);
    let info = stage(&leader, &follower, leader.offsets().log_end - 1);
    let first = follower.staging_segment_path(info.log_start);
    let mut bytes = fs::read(&first).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    fs::write(&first, bytes).unwrap();
    let err = follower.install_segments(&info).unwrap_err();
    assert!(matches!(&err, LogError::BadSnapshot { path, .. } if path == &first), "{err}");
    assert_eq!(all_records(&follower), old_records);
    follower.append(&[Record::new(0, "still writable")], 1).unwrap();

    // A snapshot that does not end where its sender said is refused too.
    let wrong = SnapshotInfo { end: info.end + 1, ..info };
    fs::remove_dir_all(follower.staging_dir()).unwrap();
    stage(&leader, &follower, leader.offsets().log_end - 1);
    let err = follower.install_segments(&wrong).unwrap_err();
    assert!(matches!(err, LogError::BadSnapshot { .. }), "{err}");
}

#[test]
fn an_install_below_the_high_watermark_is_refused() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let leader = build_leader(leader_dir.path());
    let follower = build_follower(follower_dir.path());
    for i in 30..400 {
        follower.append(&[Record::new(i, format!("old {i}"))], 1).unwrap();
    }
    follower.set_high_watermark(400).unwrap();
    let info = stage(&leader, &follower, leader.offsets().log_end - 1);
    assert!(info.end < 400);
    let err = follower.install_segments(&info).unwrap_err();
    assert!(matches!(err, LogError::InvalidReset { .. }), "{err}");
}

#[test]
fn retention_stays_below_the_maintenance_limit_and_says_what_it_wants() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    for i in 0..200 {
        log.append(&[Record::new(i, vec![1; 60])], 1).unwrap();
    }
    log.set_high_watermark(200).unwrap();
    let bases: Vec<u64> = log.segment_summaries().iter().map(|s| s.base_offset).collect();
    assert!(bases.len() > 3);
    assert_eq!(log.maintenance_limit(), u64::MAX, "a log opens without a limit");
    log.limit_maintenance(bases[1]);
    let mut wanted = log.watch_maintenance_wanted();
    let everything = RetentionPolicy { retention_ms: None, retention_bytes: Some(0), retention_messages: None };
    let outcome = log.enforce_retention(&everything, 0).unwrap();
    assert_eq!(outcome.segments_deleted, 1, "only the segment below the limit goes");
    assert_eq!(log.offsets().log_start, bases[1]);
    assert!(wanted.has_changed().unwrap());
    assert_eq!(*wanted.borrow_and_update(), bases[2], "retention asks for the next segment boundary");
    assert!(log.sealed_segments().is_empty(), "compaction stays below the limit too");
    log.limit_maintenance(bases[3]);
    log.limit_maintenance(bases[2]);
    assert_eq!(log.maintenance_limit(), bases[3], "the limit only rises");
    assert_eq!(log.enforce_retention(&everything, 0).unwrap().segments_deleted, 2);
    assert_eq!(log.offsets().log_start, bases[3]);
}
