//! `[auth] password_file`: a file with Mosquitto's lines (written by `mosquitto_passwd`, `$7$`
//! and `$6$`) and Strata's own (written by `strata passwd`, argon2id) lets its users in, over
//! MQTT 3.1.1 and 5.0 and with mosquitto_pub/mosquitto_sub. A wrong or missing password gets
//! CONNACK 0x86 (5.0) / 0x04 (3.1.1); an anonymous client, with `allow_anonymous = false`,
//! gets 0x87 / 0x05. Each refusal is counted on /metrics. `strata passwd -D` removes a user.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/metrics.rs"]
mod metrics;
#[path = "common/raw.rs"]
mod raw;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use broker::ServeProcess;
use raw::RawClient;
use strata_frontend::codec::{Packet, ProtocolVersion, ReasonCode};

fn strata_passwd(args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("passwd")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run strata passwd");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// The CONNACK's reason code for a login attempt.
async fn login(
    addr: std::net::SocketAddr,
    version: ProtocolVersion,
    user: Option<&str>,
    password: Option<&str>,
) -> ReasonCode {
    // One client id per user: a client id belongs to its user (issue 22), and the previous
    // login's connection may not be closed yet.
    let client_id = format!("auth-test-{}", user.unwrap_or("anonymous"));
    let mut client = RawClient::connect_login(addr, version, &client_id, user, password.map(str::as_bytes)).await;
    match client.recv().await {
        Some(Packet::ConnAck(connack)) => {
            if connack.reason_code.is_error() {
                // A refused client is closed by the broker.
                assert!(client.recv().await.is_none(), "the connection stays open after a refusal");
            }
            connack.reason_code
        }
        other => panic!("expected CONNACK for {user:?}, got {other:?}"),
    }
}

fn mosquitto_pub(port: u16, user: &str, password: &str, message: &str) -> bool {
    Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", "mqttv5", "-q", "1"])
        .args(["-u", user, "-P", password, "-t", "auth/test", "-m", message])
        .stderr(Stdio::null())
        .status()
        .expect("run mosquitto_pub")
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_from_mosquitto_and_strata_lines_log_in_and_everyone_else_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    // `mosquitto_passwd [-H sha512] [-c] -b FILE USER PASSWORD`.
    for (args, user, password) in
        [(vec!["-c", "-b"], "alice", "secret"), (vec!["-H", "sha512", "-b"], "bob", "hunter2")]
    {
        let status = Command::new("mosquitto_passwd")
            .args(&args)
            .arg(&passwd)
            .args([user, password])
            .status()
            .expect("mosquitto_passwd is installed (apt mosquitto)");
        assert!(status.success());
    }
    let added = strata_passwd(&[passwd.to_str().unwrap(), "carol"], "correct horse\n");
    assert!(added.status.success(), "strata passwd: {}", String::from_utf8_lossy(&added.stderr));
    let text = std::fs::read_to_string(&passwd).unwrap();
    assert!(text.contains("alice:$7$") && text.contains("bob:$6$") && text.contains("carol:$argon2id$"), "{text}");
    assert_eq!(std::fs::metadata(&passwd).unwrap().permissions().mode() & 0o777, 0o600);

    let config = dir.path().join("strata.toml");
    std::fs::write(
        &config,
        format!("[auth]\nallow_anonymous = false\npassword_file = {:?}\n", passwd.to_str().unwrap()),
    )
    .unwrap();
    let data = dir.path().join("data");
    let broker = ServeProcess::start_with(&data, &["--config", config.to_str().unwrap(), "--http", "127.0.0.1:0"]);
    let mode = broker.line_after("strata: authentication: ");
    assert!(mode.contains("anonymous clients refused (auth.allow_anonymous = false)"), "{mode}");
    let http = broker.http_addr();
    let addr = broker.addr;

    use ProtocolVersion::{V3_1_1, V5};
    for version in [V3_1_1, V5] {
        for (user, password) in [("alice", "secret"), ("bob", "hunter2"), ("carol", "correct horse")] {
            assert_eq!(
                login(addr, version, Some(user), Some(password)).await,
                ReasonCode::Success,
                "{user} {version:?}"
            );
        }
    }
    // Refused: 3.1.1 reads these as return codes 0x04 and 0x05.
    let mut bad = 0;
    for version in [V3_1_1, V5] {
        for (user, password) in [("alice", Some("hunter2")), ("carol", Some("correct horse ")), ("mallory", Some("x"))]
        {
            assert_eq!(login(addr, version, Some(user), password).await, ReasonCode::BadUserNameOrPassword);
            bad += 1;
        }
    }
    assert_eq!(login(addr, V5, Some("alice"), None).await, ReasonCode::BadUserNameOrPassword);
    bad += 1;
    for version in [V3_1_1, V5] {
        assert_eq!(login(addr, version, None, None).await, ReasonCode::NotAuthorized);
    }
    assert_eq!(metrics::counter(http, "strata_auth_failures_total{reason=\"bad_credentials\"}"), bad);
    assert_eq!(metrics::counter(http, "strata_auth_failures_total{reason=\"anonymous_refused\"}"), 2);

    // Real clients: a subscriber logged in as bob gets what alice publishes.
    let port = broker.port().to_string();
    let sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv311", "-q", "1", "-t", "auth/test"])
        .args(["-u", "bob", "-P", "hunter2", "-C", "1", "-W", "60", "-i", "bob-sub"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub is installed (apt mosquitto-clients)");
    // Its subscription is in place at some point after it starts: publish until it has one
    // message and exits (-C 1), a bounded number of times.
    let mut sub = sub;
    let mut published = 0;
    while sub.try_wait().unwrap().is_none() {
        assert!(published < 600, "mosquitto_sub as bob got nothing from {published} publishes");
        assert!(mosquitto_pub(broker.port(), "alice", "secret", "hello bob"), "mosquitto_pub as alice");
        published += 1;
    }
    let output = sub.wait_with_output().unwrap();
    assert!(output.status.success(), "mosquitto_sub as bob");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hello bob\n");
    assert!(!mosquitto_pub(broker.port(), "alice", "wrong", "x"), "mosquitto_pub with a wrong password succeeded");
    drop(broker);

    // `strata passwd -D` removes carol; the file is read at start.
    let deleted = strata_passwd(&["-D", passwd.to_str().unwrap(), "carol"], "");
    assert!(deleted.status.success(), "strata passwd -D: {}", String::from_utf8_lossy(&deleted.stderr));
    let missing = strata_passwd(&["-D", passwd.to_str().unwrap(), "carol"], "");
    assert!(!missing.status.success(), "deleting a missing user succeeded");
    let broker = ServeProcess::start_with(&data, &["--config", config.to_str().unwrap()]);
    assert_eq!(login(broker.addr, V5, Some("carol"), Some("correct horse")).await, ReasonCode::BadUserNameOrPassword);
    assert_eq!(login(broker.addr, V5, Some("alice"), Some("secret")).await, ReasonCode::Success);
}
