//! `strata log dump` and `strata log verify`: offline, read-only views of partition
//! directories, built on `strata_log::{dump_partition, verify_partition}`.

use std::{
    collections::HashSet,
    fs,
    io::{self, BufWriter, IsTerminal, Write},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context, Result, bail};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use strata_log::{
    Compression, DumpedBatch, LogError, SegmentProblem, dump_partition, partition_size, verify_partition,
};

use super::{
    EXIT_DAMAGED,
    display::{Millis, Name, PrintableOrHex, Utf8OrHex, counted},
};

/// Below this many bytes, verify finishes too quickly for a progress bar to help.
const PROGRESS_BAR_MIN_BYTES: u64 = 64 << 20;

/// `strata log dump`.
pub fn dump(dir: &Path, from: u64, count: Option<u64>) -> Result<ExitCode> {
    ensure_dir(dir)?;
    let has_segments = fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list the directory", dir.display()))?
        .filter_map(|entry| entry.ok())
        .any(|entry| entry.file_name().to_str().is_some_and(is_segment_file_name));
    if !has_segments {
        bail!(
            "{}: no segment files (20-digit *.log) here; `strata log dump` takes a partition directory \
             (<data>/<stream>/<partition>/)",
            dir.display()
        );
    }

    let limit = count.unwrap_or(u64::MAX);
    let mut out = BufWriter::new(io::stdout().lock());
    let mut printed = 0u64;
    let mut batches = 0u64;
    let mut write_error = None;
    let walk = if limit == 0 {
        Ok(())
    } else {
        dump_partition(dir, from, &mut |batch| match print_batch(&mut out, &batch, from, limit - printed) {
            Ok(shown) => {
                printed += shown;
                batches += 1;
                printed < limit
            }
            Err(e) => {
                write_error = Some(e);
                false
            }
        })
    };
    if write_error.is_none() {
        let footer = match (printed, count) {
            (n, _) if walk.is_err() => writeln!(
                out,
                "{} in {} before the error below",
                counted(n, "record", "records"),
                counted(batches, "batch", "batches")
            ),
            (_, Some(0)) => writeln!(out, "nothing printed (--count 0)"),
            (0, _) => writeln!(out, "no records at or after offset {from}"),
            (n, Some(limit)) if n == limit => writeln!(
                out,
                "{} in {} (stopped at --count {limit})",
                counted(n, "record", "records"),
                counted(batches, "batch", "batches")
            ),
            (n, _) => writeln!(out, "{} in {}", counted(n, "record", "records"), counted(batches, "batch", "batches")),
        };
        write_error = footer.and_then(|()| out.flush()).err();
    }
    match write_error {
        // The reader went away (`strata log dump ... | head`): not an error.
        Some(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
        Some(e) => return Err(e).context("writing to stdout"),
        None => {}
    }
    match walk {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e @ LogError::Corrupt { .. }) => {
            eprintln!("error: damaged data: {e}");
            Ok(ExitCode::from(EXIT_DAMAGED))
        }
        Err(e) => Err(e).with_context(|| format!("dumping {}", dir.display())),
    }
}

/// Prints a batch and up to `limit` of its records at or after `from`; returns how many
/// records it printed.
fn print_batch(out: &mut impl Write, batch: &DumpedBatch, from: u64, limit: u64) -> io::Result<u64> {
    let h = &batch.header;
    let file = batch.path.file_name().map_or_else(|| batch.path.display().to_string(), |n| n.to_string_lossy().into());
    let compression = match h.compression {
        Compression::None => "none",
        Compression::Zstd => "zstd",
    };
    writeln!(
        out,
        "batch {file} @ byte {}: offsets {}-{}, term {}, {}, compression {compression}, {} bytes",
        batch.position,
        h.base_offset,
        h.last_offset(),
        h.leader_term,
        counted(h.record_count, "record", "records"),
        h.batch_length,
    )?;
    writeln!(out, "  timestamps: first {}, max {}", Millis(h.first_timestamp), Millis(h.max_timestamp))?;
    let mut shown = 0;
    for record in batch.records.iter().filter(|r| r.offset >= from) {
        if shown == limit {
            break;
        }
        write!(out, "  offset={} timestamp={}", record.offset, Millis(record.timestamp))?;
        match &record.key {
            Some(key) => write!(out, " key={}", Utf8OrHex(key))?,
            None => write!(out, " key=(none)")?,
        }
        write!(out, " value={} bytes", record.value.len())?;
        if record.value.is_empty() {
            write!(out, " (tombstone)")?;
        }
        if !record.headers.is_empty() {
            write!(out, " headers:")?;
            for header in &record.headers {
                write!(out, " {}={}", Name(&header.name), PrintableOrHex(&header.value))?;
            }
        }
        writeln!(out)?;
        shown += 1;
    }
    Ok(shown)
}

/// Totals over all partitions verified.
#[derive(Default)]
struct Totals {
    partitions: usize,
    segments: usize,
    batches: u64,
    records: u64,
    bytes: u64,
}

