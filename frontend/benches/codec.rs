//! Decode and encode cost of our MQTT codec against `mqtt5-protocol` 0.16.2, on the packets
//! a broker handles most: a 100-byte QoS 1 PUBLISH (3.1.1, and 5.0 with a few properties),
//! a CONNECT and a SUBSCRIBE. Figures and machine: docs/architecture.md.
//!
//! Run: `cargo bench -p strata-frontend --bench codec`

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use mqtt5_protocol::packet::MqttPacket;
use strata_frontend::codec::{self, Packet, ProtocolVersion};

/// Packets per measured batch: decoding runs over a buffer holding this many back to back.
const BATCH: usize = 1000;

fn varint(mut value: usize, out: &mut Vec<u8>) {
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if value == 0 {
            return;
        }
    }
}

fn string(value: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value.as_bytes());
}

fn frame(first_byte: u8, body: Vec<u8>) -> Vec<u8> {
    let mut out = vec![first_byte];
    varint(body.len(), &mut out);
    out.extend(body);
    out
}

fn publish_v4() -> Vec<u8> {
    let mut body = Vec::new();
    string("devices/42/telemetry", &mut body);
    body.extend_from_slice(&[0x01, 0x2C]);
    body.extend_from_slice(&[0x5A; 100]);
    frame(0x32, body)
}

fn publish_v5() -> Vec<u8> {
    let mut props = Vec::new();
    props.push(0x01);
    props.push(0x01);
    props.push(0x02);
    props.extend_from_slice(&3600u32.to_be_bytes());
    props.push(0x03);
    string("application/json", &mut props);
    props.push(0x26);
    string("entity_id", &mut props);
    string("device-42", &mut props);
    let mut body = Vec::new();
    string("devices/42/telemetry", &mut body);
    body.extend_from_slice(&[0x01, 0x2C]);
    varint(props.len(), &mut body);
    body.extend(props);
    body.extend_from_slice(&[0x5A; 100]);
    frame(0x32, body)
}

fn connect_v5() -> Vec<u8> {
    let mut body = Vec::new();
    string("MQTT", &mut body);
    body.extend_from_slice(&[5, 0xC2, 0x00, 0x3C]);
    let mut props = Vec::new();
    props.push(0x11);
    props.extend_from_slice(&3600u32.to_be_bytes());
    props.push(0x21);
    props.extend_from_slice(&100u16.to_be_bytes());
    props.push(0x22);
    props.extend_from_slice(&16u16.to_be_bytes());
    varint(props.len(), &mut body);
    body.extend(props);
    string("sensor-gateway-0042", &mut body);
    string("gateway", &mut body);
    string("s3cr3t-p4ssw0rd", &mut body);
    frame(0x10, body)
}

fn subscribe_v5() -> Vec<u8> {
    let mut body = vec![0x00, 0x0A];
    let mut props = vec![0x0B];
    varint(7, &mut props);
    varint(props.len(), &mut body);
    body.extend(props);
    for (filter, options) in [("devices/+/telemetry", 0x01), ("alerts/#", 0x2D), ("$share/workers/jobs/+", 0x02)] {
        string(filter, &mut body);
        body.push(options);
    }
    frame(0x82, body)
}

fn ours_decode_all(buf: &mut BytesMut, version: ProtocolVersion) {
    while let Some(packet) = codec::decode(buf, version, usize::MAX).expect("valid input") {
        black_box(packet);
    }
}

fn theirs_decode_one(buf: &mut BytesMut, level: u8) -> mqtt5_protocol::Packet {
    let header = mqtt5_protocol::FixedHeader::decode(buf).expect("valid header");
    let mut body = buf.split_to(header.remaining_length as usize);
    mqtt5_protocol::Packet::decode_from_body_with_version(header.packet_type, &header, &mut body, level)
        .expect("valid body")
}

fn theirs_decode_all(buf: &mut BytesMut, level: u8) {
    while !buf.is_empty() {
        black_box(theirs_decode_one(buf, level));
    }
}

fn theirs_encode(packet: &mqtt5_protocol::Packet, buf: &mut BytesMut) {
    use mqtt5_protocol::Packet as P;
    let result = match packet {
        P::Publish(p) => p.encode(buf),
        P::Connect(p) => p.encode(buf),
        P::Subscribe(p) => p.encode(buf),
        other => panic!("not benchmarked: {other:?}"),
    };
    result.expect("encodable");
}

fn bench(c: &mut Criterion) {
    let cases: [(&str, Vec<u8>, ProtocolVersion); 4] = [
        ("publish_v311_qos1_100B", publish_v4(), ProtocolVersion::V3_1_1),
        ("publish_v5_qos1_100B_4props", publish_v5(), ProtocolVersion::V5),
        ("connect_v5", connect_v5(), ProtocolVersion::V5),
        ("subscribe_v5_3filters", subscribe_v5(), ProtocolVersion::V5),
    ];
    for (name, bytes, version) in cases {
        let level = if version.is_v5() { 5 } else { 4 };
        let many: Bytes = bytes.repeat(BATCH).into();

        let ours_packet = codec::decode(&mut BytesMut::from(&bytes[..]), version, usize::MAX).unwrap().unwrap();
        let theirs_packet = theirs_decode_one(&mut BytesMut::from(&bytes[..]), level);
        // Both must write back exactly the bytes they read, or the comparison is unfair.
        let mut check = BytesMut::new();
        codec::encode(&ours_packet, version, &mut check).unwrap();
        assert_eq!(check.len(), bytes.len(), "{name}: our encoding differs in size");
        check.clear();
        theirs_encode(&theirs_packet, &mut check);
        assert_eq!(check.len(), bytes.len(), "{name}: their encoding differs in size");

        let mut group = c.benchmark_group(format!("codec/{name}"));
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function("decode/ours", |b| {
            b.iter_batched_ref(|| BytesMut::from(&many[..]), |buf| ours_decode_all(buf, version), BatchSize::LargeInput)
        });
        group.bench_function("decode/mqtt5-protocol", |b| {
            b.iter_batched_ref(|| BytesMut::from(&many[..]), |buf| theirs_decode_all(buf, level), BatchSize::LargeInput)
        });
        let mut out = BytesMut::with_capacity(bytes.len() * BATCH);
        group.bench_function("encode/ours", |b| {
            b.iter(|| {
                out.clear();
                for _ in 0..BATCH {
                    codec::encode(black_box(&ours_packet), version, &mut out).unwrap();
                }
            })
        });
        group.bench_function("encode/mqtt5-protocol", |b| {
            b.iter(|| {
                out.clear();
                for _ in 0..BATCH {
                    theirs_encode(black_box(&theirs_packet), &mut out);
                }
            })
        });
        if let Packet::Publish(publish) = &ours_packet {
            group.bench_function("encode/ours_header_only", |b| {
                b.iter(|| {
                    out.clear();
                    for _ in 0..BATCH {
                        codec::encode_publish_header(black_box(publish), version, &mut out).unwrap();
                    }
                })
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
