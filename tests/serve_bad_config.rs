//! `strata serve --config` with an unknown key or a bad value stops the start with exit
//! status 2 and a message naming the key.

mod common;

use common::{code, serve_refusing, stderr};

#[test]
fn an_unknown_key_stops_the_start_and_is_named() {
    let output = serve_refusing("[mqtt]\nlisten = \"127.0.0.1:0\"\nmax_pakcet_size = 1024\n");
    assert_eq!(code(&output), 2);
    assert!(stderr(&output).contains("max_pakcet_size"), "{}", stderr(&output));
}

#[test]
fn a_bad_value_stops_the_start_and_is_named() {
    let output = serve_refusing("[mqtt]\nmax_packet_size = 10\n");
    assert_eq!(code(&output), 2);
    assert!(stderr(&output).contains("mqtt.max_packet_size"), "{}", stderr(&output));
    let output = serve_refusing("[mqtt]\nlisten = \"localhost-ish\"\n");
    assert_eq!(code(&output), 2);
    assert!(stderr(&output).contains("listen"), "{}", stderr(&output));
}
