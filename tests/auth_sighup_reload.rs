//! Issue 22: SIGHUP reloads `[auth] password_file` and `acl_file`, not only the TLS
//! certificate. A user added with `strata passwd` logs in after the SIGHUP, with the rights
//! the new ACL file gives; a connection made before keeps the rights it had. A reload of a
//! broken file changes nothing and prints a line naming the file and the line.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/passwd.rs"]
mod passwd;
#[path = "common/raw.rs"]
mod raw;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use broker::ServeProcess;
use passwd::mosquitto_passwd_file;
use raw::RawClient;
use strata_frontend::codec::{Packet, ProtocolVersion, QoS, ReasonCode};

fn hangup(broker: &ServeProcess) {
    let pid = i32::try_from(broker.pid()).unwrap();
    // SAFETY: kill(2) with a pid we started and a valid signal number touches no memory.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0, "kill -HUP");
}

fn strata_passwd(file: &std::path::Path, user: &str, password: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("passwd")
        .arg(file)
        .arg(user)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run strata passwd");
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "strata passwd: {}", String::from_utf8_lossy(&output.stderr));
}

/// Logs in as `user` and returns the client, or the refusal's reason code.
async fn login(addr: SocketAddr, client_id: &str, user: &str, password: &str) -> Result<RawClient, ReasonCode> {
    let mut client =
        RawClient::connect_login(addr, ProtocolVersion::V5, client_id, Some(user), Some(password.as_bytes())).await;
    match client.recv().await {
        Some(Packet::ConnAck(connack)) if connack.reason_code == ReasonCode::Success => Ok(client),
        Some(Packet::ConnAck(connack)) => Err(connack.reason_code),
        other => panic!("expected CONNACK for {user}, got {other:?}"),
    }
}

/// The PUBACK reason code of a QoS 1 publish to `topic`.
async fn publish_reason(client: &mut RawClient, topic: &str, packet_id: u16) -> ReasonCode {
    client.send(&Packet::Publish(raw::publish(topic, QoS::AtLeastOnce, Some(packet_id), "x"))).await;
    match client.recv().await {
        Some(Packet::PubAck(ack)) => ack.reason_code,
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_sighup_reloads_the_password_and_acl_files_and_keeps_them_when_broken() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    let acl = dir.path().join("acl");
    mosquitto_passwd_file(&passwd, &[("alice", "secret")]);
    std::fs::write(&acl, "user alice\ntopic readwrite news/#\n").unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nallow_anonymous = false\npassword_file = {:?}\nacl_file = {:?}\n",
            passwd.to_str().unwrap(),
            acl.to_str().unwrap()
        ),
    )
    .unwrap();
    let broker = ServeProcess::start_with(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    let addr = broker.addr;

    assert_eq!(login(addr, "carol-1", "carol", "correct horse").await.err(), Some(ReasonCode::BadUserNameOrPassword));
    // Alice connects before the reload, which takes her write right away.
    let mut alice_before = login(addr, "alice-1", "alice", "secret").await.expect("alice logs in");
    assert_eq!(publish_reason(&mut alice_before, "news/a", 1).await, ReasonCode::Success);

    strata_passwd(&passwd, "carol", "correct horse");
    std::fs::write(&acl, "user alice\ntopic read news/#\nuser carol\ntopic readwrite news/#\n").unwrap();
    hangup(&broker);
    let reloaded = broker.line_after("strata: password file reloaded from ");
    assert_eq!(reloaded, format!("{} (2 users)", passwd.display()));
    assert_eq!(broker.line_after("strata: ACL file reloaded from "), acl.display().to_string());

    // Carol is a user now, with the rights the new ACL file gives her.
    let mut carol = login(addr, "carol-1", "carol", "correct horse").await.expect("carol logs in after the SIGHUP");
    assert_eq!(publish_reason(&mut carol, "news/c", 1).await, ReasonCode::Success);
    // Alice's new connection has the new rules; the one from before keeps its rights.
    let mut alice_after = login(addr, "alice-2", "alice", "secret").await.expect("alice logs in");
    assert_eq!(publish_reason(&mut alice_after, "news/a", 1).await, ReasonCode::NotAuthorized);
    assert_eq!(publish_reason(&mut alice_before, "news/a", 2).await, ReasonCode::Success);

    // Broken files: each reload fails naming the file and the line, and changes nothing.
    let mut text = std::fs::read_to_string(&passwd).unwrap();
    text.push_str("dave-without-a-hash\n");
    std::fs::write(&passwd, text).unwrap();
    std::fs::write(&acl, "user carol\ntopic readwrite news/#\ntopc read news/#\n").unwrap();
    hangup(&broker);
    let failed = broker.line_after("strata: password file reload failed, the previous users stay in force: ");
    assert!(failed.starts_with(&format!("{}:3: ", passwd.display())), "{failed}");
    let failed = broker.line_after("strata: ACL file reload failed, the previous rules stay in force: ");
    assert!(failed.starts_with(&format!("{}:3: ", acl.display())), "{failed}");
    let mut carol = login(addr, "carol-2", "carol", "correct horse").await.expect("carol still logs in");
    assert_eq!(publish_reason(&mut carol, "news/c", 1).await, ReasonCode::Success);
    let mut alice = login(addr, "alice-3", "alice", "secret").await.expect("alice still logs in");
    assert_eq!(publish_reason(&mut alice, "news/a", 1).await, ReasonCode::NotAuthorized);
}
