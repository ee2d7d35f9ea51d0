//! The node's maintenance threads: one applies retention to every registered partition on an
//! interval; cleaner threads compact the dirtiest partitions. Both only take the log's
//! maintenance lock and a brief snapshot swap, so appends keep going.

use std::{
    collections::HashMap,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use strata_log::{Log, RetentionPolicy};

use crate::{
    CleanupPolicy, CompactionConfig, CompactionError, MaintenanceConfig,
    cleaner::{CleaningDecision, SegmentFacts, clean_partition, plan_cleaning},
    throttle::Throttle,
};

/// How one partition is kept in bounds.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionSettings {
    /// Delete, compact, or both.
    pub cleanup_policy: CleanupPolicy,
    /// Retention limits, applied when the policy deletes.
    pub retention: RetentionPolicy,
    /// Compaction settings, applied when the policy compacts.
    pub compaction: CompactionConfig,
}

/// The cleaner's record of one partition.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CleanerState {
    /// Everything below this offset has been cleaned.
    pub cleaned_up_to: u64,
    /// When the last cleaning pass ended, in ms since the epoch; 0 if never.
    pub last_run_ms: i64,
    /// Bytes the last pass freed.
    pub last_bytes_freed: u64,
    /// Wall time of the last pass.
    pub last_duration: Duration,
    /// Passes run since start.
    pub runs: u64,
    /// The last error, if the last pass failed.
    pub last_error: Option<String>,
}

/// Totals since start, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaintenanceTotals {
    /// Segments retention deleted.
    pub retention_segments_deleted: u64,
    /// Bytes retention deleted.
    pub retention_bytes_deleted: u64,
    /// Cleaning passes run.
    pub compaction_runs: u64,
    /// Bytes the cleaners read.
    pub compaction_bytes_read: u64,
    /// Bytes the cleaners freed.
    pub compaction_bytes_freed: u64,
    /// Milliseconds spent cleaning.
    pub compaction_millis: u64,
}

struct Partition {
    log: Log,
    settings: Mutex<PartitionSettings>,
    state: Mutex<CleanerState>,
    cleaning: AtomicBool,
}

#[derive(Default)]
struct Counters {
    retention_segments_deleted: AtomicU64,
    retention_bytes_deleted: AtomicU64,
    compaction_runs: AtomicU64,
    compaction_bytes_read: AtomicU64,
    compaction_bytes_freed: AtomicU64,
    compaction_millis: AtomicU64,
}

struct Inner {
    config: MaintenanceConfig,
    partitions: Mutex<HashMap<String, Arc<Partition>>>,
    counters: Counters,
    throttle: Throttle,
    stopping: Mutex<bool>,
    wake: Condvar,
}

