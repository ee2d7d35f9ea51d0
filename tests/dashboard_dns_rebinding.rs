//! Without `[http] token_file`, the dashboard's `/api/` answers only requests addressed to an
//! IP address or `localhost`: a site whose host name is re-pointed at the broker's address
//! (DNS rebinding) is same-origin for the browser, but its requests name that host, and get
//! 403, for reads and changes alike. `/metrics`, `/health` and the page are unaffected.

#[path = "common/broker.rs"]
mod broker;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use broker::ServeProcess;

/// One HTTP/1.1 request with this `Host`; returns the status and the body.
fn request(addr: SocketAddr, method: &str, path: &str, host: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the HTTP endpoint");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("an HTTP status");
    (status, answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

#[test]
fn without_a_token_the_api_answers_only_at_an_address() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(dir.path());
    let http = broker.http_addr();
    let port = http.port();

    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        assert_eq!(request(http, "GET", "/api/streams", &host, "").0, 200, "{host}");
    }
    let rebound = format!("attacker.example:{port}");
    let (status, body) = request(http, "GET", "/api/streams", &rebound, "");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("token_file"), "the refusal says what to do: {body}");
    let change = r#"{"settings":{"retention_ms":"1000"}}"#;
    assert_eq!(request(http, "POST", "/api/streams/default/settings", &rebound, change).0, 403);
    let (_, stream) = request(http, "GET", "/api/streams/default", &format!("127.0.0.1:{port}"), "");
    assert!(!stream.contains("\"retention_ms\""), "the refused change changed nothing: {stream}");
    for path in ["/", "/metrics", "/health"] {
        assert_eq!(request(http, "GET", path, &rebound, "").0, 200, "{path}");
    }
}
