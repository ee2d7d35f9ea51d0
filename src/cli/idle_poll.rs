//! `[runtime] idle_poll_ms`: keeps the broker's CPUs out of the halt state for a while after
//! the broker last woke up.
//!
//! Why: in a virtual machine whose idle loop halts the vCPU (no cpuidle driver: `/sys/devices/
//! system/cpu/cpuidle/current_driver` reads `none`), waking a halted vCPU goes through the
//! hypervisor, about 25 µs on the machines benches/README.md describes. A message from one
//! client to another through the broker crosses two such wakes at light load. Here one thread
//! per CPU, at `SCHED_IDLE` priority, spins instead: the CPU never halts, and any thread that
//! becomes runnable on it (the broker's, or anyone's) preempts the spinner at once. This is the
//! kernel's `idle=poll`, limited to the broker's CPUs and to `idle_poll_ms` after the runtime
//! last woke. It costs those CPUs' idle time, so it is off by default.
//!
//! The core is [`Activity`], a three-state machine the runtime's wake hook and the pollers
//! share; [`IdlePollers`] is the thread shell around it.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The runtime woke since a poller last looked.
const ACTIVE: u8 = 0;
/// A poller looked and cleared `ACTIVE`; the pollers spin until the window passes.
const QUIET: u8 = 1;
/// The window passed with no wake: the pollers sleep until the next one.
const PARKED: u8 = 2;

/// Spins between two looks at the clock: a few µs, so a window ends within a few µs of its
/// length and the loop does not call the clock on every turn.
const SPINS_PER_CHECK: u32 = 4096;

/// When the broker last woke, and whether the pollers sleep.
///
/// Invariant: the state is `PARKED` only after a poller saw `QUIET` last for the whole window,
/// and a wake that finds `PARKED` notifies the pollers under the lock they wait with, so no
/// wake is lost between a poller's look and its wait.
pub struct Activity {
    state: AtomicU8,
    /// Milliseconds from `start` to the last time a poller saw `ACTIVE`.
    last_seen_ms: AtomicU64,
    start: Instant,
    window: Duration,
    sleeping: Mutex<()>,
    woken: Condvar,
    stopped: AtomicBool,
}

impl Activity {
    /// Starts active: the broker just woke to start.
    pub fn new(window: Duration) -> Activity {
        Activity {
            state: AtomicU8::new(ACTIVE),
            last_seen_ms: AtomicU64::new(0),
            start: Instant::now(),
            window,
            sleeping: Mutex::new(()),
            woken: Condvar::new(),
            stopped: AtomicBool::new(false),
        }
    }

    /// Called on every wake of a runtime thread. A load when the pollers already spin and the
    /// flag is set; a store once per window otherwise; a notify only after a quiet spell.
    pub fn note_wake(&self) {
        if self.state.load(Ordering::Relaxed) == ACTIVE {
            return;
        }
        if self.state.swap(ACTIVE, Ordering::AcqRel) == PARKED {
            let _guard = self.sleeping.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            self.woken.notify_all();
        }
    }

    /// A poller's periodic look: moves `ACTIVE` to `QUIET` (noting the time) and `QUIET` to
    /// `PARKED` once the window has passed since. Returns whether to keep spinning.
    fn look(&self, now: Instant) -> bool {
        let now_ms = now.saturating_duration_since(self.start).as_millis() as u64;
        match self.state.load(Ordering::Acquire) {
            ACTIVE => {
                // The time first: a poller that sees QUIET must see the time that came with it,
                // or it would park on the previous spell's. The latest time wins.
                self.last_seen_ms.fetch_max(now_ms, Ordering::AcqRel);
                let _ = self.state.compare_exchange(ACTIVE, QUIET, Ordering::AcqRel, Ordering::Acquire);
                true
            }
            QUIET => {
                let quiet_for = now_ms.saturating_sub(self.last_seen_ms.load(Ordering::Acquire));
                if quiet_for < self.window.as_millis() as u64 {
                    return true;
                }
                // A wake between the load and here leaves ACTIVE, and the CAS fails: keep spinning.
                self.state.compare_exchange(QUIET, PARKED, Ordering::AcqRel, Ordering::Acquire).is_err()
            }
            _ => false,
        }
    }

