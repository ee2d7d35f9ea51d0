//! Feeds arbitrary bytes to the MQTT decoder as a 3.1.1 and as a 5.0 connection. It must
//! never panic; every packet it accepts must consume input and survive a re-encode and
//! decode unchanged; an incomplete packet must consume nothing.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use strata_frontend::codec::{ProtocolVersion, decode, encode};

fuzz_target!(|data: &[u8]| {
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let mut buf = BytesMut::from(data);
        loop {
            let before = buf.len();
            match decode(&mut buf, version, 1 << 16) {
                Ok(Some(packet)) => {
                    assert!(buf.len() < before, "a decoded packet consumed nothing");
                    let mut again = BytesMut::new();
                    encode(&packet, version, &mut again).expect("a decoded packet re-encodes");
                    assert_eq!(decode(&mut again, version, usize::MAX), Ok(Some(packet)));
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "an incomplete packet consumed bytes");
                    break;
                }
                Err(error) => {
                    assert!(matches!(error.reason_code().as_u8(), 0x81 | 0x82 | 0x84 | 0x95));
                    break;
                }
            }
        }
    }
});
