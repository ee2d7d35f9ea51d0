//! Shared by the `strata log` tests: writing real partitions with `strata-log` and running the
//! real `strata` binary on them.
#![allow(dead_code)] // each test binary uses a different subset

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use strata_log::{DumpedBatch, Log, LogConfig, Record};

/// First record timestamp: 2023-11-14T22:13:20.000Z.
pub const T0: i64 = 1_700_000_000_000;

/// Small segments so a few batches make several segments.
pub fn small_segments() -> LogConfig {
    LogConfig { segment_bytes: 1024, index_interval_bytes: 128, ..LogConfig::default() }
}

/// The records of batch `b`: `per_batch` records with key `device-<offset>`, a 40-byte value
/// and two headers, like the frontend will write.
pub fn batch_records(b: u64, per_batch: u64) -> Vec<Record> {
    (0..per_batch)
        .map(|i| {
            let offset = b * per_batch + i;
            Record::new(T0 + offset as i64, vec![b'v'; 40])
                .with_key(format!("device-{offset}"))
                .with_header("mqtt.topic", format!("sensors/{offset}"))
                .with_header("mqtt.qos", vec![1u8])
        })
        .collect()
}

/// Writes `batches` batches of `per_batch` records into a new partition at `dir` and closes
/// it cleanly.
pub fn write_partition(dir: &Path, batches: u64, per_batch: u64) {
    let log = Log::open(dir, small_segments()).expect("open partition");
    for b in 0..batches {
        log.append(&batch_records(b, per_batch), 3).expect("append");
    }
    log.close().expect("close partition");
}

/// Every batch of the partition, as the library reads it.
pub fn batches(dir: &Path) -> Vec<DumpedBatch> {
    let mut all = Vec::new();
    strata_log::dump_partition(dir, 0, &mut |batch| {
        all.push(batch);
        true
    })
    .expect("reading the partition back");
    all
}

/// The segment files of a partition, sorted.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list partition")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

/// Inverts the byte at `position` of `file`.
pub fn flip_byte(file: &Path, position: u64) {
    let mut bytes = std::fs::read(file).expect("read segment");
    bytes[position as usize] ^= 0xff;
    std::fs::write(file, bytes).expect("write segment");
}

/// Runs the real `strata` binary.
pub fn strata(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata")).args(args).env_remove("RUST_LOG").output().expect("run strata")
}

/// Runs `strata` on a path argument.
pub fn strata_on(args: &[&str], path: &Path, more: &[&str]) -> Output {
    let mut all: Vec<&str> = args.to_vec();
    let path = path.to_str().expect("temp paths are UTF-8");
    all.push(path);
    all.extend_from_slice(more);
    strata(&all)
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Exit code, with the output in the panic message when there is none.
pub fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or_else(|| panic!("strata was killed: {output:?}"))
}

/// Runs `strata serve` with `config` as its config file, in a fresh data directory, and waits
/// for it to exit. Only for configs the broker refuses: a good one would keep it serving.
pub fn serve_refusing(config: &str) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("strata.toml");
    std::fs::write(&path, config).expect("write config");
    let data = dir.path().join("data");
    strata(&[
        "serve",
        "--config",
        path.to_str().expect("temp paths are UTF-8"),
        "--data-dir",
        data.to_str().expect("temp paths are UTF-8"),
        "--mqtt",
        "127.0.0.1:0",
        // Off, so the refusal is the config's, never a port taken by another broker.
        "--grpc",
        "off",
        "--http",
        "off",
    ])
}
