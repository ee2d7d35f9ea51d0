//! `[runtime] idle_poll_ms`: a real broker's poller threads run at idle priority, one per CPU,
//! spin while the broker has been woken within the window, and sleep once it has not. Read
//! from the broker's own threads in /proc: their policy and the CPU time they use.
//! In a binary of its own, so no other test's load competes with the idle-priority pollers.

#[path = "common/broker.rs"]
mod broker;

use std::process::Command;
use std::time::Duration;

use broker::ServeProcess;

const WINDOW_MS: u64 = 300;
/// /proc/<pid>/task/<tid>/stat's 41st field.
const SCHED_IDLE: u32 = 5;

/// (name, policy, utime + stime in clock ticks) of each thread of `pid` whose name starts with
/// `prefix`.
fn threads(pid: u32, prefix: &str) -> Vec<(String, u32, u64)> {
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
        let field = |n: usize| -> u64 { fields[n - 3].parse().expect("a numeric stat field") };
        found.push((name, field(41) as u32, field(14) + field(15)));
    }
    found.sort();
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

fn poller_ticks(pid: u32) -> u64 {
    threads(pid, "strata-poll-").iter().map(|(_, _, ticks)| ticks).sum()
}

/// Clock ticks the pollers used over `span`.
fn ticks_over(pid: u32, span: Duration) -> u64 {
    let before = poller_ticks(pid);
    std::thread::sleep(span);
    poller_ticks(pid) - before
}

fn publish(broker: &ServeProcess) {
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string(), "-q", "1", "-t", "poll/wake", "-m", "x"])
        .status()
        .expect("run mosquitto_pub");
    assert!(status.success(), "mosquitto_pub failed");
}

#[test]
fn pollers_spin_at_idle_priority_after_a_wake_and_sleep_after_the_window() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("strata.toml");
    // $SYS off: its refresh would wake the broker, and the pollers, at its own times.
    let text = format!("[mqtt]\nsys_interval_secs = 0\n[runtime]\nidle_poll_ms = {WINDOW_MS}\n");
    std::fs::write(&config, text).expect("write config");
    let broker = ServeProcess::start_with(&dir.path().join("data"), &["--config", config.to_str().expect("UTF-8")]);
    let pid = broker.pid();

    let cpus = allowed_cpus(pid);
    let pollers = threads(pid, "strata-poll-");
    assert_eq!(pollers.len(), cpus, "one poller per CPU: {pollers:?}");
    for (name, policy, _) in &pollers {
        assert_eq!(*policy, SCHED_IDLE, "{name} must run at SCHED_IDLE, never compete with real work");
    }

    // Started active: after the window with no client the pollers sleep.
    std::thread::sleep(Duration::from_millis(WINDOW_MS + 700));
    let idle = ticks_over(pid, Duration::from_secs(1));
    assert!(idle <= 2, "pollers used {idle} ticks in 1 s with no client");

    // Publishing every 100 ms keeps waking the broker: the pollers spin (up to 100 ticks a
    // second per CPU; they yield to every other thread, so less on a busy machine).
    let before = poller_ticks(pid);
    for _ in 0..10 {
        publish(&broker);
        std::thread::sleep(Duration::from_millis(100));
    }
    let busy = poller_ticks(pid) - before;
    assert!(busy >= 20, "pollers used only {busy} ticks while the broker was woken every 100 ms");

    // Quiet again: they sleep once the window has passed.
    std::thread::sleep(Duration::from_millis(WINDOW_MS + 700));
    let idle = ticks_over(pid, Duration::from_secs(1));
    assert!(idle <= 2, "pollers used {idle} ticks in 1 s after the traffic stopped");
}

#[test]
fn without_the_key_no_poller_starts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = ServeProcess::start(&dir.path().join("data"));
    assert!(threads(broker.pid(), "strata-poll-").is_empty());
}
