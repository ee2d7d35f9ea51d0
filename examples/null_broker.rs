//! A do-nothing MQTT relay, to find the lowest latency `strata bench` can measure here.
//!
//! It answers CONNECT, SUBSCRIBE and PINGREQ, and forwards every PUBLISH to every subscriber
//! (topics are not matched) before acknowledging it. With `--log FILE` it first appends the
//! packet to FILE with one `write`, as a log without indexes, checksums or fsync would. One
//! thread per connection in blocking reads: no event loop, no scheduler, so what
//! `strata bench` measures against it is the kernel, the machine and the load generator.
//!
//! ```text
//! cargo run --release --example null_broker -- --port 1884 [--log /tmp/null.log]
//! strata bench --target 127.0.0.1:1884 --qos 1 --publishers 1 --subscribers 1 --rate 100
//! ```
//! `benches/README.md` ("D's floor") has the figures.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use strata_frontend::codec::{
    self, Ack, ConnAck, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS, ReasonCode, SubAck,
};

const MAX_PACKET: usize = 1 << 20;

#[derive(Default)]
struct Relay {
    /// Each subscriber's socket, its protocol and the last packet id sent to it.
    subscribers: Mutex<Vec<(TcpStream, ProtocolVersion, u16)>>,
    log: Option<Mutex<File>>,
}

fn main() -> std::io::Result<()> {
    let mut port = 1884u16;
    let mut log = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--port", Some(value)) => port = value.parse().map_err(std::io::Error::other)?,
            ("--log", Some(path)) => log = Some(Mutex::new(File::create(path)?)),
            _ => return Err(std::io::Error::other("usage: null_broker [--port PORT] [--log FILE]")),
        }
    }
    // Loopback only, as every load test here.
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    println!("null broker on {}", listener.local_addr()?);
    let relay = Arc::new(Relay { subscribers: Mutex::default(), log });
    for stream in listener.incoming() {
        let stream = stream?;
        stream.set_nodelay(true)?;
        let relay = Arc::clone(&relay);
        std::thread::spawn(move || {
            if let Err(error) = serve(stream, &relay) {
                eprintln!("connection ended: {error}");
            }
        });
    }
    Ok(())
}

fn serve(mut stream: TcpStream, relay: &Relay) -> std::io::Result<()> {
    let mut version = ProtocolVersion::V3_1_1;
    let mut buf = BytesMut::with_capacity(64 << 10);
    let mut out = BytesMut::new();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        while let Some(packet) = codec::decode(&mut buf, version, MAX_PACKET).map_err(std::io::Error::other)? {
            match packet {
                Packet::Connect(connect) => {
                    version = connect.protocol;
                    let connack = ConnAck {
                        session_present: false,
                        reason_code: ReasonCode::Success,
                        properties: Properties::default(),
                    };
                    encode(&Packet::ConnAck(connack), version, &mut out)?;
                }
                Packet::Subscribe(subscribe) => {
                    let reason_codes = subscribe.filters.iter().map(|_| ReasonCode::GrantedQos1).collect();
                    let suback =
                        SubAck { packet_id: subscribe.packet_id, properties: Properties::default(), reason_codes };
                    encode(&Packet::SubAck(suback), version, &mut out)?;
                    let mut subscribers = relay.subscribers.lock().expect("not poisoned");
                    subscribers.push((stream.try_clone()?, version, 0));
                }
                Packet::Publish(publish) => {
                    forward(relay, &publish)?;
                    if let (QoS::AtLeastOnce, Some(id)) = (publish.qos, publish.packet_id) {
                        encode(&Packet::PubAck(Ack::success(id)), version, &mut out)?;
                    }
                }
                Packet::PingReq => encode(&Packet::PingResp, version, &mut out)?,
                Packet::Disconnect(_) => {
                    let _ = stream.shutdown(Shutdown::Both);
                    return Ok(());
                }
                // Subscribers' PUBACKs: nothing is ever resent.
                _ => {}
            }
        }
        if !out.is_empty() {
            stream.write_all(&out)?;
            out.clear();
        }
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..read]);
    }
}

fn forward(relay: &Relay, publish: &Publish) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    if let Some(log) = &relay.log {
        encode(&Packet::Publish(publish.clone()), ProtocolVersion::V3_1_1, &mut out)?;
        log.lock().expect("not poisoned").write_all(&out)?;
    }
    let mut subscribers = relay.subscribers.lock().expect("not poisoned");
    for (socket, version, last_id) in subscribers.iter_mut() {
        let mut copy = publish.clone();
        copy.packet_id = match copy.qos {
            QoS::AtMostOnce => None,
            _ => {
                *last_id = last_id.wrapping_add(1).max(1);
                PacketId::new(*last_id)
            }
        };
        out.clear();
        encode(&Packet::Publish(copy), *version, &mut out)?;
        // A subscriber gone is dropped from nobody's list: this is a measuring tool.
        let _ = socket.write_all(&out);
    }
    Ok(())
}

fn encode(packet: &Packet, version: ProtocolVersion, out: &mut BytesMut) -> std::io::Result<()> {
    codec::encode(packet, version, out).map_err(std::io::Error::other)
}
