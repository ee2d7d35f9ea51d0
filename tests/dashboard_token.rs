//! With `[http] token_file`, the dashboard's data is behind the same token as `/metrics`:
//! `/api/` answers 401 without it, the page (which holds no data) still loads and asks for
//! the token, and once it is entered the page shows the streams, sending the token as a
//! bearer header. A change must come as JSON, which another site's page cannot make a
//! browser send without a CORS preflight: a form-like POST is refused even with the token.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/browser.rs"]
mod browser;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use broker::ServeProcess;
use browser::Browser;

const TOKEN: &str = "dashb0ard-t0ken";

/// One HTTP/1.1 request; returns the status and the body.
fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the HTTP endpoint");
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("an HTTP status");
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

#[test]
fn the_api_wants_the_http_token_and_the_page_asks_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("http.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, format!("[http]\ntoken_file = {:?}\n", token_file.to_str().unwrap())).unwrap();
    let broker = ServeProcess::start_with(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    let http = broker.http_addr();
    let bearer = format!("Bearer {TOKEN}");

    let (status, page) = request(http, "GET", "/", &[], "");
    assert_eq!(status, 200, "the page itself holds no data");
    assert!(page.contains("/dashboard/app.js"), "{page}");
    for path in
        ["/api/overview", "/api/streams", "/api/streams/default", "/api/groups", "/api/streams/default/messages"]
    {
        assert_eq!(request(http, "GET", path, &[], "").0, 401, "{path} without the token");
        assert_eq!(request(http, "GET", path, &[("Authorization", "Bearer wrong")], "").0, 401, "{path}, wrong token");
        assert_eq!(request(http, "GET", path, &[("Authorization", &bearer)], "").0, 200, "{path} with the token");
    }
    let change = r#"{"settings":{"retention_ms":"1000"}}"#;
    let path = "/api/streams/default/settings";
    assert_eq!(request(http, "POST", path, &[("Content-Type", "application/json")], change).0, 401);
    let form_like = [("Authorization", bearer.as_str()), ("Content-Type", "text/plain")];
    assert_eq!(request(http, "POST", path, &form_like, change).0, 415, "a change must be JSON");
    let (_, stream) = request(http, "GET", "/api/streams/default", &[("Authorization", &bearer)], "");
    assert!(!stream.contains("\"retention_ms\""), "the refused changes changed nothing: {stream}");

    if !browser::available() {
        return;
    }
    let browser = Browser::start();
    browser.goto(&format!("http://{http}/#/streams"));
    let input = browser.wait_for("#login #token");
    browser.screenshot("token-login-laptop");
    assert!(browser.find("#partitions").is_none(), "no figure without the token");
    browser.type_text(&input, TOKEN);
    browser.click(&browser.wait_for("#login button[type=\"submit\"]"));
    browser.wait_for("#partitions tr[data-stream=\"default\"][data-partition=\"0\"]");
}
