//! One series read from a broker's Prometheus endpoint (`strata serve --http`).
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The value of `series` (a name, or a name with its labels) on `GET /metrics` now, if it is
/// there.
pub fn scrape(addr: SocketAddr, series: &str) -> Option<f64> {
    let mut stream = TcpStream::connect(addr).expect("connect to the HTTP endpoint");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read /metrics");
    response.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A counter that must be on `/metrics`.
pub fn counter(addr: SocketAddr, name: &str) -> u64 {
    scrape(addr, name).unwrap_or_else(|| panic!("{name} not on /metrics")) as u64
}
