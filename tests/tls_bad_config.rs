//! Issue 22: every `[tls]` problem stops `strata serve` (exit 2) and `strata config check`
//! alike, with a message naming the key and the file: a missing file, a file with no
//! certificate, a key that does not match the certificate, a TLS listener without a
//! certificate, `use_identity_as_username` without a client CA.

mod common;
#[path = "common/tls.rs"]
mod tls;

use common::{code, serve_refusing, stderr, strata};
use tls::{Ca, CertFiles, tls_section};

/// Both commands refuse `config`, and their messages contain every one of `expected`.
fn refused(config: &str, expected: &[&str]) {
    let output = serve_refusing(config);
    assert_eq!(code(&output), 2, "serve: {}", stderr(&output));
    for text in expected {
        assert!(stderr(&output).contains(text), "serve should say {text:?}: {}", stderr(&output));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strata.toml");
    std::fs::write(&path, config).unwrap();
    let output = strata(&["config", "check", path.to_str().unwrap()]);
    assert_eq!(code(&output), 2, "config check: {}", stderr(&output));
    for text in expected {
        assert!(stderr(&output).contains(text), "config check should say {text:?}: {}", stderr(&output));
    }
}

#[test]
fn tls_bad_files_and_missing_keys_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "main");
    let server = ca.server(dir.path(), "server");
    let other = ca.server(dir.path(), "other");
    let listen = "[mqtt]\ntls_listen = \"127.0.0.1:0\"\n";
    let missing = dir.path().join("missing.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "hello\n").unwrap();
    let show = |path: &std::path::Path| path.display().to_string();

    let no_cert = CertFiles { cert: missing.clone(), key: server.key.clone() };
    refused(&format!("{listen}{}", tls_section(&no_cert, None)), &["tls.cert_file", &show(&missing), "cannot be read"]);
    let not_pem = CertFiles { cert: garbage.clone(), key: server.key.clone() };
    refused(&format!("{listen}{}", tls_section(&not_pem, None)), &["tls.cert_file", &show(&garbage), "no PEM"]);
    let mismatched = CertFiles { cert: server.cert.clone(), key: other.key.clone() };
    refused(
        &format!("{listen}{}", tls_section(&mismatched, None)),
        &["tls.key_file", &show(&other.key), "does not match the certificate"],
    );
    refused(
        &format!("{listen}{}", tls_section(&server, Some(&garbage))),
        &["tls.client_ca_file", &show(&garbage), "no PEM certificate"],
    );
    refused(listen, &["mqtt.tls_listen", "tls.cert_file"]);
    refused("[mqtt]\nwss_listen = \"127.0.0.1:0\"\n", &["mqtt.wss_listen", "tls.cert_file"]);
    refused(
        &format!("{listen}{}[auth]\nuse_identity_as_username = true\n", tls_section(&server, None)),
        &["auth.use_identity_as_username", "tls.client_ca_file"],
    );

    // And the good one checks.
    let path = dir.path().join("good.toml");
    std::fs::write(&path, format!("{listen}{}", tls_section(&server, Some(&ca.file)))).unwrap();
    let output = strata(&["config", "check", path.to_str().unwrap()]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
}
