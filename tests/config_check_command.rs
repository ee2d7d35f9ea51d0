//! `strata config check FILE` reads a config file exactly as `strata serve --config FILE`
//! would: `FILE: ok` and exit 0 for a good one, the error naming the key and exit 2 otherwise.

mod common;

use common::{code, serve_refusing, stderr, stdout, strata};

fn check(config: &str) -> (std::process::Output, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("strata.toml");
    std::fs::write(&path, config).expect("write config");
    let path = path.to_str().expect("temp paths are UTF-8").to_owned();
    (strata(&["config", "check", &path]), dir, path)
}

#[test]
fn a_good_file_is_ok() {
    let (output, _dir, path) = check(
        "[mqtt]\nmax_packet_size = \"256KiB\"\n\n[compaction]\ncleaner_threads = 2\ncleaner_buffer_bytes = \"64MiB\"\n\n\
         [log]\nsegment_bytes = \"512MiB\"\nretention_ms = \"7d\"\n\n[[streams]]\nname = \"orders\"\n\
         retention_bytes = \"10GB\"\n",
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(stdout(&output), format!("{path}: ok\n"));
}

#[test]
fn a_bad_file_names_the_key_as_serve_does() {
    for (config, message) in [
        (
            "[[streams]]\nname = \"a\"\n\n[[streams]]\nname = \"b\"\nretention_ms = \"7x\"\n",
            "streams[1].retention_ms: \"7x\" is not a duration",
        ),
        ("[log]\nretention_bytes = \"99999999999EiB\"\n", "log.retention_bytes: \"99999999999EiB\" is too large"),
        ("[log]\nsegment_bytes = \"2GiB\"\n", "log.segment_bytes = 2147483648"),
        ("[compaction]\ncleaner_threads = 0\n", "compaction.cleaner_threads = 0"),
        (
            "[compaction]\nretention_check_interval_ms = \"soon\"\n",
            "compaction.retention_check_interval_ms: \"soon\" is not a duration",
        ),
        ("[telemetry]\notlp_endpoint = \"localhost:4317\"\n", "telemetry.otlp_endpoint"),
        ("[mqtt]\nmax_pakcet_size = 1024\n", "mqtt.max_pakcet_size: unknown key"),
    ] {
        let (output, _dir, _path) = check(config);
        assert_eq!(code(&output), 2, "{config:?}: {}", stderr(&output));
        assert!(stdout(&output).is_empty(), "{config:?}: {}", stdout(&output));
        assert!(stderr(&output).contains(message), "{config:?} should say {message:?}: {}", stderr(&output));
        let served = serve_refusing(config);
        assert_eq!(code(&served), 2, "serve: {config:?}");
        assert!(stderr(&served).contains(message), "serve: {config:?} should say {message:?}: {}", stderr(&served));
    }
}

#[test]
fn a_missing_file_exits_2() {
    let output = strata(&["config", "check", "/nonexistent/strata.toml"]);
    assert_eq!(code(&output), 2);
    assert!(stderr(&output).contains("/nonexistent/strata.toml"), "{}", stderr(&output));
}
