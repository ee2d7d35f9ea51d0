//! One background thread per process that fsyncs logs under `FlushPolicy::Interval` (and
//! persists index tails under `Always`) on their interval, and about once a second releases
//! the segment pages readers mapped (see `Shared::release_mapped_pages`), whatever the flush
//! policy. Logs register a weak reference, so a dropped log simply falls out of the list.

use std::{
    sync::{Arc, Condvar, Mutex, OnceLock, Weak, atomic::Ordering},
    time::{Duration, Instant},
};

use crate::log::Shared;

struct Flusher {
    logs: Mutex<Vec<Weak<Shared>>>,
    wake: Condvar,
    epoch: Instant,
}

/// How often mapped segment pages are released.
const RELEASE_EVERY: Duration = Duration::from_secs(1);

static FLUSHER: OnceLock<Arc<Flusher>> = OnceLock::new();

pub(crate) fn register(log: &Arc<Shared>) {
    let flusher = FLUSHER.get_or_init(|| {
        let flusher = Arc::new(Flusher { logs: Mutex::new(Vec::new()), wake: Condvar::new(), epoch: Instant::now() });
        let background = Arc::clone(&flusher);
        std::thread::Builder::new()
            .name("strata-log-flusher".into())
            .spawn(move || background.run())
            .expect("spawning the flusher thread");
        flusher
    });
    let now = flusher.epoch.elapsed().as_millis() as i64;
    log.last_flush_ms.store(now, Ordering::Relaxed);
    flusher.logs.lock().unwrap_or_else(|p| p.into_inner()).push(Arc::downgrade(log));
    flusher.wake.notify_one();
}

impl Flusher {
    fn run(&self) {
        let mut logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
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
                    if log.is_dirty()
                        && let Err(e) = log.flush_now(true)
                    {
                        tracing::error!(error = %e, "background fsync failed");
                    }
                    log.last_flush_ms.store(now.as_millis() as i64, Ordering::Relaxed);
                    next_due = next_due.min(interval);
                } else {
                    next_due = next_due.min(due - now);
                }
            }
            if now >= last_release + RELEASE_EVERY {
                for log in &live {
                    log.release_mapped_pages();
                }
                last_release = self.epoch.elapsed();
            }
            next_due = next_due.min((last_release + RELEASE_EVERY).saturating_sub(self.epoch.elapsed()));
            // Drop the strong references before sleeping, so a log can close while we wait.
            drop(live);
            logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
            logs = self.wake.wait_timeout(logs, next_due).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}
