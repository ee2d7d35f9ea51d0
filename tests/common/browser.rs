//! Headless Debian `chromium` driven through `chromedriver` (W3C WebDriver), for the
//! dashboard tests. WebDriver is JSON over HTTP/1.1 on loopback; the few commands these tests
//! need fit in a page, so they are spoken here over a `TcpStream` rather than through a
//! client crate and its HTTP stack.
//!
//! Without chromium or chromedriver a test is skipped with a message, except under CI
//! (`CI=true`), where that fails it: `.ci/run` installs both.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The key W3C WebDriver names an element reference with.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long a page may take to show what a test waits for (a loaded 2-core machine).
pub const PAGE_DEADLINE: Duration = Duration::from_secs(30);

/// A laptop's window and a phone's, for the screenshots.
pub const LAPTOP: (u32, u32) = (1280, 900);
pub const PHONE: (u32, u32) = (390, 844);

/// A chromedriver process and one browser session in it; both end on drop.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

/// A handle to an element of the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

/// Whether this machine can run the browser tests; when not, says why on stderr (the test
/// then returns early). Under CI a missing browser fails the test instead.
pub fn available() -> bool {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER].into_iter().filter(|p| !Path::new(p).exists()).collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!("{} not installed (apt-get install chromium chromium-driver)", missing.join(" and "));
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why}: CI must run the dashboard tests");
    }
    eprintln!("SKIPPED: {why}");
    false
}

/// Where the screenshots go: `target/dashboard-screenshots/` (CI keeps target/ as artifacts).
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).expect("create the screenshot directory");
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One HTTP/1.1 exchange; returns the status and the body parsed as JSON.
fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> std::io::Result<(u16, Value)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    // chromedriver keeps the connection open: the answer ends where its length says.
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    let (split, head) = loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no HTTP answer"));
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break (split, String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase());
        }
    };
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("an HTTP status");
    let length =
        head.lines().find_map(|line| line.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let body = &raw[split + 4..];
        let complete = match length {
            Some(length) => body.len() >= length,
            None if chunked => body.ends_with(b"0\r\n\r\n"),
            None => false,
        };
        if complete {
            break;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let mut payload = raw[split + 4..].to_vec();
    if chunked {
        payload = dechunk(&payload);
    }
    let value = if payload.is_empty() { Value::Null } else { serde_json::from_slice(&payload).expect("JSON") };
    Ok((status, value))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..line_end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[line_end + 2..line_end + 2 + size]);
        data = &data[line_end + 2 + size + 2..];
    }
    out
}

