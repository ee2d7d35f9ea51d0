//! `[runtime] idle_poll_ms`: a real broker's poller threads run at idle priority, one per CPU,
//! spin while the broker has been woken within the window, and sleep once it has not. Read
//! from the broker's own threads in /proc: their scheduling policy and their state.
//!
//! Issue 18: this test used to count the pollers' CPU ticks, and a loaded machine broke it:
//! a `SCHED_IDLE` thread gets next to no CPU while anything else wants it, so "the pollers
//! spun for 20 ticks" failed, and the timed sleeps around it were guesses. It now reads the
//! thread state instead, which load cannot change: a spinning poller is runnable (`R`) even
//! when it is not given a CPU, and a parked one is blocked on its condition variable (`S`),
//! which takes no CPU by construction. What the spinning costs in CPU time is a measurement,
//! not a behaviour: `benches/run-scenarios.sh` reports the pollers' share of the broker's CPU.

#[path = "common/broker.rs"]
mod broker;

use std::time::{Duration, Instant};

use broker::ServeProcess;

const WINDOW_MS: u64 = 300;
/// /proc/<pid>/task/<tid>/stat's 41st field.
const SCHED_IDLE: u32 = 5;
/// How long a state change may take. Generous: a `SCHED_IDLE` poller on a busy machine waits
/// for a CPU before it can see that its window has passed.
const PATIENCE: Duration = Duration::from_secs(60);

/// One poller thread as /proc shows it.
#[derive(Debug)]
struct Poller {
    name: String,
    /// `R` running or runnable, `S` sleeping, ...
    state: char,
    policy: u32,
}

/// The threads of `pid` whose name starts with `prefix`.
fn threads(pid: u32, prefix: &str) -> Vec<Poller> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).expect("read the broker's threads") {
        let task = entry.expect("a thread entry").path();
        let Ok(name) = std::fs::read_to_string(task.join("comm")) else { continue };
        let name = name.trim().to_owned();
        if !name.starts_with(prefix) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(task.join("stat")) else { continue };
        // Fields after the name in parentheses, which may hold spaces: field 3 onward.
        let after_name = &stat[stat.rfind(')').expect("stat has the name in parentheses") + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let state = fields[0].chars().next().expect("a state letter");
        let policy = fields[41 - 3].parse().expect("a numeric policy");
        found.push(Poller { name, state, policy });
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// How many CPUs `pid` may run on: its `Cpus_allowed_list` ("0-1", "0,2-3").
fn allowed_cpus(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read the broker's status");
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .expect("status has Cpus_allowed_list")
        .trim();
    list.split(',')
        .map(|range| match range.split_once('-') {
            Some((first, last)) => {
                last.parse::<usize>().expect("a CPU number") - first.parse::<usize>().expect("a CPU number") + 1
            }
            None => 1,
        })
        .sum()
}

/// Wakes the broker: it accepts a connection (which then closes at once).
fn wake(broker: &ServeProcess) {
    drop(std::net::TcpStream::connect(broker.addr).expect("connect to the broker"));
}

/// Waits until every poller is in `state` (`'S'` parked, `'R'` spinning), calling `between`
/// between looks; panics after `PATIENCE` naming `what`.
fn until_all(pid: u32, state: char, what: &str, mut between: impl FnMut()) {
    let deadline = Instant::now() + PATIENCE;
    for _ in 0..10_000 {
        let pollers = threads(pid, "strata-poll-");
        if !pollers.is_empty() && pollers.iter().all(|p| p.state == state) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not every poller in state {state} after {PATIENCE:?}: {pollers:?}");
        between();
    }
    panic!("{what}: not every poller in state {state}");
}

#[test]
fn pollers_spin_at_idle_priority_after_a_wake_and_sleep_after_the_window() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("strata.toml");
    // $SYS off: its refresh would wake the broker, and the pollers, at its own times.
    let text = format!("[mqtt]\nsys_interval_secs = 0\n[runtime]\nidle_poll_ms = {WINDOW_MS}\n");
    std::fs::write(&config, text).expect("write config");
    // No admin API nor HTTP endpoint: nothing but this test's connections wakes the broker.
    let broker = ServeProcess::start_with(
        &dir.path().join("data"),
        &["--config", config.to_str().expect("UTF-8"), "--grpc", "off", "--http", "off"],
    );
    let pid = broker.pid();

    let cpus = allowed_cpus(pid);
    let pollers = threads(pid, "strata-poll-");
    assert_eq!(pollers.len(), cpus, "one poller per CPU: {pollers:?}");
    for poller in &pollers {
        assert_eq!(poller.policy, SCHED_IDLE, "{} must run at SCHED_IDLE, never compete with real work", poller.name);
    }

    // Started active: with no client, once the window has passed, every poller parks.
    let idle_look = || std::thread::sleep(Duration::from_millis(20));
    until_all(pid, 'S', "with no client", idle_look);

    // A connection wakes the broker, which wakes the pollers: they spin. Connecting on, so
    // the window cannot pass unseen between two looks on a slow machine.
    until_all(pid, 'R', "while clients connect", || wake(&broker));

    // Quiet again: they park once the window has passed.
    until_all(pid, 'S', "after the traffic stopped", idle_look);
}

#[test]
fn without_the_key_no_poller_starts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = ServeProcess::start(&dir.path().join("data"));
    assert!(threads(broker.pid(), "strata-poll-").is_empty());
}
