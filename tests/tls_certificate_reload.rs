//! Issue 22: SIGHUP reloads the TLS certificate without dropping connections. A subscriber
//! connected with certificate A stays connected while the files are replaced with
//! certificate B (another CA) and the broker gets SIGHUP; new clients then need B's CA, and
//! the subscriber still receives what they publish. A reload from a bad file keeps A and
//! says why, naming the key and the file. SIGHUP used to kill the process.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/mosquitto.rs"]
mod mosquitto;
#[path = "common/tls.rs"]
mod tls;

use std::path::Path;

use broker::ServeProcess;
use mosquitto::{MosquittoSub, mosquitto_pub};
use tls::{Ca, CertFiles, tls_section};

fn hangup(broker: &ServeProcess) {
    let pid = i32::try_from(broker.pid()).unwrap();
    // SAFETY: kill(2) with a pid we started and a valid signal number touches no memory.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0, "kill -HUP");
}

/// Puts `from`'s certificate and key where the broker reads them, each through a rename so
/// the broker never reads half a file.
fn install(from: &CertFiles, to: &CertFiles) {
    for (source, target) in [(&from.cert, &to.cert), (&from.key, &to.key)] {
        let staged = target.with_extension("new");
        std::fs::copy(source, &staged).unwrap();
        std::fs::rename(&staged, target).unwrap();
    }
}

fn publish(port: u16, cafile: &Path, topic: &str, message: &str) -> std::process::Output {
    mosquitto_pub(port, &["--cafile", cafile.to_str().unwrap(), "-q", "1", "-t", topic, "-m", message])
}

#[test]
fn tls_sighup_reloads_the_certificate_and_keeps_established_connections() {
    let dir = tempfile::tempdir().unwrap();
    let ca_a = Ca::new(dir.path(), "a");
    let ca_b = Ca::new(dir.path(), "b");
    let cert_a = ca_a.server(dir.path(), "server-a");
    let cert_b = ca_b.server(dir.path(), "server-b");
    let live = CertFiles { cert: dir.path().join("server.pem"), key: dir.path().join("server.key") };
    install(&cert_a, &live);
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, format!("[mqtt]\ntls_listen = \"127.0.0.1:0\"\n{}", tls_section(&live, None))).unwrap();
    let mut broker = ServeProcess::start_with(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    let port = broker.tls_addr().port();

    // Connected over TLS with certificate A, and kept connected throughout.
    let subscriber =
        MosquittoSub::subscribed(port, "reload/#", &["--cafile", ca_a.file.to_str().unwrap(), "-q", "1", "-i", "kept"]);
    assert!(!publish(port, &ca_b.file, "reload/early", "b too early").status.success(), "B served before the reload");

    // A reload from a broken key file keeps A, and says which key and file.
    std::fs::write(&live.key, "-----BEGIN PRIVATE KEY-----\ntruncated").unwrap();
    hangup(&broker);
    let failed = broker.line_after("strata: TLS reload failed, the previous certificate stays in use: ");
    assert!(failed.starts_with(&format!("tls.key_file ({})", live.key.display())), "{failed}");
    let still_a = publish(port, &ca_a.file, "reload/still-a", "a");
    assert!(still_a.status.success(), "{}", String::from_utf8_lossy(&still_a.stderr));
    assert_eq!(subscriber.next_message(), "reload/still-a a");

    // Now B, for real.
    install(&cert_b, &live);
    hangup(&broker);
    assert_eq!(broker.line_after("strata: TLS certificate reloaded from "), live.cert.display().to_string());
    let with_b = publish(port, &ca_b.file, "reload/b", "after the reload");
    assert!(with_b.status.success(), "{}", String::from_utf8_lossy(&with_b.stderr));
    // The subscriber that shook hands with A is still connected, and receives it.
    assert_eq!(subscriber.next_message(), "reload/b after the reload");
    assert!(!publish(port, &ca_a.file, "reload/a", "a again").status.success(), "A still served after the reload");
    assert!(broker.is_running());
    assert!(broker.stop().success(), "a clean stop after the reloads");
}

#[test]
fn tls_sighup_without_tls_does_not_stop_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = ServeProcess::start(dir.path());
    hangup(&broker);
    assert_eq!(broker.line_after("strata: SIGHUP: "), "nothing to reload (no [tls], no password or ACL file)");
    let subscriber = MosquittoSub::subscribed(broker.port(), "alive/#", &[]);
    assert!(mosquitto_pub(broker.port(), &["-t", "alive/x", "-m", "yes"]).status.success());
    assert_eq!(subscriber.next_message(), "alive/x yes");
    assert!(broker.stop().success());
}
