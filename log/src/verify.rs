//! Offline, read-only inspection of a partition directory: `verify` checks every batch, record
//! and index entry; `dump` walks batches for display. Neither takes the lock or repairs
//! anything, so both are safe beside a running broker.

use std::{
    collections::HashMap,
    fs::{self, File},
    path::{Path, PathBuf},
};

use bytes::Bytes;

use crate::{
    BatchHeader, LogError, StoredRecord,
    error::IoContext,
    format::{RecordDecoder, records_section},
    index::{OFFSET_ENTRY_LEN, TIME_ENTRY_LEN, decode_index_files},
    segment::{BatchWalker, map_file, parse_segment_file_name, read_small_file, segment_file_name},
};

/// One problem `verify` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentProblem {
    /// The file.
    pub path: PathBuf,
    /// Byte position in it.
    pub position: u64,
    /// What is wrong.
    pub reason: String,
}

/// What `verify` checked and found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Segments checked.
    pub segments: usize,
    /// Batches that passed.
    pub batches: u64,
    /// Records that decoded.
    pub records: u64,
    /// Bytes of segment files read.
    pub bytes: u64,
    /// Of those, the zeros after the last batch of the active segment: space reserved ahead
    /// of the writer by a broker that stopped without closing the log (`tail.rs`), not data.
    pub reserved_bytes: u64,
    /// Everything wrong, in file order; empty when the partition is sound.
    pub problems: Vec<SegmentProblem>,
}

fn segment_bases(dir: &Path) -> Result<Vec<u64>, LogError> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).at(dir, "listing")? {
        let entry = entry.at(dir, "listing")?;
        if let Some(base) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

fn map_segment(path: &Path) -> Result<Bytes, LogError> {
    let file = File::open(path).at(path, "opening")?;
    let len = file.metadata().at(path, "reading metadata")?.len();
    map_file(&file, path, len).map(|m| m.data)
}

/// Total bytes of the segment files in `dir`, for progress bars.
pub fn partition_size(dir: &Path) -> Result<u64, LogError> {
    let mut total = 0;
    for base in segment_bases(dir)? {
        let path = dir.join(segment_file_name(base, "log"));
        total += fs::metadata(&path).at(&path, "reading metadata")?.len();
    }
    Ok(total)
}

/// Checks every batch's header and CRC, every record's encoding, offsets across segments, and
/// both index files of every segment. `progress` is called with the bytes checked so far.
pub fn verify_partition(dir: &Path, progress: &mut dyn FnMut(u64)) -> Result<VerifyReport, LogError> {
    let mut report = VerifyReport::default();
    let mut previous_last: Option<u64> = None;
    let bases = segment_bases(dir)?;
    for &base in &bases {
        let path = dir.join(segment_file_name(base, "log"));
        let data = map_segment(&path)?;
        report.segments += 1;
        let mut problem = |position: u64, reason: String| {
            report_problem(&mut report.problems, &path, position, reason);
        };
        if previous_last.is_some_and(|last| base <= last) {
            problem(0, format!("segment base offset {base} does not follow the previous segment's last offset"));
        }
        // Batch position -> (relative offset, running max timestamp), to check the indexes.
        let mut batches = HashMap::new();
        let mut running_max = i64::MIN;
        let is_last = bases.last() == Some(&base);
        let mut walker = BatchWalker::new(&data, 0, base);
        for item in &mut walker {
            match item {
                Ok((position, header)) => {
                    if previous_last.is_some_and(|last| header.base_offset <= last) {
                        problem(position as u64, "batch offset does not follow the previous segment".into());
                    }
                    previous_last = Some(header.last_offset());
                    running_max = running_max.max(header.max_timestamp);
                    batches.insert(position as u32, ((header.base_offset - base) as u32, running_max));
                    let batch = data.slice(position..position + header.batch_length as usize);
                    match decode_all(&batch, &header) {
                        Ok(records) => report.records += records.len() as u64,
                        Err(reason) => problem(position as u64, reason.into()),
                    }
                    report.batches += 1;
                }
                // Zeros after the last batch of the active segment are space the writer had
                // reserved when the broker stopped without closing the log (`tail.rs`).
                Err(defect) if is_last && crate::tail::is_reserved(&data[defect.position..]) => {
                    report.reserved_bytes += (data.len() - defect.position) as u64;
                }
                Err(defect) => problem(defect.position as u64, defect.reason.into()),
            }
        }
        report.bytes += data.len() as u64;
        progress(report.bytes);
        check_indexes(dir, base, !is_last, &data, &batches, &mut report.problems);
    }
    Ok(report)
}

fn report_problem(problems: &mut Vec<SegmentProblem>, path: &Path, position: u64, reason: String) {
    problems.push(SegmentProblem { path: path.to_path_buf(), position, reason });
}

fn check_indexes(
    dir: &Path,
    base: u64,
    closed: bool,
    data: &[u8],
    batches: &HashMap<u32, (u32, i64)>,
    problems: &mut Vec<SegmentProblem>,
) {
    let index_path = dir.join(segment_file_name(base, "index"));
    let time_path = dir.join(segment_file_name(base, "timeindex"));
    let (Some(offsets), Some(times)) = (read_small_file(&index_path), read_small_file(&time_path)) else {
        if !data.is_empty() {
            report_problem(problems, &index_path, 0, "index file missing (open rebuilds it)".into());
        }
        return;
    };
    if data.is_empty() && offsets.is_empty() {
        return;
    }
    let Some(loaded) = decode_index_files(&offsets, &times, data.len() as u64) else {
        // Name the file at fault: the offset index if it is malformed on its own, else the
        // time index, which then disagrees with it.
        let path = if offset_index_is_sound(&offsets, data.len() as u64, batches) { &time_path } else { &index_path };
        report_problem(problems, path, 0, "index files are malformed (open rebuilds them)".into());
        return;
    };
    for (i, entry) in loaded.entries.iter().enumerate() {
        match batches.get(&entry.position) {
            Some(&(relative, running_max))
                if relative == entry.relative_offset && running_max == entry.max_timestamp => {}
            Some(&(relative, _)) if relative == entry.relative_offset => report_problem(
                problems,
                &time_path,
                (i * TIME_ENTRY_LEN) as u64,
                "time index entry disagrees with the segment (open rebuilds it)".into(),
            ),
            _ => report_problem(
                problems,
                &index_path,
                (i * OFFSET_ENTRY_LEN) as u64,
                "index entry does not point at its batch (open rebuilds it)".into(),
            ),
        }
    }
    // A closed segment's time index ends with the segment's largest timestamp and the
    // relative offset of its last batch.
    if closed && loaded.segment_max_timestamp.is_none() {
        let at = loaded.entries.len() * TIME_ENTRY_LEN;
        report_problem(problems, &time_path, at as u64, "closed segment's time index lacks its final entry".into());
    }
    if loaded.segment_max_timestamp.is_some() {
        let at = loaded.entries.len() * TIME_ENTRY_LEN;
        let timestamp = i64::from_le_bytes(times[at..at + 8].try_into().expect("8 bytes"));
        let relative = u32::from_le_bytes(times[at + 8..at + 12].try_into().expect("4 bytes"));
        let segment_max = batches.values().map(|&(_, running_max)| running_max).max();
        let last_relative = batches.values().map(|&(relative, _)| relative).max();
        if segment_max != Some(timestamp) || last_relative != Some(relative) {
            report_problem(
                problems,
                &time_path,
                at as u64,
                "the time index's final entry disagrees with the segment (open rebuilds it)".into(),
            );
        }
    }
}

/// Whether the offset index decodes on its own (paired with a time index that agrees with it)
/// and each of its entries points at a batch with the relative offset it claims.
fn offset_index_is_sound(offsets: &[u8], segment_len: u64, batches: &HashMap<u32, (u32, i64)>) -> bool {
    if !offsets.len().is_multiple_of(OFFSET_ENTRY_LEN) {
        return false;
    }
    let times: Vec<u8> =
        offsets.chunks(OFFSET_ENTRY_LEN).flat_map(|entry| [0u8; 8].iter().chain(&entry[..4]).copied()).collect();
    decode_index_files(offsets, &times, segment_len).is_some_and(|loaded| {
        loaded.entries.iter().all(|e| batches.get(&e.position).is_some_and(|&(rel, _)| rel == e.relative_offset))
    })
}

fn decode_all(batch: &Bytes, header: &BatchHeader) -> Result<Vec<StoredRecord>, &'static str> {
    let section = records_section(batch, header)?;
    let records: Vec<StoredRecord> = RecordDecoder::new(section, *header).collect::<Result<_, _>>()?;
    if records.len() != header.record_count as usize {
        return Err("record count does not match the header");
    }
    Ok(records)
}

