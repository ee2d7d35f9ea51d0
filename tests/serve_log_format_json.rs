//! `--log-format json` writes the log lines on stderr as JSON objects, one per line,
//! filtered by RUST_LOG.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn log_format_json_writes_json_lines_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        // The admin API and HTTP endpoint off: their default ports may be taken by another test.
        .args([
            "--log-format",
            "json",
            "serve",
            "--mqtt",
            "127.0.0.1:0",
            "--grpc",
            "off",
            "--http",
            "off",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start strata serve");
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut ready).expect("the ready line");
    assert!(ready.starts_with("strata: MQTT listening on "), "{ready:?}");
    let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
    let output = child.wait_with_output().expect("strata serve exits");
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}")))
        .collect();
    let serving = lines.iter().find(|l| l["fields"]["message"] == "serving").expect("a \"serving\" line");
    assert_eq!(serving["level"], "INFO");
    assert!(serving["fields"]["mqtt"].as_str().is_some_and(|a| a.starts_with("127.0.0.1:")), "{serving}");
    assert!(lines.iter().any(|l| l["fields"]["message"] == "stopped; every log closed cleanly"), "{stderr}");
}