    /// Blocks while the state is `PARKED`. Returns false once told to stop.
    fn sleep_until_woken(&self) -> bool {
        let mut guard = self.sleeping.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        while self.state.load(Ordering::Acquire) == PARKED && !self.stopped.load(Ordering::Acquire) {
            guard = self.woken.wait(guard).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        !self.stopped.load(Ordering::Acquire)
    }

    fn stopping(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// Tells every poller to return, waking the sleeping ones.
    fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        let _guard = self.sleeping.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.woken.notify_all();
    }
}

/// The poller threads; dropping this stops and joins them.
pub struct IdlePollers {
    activity: Arc<Activity>,
    threads: Vec<JoinHandle<()>>,
}

impl IdlePollers {
    /// One poller per CPU the process may run on, each pinned to its CPU.
    pub fn start(activity: Arc<Activity>) -> std::io::Result<IdlePollers> {
        let mut threads = Vec::new();
        for cpu in allowed_cpus()? {
            let activity = Arc::clone(&activity);
            let thread =
                std::thread::Builder::new().name(format!("strata-poll-{cpu}")).spawn(move || poll(&activity, cpu))?;
            threads.push(thread);
        }
        Ok(IdlePollers { activity, threads })
    }
}

impl Drop for IdlePollers {
    fn drop(&mut self) {
        self.activity.stop();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A poller: idle priority first (it must never compete with real work), then spin while the
/// broker is active and sleep while it is not.
fn poll(activity: &Activity, cpu: usize) {
    if let Err(error) = become_idle_priority(cpu) {
        tracing::warn!(cpu, %error, "runtime.idle_poll_ms: cannot run a poller at idle priority; this CPU is not polled");
        return;
    }
    let mut spins: u32 = 0;
    while !activity.stopping() {
        // No `spin_loop` hint: a PAUSE loop lets the hypervisor deschedule the vCPU (pause-loop
        // exiting), which is the halt this thread is here to avoid.
        spins = std::hint::black_box(spins).wrapping_add(1);
        if spins.is_multiple_of(SPINS_PER_CHECK) && !activity.look(Instant::now()) && !activity.sleep_until_woken() {
            return;
        }
    }
}

/// Pins the calling thread to `cpu` and moves it to `SCHED_IDLE`.
fn become_idle_priority(cpu: usize) -> std::io::Result<()> {
    // SAFETY: `set` is a plain bitmask initialised by CPU_ZERO; pid 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The CPUs in the process's affinity mask.
fn allowed_cpus() -> std::io::Result<Vec<usize>> {
    // SAFETY: `set` is a plain bitmask the kernel fills; pid 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok((0..libc::CPU_SETSIZE as usize).filter(|&cpu| libc::CPU_ISSET(cpu, &set)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spins_through_the_window_then_parks_and_a_wake_resumes() {
        let activity = Activity::new(Duration::from_millis(100));
        let t0 = activity.start;
        assert!(activity.look(t0 + Duration::from_millis(5)), "active: spin, and the quiet spell starts");
        assert!(activity.look(t0 + Duration::from_millis(104)), "quiet for 99 ms: still spinning");
        assert!(!activity.look(t0 + Duration::from_millis(105)), "quiet for the window: park");
        assert_eq!(activity.state.load(Ordering::Relaxed), PARKED);
        activity.note_wake();
        assert_eq!(activity.state.load(Ordering::Relaxed), ACTIVE);
        assert!(activity.look(t0 + Duration::from_millis(300)), "woken: spin again");
        assert!(activity.look(t0 + Duration::from_millis(399)));
    }

    #[test]
    fn a_wake_during_the_quiet_spell_restarts_the_window() {
        let activity = Activity::new(Duration::from_millis(100));
        let t0 = activity.start;
        assert!(activity.look(t0));
        activity.note_wake();
        assert!(activity.look(t0 + Duration::from_millis(90)), "the wake is seen: the spell restarts at 90");
        assert!(activity.look(t0 + Duration::from_millis(150)), "60 ms quiet, not 150");
        assert!(!activity.look(t0 + Duration::from_millis(190)));
    }

    /// A thread in `sleep_until_woken`, given 20 ms to get there.
    fn sleep_in_a_thread(activity: &Arc<Activity>) -> std::thread::JoinHandle<bool> {
        let activity = Arc::clone(activity);
        let sleeper = std::thread::spawn(move || activity.sleep_until_woken());
        std::thread::sleep(Duration::from_millis(20));
        sleeper
    }

    #[test]
    fn a_parked_poller_is_woken_by_a_wake_and_by_stop() {
        let activity = Arc::new(Activity::new(Duration::from_millis(1)));
        let t0 = activity.start;
        assert!(activity.look(t0));
        assert!(!activity.look(t0 + Duration::from_millis(2)));
        let sleeper = sleep_in_a_thread(&activity);
        activity.note_wake();
        assert!(sleeper.join().unwrap(), "woken by the wake, not stopped");
        assert!(activity.look(t0 + Duration::from_millis(10)));
        assert!(!activity.look(t0 + Duration::from_millis(20)));
        let sleeper = sleep_in_a_thread(&activity);
        activity.stop();
        assert!(!sleeper.join().unwrap(), "told to stop");
    }
}
