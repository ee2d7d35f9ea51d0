//! Issue 18: a client the broker disconnects with a reason code must be able to read that
//! DISCONNECT even while it keeps writing. Here an MQTT 5 client bursts Receive Maximum + 1
//! QoS 2 PUBLISHes, answers every PUBREC with a PUBREL and keeps publishing at QoS 0, as a
//! busy real client would. Before the fix the broker closed the socket with the client's
//! bytes unread, the kernel answered with RST, and the client's next write failed (EPIPE) or
//! its read was reset before it saw DISCONNECT 0x93.
//!
//! The client is a raw socket with hand-encoded packets: it relies on nothing of ours.

#[path = "common/broker.rs"]
mod broker;

use std::time::Duration;

use broker::ServeProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const RECEIVE_MAXIMUM: u16 = 10;
/// Tries, each on a new connection; every one must read the DISCONNECT.
const TRIES: usize = 10;
/// QoS 0 PUBLISHes (117 bytes each) written in the burst's write, and then one at a time:
/// with the PUBRELs, well under the 64 KiB the broker reads and discards from a connection
/// it closes.
const BEHIND_THE_BURST: usize = 64;
const MORE_PUBLISHES: usize = 200;
const DEADLINE: Duration = Duration::from_secs(30);

fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n % 128) as u8;
        n /= 128;
        out.push(if n > 0 { byte | 0x80 } else { byte });
        if n == 0 {
            return;
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    put_varint(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

fn connect(client_id: &str) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, "MQTT");
    body.push(5); // protocol level: MQTT 5
    body.push(0x02); // clean start
    body.extend_from_slice(&60u16.to_be_bytes()); // keep alive
    body.push(0); // no properties
    put_str(&mut body, client_id);
    packet(0x10, &body)
}

/// A PUBLISH at `qos` (1 or 2 need `packet_id`) with no properties.
fn publish(qos: u8, packet_id: u16, topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, topic);
    if qos > 0 {
        body.extend_from_slice(&packet_id.to_be_bytes());
    }
    body.push(0); // no properties
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1), &body)
}

fn pubrel(packet_id: u16) -> Vec<u8> {
    packet(0x62, &packet_id.to_be_bytes())
}

/// Takes one whole packet off the front of `buf`: (first byte, body).
fn take_packet(buf: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
    let (mut length, mut shift, mut at) = (0usize, 0, 1);
    loop {
        let byte = *buf.get(at)?;
        length |= usize::from(byte & 0x7f) << shift;
        at += 1;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        assert!(shift <= 21, "bad remaining length from the broker");
    }
    if buf.len() < at + length {
        return None;
    }
    let first = buf[0];
    let body = buf[at..at + length].to_vec();
    buf.drain(..at + length);
    Some((first, body))
}

/// Handles the whole packets in `buf` as a client does, one at a time: a PUBREC is answered
/// with its PUBREL at once. `Some(reason)` once DISCONNECT is read.
async fn handle(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Option<u8>, String> {
    while let Some((first, body)) = take_packet(buf) {
        match first >> 4 {
            5 => {
                let release = pubrel(u16::from_be_bytes([body[0], body[1]]));
                stream.write_all(&release).await.map_err(|e| format!("PUBREL write failed before DISCONNECT: {e}"))?;
            }
            // DISCONNECT: no reason code means 0x00.
            14 => return Ok(Some(body.first().copied().unwrap_or(0))),
            // PUBCOMP.
            7 => {}
            other => return Err(format!("unexpected packet type {other}")),
        }
    }
    Ok(None)
}

/// One connection, driven as a busy publisher: `Ok(reason)` once DISCONNECT is read, or why
/// it could not be read.
async fn one_try(broker: &ServeProcess, n: usize) -> Result<u8, String> {
    let mut stream = TcpStream::connect(broker.addr).await.map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream.write_all(&connect(&format!("issue18-burst-{n}"))).await.map_err(|e| format!("CONNECT: {e}"))?;
    let mut buf = Vec::new();
    let connack = loop {
        if let Some(packet) = take_packet(&mut buf) {
            break packet;
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) => return Err("closed before CONNACK".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("reading CONNACK: {e}")),
        }
    };
    assert_eq!(connack.0, 0x20, "CONNACK first");
    assert_eq!(connack.1.get(1), Some(&0), "CONNACK success");

    // The burst, and more QoS 0 PUBLISHes (not held to Receive Maximum) right behind it in
    // the same write, as a client with a write buffer sends them: the broker decides to
    // disconnect with these still unread.
    let filler = publish(0, 0, "issue18/more", &[b'm'; 100]);
    let mut burst: Vec<u8> = (1..=RECEIVE_MAXIMUM + 1)
        .flat_map(|id| publish(2, id, "issue18/burst", b"exactly once, too many at once"))
        .collect();
    (0..BEHIND_THE_BURST).for_each(|_| burst.extend_from_slice(&filler));
    stream.write_all(&burst).await.map_err(|e| format!("writing the burst: {e}"))?;

    // Keeps publishing, and between two writes handles whatever has arrived. The pace only
    // spreads the writes; the test waits on what it reads.
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    for _ in 0..MORE_PUBLISHES {
        tick.tick().await;
        stream.write_all(&filler).await.map_err(|e| format!("PUBLISH write failed before DISCONNECT: {e}"))?;
        let mut closed = false;
        loop {
            match stream.try_read_buf(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("read failed before DISCONNECT: {e}")),
            }
        }
        if let Some(reason) = handle(&mut stream, &mut buf).await? {
            return Ok(reason);
        }
        if closed {
            return Err("the broker closed without DISCONNECT".into());
        }
    }
    loop {
        match stream.read_buf(&mut buf).await {
            Ok(0) => return Err("the broker closed without DISCONNECT".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("read failed before DISCONNECT: {e}")),
        }
        if let Some(reason) = handle(&mut stream, &mut buf).await? {
            return Ok(reason);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue18_disconnect_0x93_is_read_by_a_client_that_keeps_writing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, format!("[mqtt]\nreceive_maximum = {RECEIVE_MAXIMUM}\n")).unwrap();
    let broker = ServeProcess::start_with(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);

    let mut failures = Vec::new();
    for n in 0..TRIES {
        match tokio::time::timeout(DEADLINE, one_try(&broker, n)).await {
            Ok(Ok(reason)) => assert_eq!(reason, 0x93, "try {n}: DISCONNECT Receive Maximum exceeded"),
            Ok(Err(why)) => failures.push(format!("try {n}: {why}")),
            Err(_) => failures.push(format!("try {n}: nothing within {DEADLINE:?}")),
        }
    }
    assert!(failures.is_empty(), "{} of {TRIES} tries could not read the DISCONNECT: {failures:#?}", failures.len());
}