/// One batch as `dump` shows it.
#[derive(Clone, Debug)]
pub struct DumpedBatch {
    /// The segment file.
    pub path: PathBuf,
    /// Byte position of the batch.
    pub position: u64,
    /// Its header.
    pub header: BatchHeader,
    /// Its records.
    pub records: Vec<StoredRecord>,
}

/// Walks batches holding offsets at or after `from`, oldest first, until `visit` returns
/// false. Damage stops the walk with an error naming the file and position.
pub fn dump_partition(dir: &Path, from: u64, visit: &mut dyn FnMut(DumpedBatch) -> bool) -> Result<(), LogError> {
    let bases = segment_bases(dir)?;
    let first = bases.partition_point(|&b| b <= from).saturating_sub(1);
    for &base in &bases[first..] {
        let path = dir.join(segment_file_name(base, "log"));
        let data = map_segment(&path)?;
        let is_last = bases.last() == Some(&base);
        for item in BatchWalker::new(&data, 0, base) {
            let (position, header) = match item {
                Ok(batch) => batch,
                // The active segment's reserved space (`tail.rs`): the end of the log.
                Err(d) if is_last && crate::tail::is_reserved(&data[d.position..]) => break,
                Err(d) => {
                    return Err(LogError::Corrupt {
                        path: path.clone(),
                        position: d.position as u64,
                        reason: d.reason,
                    });
                }
            };
            if header.last_offset() < from {
                continue;
            }
            let batch = data.slice(position..position + header.batch_length as usize);
            let records = decode_all(&batch, &header).map_err(|reason| LogError::Corrupt {
                path: path.clone(),
                position: position as u64,
                reason,
            })?;
            let keep_going = visit(DumpedBatch { path: path.clone(), position: position as u64, header, records });
            if !keep_going {
                return Ok(());
            }
        }
    }
    Ok(())
}
