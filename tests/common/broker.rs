//! A real `strata serve` process for end-to-end MQTT tests: started on a free loopback port
//! (the broker binds port 0 and prints the address it got) with its own data directory, and
//! killed when dropped.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running broker.
pub struct ServeProcess {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// The lines the broker printed after its first one.
    more_lines: mpsc::Receiver<String>,
}

impl ServeProcess {
    /// Starts `strata serve --mqtt 127.0.0.1:0 --data-dir <data_dir>` and waits until it
    /// prints the address it listens on.
    pub fn start(data_dir: &Path) -> ServeProcess {
        Self::start_with(data_dir, &[])
    }

    /// As [`ServeProcess::start`], with more arguments (e.g. `--config`).
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> ServeProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["serve", "--mqtt", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start strata serve");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let lines = BufReader::new(stdout).lines();
            // Keep draining so the broker never blocks on a full pipe.
            for line in lines.map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("strata serve did not report its address");
            }
        };
        let addr = line
            .strip_prefix("strata: MQTT listening on ")
            .and_then(|rest| rest.split(',').next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from strata serve: {line:?}"));
        ServeProcess { child: Some(child), addr, data_dir: data_dir.to_path_buf(), more_lines: rx }
    }

    /// Waits for the line starting `strata: MQTT over WebSocket listening on ws://` (printed
    /// with `--ws`) and returns the address in it.
    pub fn ws_addr(&self) -> SocketAddr {
        let prefix = "strata: MQTT over WebSocket listening on ws://";
        loop {
            let line = self.more_lines.recv_timeout(Duration::from_secs(60)).expect("the WebSocket line");
            if let Some(rest) = line.strip_prefix(prefix) {
                let addr = rest.strip_suffix("/mqtt").unwrap_or(rest);
                return addr.parse().unwrap_or_else(|_| panic!("bad WebSocket line {line:?}"));
            }
        }
    }

    /// Waits for the line `strata: HTTP listening on <addr>` (printed with `--http`) and
    /// returns the address.
    pub fn http_addr(&self) -> SocketAddr {
        let prefix = "strata: HTTP listening on ";
        loop {
            let line = self.more_lines.recv_timeout(Duration::from_secs(60)).expect("the HTTP line");
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.parse().unwrap_or_else(|_| panic!("bad HTTP line {line:?}"));
            }
        }
    }

    /// Waits for the line `strata: gRPC listening on <addr>` (printed with `--grpc`) and
    /// returns the address.
    pub fn grpc_addr(&self) -> SocketAddr {
        let prefix = "strata: gRPC listening on ";
        loop {
            let line = self.more_lines.recv_timeout(Duration::from_secs(60)).expect("the gRPC line");
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.parse().unwrap_or_else(|_| panic!("bad gRPC line {line:?}"));
            }
        }
    }

    /// Waits for the next line starting with `prefix` (lines before it are passed over) and
    /// returns the rest of it.
    pub fn line_after(&self, prefix: &str) -> String {
        loop {
            let line =
                self.more_lines.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("no {prefix:?} line"));
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("broker is running").id()
    }

    /// SIGKILL: no clean shutdown, no final flush.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit status (the broker closes its log cleanly).
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("broker is running");
        let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        for _ in 0..600 {
            if let Some(status) = child.try_wait().expect("wait for strata") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        panic!("strata serve did not stop on SIGTERM");
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
