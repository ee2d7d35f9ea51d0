//! Issue 18: a client the broker sends away with a reason code must be able to read it even
//! while it keeps writing. An MQTT 5 client bursts Receive Maximum + 1 QoS 2 PUBLISHes,
//! answers every PUBREC with a PUBREL and keeps publishing at QoS 0, as a busy real client
//! would, and must read DISCONNECT 0x93; one beyond `max_connections` must read CONNACK 0x97.
//! Before the fix the broker closed the socket with the client's bytes unread, the kernel
//! answered with RST, and the client's next write failed (EPIPE) before it read either.
//!
//! The client is a raw socket with hand-encoded packets: it relies on nothing of ours.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/raw.rs"]
mod raw;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use broker::ServeProcess;
use futures_util::{FutureExt, SinkExt, StreamExt};
use raw::RawClient;
use strata_frontend::codec::ProtocolVersion;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::client_async;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const RECEIVE_MAXIMUM: u16 = 10;
/// Tries, each on a new connection; every one must read the DISCONNECT.
const TRIES: usize = 10;
/// QoS 0 PUBLISHes (117 bytes each) written in the burst's write, and then one at a time:
/// with the PUBRELs, well under the 64 KiB the broker reads and discards from a connection
/// it closes.
const BEHIND_THE_BURST: usize = 64;
/// Over WebSocket the broker moves up to 64 KiB from the socket into its pipe to the
/// connection whatever the connection reads, so more is sent (about 80 KiB) for some to stay
/// unread in the socket; with what follows, still well under what the pipe and the 64 KiB
/// the connection drains take.
const BEHIND_THE_BURST_WEBSOCKET: usize = 700;
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

/// The packet that ends a try: its type (2 CONNACK, 14 DISCONNECT) and reason code.
type LastWord = (u8, u8);

/// What a client does with the next whole packet in `buf`.
enum Step {
    /// Writes this answer (a PUBREL for a PUBREC), before it looks at the next packet.
    Answer(Vec<u8>),
    /// Nothing to do.
    Nothing,
    /// The broker's last word: a DISCONNECT or a refusing CONNACK.
    Last(LastWord),
}

fn next_step(buf: &mut Vec<u8>) -> Option<Result<Step, String>> {
    let (first, body) = take_packet(buf)?;
    Some(match first >> 4 {
        // CONNACK: flags, then the reason code.
        2 if body.get(1).is_some_and(|&reason| reason >= 0x80) => Ok(Step::Last((2, body[1]))),
        // CONNACK accepted, PUBCOMP.
        2 | 7 => Ok(Step::Nothing),
        5 => Ok(Step::Answer(pubrel(u16::from_be_bytes([body[0], body[1]])))),
        // DISCONNECT: no reason code means 0x00.
        14 => Ok(Step::Last((14, body.first().copied().unwrap_or(0)))),
        other => Err(format!("unexpected packet type {other}")),
    })
}

/// Handles the whole packets in `buf` as a client does, one at a time. `Some` once the
/// broker's last word is read.
async fn handle(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Option<LastWord>, String> {
    while let Some(step) = next_step(buf) {
        match step? {
            Step::Answer(bytes) => {
                stream.write_all(&bytes).await.map_err(|e| format!("PUBREL write failed before the last word: {e}"))?
            }
            Step::Nothing => {}
            Step::Last(last) => return Ok(Some(last)),
        }
    }
    Ok(None)
}

/// One connection, driven as a busy publisher: it writes CONNECT and `burst` at once (a
/// client may send before its CONNACK), then keeps publishing. `Ok` with the broker's last
/// word once it is read, or why it could not be read.
async fn one_try(broker: &ServeProcess, n: usize, burst: &[u8]) -> Result<LastWord, String> {
    let mut stream = TcpStream::connect(broker.addr).await.map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut first = connect(&format!("issue18-burst-{n}"));
    first.extend_from_slice(burst);
    stream.write_all(&first).await.map_err(|e| format!("writing CONNECT and the burst: {e}"))?;

    // Keeps publishing, and between two writes handles whatever has arrived. The pace only
    // spreads the writes; the test waits on what it reads.
    let filler = filler();
    let mut buf = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    for _ in 0..MORE_PUBLISHES {
        tick.tick().await;
        stream.write_all(&filler).await.map_err(|e| format!("PUBLISH write failed before the last word: {e}"))?;
        let mut closed = false;
        loop {
            match stream.try_read_buf(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("read failed before the last word: {e}")),
            }
        }
        if let Some(last) = handle(&mut stream, &mut buf).await? {
            return Ok(last);
        }
        if closed {
            return Err("the broker closed without a last word".into());
        }
    }
    loop {
        match stream.read_buf(&mut buf).await {
            Ok(0) => return Err("the broker closed without a last word".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("read failed before the last word: {e}")),
        }
        if let Some(last) = handle(&mut stream, &mut buf).await? {
            return Ok(last);
        }
    }
}

