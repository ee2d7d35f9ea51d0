//! Issue 22: mTLS (`[tls] client_ca_file`) with `mosquitto_pub`/`mosquitto_sub --cert
//! --key`: a client without a certificate, or with one from another CA, fails its handshake;
//! with `[auth] use_identity_as_username` the certificate's CN is the user, so such a client
//! connects with `allow_anonymous = false`, without a password and without being in the
//! password file, while the plaintext listener keeps its own rules.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/mosquitto.rs"]
mod mosquitto;
#[path = "common/passwd.rs"]
mod passwd;
#[path = "common/tls.rs"]
mod tls;

use broker::ServeProcess;
use mosquitto::{MosquittoSub, mosquitto_pub};
use passwd::mosquitto_passwd_file;
use tls::{Ca, CertFiles, tls_section};

fn start(dir: &std::path::Path, config: &str) -> ServeProcess {
    let path = dir.join("strata.toml");
    std::fs::write(&path, config).unwrap();
    ServeProcess::start_with(&dir.join("data"), &["--config", path.to_str().unwrap()])
}

/// `--cafile CA --cert CERT --key KEY`.
fn tls_args<'a>(ca: &'a Ca, client: Option<&'a CertFiles>) -> Vec<&'a str> {
    let mut args = vec!["--cafile", ca.file.to_str().unwrap()];
    if let Some(client) = client {
        args.extend(["--cert", client.cert.to_str().unwrap(), "--key", client.key.to_str().unwrap()]);
    }
    args
}

fn publish(port: u16, tls: &[&str], more: &[&str]) -> std::process::Output {
    let args: Vec<&str> = tls.iter().chain(more).copied().collect();
    mosquitto_pub(port, &args)
}

#[test]
fn tls_mtls_refuses_clients_without_a_certificate_from_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "main");
    let stranger = Ca::new(dir.path(), "stranger");
    let server = ca.server(dir.path(), "server");
    let good = ca.client(dir.path(), "good", Some("device-1"));
    let forged = stranger.client(dir.path(), "forged", Some("device-1"));
    // Anonymous clients are allowed: a refusal below can only come from the handshake.
    let broker = start(
        dir.path(),
        &format!(
            "[mqtt]\ntls_listen = \"127.0.0.1:0\"\n{}[auth]\nallow_anonymous = true\n",
            tls_section(&server, Some(&ca.file))
        ),
    );
    let port = broker.tls_addr().port();
    let watcher = MosquittoSub::subscribed(broker.port(), "m/#", &[]);

    let without = publish(port, &tls_args(&ca, None), &["-t", "m/none", "-m", "no certificate"]);
    assert!(!without.status.success(), "a client without a certificate published");
    let other_ca = publish(port, &tls_args(&ca, Some(&forged)), &["-t", "m/forged", "-m", "other CA"]);
    assert!(!other_ca.status.success(), "a client with another CA's certificate published");
    let with = publish(port, &tls_args(&ca, Some(&good)), &["-t", "m/good", "-m", "signed"]);
    assert!(with.status.success(), "{}", String::from_utf8_lossy(&with.stderr));
    // The first message through is the signed client's: neither other one got a session.
    assert_eq!(watcher.next_message(), "m/good signed");
    let mode = broker.line_after("strata: authentication: ");
    assert!(mode.ends_with("; TLS clients must present a certificate signed by tls.client_ca_file"), "{mode}");
}

#[test]
fn tls_with_use_identity_as_username_the_certificate_cn_is_the_user() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "main");
    let server = ca.server(dir.path(), "server");
    let alice = ca.client(dir.path(), "alice", Some("alice"));
    let nameless = ca.client(dir.path(), "nameless", None);
    let passwd = dir.path().join("passwd");
    mosquitto_passwd_file(&passwd, &[("bob", "hunter2")]);
    let broker = start(
        dir.path(),
        &format!(
            "[mqtt]\ntls_listen = \"127.0.0.1:0\"\n{}[auth]\nallow_anonymous = false\npassword_file = {:?}\n\
             use_identity_as_username = true\n",
            tls_section(&server, Some(&ca.file)),
            passwd.to_str().unwrap()
        ),
    );
    let mode = broker.line_after("strata: authentication: ");
    assert!(mode.contains("anonymous clients refused (auth.allow_anonymous = false)"), "{mode}");
    assert!(mode.ends_with("whose CN is their user name (auth.use_identity_as_username)"), "{mode}");
    let port = broker.tls_addr().port();

    // alice is not in the password file and gives no password: her certificate says who she is.
    let mut sub =
        MosquittoSub::subscribed(port, "id/#", &[&tls_args(&ca, Some(&alice))[..], &["-V", "mqttv5"]].concat());
    // The CONNECT's user name and password are not what is checked: a wrong password for bob
    // does not matter to a certificate holder.
    let published = publish(
        port,
        &tls_args(&ca, Some(&alice)),
        &["-V", "mqttv311", "-u", "bob", "-P", "wrong", "-t", "id/a", "-m", "by certificate"],
    );
    assert!(published.status.success(), "{}", String::from_utf8_lossy(&published.stderr));
    assert_eq!(sub.next_message(), "id/a by certificate");

    // A certificate without a CN names nobody: CONNACK 0x87 Not authorized.
    let refused = publish(port, &tls_args(&ca, Some(&nameless)), &["-V", "mqttv5", "-t", "id/b", "-m", "nobody"]);
    assert!(!refused.status.success(), "a certificate without a CN was let in");
    let stderr = String::from_utf8_lossy(&refused.stderr).to_lowercase();
    assert!(stderr.contains("not authori"), "{stderr}");

    // The plaintext listener keeps its rules: anonymous refused, bob with his password in.
    let anonymous = mosquitto_pub(broker.port(), &["-V", "mqttv5", "-t", "id/c", "-m", "anonymous"]);
    assert!(!anonymous.status.success(), "an anonymous plaintext client was let in");
    let bob = mosquitto_pub(broker.port(), &["-V", "mqttv5", "-u", "bob", "-P", "hunter2", "-t", "id/d", "-m", "bob"]);
    assert!(bob.status.success(), "{}", String::from_utf8_lossy(&bob.stderr));
    assert_eq!(sub.next_message(), "id/d bob");
    assert!(sub.is_running());
}