impl Browser {
    /// Starts chromedriver and a headless chromium session with a laptop-sized window.
    pub fn start() -> Browser {
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser { driver, addr, session: String::new(), _profile: profile };
        // Ready when /status says so (bounded: 30 s).
        let deadline = Instant::now() + PAGE_DEADLINE;
        loop {
            if let Ok((200, status)) = http(addr, "GET", "/status", None)
                && status["value"]["ready"] == true
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not become ready on {addr}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut args = vec![
            "--headless=new".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--no-first-run".to_owned(),
            format!("--window-size={},{}", LAPTOP.0, LAPTOP.1),
            format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        // Chromium refuses to start its sandbox as root (CI runs as root).
        if unsafe { libc::geteuid() } == 0 {
            args.push("--no-sandbox".to_owned());
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let (status, answer) = http(addr, "POST", "/session", Some(&capabilities)).expect("new WebDriver session");
        assert_eq!(status, 200, "chromedriver refused a session: {answer}");
        browser.session = answer["value"]["sessionId"].as_str().expect("a session id").to_owned();
        browser
    }

    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Value> {
        let path = format!("/session/{}{path}", self.session);
        // chromedriver wants a JSON object with every POST, even an empty one.
        let body = if method == "POST" { Some(body.unwrap_or_else(|| json!({}))) } else { body };
        let (status, answer) = http(self.addr, method, &path, body.as_ref()).expect("talk to chromedriver");
        if status == 200 { Ok(answer["value"].clone()) } else { Err(answer["value"].clone()) }
    }

    fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.command(method, path, body).unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    pub fn goto(&self, url: &str) {
        self.ok("POST", "/url", Some(json!({ "url": url })));
    }

    /// Reloads the page (the dashboard then reads everything afresh).
    pub fn refresh(&self) {
        self.ok("POST", "/refresh", Some(json!({})));
    }

    pub fn set_window_size(&self, (width, height): (u32, u32)) {
        self.ok("POST", "/window/rect", Some(json!({ "width": width, "height": height })));
    }

    /// The first element matching `css`, if any now.
    pub fn find(&self, css: &str) -> Option<Element> {
        let found = self.command("POST", "/element", Some(json!({"using": "css selector", "value": css}))).ok()?;
        found[ELEMENT].as_str().map(|id| Element(id.to_owned()))
    }

    /// Every element matching `css` now.
    pub fn find_all(&self, css: &str) -> Vec<Element> {
        let found = self.ok("POST", "/elements", Some(json!({"using": "css selector", "value": css})));
        found
            .as_array()
            .map(|all| all.iter().filter_map(|e| e[ELEMENT].as_str().map(|id| Element(id.to_owned()))).collect())
            .unwrap_or_default()
    }

    /// Asks for `css` every 100 ms until it is there, for at most [`PAGE_DEADLINE`].
    pub fn wait_for(&self, css: &str) -> Element {
        let deadline = Instant::now() + PAGE_DEADLINE;
        loop {
            if let Some(element) = self.find(css) {
                return element;
            }
            assert!(Instant::now() < deadline, "{css:?} did not appear; the page shows: {}", self.page_text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `css`'s text satisfies `done`; returns that text.
    pub fn wait_for_text(&self, css: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PAGE_DEADLINE;
        loop {
            if let Some(element) = self.find(css) {
                // The element may be replaced between the find and the read: ask again then.
                if let Ok(text) = self.command("GET", &format!("/element/{}/text", element.0), None) {
                    let text = text.as_str().unwrap_or_default().to_owned();
                    if done(&text) {
                        return text;
                    }
                }
            }
            assert!(Instant::now() < deadline, "{css:?} never showed the expected text; page: {}", self.page_text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn text(&self, element: &Element) -> String {
        self.ok("GET", &format!("/element/{}/text", element.0), None).as_str().unwrap_or_default().to_owned()
    }

    pub fn attribute(&self, element: &Element, name: &str) -> Option<String> {
        self.ok("GET", &format!("/element/{}/attribute/{name}", element.0), None).as_str().map(str::to_owned)
    }

    /// Runs `script` in the page (its `arguments` are `args`) and returns its result.
    pub fn execute(&self, script: &str, args: Value) -> Value {
        self.ok("POST", "/execute/sync", Some(json!({ "script": script, "args": args })))
    }

    pub fn click(&self, element: &Element) {
        self.ok("POST", &format!("/element/{}/click", element.0), None);
    }

    pub fn clear(&self, element: &Element) {
        self.ok("POST", &format!("/element/{}/clear", element.0), None);
    }

    /// Types `text` into `element` as key presses.
    pub fn type_text(&self, element: &Element, text: &str) {
        self.ok("POST", &format!("/element/{}/value", element.0), Some(json!({ "text": text })));
    }

    /// Presses keys on whatever has the focus (`\u{E004}` is Tab, `\u{E007}` Enter).
    pub fn press_keys(&self, keys: &str) {
        let actions: Vec<Value> = keys
            .chars()
            .flat_map(|c| {
                [json!({"type": "keyDown", "value": c.to_string()}), json!({"type": "keyUp", "value": c.to_string()})]
            })
            .collect();
        self.ok("POST", "/actions", Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})));
        self.ok("DELETE", "/actions", None);
    }

    /// The `data-value` of the cell `field` in the row `row` (a CSS selector).
    pub fn cell(&self, row: &str, field: &str) -> u64 {
        let css = format!("{row} [data-field=\"{field}\"]");
        let element = self.wait_for(&css);
        let value = self.attribute(&element, "data-value").unwrap_or_else(|| panic!("{css} has no data-value"));
        value.parse().unwrap_or_else(|_| panic!("{css}: data-value {value:?} is not a number"))
    }

    /// The visible text of the whole page, for failure messages.
    pub fn page_text(&self) -> String {
        self.command("POST", "/execute/sync", Some(json!({"script": "return document.body.innerText", "args": []})))
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// Saves a PNG of the viewport to `target/dashboard-screenshots/<name>.png`; returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let encoded = self.ok("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("a base64 screenshot"))
            .expect("base64 PNG");
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http(self.addr, "DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
