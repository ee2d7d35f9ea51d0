//! `[grpc] token_file` and `[http] token_file`: every admin call needs the bearer token, which
//! the CLI sends from `--token-file` or STRATA_ADMIN_TOKEN; a call without it or with a wrong
//! one is refused (exit 2, naming the remedy) and does nothing. `/metrics` needs the same kind
//! of token while `/health` and `/ready` stay open. An admin listener off loopback without a
//! token stops the start, naming the key.

#[path = "common/broker.rs"]
mod broker;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Output};

use broker::ServeProcess;

fn cli(grpc: SocketAddr, args: &[&str], env_token: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_strata"));
    command.args(args).args(["--server", &grpc.to_string()]).env_remove("RUST_LOG").env_remove("STRATA_ADMIN_TOKEN");
    if let Some(token) = env_token {
        command.env("STRATA_ADMIN_TOKEN", token);
    }
    command.output().expect("run strata")
}

/// The status line's code and the body of `GET path`, with an optional bearer token.
fn get(http: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(http).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let authorization = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {http}\r\n{authorization}Connection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let code = response.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("a status line");
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (code, body)
}

#[test]
fn admin_calls_and_metrics_need_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, "t0ken-for-tests\n").unwrap();
    let wrong_file = dir.path().join("wrong.token");
    std::fs::write(&wrong_file, "not-the-token\n").unwrap();
    let config = dir.path().join("strata.toml");
    let path = token_file.to_str().unwrap();
    std::fs::write(&config, format!("[grpc]\ntoken_file = {path:?}\n[http]\ntoken_file = {path:?}\n")).unwrap();
    let broker = ServeProcess::start_with(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    let grpc = broker.grpc_addr();
    let http = broker.http_addr();

    let create = ["stream", "create", "audit", "--topics", "audit/#"];
    for (what, output) in [
        ("no token", cli(grpc, &create, None)),
        ("a wrong token in the environment", cli(grpc, &create, Some("not-the-token"))),
        (
            "a wrong --token-file",
            cli(grpc, &[&create[..], &["--token-file", wrong_file.to_str().unwrap()]].concat(), None),
        ),
    ] {
        assert_eq!(output.status.code(), Some(2), "{what}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("refused the call") && stderr.contains("--token-file"), "{what}: {stderr}");
    }
    // Nothing was created by the refused calls.
    let list = cli(grpc, &["stream", "list", "--output", "json", "--token-file", path], None);
    assert!(list.status.success(), "{list:?}");
    assert!(!String::from_utf8_lossy(&list.stdout).contains("audit"), "a refused call created the stream");

    let created = cli(grpc, &[&create[..], &["--token-file", path]].concat(), None);
    assert!(created.status.success(), "{created:?}");
    let listed = cli(grpc, &["stream", "list", "--output", "json"], Some("t0ken-for-tests"));
    assert!(listed.status.success(), "{listed:?}");
    assert!(String::from_utf8_lossy(&listed.stdout).contains("\"audit\""));

    assert_eq!(get(http, "/health", None).0, 200);
    assert_eq!(get(http, "/ready", None).0, 200);
    assert_eq!(get(http, "/metrics", None).0, 401);
    assert_eq!(get(http, "/metrics", Some("not-the-token")).0, 401);
    let (code, body) = get(http, "/metrics", Some("t0ken-for-tests"));
    assert_eq!(code, 200);
    assert!(body.contains("strata_connections"), "{body}");
}

#[test]
fn an_admin_listener_off_loopback_without_a_token_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, "[grpc]\nlisten = \"0.0.0.0:0\"\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["serve", "--mqtt", "127.0.0.1:0", "--http", "off", "--config", config.to_str().unwrap(), "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("grpc.token_file") && stderr.contains("0.0.0.0:0"), "{stderr}");
    assert!(!dir.path().join("data").exists(), "the refused start created the data directory");

    // An empty token file is refused too, naming the key.
    let token_file = dir.path().join("empty.token");
    std::fs::write(&token_file, "\n").unwrap();
    std::fs::write(&config, format!("[grpc]\ntoken_file = {:?}\n", token_file.to_str().unwrap())).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_strata")).args(["config", "check"]).arg(&config).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("grpc.token_file") && stderr.contains("empty"), "{stderr}");
}
