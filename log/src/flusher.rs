//! One background thread per process that fsyncs logs under `FlushPolicy::Interval` (and
//! persists index tails under `Always`) on their interval, and about once a second releases
//! the segment pages readers mapped (see `Shared::release_mapped_pages`), whatever the flush
//! policy. Logs register a weak reference, so a dropped log simply falls out of the list.
//!
//! When no log has been appended to since its last flush, and none read since its last
//! release, the thread sleeps until an append or a read wakes it, instead of ticking: an idle
//! broker does not wake it at all. The invariant that keeps this safe: while the thread sleeps
//! without a timeout, every log's `appended_since_flush` and `read_since_release` are clear,
//! so the first append or read after that finds its flag clear, sets it and wakes the thread
//! (`mark`). A reader touches a fetch's pages after its read returned, possibly after the
//! release that read triggered, so one more pass follows a second later (`release_again`):
//! only pages touched later than that may stay mapped until the next wake.

use std::{
    sync::{
        Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::log::Shared;

struct Flusher {
    logs: Mutex<Vec<Weak<Shared>>>,
    wake: Condvar,
    epoch: Instant,
    /// Set while the thread sleeps without a timeout; see the module's invariant.
    idle: AtomicBool,
}

/// How often mapped segment pages are released.
const RELEASE_EVERY: Duration = Duration::from_secs(1);

static FLUSHER: OnceLock<Arc<Flusher>> = OnceLock::new();

pub(crate) fn register(log: &Arc<Shared>) {
    let flusher = FLUSHER.get_or_init(|| {
        let flusher = Arc::new(Flusher {
            logs: Mutex::new(Vec::new()),
            wake: Condvar::new(),
            epoch: Instant::now(),
            idle: AtomicBool::new(false),
        });
        let background = Arc::clone(&flusher);
        std::thread::Builder::new()
            .name("strata-log-flusher".into())
            .spawn(move || background.run())
            .expect("spawning the flusher thread");
        flusher
    });
    let now = flusher.epoch.elapsed().as_millis() as i64;
    log.last_flush_ms.store(now, Ordering::Relaxed);
    flusher.lock_logs().push(Arc::downgrade(log));
    flusher.wake.notify_one();
}

/// Sets `flag` (a log's `appended_since_flush` or `read_since_release`) and, if it was clear
/// and the flusher sleeps without a timeout, wakes it. Cheap when the flag is already set,
/// which is the case for every append and read but the first after the flusher's last look.
pub(crate) fn mark(flag: &AtomicBool) {
    if flag.load(Ordering::SeqCst) || flag.swap(true, Ordering::SeqCst) {
        return;
    }
    if let Some(flusher) = FLUSHER.get()
        && flusher.idle.load(Ordering::SeqCst)
        && flusher.idle.swap(false, Ordering::SeqCst)
    {
        // Under the lock: the flusher holds it from its last look until it waits, so the
        // notification cannot fall between the two.
        let _logs = flusher.lock_logs();
        flusher.wake.notify_one();
    }
}

impl Flusher {
    fn lock_logs(&self) -> MutexGuard<'_, Vec<Weak<Shared>>> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(&self) {
        let mut logs = self.lock_logs();
        let mut last_release = Duration::ZERO;
        loop {
            let mut next_due = RELEASE_EVERY;
            let live: Vec<Arc<Shared>> = logs.iter().filter_map(Weak::upgrade).collect();
            logs.retain(|w| w.strong_count() > 0);
            drop(logs);
            let now = self.epoch.elapsed();
            for log in &live {
                let Some(interval) = log.flush_interval() else { continue };
                let last = Duration::from_millis(log.last_flush_ms.load(Ordering::Relaxed) as u64);
                // A log due within half an interval is flushed now, with the one that woke
                // us: logs opened at different moments fall into step after one round, and
                // the thread wakes once per interval, not once per log.
                let due = last + interval;
                if due <= now + interval / 2 {
                    // Cleared first: an append from here on sets it again.
                    log.appended_since_flush.store(false, Ordering::SeqCst);
                    // A log whose fsync failed is not fsynced again: a second fsync may
                    // succeed without writing what the first lost (`LogError::SyncFailed`).
                    // Its data stays dirty, and the failure was logged where it happened.
                    if log.is_dirty()
                        && !log.has_failed()
                        && let Err(e) = log.flush_now(true)
                        && !matches!(e, crate::LogError::SyncFailed { .. })
                    {
                        tracing::error!(dir = %log.dir.display(), error = %e, "background flush failed");
                    }
                    log.last_flush_ms.store(now.as_millis() as i64, Ordering::Relaxed);
                    next_due = next_due.min(interval);
                } else {
                    next_due = next_due.min(due - now);
                }
            }
            if now >= last_release + RELEASE_EVERY {
                for log in &live {
                    // Cleared first, like the flag above: a read from here on sets it again.
                    let read = log.read_since_release.swap(false, Ordering::SeqCst);
                    if log.release_again.swap(read, Ordering::SeqCst) || read {
                        log.release_mapped_pages();
                    }
                }
                last_release = self.epoch.elapsed();
            }
            next_due = next_due.min((last_release + RELEASE_EVERY).saturating_sub(self.epoch.elapsed()));
            // Drop the strong references before sleeping, so a log can close while we wait.
            drop(live);
            logs = self.lock_logs();
            // Idle first, then the look: an append or read that sets its flag after the look
            // finds `idle` set and wakes us (see `mark`).
            self.idle.store(true, Ordering::SeqCst);
            let work_left = logs.iter().filter_map(Weak::upgrade).any(|log| {
                log.appended_since_flush.load(Ordering::SeqCst)
                    || log.read_since_release.load(Ordering::SeqCst)
                    || log.release_again.load(Ordering::SeqCst)
            });
            if work_left {
                self.idle.store(false, Ordering::SeqCst);
                logs = self.wake.wait_timeout(logs, next_due).unwrap_or_else(|p| p.into_inner()).0;
            } else {
                logs = self.wake.wait(logs).unwrap_or_else(|p| p.into_inner());
                self.idle.store(false, Ordering::SeqCst);
            }
        }
    }
}
