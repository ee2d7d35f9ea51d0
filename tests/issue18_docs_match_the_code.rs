//! Issue 18: the README and docs/ said things the code does not do. Each check here reads
//! the text and compares it with what the code says or holds, so the two cannot drift apart
//! again unnoticed.

mod common;

use std::path::PathBuf;

use common::{code, stderr, stdout, strata};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// The text with every run of white space (line breaks included) made one space.
fn flat(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The value of `key` in `[section]` of `strata serve --print-config`.
fn default_of(section: &str, key: &str) -> String {
    let output = strata(&["serve", "--print-config"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let printed = stdout(&output);
    let (_, after) = printed.split_once(&format!("\n[{section}]\n")).unwrap_or_else(|| panic!("no [{section}]"));
    after
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in [{section}]: {printed}"))
        .trim_matches('"')
        .to_owned()
}

#[test]
fn the_readme_says_what_the_default_flush_policy_acknowledges() {
    let readme = flat(&read("README.md"));
    assert!(!readme.contains("acknowledged only once durable"), "the default policy acks before the fsync");
    let (flush, interval_ms) = (default_of("log", "flush"), default_of("log", "flush_interval_ms"));
    assert_eq!(flush, "interval", "the README's sentence is written for the interval policy");
    for needed in [
        format!("under the default `flush = \"{flush}\"` the acknowledgement comes before the fsync"),
        format!("within `flush_interval_ms` ({interval_ms} ms)"),
        format!("a power loss can lose the last {interval_ms} ms"),
    ] {
        assert!(readme.contains(&needed), "README.md should say {needed:?}");
    }
}
