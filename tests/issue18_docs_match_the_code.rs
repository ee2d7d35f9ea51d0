//! Issue 18: the README and docs/ said things the code does not do. Each check here reads
//! the text and compares it with what the code says or holds, so the two cannot drift apart
//! again unnoticed.

mod common;

use std::path::{Path, PathBuf};

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

#[test]
fn the_readme_keeps_two_set_up_commands_that_work_on_a_fresh_machine() {
    let readme = read("README.md");
    let start = readme.split_once("## Getting started").expect("a Getting started section").1;
    let section = start.split("\n## ").next().unwrap();
    let commands: Vec<&str> =
        section.split("```sh\n").skip(1).map(|block| block.split("```").next().unwrap().trim()).collect();
    assert_eq!(commands, ["cargo run --release -- serve", "bash .ci/run"], "{section}");
    assert!(flat(section).contains("work on a fresh Debian machine"), "{section}");
    // With the admin API on by default, the next step needs no flag.
    assert!(section.contains("cargo run --release -- stream list"), "{section}");
}

#[test]
fn the_readme_says_what_the_log_keeps_for_raft() {
    let readme = flat(&read("README.md"));
    let log = read("log/src/log/mod.rs") + &read("log/src/log/raft.rs");
    for hook in
        ["pub fn truncate_after(", "pub fn save_vote(", "pub fn append_at(", "pub fn term_at(", "pub fn reset_to("]
    {
        assert!(log.contains(hook), "the log's Raft hook {hook}");
    }
    assert!(!readme.contains("knows nothing of MQTT or Raft"), "the log holds a vote and truncate_after");
    // Issue 19 added terms by offset, follower appends, control batches and resets.
    for said in [
        "the vote and the last purged entry in `partition.meta`",
        "`truncate_after`",
        "control batches",
        "the term of every offset",
    ] {
        assert!(readme.contains(said), "the README does not say {said:?}");
    }
}

#[test]
fn architecture_md_describes_the_wake_and_the_aliases_the_code_has() {
    let page = flat(&read("docs/architecture.md"));
    // Plain subscriptions are woken through the filter tree of `interest.rs`, not one relayed watch.
    assert!(read("frontend/src/interest.rs").contains("fn wake_matching("));
    assert!(!page.contains("relayed into one"), "no high-watermark watch is relayed");
    assert!(page.contains("Caught up, the connection waits on its own wake (`interest.rs`)"));
    // Inbound topic aliases are accepted and resolved (`topic_alias.rs`).
    assert!(read("frontend/src/topic_alias.rs").contains("inbound"), "topic_alias.rs handles inbound aliases");
    assert!(!page.contains("inbound aliases are refused"));
    assert!(page.contains("an inbound alias is resolved to its topic before the record is built"));
}

#[test]
fn the_frontend_crate_description_is_current() {
    let manifest = read("frontend/Cargo.toml");
    let description = manifest.lines().find_map(|l| l.strip_prefix("description = ")).expect("a description");
    assert!(!description.contains("follow"), "listener and sessions exist: {description}");
    for part in ["listeners", "sessions", "consumer groups", "routing"] {
        assert!(description.contains(part), "{part} missing from {description}");
    }
}

/// Markdown link targets `](target)` of `text`.
fn links(text: &str) -> Vec<String> {
    text.split("](").skip(1).filter_map(|rest| rest.split_once(')').map(|(target, _)| target.to_owned())).collect()
}

/// Every Markdown file of the repository outside `target/`, recursively.
fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("list a directory") {
        let path = entry.expect("a directory entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if path.is_dir() {
            markdown_files(&path, out);
        } else if name.ends_with(".md") {
            out.push(path);
        }
    }
}

#[test]
fn every_link_in_the_docs_stays_in_the_repository_and_resolves() {
    let mut files = Vec::new();
    markdown_files(&repo(), &mut files);
    assert!(files.len() >= 6, "{files:?}");
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let shown = file.strip_prefix(repo()).unwrap().display().to_string();
        if text.contains("/work/") {
            broken.push(format!("{shown}: a path of one machine (/work/...)"));
        }
        for target in links(&text) {
            if target.starts_with("http://") || target.starts_with("https://") || target.starts_with('#') {
                continue;
            }
            let path = target.split('#').next().unwrap();
            if path.starts_with('/') {
                broken.push(format!("{shown}: absolute link {target}"));
                continue;
            }
            let resolved = file.parent().unwrap().join(path);
            let inside = resolved.canonicalize().is_ok_and(|p| p.starts_with(repo().canonicalize().unwrap()));
            if !inside {
                broken.push(format!("{shown}: {target} is not a file of the repository"));
            }
        }
    }
    assert!(broken.is_empty(), "{broken:#?}");
}

#[test]
fn the_bench_page_leads_with_the_current_results_and_the_notes_are_dated() {
    let page = read("benches/README.md");
    let lines: Vec<&str> = page.lines().collect();
    assert!(lines.len() <= 100, "benches/README.md is {} lines: the narrative belongs in benches/notes/", lines.len());
    let line_of = |needle: &str| lines.iter().position(|l| l.contains(needle));
    // One screen: the results table, then the commands that reproduce it.
    let table = line_of("| scenario | metric | Strata | Mosquitto |").expect("the results table");
    let commands = line_of("benches/run-scenarios.sh  ").expect("the command that reproduces the table");
    assert!(table < 15 && commands < 50 && table < commands, "table at line {table}, commands at {commands}");
    assert!(page.contains("cargo bench -p strata-log") && page.contains("cargo bench -p strata-compaction"));

    let mut notes: Vec<String> = std::fs::read_dir(repo().join("benches/notes"))
        .expect("benches/notes/")
        .map(|entry| entry.expect("an entry").file_name().to_string_lossy().into_owned())
        .collect();
    notes.sort();
    assert!(notes.len() >= 2, "{notes:?}");
    for note in &notes {
        let (date, topic) = note.split_at(10.min(note.len()));
        let dated = date.len() == 10
            && date.chars().enumerate().all(|(i, c)| if i == 4 || i == 7 { c == '-' } else { c.is_ascii_digit() });
        let named = topic.starts_with('-')
            && topic.ends_with(".md")
            && topic[1..topic.len() - 3].chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        assert!(dated && named, "{note}: not YYYY-MM-DD-topic.md");
        assert!(page.contains(&format!("(notes/{note})")), "{note} is not in the index of benches/README.md");
    }
}