/// `strata log verify`.
pub fn verify(root: &Path) -> Result<ExitCode> {
    ensure_dir(root)?;
    let partitions = find_partitions(root)?;
    if partitions.is_empty() {
        bail!(
            "{}: no partition found: no directory at or below it holds segment files (20-digit *.log)",
            root.display()
        );
    }
    // A size we cannot read only skews the progress bar; verify reports the real error.
    let total: u64 = partitions.iter().map(|dir| partition_size(dir).unwrap_or(0)).sum();
    println!("verifying {} partition(s) under {} ({})", partitions.len(), root.display(), HumanBytes(total));

    let bar = progress_bar(total)?;
    let mut totals = Totals::default();
    let mut problems: Vec<SegmentProblem> = Vec::new();
    let mut failures: Vec<(PathBuf, LogError)> = Vec::new();
    for dir in &partitions {
        let done_before = totals.bytes;
        let result = verify_partition(dir, &mut |bytes| bar.set_position(done_before + bytes));
        match result {
            Ok(report) => {
                totals.partitions += 1;
                totals.segments += report.segments;
                totals.batches += report.batches;
                totals.records += report.records;
                totals.bytes += report.bytes;
                let reserved = match report.reserved_bytes {
                    0 => String::new(),
                    n => format!(" ({} of them reserved at the tail, not data)", HumanBytes(n)),
                };
                let line = format!(
                    "{}: {}, {}{reserved}",
                    dir.display(),
                    contents(report.segments as u64, report.batches, report.records),
                    HumanBytes(report.bytes)
                );
                bar.suspend(|| match report.problems.len() {
                    0 => println!("ok  {line}"),
                    n => println!("BAD {line}: {}", counted(n as u64, "problem", "problems")),
                });
                problems.extend(report.problems);
            }
            Err(e) => {
                bar.suspend(|| println!("ERR {}: could not verify: {e}", dir.display()));
                failures.push((dir.clone(), e));
            }
        }
    }
    bar.finish_and_clear();

    println!(
        "checked {} of {} partition(s): {}, {} ({} bytes)",
        totals.partitions,
        partitions.len(),
        contents(totals.segments as u64, totals.batches, totals.records),
        HumanBytes(totals.bytes),
        totals.bytes
    );
    if let Some(first) = problems.first() {
        println!();
        println!("FIRST PROBLEM: {}", describe(first));
        println!();
        println!("all {} problem(s), in file order:", problems.len());
        for problem in &problems {
            println!("  {}", describe(problem));
        }
    }
    for (dir, e) in &failures {
        eprintln!("error: {}: could not verify: {e}", dir.display());
    }
    if !problems.is_empty() {
        println!("result: DAMAGED, {} problem(s) found", problems.len());
        return Ok(ExitCode::from(EXIT_DAMAGED));
    }
    if !failures.is_empty() {
        bail!("{} partition(s) could not be verified", failures.len());
    }
    println!("result: ok, no problems found");
    Ok(ExitCode::SUCCESS)
}

fn contents(segments: u64, batches: u64, records: u64) -> String {
    format!(
        "{}, {}, {}",
        counted(segments, "segment", "segments"),
        counted(batches, "batch", "batches"),
        counted(records, "record", "records")
    )
}

fn describe(problem: &SegmentProblem) -> String {
    format!("{} at byte {}: {}", problem.path.display(), problem.position, problem.reason)
}

/// A byte-count progress bar on stderr, shown only to a person watching a long run.
fn progress_bar(total: u64) -> Result<ProgressBar> {
    if total <= PROGRESS_BAR_MIN_BYTES || !io::stderr().is_terminal() {
        return Ok(ProgressBar::hidden());
    }
    let style =
        ProgressStyle::with_template("verifying [{bar:30}] {bytes}/{total_bytes} ({eta} left)")?.progress_chars("=> ");
    Ok(ProgressBar::new(total).with_style(style))
}

/// Every directory at or below `root` holding segment files, sorted. Symbolic links to
/// directories are followed, each real directory visited once.
fn find_partitions(root: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let real = fs::canonicalize(&dir).with_context(|| format!("{}: cannot resolve the path", dir.display()))?;
        if !seen.insert(real) {
            continue;
        }
        let mut has_segments = false;
        let entries = fs::read_dir(&dir).with_context(|| format!("{}: cannot list the directory", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("{}: cannot list the directory", dir.display()))?;
            let path = entry.path();
            if entry.file_name().to_str().is_some_and(is_segment_file_name) {
                has_segments = true;
            } else if fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
                pending.push(path);
            }
        }
        if has_segments {
            found.push(dir);
        }
    }
    found.sort();
    Ok(found)
}

/// A segment file name: its base offset in 20 decimal digits, then `.log`.
fn is_segment_file_name(name: &str) -> bool {
    name.strip_suffix(".log").is_some_and(|digits| {
        digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) && digits.parse::<u64>().is_ok()
    })
}

fn ensure_dir(path: &Path) -> Result<()> {
    let metadata = fs::metadata(path).with_context(|| format!("{}: cannot open", path.display()))?;
    if !metadata.is_dir() {
        bail!("{}: not a directory", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_are_twenty_digits() {
        assert!(is_segment_file_name("00000000000000000000.log"));
        assert!(is_segment_file_name("00000000000000004096.log"));
        assert!(!is_segment_file_name("0000000000000000000.log"));
        assert!(!is_segment_file_name("00000000000000000000.index"));
        assert!(!is_segment_file_name("0000000000000000000a.log"));
        assert!(!is_segment_file_name("server.log"));
        assert!(!is_segment_file_name("99999999999999999999.log"), "past u64::MAX");
    }
}
