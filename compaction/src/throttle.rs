//! A byte-rate limiter shared by the cleaner threads, so cleaning never starves appends of
//! disk bandwidth.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// Limits the rate at which bytes are consumed; `None` means unlimited.
pub struct Throttle {
    bytes_per_sec: Option<u64>,
    window: Mutex<(Instant, u64)>,
}

/// The window after which the throttle forgets history, so an idle period is not "saved up".
const WINDOW: Duration = Duration::from_secs(1);

impl Throttle {
    /// A throttle at `bytes_per_sec`, or none.
    pub fn new(bytes_per_sec: Option<u64>) -> Self {
        Throttle { bytes_per_sec, window: Mutex::new((Instant::now(), 0)) }
    }

    /// Accounts for `bytes` and sleeps as long as needed to stay under the rate.
    pub fn consume(&self, bytes: u64) {
        let Some(rate) = self.bytes_per_sec else { return };
        let sleep = {
            let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
            if window.0.elapsed() > WINDOW {
                *window = (Instant::now(), 0);
            }
            window.1 += bytes;
            let due = Duration::from_secs_f64(window.1 as f64 / rate as f64);
            due.saturating_sub(window.0.elapsed())
        };
        if !sleep.is_zero() {
            std::thread::sleep(sleep);
        }
    }
}
