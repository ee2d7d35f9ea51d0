//! `mosquitto_sub` and `mosquitto_pub` (apt `mosquitto-clients`) driven from tests: a
//! subscriber that runs in the background and hands over each message it prints, and a
//! one-shot publisher. Every wait is bounded.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(30);

/// A running `mosquitto_sub -v`, killed when dropped.
pub struct MosquittoSub {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl MosquittoSub {
    /// Starts `mosquitto_sub -h 127.0.0.1 -p PORT -t TOPIC -d -v ARGS` and waits for its
    /// SUBACK (`-d` prints it; stdbuf keeps the piped stdout line-buffered), so a publish
    /// after this returns reaches it.
    pub fn subscribed(port: u16, topic: &str, args: &[&str]) -> MosquittoSub {
        let mut child = Command::new("stdbuf")
            .args(["-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", &port.to_string(), "-t", topic, "-d", "-v"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub is installed (apt mosquitto-clients)");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let sub = MosquittoSub { child, lines };
        loop {
            let line = sub.lines.recv_timeout(DEADLINE).unwrap_or_else(|_| panic!("no SUBACK for {topic}"));
            if line.contains("received SUBACK") {
                return sub;
            }
        }
    }

    /// The next message, as `topic payload`; debug lines are passed over.
    pub fn next_message(&self) -> String {
        loop {
            let line = self.lines.recv_timeout(DEADLINE).expect("a message for mosquitto_sub");
            if !line.starts_with("Client ") && !line.starts_with("Subscribed ") {
                return line;
            }
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }
}

impl Drop for MosquittoSub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `mosquitto_pub -h 127.0.0.1 -p PORT ARGS` to its end (bounded by its own connect
/// timeout: mosquitto_pub gives up on a handshake that fails).
pub fn mosquitto_pub(port: u16, args: &[&str]) -> Output {
    Command::new("timeout")
        .args(["60", "mosquitto_pub", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("mosquitto_pub is installed (apt mosquitto-clients)")
}
