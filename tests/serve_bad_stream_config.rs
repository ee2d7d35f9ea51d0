//! A bad `[[streams]]` or `[log]` key or value stops `strata serve` with exit status 2 and a
//! message naming the key, e.g. `streams[1].segment_bytes`.

mod common;

use common::{code, serve_refusing, stderr};

#[test]
fn bad_stream_settings_stop_the_start_and_are_named() {
    let cases = [
        ("[[streams]]\nname = \"a\"\n\n[[streams]]\nname = \"b\"\nsegment_bytes = 10\n", "streams[1].segment_bytes"),
        ("[[streams]]\nname = \"a\"\nretention_mss = 5\n", "streams[0].retention_mss"),
        ("[[streams]]\nname = \"a\"\nflush = \"sometimes\"\n", "streams[0].flush"),
        ("[[streams]]\nname = \"a\"\ncleanup_policy = \"keep\"\n", "streams[0].cleanup_policy"),
        ("[[streams]]\nname = \"$a\"\n", "streams[0].name"),
        ("[log]\ncompression = \"lz4\"\n", "log.compression"),
    ];
    for (config, key) in cases {
        let output = serve_refusing(config);
        assert_eq!(code(&output), 2, "{config:?}: {}", stderr(&output));
        assert!(stderr(&output).contains(key), "{config:?} should name {key}: {}", stderr(&output));
    }
}
