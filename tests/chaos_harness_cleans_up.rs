//! Issue 21's chaos harness cleans up after itself: dropping the network kills what runs in
//! its namespaces and deletes them, also when the test panics, and a new network first deletes
//! what a crashed run (a process that is gone) left behind.

#[path = "common/netns.rs"]
mod netns;

use std::path::Path;

use netns::Net;

fn namespace_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Whether `pid` is still a live process (a zombie waiting for its parent counts as gone).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()) != Some("Z"))
}

#[test]
fn dropping_the_network_kills_its_brokers_and_deletes_its_namespaces() {
    let Some(net) = Net::new(2) else { return };
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = [net.node(0), net.node(1), net.client()].iter().map(|h| net.namespace(*h)).collect();
    let broker = net.serve(net.node(1), &dir.path().join("data"), "");
    let pid = broker.pid();
    net.cut(net.node(0));
    assert!(names.iter().all(|n| namespace_exists(n)), "{names:?}");
    assert!(running(pid));

    // The network goes first, with the broker still running in it.
    drop(net);
    for name in &names {
        assert!(!namespace_exists(name), "{name} is still there");
    }
    assert!(!running(pid), "the broker (pid {pid}) survived its namespace");
    drop(broker);
}

#[test]
fn a_panicking_test_leaves_no_namespace() {
    if Net::new(1).is_none() {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let net = Net::new(1).expect("checked above");
        tx.send(net.namespace(net.client())).unwrap();
        panic!("a test fails with its network up");
    })
    .join();
    assert!(outcome.is_err());
    let name = rx.recv().unwrap();
    assert!(!namespace_exists(&name), "{name} outlived the panic");
}

#[test]
fn a_new_network_sweeps_what_a_dead_run_left() {
    if Net::new(1).is_none() {
        return;
    }
    // A pid that no process has: a run that crashed before its Drop.
    let dead = (4_000_000..4_100_000).find(|pid| !Path::new(&format!("/proc/{pid}")).exists()).unwrap();
    let leftover = format!("strata-chaos-9-{dead}-0-hub");
    let status = std::process::Command::new("ip").args(["netns", "add", &leftover]).status().unwrap();
    assert!(status.success());
    let first = Net::new(1).expect("root, checked above");
    assert!(!namespace_exists(&leftover), "{leftover} was not swept");
    // A live run's namespaces are left alone (this process's own, here).
    let _second = Net::new(1).expect("root, checked above");
    let mine = first.namespace(first.client());
    assert!(namespace_exists(&mine), "{mine} was swept while its run was alive");
}
