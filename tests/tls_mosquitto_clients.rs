//! Issue 22: MQTT over TLS (`[mqtt] tls_listen`, `[tls] cert_file`/`key_file`) with real
//! clients: `mosquitto_sub` and `mosquitto_pub --cafile` publish and subscribe over it, in
//! MQTT 3.1.1 and 5.0; a client that does not trust the CA, and a plaintext client, get no
//! MQTT session on the TLS port; and a TLS listener off loopback counts for the
//! anonymous-default rule.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/mosquitto.rs"]
mod mosquitto;
#[path = "common/tls.rs"]
mod tls;

use std::io::{Read, Write};
use std::time::Duration;

use broker::ServeProcess;
use mosquitto::{MosquittoSub, mosquitto_pub};
use tls::{Ca, tls_section};

fn start(dir: &std::path::Path, config: &str) -> ServeProcess {
    let path = dir.join("strata.toml");
    std::fs::write(&path, config).unwrap();
    ServeProcess::start_with(&dir.join("data"), &["--config", path.to_str().unwrap()])
}

#[test]
fn tls_mosquitto_clients_publish_and_subscribe_over_tls_listen() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "main");
    let server = ca.server(dir.path(), "server");
    let broker = start(dir.path(), &format!("[mqtt]\ntls_listen = \"127.0.0.1:0\"\n{}", tls_section(&server, None)));
    let port = broker.tls_addr().port();
    let cafile = ca.file.to_str().unwrap();
    for version in ["mqttv311", "mqttv5"] {
        let topic = format!("tls/{version}");
        let sub =
            MosquittoSub::subscribed(port, &format!("{topic}/#"), &["--cafile", cafile, "-V", version, "-q", "1"]);
        for qos in ["0", "1", "2"] {
            let published = mosquitto_pub(
                port,
                &["--cafile", cafile, "-V", version, "-q", qos, "-t", &format!("{topic}/q{qos}"), "-m", "secret"],
            );
            assert!(published.status.success(), "{version} qos {qos}: {}", String::from_utf8_lossy(&published.stderr));
            assert_eq!(sub.next_message(), format!("{topic}/q{qos} secret"));
        }
    }
    // The plaintext listener still serves, and sees what TLS clients publish.
    let plain = MosquittoSub::subscribed(broker.port(), "both/#", &[]);
    let published = mosquitto_pub(port, &["--cafile", cafile, "-t", "both/x", "-m", "from tls"]);
    assert!(published.status.success());
    assert_eq!(plain.next_message(), "both/x from tls");
}

#[test]
fn tls_clients_that_do_not_trust_the_certificate_or_speak_plaintext_get_no_session() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "main");
    let stranger = Ca::new(dir.path(), "stranger");
    let server = ca.server(dir.path(), "server");
    let broker = start(dir.path(), &format!("[mqtt]\ntls_listen = \"127.0.0.1:0\"\n{}", tls_section(&server, None)));
    let port = broker.tls_addr().port();
    let watcher = MosquittoSub::subscribed(broker.port(), "refused/#", &[]);

    // A client trusting another CA refuses our certificate.
    let untrusted = mosquitto_pub(port, &["--cafile", stranger.file.to_str().unwrap(), "-t", "refused/a", "-m", "a"]);
    assert!(!untrusted.status.success(), "a client trusting another CA connected");
    // A plaintext MQTT client on the TLS port.
    let plaintext = mosquitto_pub(port, &["-t", "refused/b", "-m", "b"]);
    assert!(!plaintext.status.success(), "a plaintext client published on the TLS port");

    // A raw plaintext CONNECT: the broker answers with no CONNACK, only the end of the stream
    // (possibly after a TLS alert record, content type 0x15).
    let mut stream = std::net::TcpStream::connect(broker.tls_addr()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // CONNECT, MQTT 3.1.1, clean session, keep alive 60, client id "p".
    stream.write_all(&[0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'p']).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(answer.first() != Some(&0x20), "a CONNACK over plaintext: {answer:?}");
    assert!(answer.is_empty() || answer[0] == 0x15, "not a TLS alert: {answer:?}");

    // Then a trusting client's message is the first the watcher sees: neither refused one
    // got through.
    let published = mosquitto_pub(port, &["--cafile", ca.file.to_str().unwrap(), "-t", "refused/ok", "-m", "ok"]);
    assert!(published.status.success(), "{}", String::from_utf8_lossy(&published.stderr));
    assert_eq!(watcher.next_message(), "refused/ok ok");
}

#[test]
fn tls_a_tls_listener_off_loopback_refuses_anonymous_clients_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "main");
    let server = ca.server(dir.path(), "server");
    // Bound to every interface; the client still connects through 127.0.0.1.
    let broker = start(dir.path(), &format!("[mqtt]\ntls_listen = \"0.0.0.0:0\"\n{}", tls_section(&server, None)));
    let mode = broker.line_after("strata: authentication: ");
    assert_eq!(mode, "no password file; anonymous clients refused (an MQTT listener is not on loopback)");
    let refused = mosquitto_pub(
        broker.tls_addr().port(),
        &["--cafile", ca.file.to_str().unwrap(), "-V", "mqttv5", "-t", "t", "-m", "m"],
    );
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.to_lowercase().contains("not authori"), "{stderr}");
}
