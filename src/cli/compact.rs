//! `strata log compact`: one full cleaning of a partition whose broker is stopped.

use std::{
    path::Path,
    process::ExitCode,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use bytes::Bytes;
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use strata_compaction::{CompactionConfig, Throttle, clean_partition};
use strata_log::{Log, LogConfig};

/// What the operator chose on the command line.
pub struct CompactOptions<'a> {
    pub key_header: Option<&'a str>,
    pub topic_header: &'a str,
    pub delete_retention_ms: u64,
    pub min_compaction_lag_ms: u64,
    pub segment_bytes: u64,
}

pub fn compact(dir: &Path, options: &CompactOptions<'_>) -> Result<ExitCode> {
    if !dir.is_dir() {
        anyhow::bail!("{}: not a partition directory", dir.display());
    }
    let log_config = LogConfig {
        segment_bytes: options.segment_bytes,
        index_interval_bytes: LogConfig::default().index_interval_bytes.min(options.segment_bytes),
        ..LogConfig::default()
    };
    let log = Log::open(dir, log_config).with_context(|| format!("opening {}", dir.display()))?;
    let config = CompactionConfig {
        key_header: options.key_header.map(|k| Bytes::copy_from_slice(k.as_bytes())),
        topic_header: Bytes::copy_from_slice(options.topic_header.as_bytes()),
        min_compaction_lag_ms: options.min_compaction_lag_ms,
        min_cleanable_dirty_ratio: 0.0,
        delete_retention_ms: options.delete_retention_ms,
        segment_bytes: options.segment_bytes,
        ..CompactionConfig::default()
    };
    let (size_before, segments_before) = (log.size_bytes(), log.segment_count());
    let active_bytes = log.segment_summaries().last().map_or(0, |s| s.size_bytes);
    // Every byte is read twice at most: once to map keys, once to rewrite (plus the small
    // outputs the pass merges, a fraction of it once cleaned).
    let bar = if console_is_interactive() {
        let style =
            ProgressStyle::with_template("{spinner} compacting [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec})")
                .context("progress bar template")?
                .progress_chars("=> ");
        ProgressBar::new(2 * size_before.saturating_sub(active_bytes)).with_style(style)
    } else {
        ProgressBar::hidden()
    };
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let outcome = clean_partition(&log, &config, now_ms, &Throttle::new(None), &mut |read| bar.set_position(read))
        .with_context(|| format!("compacting {}", dir.display()))?;
    bar.finish_and_clear();
    let (size_after, segments_after) = (log.size_bytes(), log.segment_count());
    log.close().with_context(|| format!("closing {}", dir.display()))?;
    println!("partition        {}", dir.display());
    println!("size before      {} in {segments_before} segments", HumanBytes(size_before));
    println!("size after       {} in {segments_after} segments", HumanBytes(size_after));
    println!(
        "passes           {} (read {}, {} superseded records and {} expired tombstones dropped)",
        outcome.passes,
        HumanBytes(outcome.bytes_read),
        outcome.records_superseded,
        outcome.tombstones_dropped
    );
    println!("cleaned up to    offset {}", outcome.cleaned_up_to);
    println!("untouched        {} in the active segment, which is never compacted", HumanBytes(active_bytes));
    Ok(ExitCode::SUCCESS)
}

fn console_is_interactive() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}
