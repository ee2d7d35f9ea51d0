//! docs/config.md documents every key the code accepts, in its section, and every TOML example
//! in it is a file `strata config check` accepts. The list of keys comes from the code: the
//! output of `strata serve --print-config`, which prints every key (an unset one as
//! `# key (unset: ...)`).

mod common;

use std::collections::BTreeSet;

use common::{code, stderr, stdout, strata};

fn docs() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/config.md");
    std::fs::read_to_string(path).expect("read docs/config.md")
}

/// The ```toml blocks of the page.
fn toml_blocks(page: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in page.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```toml") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// `key` if the line is `key = ...`, `# key = ...` or `# key (unset...`.
fn key_of(line: &str) -> Option<&str> {
    let line = line.strip_prefix("# ").unwrap_or(line);
    let end = line.find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))?;
    let (key, rest) = line.split_at(end);
    (!key.is_empty() && (rest.starts_with(" = ") || rest.starts_with(" (unset"))).then_some(key)
}

/// (section header, key) pairs of TOML text; top-level keys have the header "".
fn keys(toml: &str) -> BTreeSet<(String, String)> {
    let mut section = String::new();
    let mut out = BTreeSet::new();
    for line in toml.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_owned();
        } else if let Some(key) = key_of(line) {
            out.insert((section.clone(), key.to_owned()));
        }
    }
    out
}

#[test]
fn every_key_the_code_accepts_is_documented_in_its_section() {
    let output = strata(&["serve", "--print-config"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let accepted = keys(&stdout(&output));
    let sections: BTreeSet<&str> = accepted.iter().map(|(section, _)| section.as_str()).collect();
    for section in ["", "[mqtt]", "[http]", "[grpc]", "[compaction]", "[telemetry]", "[log]", "[[streams]]"] {
        assert!(sections.contains(section), "--print-config has no {section:?} section");
    }
    let documented: BTreeSet<(String, String)> = toml_blocks(&docs()).iter().flat_map(|block| keys(block)).collect();
    let missing: Vec<String> = accepted
        .iter()
        .filter(|(section, key)| {
            let in_section = documented.contains(&(section.clone(), key.clone()));
            // A [[streams]] entry takes every [log] key; the page documents them once, under [log].
            let as_log_key = section == "[[streams]]" && documented.contains(&("[log]".to_owned(), key.clone()));
            !(in_section || as_log_key)
        })
        .map(|(section, key)| format!("{section} {key}"))
        .collect();
    assert!(missing.is_empty(), "keys docs/config.md does not document: {missing:?}");
}

#[test]
fn every_documented_example_checks() {
    let blocks = toml_blocks(&docs());
    assert!(blocks.len() >= 3, "docs/config.md has {} toml blocks", blocks.len());
    let dir = tempfile::tempdir().unwrap();
    for (i, block) in blocks.iter().enumerate() {
        let path = dir.path().join(format!("block-{i}.toml"));
        std::fs::write(&path, block).unwrap();
        let output = strata(&["config", "check", path.to_str().unwrap()]);
        assert_eq!(code(&output), 0, "block {i} of docs/config.md:\n{block}\n{}", stderr(&output));
    }
}

#[test]
fn the_key_reader_reads_the_forms_in_use() {
    assert_eq!(key_of("segment_bytes = 1024"), Some("segment_bytes"));
    assert_eq!(key_of("# retention_ms = 604800000"), Some("retention_ms"));
    assert_eq!(key_of("# listen (unset: off)"), Some("listen"));
    assert_eq!(key_of("# Bytes; default 4096 = 4 KiB"), None);
    assert_eq!(key_of("[log]"), None);
}