/// As [`one_try`], over MQTT over WebSocket: every packet write is one binary frame.
async fn one_websocket_try(addr: SocketAddr, n: usize, burst: &[u8]) -> Result<LastWord, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut request = format!("ws://{addr}/mqtt").into_client_request().map_err(|e| e.to_string())?;
    request.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
    let (mut ws, _) = client_async(request, tcp).await.map_err(|e| format!("WebSocket handshake: {e}"))?;
    let mut first = connect(&format!("issue18-ws-burst-{n}"));
    first.extend_from_slice(burst);
    ws.send(Message::Binary(first.into())).await.map_err(|e| format!("writing CONNECT and the burst: {e}"))?;

    let mut buf = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    let mut sent_more = 0;
    loop {
        if sent_more < MORE_PUBLISHES {
            tick.tick().await;
            let frame = Message::Binary(filler().into());
            ws.send(frame).await.map_err(|e| format!("PUBLISH write failed before the last word: {e}"))?;
            sent_more += 1;
        }
        // Whatever has arrived; once done publishing, waits for more.
        let mut closed = false;
        loop {
            let message = match sent_more < MORE_PUBLISHES {
                true => match ws.next().now_or_never() {
                    Some(message) => message,
                    None => break,
                },
                false => ws.next().await,
            };
            match message {
                Some(Ok(Message::Binary(data))) => buf.extend_from_slice(&data),
                Some(Ok(Message::Close(_))) | None => {
                    closed = true;
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("read failed before the last word: {e}")),
            }
            if sent_more >= MORE_PUBLISHES {
                break;
            }
        }
        while let Some(step) = next_step(&mut buf) {
            match step? {
                Step::Answer(bytes) => ws
                    .send(Message::Binary(bytes.into()))
                    .await
                    .map_err(|e| format!("PUBREL write failed before the last word: {e}"))?,
                Step::Nothing => {}
                Step::Last(last) => return Ok(last),
            }
        }
        if closed {
            return Err("the broker closed without a last word".into());
        }
    }
}

/// A QoS 0 PUBLISH of 117 bytes: not held to Receive Maximum.
fn filler() -> Vec<u8> {
    publish(0, 0, "issue18/more", &[b'm'; 100])
}

/// Runs `TRIES` tries; every one must read `expected`.
async fn every_try_reads(broker: &ServeProcess, burst: &[u8], expected: LastWord) {
    let mut failures = Vec::new();
    for n in 0..TRIES {
        match tokio::time::timeout(DEADLINE, one_try(broker, n, burst)).await {
            Ok(Ok(last)) => assert_eq!(last, expected, "try {n}: (packet type, reason code)"),
            Ok(Err(why)) => failures.push(format!("try {n}: {why}")),
            Err(_) => failures.push(format!("try {n}: nothing within {DEADLINE:?}")),
        }
    }
    assert!(failures.is_empty(), "{} of {TRIES} tries could not read {expected:?}: {failures:#?}", failures.len());
}

/// As [`every_try_reads`], over WebSocket at `addr`.
async fn every_websocket_try_reads(addr: SocketAddr, burst: &[u8], expected: LastWord) {
    let mut failures = Vec::new();
    for n in 0..TRIES {
        match tokio::time::timeout(DEADLINE, one_websocket_try(addr, n, burst)).await {
            Ok(Ok(last)) => assert_eq!(last, expected, "try {n}: (packet type, reason code)"),
            Ok(Err(why)) => failures.push(format!("try {n}: {why}")),
            Err(_) => failures.push(format!("try {n}: nothing within {DEADLINE:?}")),
        }
    }
    assert!(failures.is_empty(), "{} of {TRIES} tries could not read {expected:?}: {failures:#?}", failures.len());
}

/// Starts a broker with `mqtt` as its `[mqtt]` section, and `extra` arguments.
fn broker(dir: &Path, mqtt: &str, extra: &[&str]) -> ServeProcess {
    let config = dir.join("strata.toml");
    std::fs::write(&config, format!("[mqtt]\n{mqtt}")).unwrap();
    let mut args = vec!["--config", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    ServeProcess::start_with(&dir.join("data"), &args)
}

/// Receive Maximum + 1 QoS 2 PUBLISHes, and `behind` QoS 0 ones right behind them in the
/// same write, as a client with a write buffer sends them: the broker decides to disconnect
/// with these still unread.
fn too_many_qos2(behind: usize) -> Vec<u8> {
    let mut burst: Vec<u8> = (1..=RECEIVE_MAXIMUM + 1)
        .flat_map(|id| publish(2, id, "issue18/burst", b"exactly once, too many at once"))
        .collect();
    (0..behind).for_each(|_| burst.extend_from_slice(&filler()));
    burst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue18_disconnect_0x93_is_read_by_a_client_that_keeps_writing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path(), &format!("receive_maximum = {RECEIVE_MAXIMUM}\n"), &[]);
    every_try_reads(&broker, &too_many_qos2(BEHIND_THE_BURST), (14, 0x93)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue18_disconnect_0x93_is_read_over_websocket_by_a_client_that_keeps_writing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path(), &format!("receive_maximum = {RECEIVE_MAXIMUM}\n"), &["--ws", "127.0.0.1:0"]);
    every_websocket_try_reads(broker.ws_addr(), &too_many_qos2(BEHIND_THE_BURST_WEBSOCKET), (14, 0x93)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue18_connack_refusal_is_read_by_a_client_that_keeps_writing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path(), "max_connections = 1\n", &[]);
    // Holds the only connection: every try is refused with CONNACK 0x97 Quota Exceeded.
    let (_holder, _) = RawClient::connect(broker.addr, ProtocolVersion::V5, "issue18-holder").await;
    let burst: Vec<u8> = (0..BEHIND_THE_BURST).flat_map(|_| filler()).collect();
    every_try_reads(&broker, &burst, (2, 0x97)).await;
}
