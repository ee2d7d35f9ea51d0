//! A real `strata serve` process for end-to-end MQTT tests: started on a free loopback port
//! (the broker binds port 0 and prints the address it got) with its own data directory, and
//! killed when dropped.
//!
//! The broker's admin API and HTTP endpoint are on by default at the fixed ports
//! 127.0.0.1:7070 and 127.0.0.1:9090 (issue 18). Many brokers run at once here, so unless a
//! test passes `--grpc` or `--http` itself, each one gets port 0 for both (a free port, never
//! 7070 or 9090: Linux hands out port 0 binds from `ip_local_port_range`, 32768 and up).
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
    /// From the start-up lines: where each optional listener is, `None` when off.
    ws: Option<SocketAddr>,
    tls: Option<SocketAddr>,
    wss: Option<SocketAddr>,
    http: Option<SocketAddr>,
    grpc: Option<SocketAddr>,
    /// The lines the broker printed after its start-up lines.
    more_lines: mpsc::Receiver<String>,
}

/// The arguments of `strata serve` for a test broker: free ports for the MQTT listener and,
/// unless `extra` names them, for the admin API and HTTP endpoint.
pub fn serve_args(data_dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["serve", "--mqtt", "127.0.0.1:0", "--data-dir"].map(String::from).to_vec();
    args.push(data_dir.to_str().expect("temp paths are UTF-8").to_owned());
    for flag in ["--grpc", "--http"] {
        if !extra.contains(&flag) {
            args.extend([flag.to_owned(), "127.0.0.1:0".to_owned()]);
        }
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// The address after `prefix` in `line`, if the line starts with it.
fn addr_after(line: &str, prefix: &str) -> Option<SocketAddr> {
    let rest = line.strip_prefix(prefix)?;
    Some(rest.parse().unwrap_or_else(|_| panic!("bad start-up line {line:?}")))
}

impl ServeProcess {
    /// Starts `strata serve --mqtt 127.0.0.1:0 --data-dir <data_dir>` (and port 0 for the
    /// admin API and HTTP endpoint) and waits until it prints its start-up lines.
    pub fn start(data_dir: &Path) -> ServeProcess {
        Self::start_with(data_dir, &[])
    }

    /// As [`ServeProcess::start`], with more arguments (e.g. `--config`).
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> ServeProcess {
        Self::spawn(data_dir, serve_args(data_dir, extra))
    }

    /// `strata serve --mqtt 127.0.0.1:0 --data-dir <data_dir> <extra>`, nothing more: the
    /// admin API and HTTP endpoint where the config and `extra` put them, by default on their
    /// fixed ports. Only for tests of those defaults (see `tests/issue18_admin_and_http_on_by_default.rs`).
    pub fn start_on_default_ports(data_dir: &Path, extra: &[&str]) -> ServeProcess {
        let mut args: Vec<String> = ["serve", "--mqtt", "127.0.0.1:0", "--data-dir"].map(String::from).to_vec();
        args.push(data_dir.to_str().expect("temp paths are UTF-8").to_owned());
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn(data_dir, args)
    }

    fn spawn(data_dir: &Path, args: Vec<String>) -> ServeProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(args)
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
        let mut next_line = |what: &str| match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("strata serve did not print {what} (its stderr is above)");
            }
        };
        let line = next_line("its MQTT address");
        let addr = line
            .strip_prefix("strata: MQTT listening on ")
            .and_then(|rest| rest.split(',').next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from strata serve: {line:?}"));
        // Then, in this order and all printed at once: the WebSocket line (only with `--ws`),
        // the TLS and WebSocket-over-TLS lines (only with `mqtt.tls_listen`,
        // `mqtt.wss_listen`), the HTTP line and the gRPC line (an address, or "off").
        let (mut ws, mut tls, mut wss, mut http) = (None, None, None, None);
        let grpc = loop {
            let line = next_line("its gRPC line");
            if let Some(rest) = line.strip_prefix("strata: MQTT over WebSocket listening on ws://") {
                ws = addr_after(rest.strip_suffix("/mqtt").unwrap_or(rest), "");
            } else if let Some(addr) = addr_after(&line, "strata: MQTT over TLS listening on ") {
                tls = Some(addr);
            } else if let Some(rest) = line.strip_prefix("strata: MQTT over WebSocket over TLS listening on wss://") {
                wss = addr_after(rest.strip_suffix("/mqtt").unwrap_or(rest), "");
            } else if let Some(addr) = addr_after(&line, "strata: HTTP listening on ") {
                http = Some(addr);
            } else if let Some(addr) = addr_after(&line, "strata: gRPC listening on ") {
                break Some(addr);
            } else if line == "strata: gRPC off" {
                break None;
            } else {
                assert_eq!(line, "strata: HTTP off", "unexpected start-up line");
            }
        };
        ServeProcess {
            child: Some(child),
            addr,
            data_dir: data_dir.to_path_buf(),
            ws,
            tls,
            wss,
            http,
            grpc,
            more_lines: rx,
        }
    }

    /// The MQTT-over-WebSocket listener's address (started with `--ws`).
    pub fn ws_addr(&self) -> SocketAddr {
        self.ws.expect("the broker was started with --ws")
    }

    /// The MQTT-over-TLS listener's address (`[mqtt] tls_listen`).
    pub fn tls_addr(&self) -> SocketAddr {
        self.tls.expect("the broker was started with mqtt.tls_listen")
    }

    /// The MQTT-over-WebSocket-over-TLS listener's address (`[mqtt] wss_listen`).
    pub fn wss_addr(&self) -> SocketAddr {
        self.wss.expect("the broker was started with mqtt.wss_listen")
    }

    /// The HTTP endpoint's address (`/health`, `/ready`, `/metrics`).
    pub fn http_addr(&self) -> SocketAddr {
        self.http.expect("the broker's HTTP endpoint is on")
    }

    /// The gRPC admin API's address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.expect("the broker's admin API is on")
    }

    /// (HTTP endpoint, gRPC admin API) as the start-up lines gave them; `None`: off.
    pub fn listeners(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        (self.http, self.grpc)
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