/// Handle to the running maintenance threads. Dropping it stops them.
pub struct Maintenance {
    inner: Arc<Inner>,
    threads: Vec<JoinHandle<()>>,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Maintenance {
    /// Starts the retention thread and the cleaner threads.
    pub fn start(config: MaintenanceConfig) -> Result<Maintenance, CompactionError> {
        config.validate()?;
        let inner = Arc::new(Inner {
            throttle: Throttle::new(config.cleaner_throttle_bytes_per_sec),
            config,
            partitions: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            stopping: Mutex::new(false),
            wake: Condvar::new(),
        });
        let mut threads = Vec::new();
        let retention = Arc::clone(&inner);
        threads.push(spawn("strata-retention", move || retention.retention_loop()));
        for i in 0..inner.config.cleaner_threads {
            let cleaner = Arc::clone(&inner);
            threads.push(spawn(&format!("strata-cleaner-{i}"), move || cleaner.cleaner_loop()));
        }
        Ok(Maintenance { inner, threads })
    }

    /// Puts a partition under maintenance (or replaces its settings and log). Its
    /// `offset_map_bytes` becomes the node's `cleaner_buffer_bytes`.
    pub fn register(
        &self,
        name: impl Into<String>,
        log: Log,
        mut settings: PartitionSettings,
    ) -> Result<(), CompactionError> {
        settings.compaction.offset_map_bytes = self.inner.config.cleaner_buffer_bytes;
        settings.compaction.validate()?;
        let partition = Arc::new(Partition {
            state: Mutex::new(CleanerState { cleaned_up_to: log.offsets().cleaned_up_to, ..Default::default() }),
            log,
            settings: Mutex::new(settings),
            cleaning: AtomicBool::new(false),
        });
        lock(&self.inner.partitions).insert(name.into(), partition);
        Ok(())
    }

    /// Takes a partition out of maintenance (before deleting or closing it).
    pub fn unregister(&self, name: &str) -> bool {
        lock(&self.inner.partitions).remove(name).is_some()
    }

    /// Changes a partition's settings at runtime.
    pub fn update_settings(&self, name: &str, mut settings: PartitionSettings) -> Result<(), CompactionError> {
        settings.compaction.offset_map_bytes = self.inner.config.cleaner_buffer_bytes;
        settings.compaction.validate()?;
        let partition = self.inner.partition(name)?;
        *lock(&partition.settings) = settings;
        Ok(())
    }

    /// Applies retention to every partition now; returns segments and bytes deleted.
    pub fn enforce_retention_now(&self) -> (u64, u64) {
        self.inner.enforce_retention(|_| true)
    }

    /// Applies retention now to the partitions whose registered names `select` picks;
    /// returns segments and bytes deleted.
    pub fn enforce_retention_now_on(&self, select: impl Fn(&str) -> bool) -> (u64, u64) {
        self.inner.enforce_retention(select)
    }

    /// Cleans one partition now, if the planner finds it dirty enough. If a cleaner thread is
    /// on it, waits for that pass to end first.
    pub fn compact_now(&self, name: &str) -> Result<crate::CleanOutcome, CompactionError> {
        let partition = self.inner.partition(name)?;
        loop {
            if let Some(result) = self.inner.clean(&partition) {
                return result;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The cleaner's record of a partition.
    pub fn cleaner_state(&self, name: &str) -> Option<CleanerState> {
        lock(&self.inner.partitions).get(name).map(|p| lock(&p.state).clone())
    }

    /// Totals since start.
    pub fn totals(&self) -> MaintenanceTotals {
        self.totals_reader().totals()
    }

    /// A handle that reads [`Maintenance::totals`] without owning the threads, for metrics
    /// read elsewhere; after shutdown it keeps returning the final totals.
    pub fn totals_reader(&self) -> TotalsReader {
        TotalsReader { inner: Arc::clone(&self.inner) }
    }
}

/// Reads the maintenance totals; see [`Maintenance::totals_reader`].
#[derive(Clone)]
pub struct TotalsReader {
    inner: Arc<Inner>,
}

impl TotalsReader {
    /// Totals since start.
    pub fn totals(&self) -> MaintenanceTotals {
        let c = &self.inner.counters;
        MaintenanceTotals {
            retention_segments_deleted: c.retention_segments_deleted.load(Ordering::Relaxed),
            retention_bytes_deleted: c.retention_bytes_deleted.load(Ordering::Relaxed),
            compaction_runs: c.compaction_runs.load(Ordering::Relaxed),
            compaction_bytes_read: c.compaction_bytes_read.load(Ordering::Relaxed),
            compaction_bytes_freed: c.compaction_bytes_freed.load(Ordering::Relaxed),
            compaction_millis: c.compaction_millis.load(Ordering::Relaxed),
        }
    }
}

impl Maintenance {
    /// Stops the threads, waiting for a running pass to finish.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        *lock(&self.inner.stopping) = true;
        self.inner.wake.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Maintenance {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new().name(name.to_string()).spawn(body).expect("spawning a maintenance thread")
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    fn partition(&self, name: &str) -> Result<Arc<Partition>, CompactionError> {
        lock(&self.partitions).get(name).cloned().ok_or_else(|| CompactionError::UnknownPartition(name.to_string()))
    }

    fn snapshot(&self) -> Vec<(String, Arc<Partition>)> {
        lock(&self.partitions).iter().map(|(n, p)| (n.clone(), Arc::clone(p))).collect()
    }

    /// Sleeps up to `timeout`; returns true when the service is stopping.
    fn sleep(&self, timeout: Duration) -> bool {
        let stopping = lock(&self.stopping);
        if *stopping {
            return true;
        }
        *self.wake.wait_timeout(stopping, timeout).unwrap_or_else(|p| p.into_inner()).0
    }

    fn retention_loop(&self) {
        while !self.sleep(self.config.retention_check_interval) {
            self.enforce_retention(|_| true);
        }
    }

    fn enforce_retention(&self, select: impl Fn(&str) -> bool) -> (u64, u64) {
        let (mut segments, mut bytes) = (0, 0);
        for (name, partition) in self.snapshot().into_iter().filter(|(name, _)| select(name)) {
            let settings = lock(&partition.settings).clone();
            if !settings.cleanup_policy.deletes() {
                continue;
            }
            match partition.log.enforce_retention(&settings.retention, now_ms()) {
                Ok(outcome) => {
                    segments += outcome.segments_deleted;
                    bytes += outcome.bytes_deleted;
                    if outcome.segments_deleted > 0 {
                        tracing::info!(partition = %name, segments = outcome.segments_deleted, bytes = outcome.bytes_deleted, "retention deleted segments");
                    }
                }
                Err(e) => tracing::error!(partition = %name, error = %e, "retention failed"),
            }
        }
        self.counters.retention_segments_deleted.fetch_add(segments, Ordering::Relaxed);
        self.counters.retention_bytes_deleted.fetch_add(bytes, Ordering::Relaxed);
        (segments, bytes)
    }

    fn cleaner_loop(&self) {
        loop {
            // Clean the dirtiest partition; when none is dirty, back off.
            let cleaned = match self.dirtiest() {
                Some(partition) => self.clean(&partition).is_some(),
                None => false,
            };
            if !cleaned && self.sleep(self.config.cleaner_backoff) {
                return;
            }
            if *lock(&self.stopping) {
                return;
            }
        }
    }

    /// The partition most in need of cleaning that no other thread is cleaning.
    fn dirtiest(&self) -> Option<Arc<Partition>> {
        let now = now_ms();
        let mut best: Option<(f64, Arc<Partition>)> = None;
        for (_, partition) in self.snapshot() {
            let settings = lock(&partition.settings).clone();
            if !settings.cleanup_policy.compacts() || partition.cleaning.load(Ordering::Acquire) {
                continue;
            }
            let facts: Vec<SegmentFacts> = partition.log.sealed_segments().iter().map(SegmentFacts::from).collect();
            let cleaned_up_to = partition.log.offsets().cleaned_up_to;
            if let CleaningDecision::Clean { dirty_ratio, forced, .. } =
                plan_cleaning(&facts, cleaned_up_to, now, &settings.compaction)
            {
                let priority = if forced { f64::INFINITY } else { dirty_ratio };
                if best.as_ref().is_none_or(|(b, _)| priority > *b) {
                    best = Some((priority, partition));
                }
            }
        }
        best.map(|(_, p)| p)
    }

    /// Runs one cleaning call on `partition`; `None` if another thread is on it.
    fn clean(&self, partition: &Partition) -> Option<Result<crate::CleanOutcome, CompactionError>> {
        if partition.cleaning.swap(true, Ordering::AcqRel) {
            return None;
        }
        let settings = lock(&partition.settings).clone();
        let result = clean_partition(&partition.log, &settings.compaction, now_ms(), &self.throttle, &mut |_| {});
        partition.cleaning.store(false, Ordering::Release);
        let mut state = lock(&partition.state);
        state.last_run_ms = now_ms();
        match &result {
            Ok(outcome) => {
                state.cleaned_up_to = outcome.cleaned_up_to;
                state.last_bytes_freed = outcome.bytes_freed();
                state.last_duration = outcome.duration;
                state.runs += u64::from(outcome.passes);
                state.last_error = None;
                let c = &self.counters;
                c.compaction_runs.fetch_add(u64::from(outcome.passes), Ordering::Relaxed);
                c.compaction_bytes_read.fetch_add(outcome.bytes_read, Ordering::Relaxed);
                c.compaction_bytes_freed.fetch_add(outcome.bytes_freed(), Ordering::Relaxed);
                c.compaction_millis.fetch_add(outcome.duration.as_millis() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!(dir = %partition.log.dir().display(), error = %e, "cleaning failed");
                state.last_error = Some(e.to_string());
            }
        }
        Some(result)
    }
}
