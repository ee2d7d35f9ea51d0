//! Issue 22: `[grpc] tls` serves the admin API over TLS with `[tls]`'s certificate. The CLI
//! speaks TLS with `--ca-file`; with `[tls] client_ca_file` it must also present a client
//! certificate (`--cert`/`--key`), which then stands in for a token, so the admin API may
//! listen off loopback without `grpc.token_file`.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/tls.rs"]
mod tls;

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::process::{Command, Output};

use broker::ServeProcess;
use tls::{Ca, tls_section};

/// `strata stream list` against `grpc` with more flags.
fn list(grpc: SocketAddr, flags: &[&OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["stream", "list", "--output", "json", "--server", &grpc.to_string()])
        .args(flags)
        .env_remove("RUST_LOG")
        .env_remove("STRATA_ADMIN_TOKEN")
        .output()
        .expect("run strata")
}

fn answered(output: &Output) -> bool {
    output.status.success() && String::from_utf8_lossy(&output.stdout).contains("\"default\"")
}

#[test]
fn the_admin_api_over_tls_and_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "admin");
    let other = Ca::new(dir.path(), "other");
    let server = ca.server(dir.path(), "server");
    let client = ca.client(dir.path(), "client", Some("operator"));
    let ca_file = [OsStr::new("--ca-file"), ca.file.as_os_str()];

    // TLS: a client that trusts the CA is answered; plaintext and another CA are not.
    let config = dir.path().join("tls.toml");
    std::fs::write(&config, format!("{}[grpc]\ntls = true\n", tls_section(&server, None))).unwrap();
    let broker = ServeProcess::start_with(&dir.path().join("data-tls"), &["--config", config.to_str().unwrap()]);
    let grpc = broker.grpc_addr();
    let trusted = list(grpc, &ca_file);
    assert!(answered(&trusted), "{trusted:?}");
    assert!(!list(grpc, &[]).status.success(), "a plaintext call was answered");
    let untrusted = list(grpc, &[OsStr::new("--ca-file"), other.file.as_os_str()]);
    assert!(!untrusted.status.success(), "a client trusting another CA was answered");
    drop(broker);

    // Mutual TLS: only a client with a certificate signed by the CA is answered.
    let config = dir.path().join("mtls.toml");
    std::fs::write(&config, format!("{}[grpc]\ntls = true\n", tls_section(&server, Some(&ca.file)))).unwrap();
    let broker = ServeProcess::start_with(&dir.path().join("data-mtls"), &["--config", config.to_str().unwrap()]);
    let grpc = broker.grpc_addr();
    let with_cert = list(
        grpc,
        &[&ca_file[..], &[OsStr::new("--cert"), client.cert.as_os_str(), OsStr::new("--key"), client.key.as_os_str()]]
            .concat(),
    );
    assert!(answered(&with_cert), "{with_cert:?}");
    assert!(!list(grpc, &ca_file).status.success(), "a call without a client certificate was answered");
}

#[test]
fn mutual_tls_stands_in_for_a_token_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "admin");
    let server = ca.server(dir.path(), "server");
    let check = |text: String| {
        let config = dir.path().join("strata.toml");
        std::fs::write(&config, text).unwrap();
        Command::new(env!("CARGO_BIN_EXE_strata")).args(["config", "check"]).arg(&config).output().unwrap()
    };
    let mtls =
        check(format!("{}[grpc]\nlisten = \"0.0.0.0:7070\"\ntls = true\n", tls_section(&server, Some(&ca.file))));
    assert!(mtls.status.success(), "{mtls:?}");
    let tls_only = check(format!("{}[grpc]\nlisten = \"0.0.0.0:7070\"\ntls = true\n", tls_section(&server, None)));
    assert_eq!(tls_only.status.code(), Some(2), "{tls_only:?}");
    assert!(String::from_utf8_lossy(&tls_only.stderr).contains("grpc.token_file"));
    let no_certificate = check("[grpc]\ntls = true\n".to_owned());
    assert_eq!(no_certificate.status.code(), Some(2), "{no_certificate:?}");
    assert!(String::from_utf8_lossy(&no_certificate.stderr).contains("grpc.tls"));
}

/// Issue 22: SIGHUP reloads `[tls]` for the admin API too, not only for the MQTT listeners. After
/// the files are replaced by a certificate from another CA and the broker is told, a new admin
/// call trusts only the new CA.
#[test]
fn issue22_the_admin_api_certificate_reloads_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let first = Ca::new(dir.path(), "first");
    let second = Ca::new(dir.path(), "second");
    let server = first.server(dir.path(), "server");
    let renewed = second.server(dir.path(), "renewed");
    let config = dir.path().join("tls.toml");
    std::fs::write(&config, format!("{}[grpc]\ntls = true\n", tls_section(&server, None))).unwrap();
    let broker = ServeProcess::start_with(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    let grpc = broker.grpc_addr();
    let trusts_first = [OsStr::new("--ca-file"), first.file.as_os_str()];
    let trusts_second = [OsStr::new("--ca-file"), second.file.as_os_str()];
    let before = list(grpc, &trusts_first);
    assert!(answered(&before), "{before:?}");
    assert!(!list(grpc, &trusts_second).status.success(), "the second CA was trusted before the reload");

    std::fs::copy(&renewed.cert, &server.cert).unwrap();
    std::fs::copy(&renewed.key, &server.key).unwrap();
    let pid = i32::try_from(broker.pid()).unwrap();
    // SAFETY: kill(2) with a pid we started and a valid signal number touches no memory.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0, "kill -HUP");
    broker.line_after("strata: TLS certificate reloaded from ");

    let after = list(grpc, &trusts_second);
    assert!(answered(&after), "the renewed certificate is not served: {after:?}");
    assert!(!list(grpc, &trusts_first).status.success(), "the old certificate is still served");
}
