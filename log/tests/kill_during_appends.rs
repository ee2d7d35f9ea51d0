//! A real writer process, killed with SIGKILL at random moments while it appends with
//! `FlushPolicy::Always`. Every record it reported durable must be there after recovery, with
//! the right content, and the log must be gap-free and pass `verify_partition`.
//!
//! The child is this test binary itself, re-executed to run only the ignored test
//! `child_writer_entry` (the libtest arguments work the same under `cargo test` and
//! `cargo nextest run`, which also runs this binary). The environment variable
//! `STRATA_KILL_TEST_DIR` tells that test it is the child and where to write.

mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::process::ExitStatusExt,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant, SystemTime},
};

use common::{Rng, check_derived, derived_record, read_all, verify};
use strata_log::{Compression, FlushPolicy, Log, LogConfig, LogError, Record};

const DIR_ENV: &str = "STRATA_KILL_TEST_DIR";
const ROUND_ENV: &str = "STRATA_KILL_TEST_ROUND";
const ROUNDS: u64 = 5;
const MAX_BATCHES: u64 = 200_000;
const CHILD_TIME_LIMIT: Duration = Duration::from_secs(30);

fn config(round: u64) -> LogConfig {
    LogConfig {
        segment_bytes: 8192,
        segment_ms: None,
        index_interval_bytes: 512,
        flush: FlushPolicy::Always,
        compression: if round % 2 == 1 { Compression::Zstd } else { Compression::None },
        ..LogConfig::default()
    }
}

/// The writer loop, run in the child process only.
#[test]
#[ignore = "the child process of kill_during_appends; does nothing unless STRATA_KILL_TEST_DIR is set"]
fn child_writer_entry() {
    let Some(dir) = std::env::var_os(DIR_ENV) else { return };
    let round: u64 = std::env::var(ROUND_ENV).expect("round").parse().expect("round number");
    // The parent may still be letting go of the directory lock for a moment.
    let mut attempts = 0;
    let log = loop {
        match Log::open(&dir, config(round)) {
            Err(LogError::Locked { .. }) if attempts < 200 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(25));
            }
            other => break other.expect("child: opening the log"),
        }
    };
    let started = Instant::now();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for _ in 0..MAX_BATCHES {
        if started.elapsed() > CHILD_TIME_LIMIT {
            break;
        }
        let base = log.offsets().log_end;
        let records: Vec<Record> = (base..base + 1 + base % 5).map(derived_record).collect();
        let info = log.append(&records, round + 1).expect("child: appending");
        assert_eq!(info.base_offset, base, "child: the log assigned an unexpected offset");
        log.wait_durable_blocking(info.last_offset).expect("child: waiting for durability");
        writeln!(out, "durable {}", info.last_offset).expect("child: writing to stdout");
        out.flush().expect("child: flushing stdout");
    }
    log.close().expect("child: closing");
}

/// Parses `durable <offset>` from a whole line (libtest may print its own text before it).
fn parse_durable(line: &str) -> Option<u64> {
    let at = line.rfind("durable ")?;
    line[at + "durable ".len()..].trim().parse().ok()
}

fn spawn_child(dir: &Path, round: u64) -> Child {
    let exe = std::env::current_exe().expect("current test binary");
    Command::new(exe)
        .args(["child_writer_entry", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(DIR_ENV, dir)
        .env(ROUND_ENV, round.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning the child writer")
}

#[test]
fn kill_during_appends() {
    let dir = tempfile::tempdir().unwrap();
    let seed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64;
    eprintln!("kill_during_appends: seed {seed}");
    let mut rng = Rng::new(seed);
    let mut recovered_end = 0u64;
    for round in 0..ROUNDS {
        let mut child = spawn_child(dir.path(), round);
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (sender, receiver) = mpsc::channel();
        let stdout_reader = thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    // A line cut short by the kill is not a report.
                    Ok(_) if !line.ends_with('\n') => break,
                    Ok(_) => {
                        if let Some(offset) = parse_durable(&line) {
                            let _ = sender.send(offset);
                        }
                    }
                }
            }
        });
        let stderr_reader = thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });

        // Kill at a random moment once the child is appending.
        let first = receiver.recv_timeout(Duration::from_secs(60));
        if first.is_err() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("round {round}: the child reported nothing; its stderr:\n{}", stderr_reader.join().unwrap());
        }
        thread::sleep(Duration::from_millis(rng.range(50, 401)));
        child.kill().expect("killing the child");
        let status = child.wait().expect("waiting for the child");
        stdout_reader.join().unwrap();
        let child_stderr = stderr_reader.join().unwrap();
        let reported: Vec<u64> = first.into_iter().chain(receiver.try_iter()).collect();
        assert_eq!(
            status.signal(),
            Some(9),
            "round {round}: the child was not killed by SIGKILL ({status}); its stderr:\n{child_stderr}"
        );
        assert!(reported.windows(2).all(|w| w[0] < w[1]), "round {round}: reports out of order");
        assert!(
            reported[0] >= recovered_end,
            "round {round}: the child wrote at {} before the recovered end {recovered_end}",
            reported[0]
        );
        let max_durable = *reported.last().unwrap();

        let log = Log::open(dir.path(), config(round)).unwrap();
        let context = format!("round {round} ({} batches reported, last durable {max_durable})", reported.len());
        assert!(!log.recovery_report().clean_shutdown, "{context}: a killed writer leaves no marker");
        let offsets = log.offsets();
        assert!(offsets.log_end > max_durable, "{context}: durable records lost, log end {}", offsets.log_end);
        assert_eq!(offsets.high_watermark, offsets.log_end, "{context}");
        let records = read_all(&log).unwrap_or_else(|e| panic!("{context}: reading failed: {e}\n{child_stderr}"));
        assert_eq!(records.len() as u64, offsets.log_end, "{context}: records missing");
        for (expected_offset, record) in records.iter().enumerate() {
            assert_eq!(record.offset, expected_offset as u64, "{context}: offsets are not gap-free");
            check_derived(record);
        }
        assert_eq!(log.last_term_and_offset(), Some((round + 1, offsets.log_end - 1)), "{context}");
        let report = verify(dir.path());
        assert!(report.problems.is_empty(), "{context}: verify found {:?}", report.problems);
        assert_eq!(report.records, offsets.log_end, "{context}");
        recovered_end = offsets.log_end;
        eprintln!("{context}: recovered up to offset {recovered_end}, {:?}", log.recovery_report().truncated);

        // Alternate how the next child finds the directory: closed cleanly, or crashed again.
        if round % 2 == 0 {
            log.close().unwrap();
            let report = verify(dir.path());
            assert!(report.problems.is_empty(), "{context}: after the close, verify found {:?}", report.problems);
        } else {
            log.crash_for_tests();
        }
    }
    assert!(recovered_end > ROUNDS, "the children appended too little to test anything");
}
