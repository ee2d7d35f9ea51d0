//! A node without a `[cluster]` section runs alone, and says so when asked for its cluster:
//! `strata cluster status` exits 2 with one `error:` line naming the missing section (table or
//! JSON output alike), and `GET /cluster/status` answers 409 with `{"error": ...}` saying the
//! same, behind the `/metrics` token. `/ready` stays 200 throughout: a single node has no
//! partition waiting for a leader.

#[path = "common/admin_cli.rs"]
mod admin_cli;
#[path = "common/broker.rs"]
mod broker;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use broker::ServeProcess;

const TOKEN: &str = "cluster-st4tus-token";

/// `GET path` with an optional bearer token; the status code and the body.
fn get(http: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(http).expect("connect to the HTTP endpoint");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let authorization = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {http}\r\n{authorization}Connection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a header block");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    (status, body.to_owned())
}

#[test]
fn a_single_node_refuses_cluster_status_and_stays_ready() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("http.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, format!("[http]\ntoken_file = {:?}\n", token_file.to_str().unwrap())).unwrap();
    let broker = ServeProcess::start_with(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    let (grpc, http) = (broker.grpc_addr(), broker.http_addr());

    for output in [&["cluster", "status"][..], &["cluster", "status", "--output", "json"][..]] {
        let result = admin_cli::strata(grpc, output);
        let stderr = admin_cli::text(&result.stderr);
        assert_eq!(result.status.code(), Some(2), "strata {output:?}: {stderr}");
        assert!(result.stdout.is_empty(), "strata {output:?} printed {}", admin_cli::text(&result.stdout));
        assert_eq!(
            stderr.trim(),
            "error: this node runs alone: its config has no [cluster] section",
            "strata {output:?}"
        );
    }

    assert_eq!(get(http, "/cluster/status", None).0, 401, "without the [http] token");
    assert_eq!(get(http, "/cluster/status", Some("wrong")).0, 401, "with a wrong token");
    let (status, body) = get(http, "/cluster/status", Some(TOKEN));
    assert_eq!(status, 409, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(body, serde_json::json!({"error": "this node runs alone: its config has no [cluster] section"}));

    // `/ready` is open (no token) and every partition of a single node has its leader: itself.
    let (status, body) = get(http, "/ready", None);
    assert_eq!((status, body.trim()), (200, "{\"ready\":true}"));
}
