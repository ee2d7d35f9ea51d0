//! Issue 18: right after `strata serve` with no flags, `strata stream list` (no `--server`)
//! and the HTTP endpoint answer: the admin API listens on 127.0.0.1:7070 and the HTTP
//! endpoint on 127.0.0.1:9090 unless the config or a flag says otherwise, and `off` turns
//! either off.
//!
//! Fixed ports and a test suite that starts many brokers at once: how this cannot collide.
//! - Only `a_broker_with_no_listener_flags_answers_on_the_default_ports` binds 7070 and 9090.
//!   Every other broker of the suite gets port 0 or `off` for both listeners
//!   (`tests/common/broker.rs`, `serve_refusing` in `tests/common/mod.rs`, the hand-started
//!   broker of `serve_log_format_json.rs`), and Linux never hands out a port below
//!   `ip_local_port_range` (32768 and up) for port 0, so none of them lands on 7070 or 9090.
//! - Other runs of this same test on the machine (another checkout, another `cargo test`)
//!   wait for an exclusive `flock` on one lock file in the temp directory, held until the
//!   broker has exited and released the ports. The kernel drops the lock when its holder
//!   dies, so a killed run cannot block the next one, and there is no retry nor sleep.
//! - A process outside Strata holding 7070 or 9090 (a Prometheus on 9090) makes the test
//!   fail with the broker's error naming the address and the key: on such a machine the
//!   defaults do not work, and that is what a new user there would see too. It is not
//!   skipped, since a test that can silently not run asserts nothing.
//!
//! The rest needs no fixed port: the defaults as `--print-config` prints them (the values
//! `serve` binds, from the same code path) and `off`, in the file and as a flag.

#[path = "common/broker.rs"]
mod broker;
mod common;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use broker::ServeProcess;
use common::{code, stderr, stdout, strata};

const DEFAULT_GRPC: &str = "127.0.0.1:7070";
const DEFAULT_HTTP: &str = "127.0.0.1:9090";

/// The exclusive lock every run of the default-port test takes, across processes.
fn lock_default_ports() -> File {
    let path = std::env::temp_dir().join("strata-test-default-ports-7070-9090.lock");
    // Read-only if another user created it: flock works on any open file.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .or_else(|_| File::open(&path))
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    file.lock().unwrap_or_else(|e| panic!("locking {}: {e}", path.display()));
    file
}

/// The status line and body of `GET path` on `addr`.
fn get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the response");
    response
}

/// `[section]`'s `listen = ...` line of `--print-config`'s output.
fn listen_of(printed: &str, section: &str) -> String {
    let after = printed.split_once(&format!("\n[{section}]\n")).unwrap_or_else(|| panic!("no [{section}]: {printed}"));
    after.1.lines().next().expect("a line after the header").to_owned()
}

#[test]
fn the_defaults_are_on_loopback_and_the_cli_calls_the_same_address() {
    let output = strata(&["serve", "--print-config"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let printed = stdout(&output);
    assert_eq!(listen_of(&printed, "grpc"), format!("listen = \"{DEFAULT_GRPC}\""));
    assert_eq!(listen_of(&printed, "http"), format!("listen = \"{DEFAULT_HTTP}\""));
    // `strata stream ...` without `--server` calls the address `serve` listens on.
    let help = strata(&["stream", "list", "--help"]);
    assert!(stdout(&help).contains(&format!("[default: {DEFAULT_GRPC}]")), "{}", stdout(&help));
}

#[test]
fn off_in_the_file_or_as_a_flag_turns_a_listener_off() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, "[grpc]\nlisten = \"off\"\n").unwrap();
    let config = config.to_str().unwrap();
    let output = strata(&["serve", "--config", config, "--http", "off", "--print-config"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let printed = stdout(&output);
    assert_eq!(listen_of(&printed, "grpc"), "listen = \"off\"");
    assert_eq!(listen_of(&printed, "http"), "listen = \"off\"");

    // A real broker with both off says so in its start-up lines, and binds neither.
    let mut broker =
        ServeProcess::start_on_default_ports(&dir.path().join("data"), &["--config", config, "--http", "off"]);
    assert_eq!(broker.listeners(), (None, None));
    assert!(broker.stop().success());

    // A flag wins over the file, in both directions.
    let output = strata(&["serve", "--config", config, "--grpc", "127.0.0.1:0", "--print-config"]);
    assert_eq!(listen_of(&stdout(&output), "grpc"), "listen = \"127.0.0.1:0\"");
    let output = strata(&["serve", "--grpc", "nowhere", "--print-config"]);
    assert_eq!(code(&output), 2, "{}", stderr(&output));
    assert!(stderr(&output).contains("--grpc"), "{}", stderr(&output));
}

#[test]
fn a_broker_with_no_listener_flags_answers_on_the_default_ports() {
    let _lock = lock_default_ports();
    let dir = tempfile::tempdir().unwrap();
    let mut broker = ServeProcess::start_on_default_ports(&dir.path().join("data"), &[]);
    let (http, grpc) = broker.listeners();
    assert_eq!(http, Some(DEFAULT_HTTP.parse().unwrap()), "the HTTP start-up line");
    assert_eq!(grpc, Some(DEFAULT_GRPC.parse().unwrap()), "the gRPC start-up line");

    // What a new user types next: no `--server`.
    let listed = strata(&["stream", "list", "--output", "json"]);
    assert_eq!(code(&listed), 0, "strata stream list: {}", stderr(&listed));
    let streams: serde_json::Value = serde_json::from_str(&stdout(&listed)).expect("JSON");
    assert!(
        streams.to_string().contains("\"name\":\"default\""),
        "the default stream of the broker just started: {streams}"
    );
    let ready = get(DEFAULT_HTTP.parse().unwrap(), "/ready");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");

    // The ports are free again before the lock is released.
    assert!(broker.stop().success());
}
