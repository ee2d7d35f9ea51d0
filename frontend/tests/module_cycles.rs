//! The modules of `frontend/src` import one another without a cycle (issue 19), and only the
//! partition handle (`partition/`) names the log (`strata_log::Log`). A cycle makes every module in it
//! depend on all the others, which is what kept a replicated partition from sliding in
//! under the frontend.
//!
//! How it checks: every `crate::<name>` path in a module's code (outside its comments and
//! its `#[cfg(test)] mod tests`) is an edge to module `<name>`; a name that `lib.rs` re-exports
//! (`pub use streams::StreamConfig`, so `crate::StreamConfig`) counts as its module. A
//! directory module (`codec/`) is one node. Then it looks for a strongly connected
//! component of more than one module (Tarjan).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

/// Module name → its source (a directory module's files concatenated).
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(src).expect("listing frontend/src") {
        let path = entry.expect("listing frontend/src").path();
        let name = path.file_stem().and_then(|s| s.to_str()).expect("a UTF-8 file name").to_owned();
        if path.is_dir() {
            let mut text = String::new();
            let mut stack = vec![path];
            while let Some(dir) = stack.pop() {
                for entry in std::fs::read_dir(&dir).expect("listing a module directory") {
                    let path = entry.expect("listing a module directory").path();
                    if path.is_dir() {
                        stack.push(path);
                    } else if path.extension().is_some_and(|e| e == "rs") {
                        text.push_str(&std::fs::read_to_string(&path).expect("reading a module file"));
                    }
                }
            }
            out.insert(name, text);
        } else if path.extension().is_some_and(|e| e == "rs") && name != "lib" {
            out.insert(name, std::fs::read_to_string(&path).expect("reading a module file"));
        }
    }
    out
}

/// The code of a module without its unit tests and comments (a doc link such as
/// ``[`crate::Broker::admin`]`` is no import).
fn code_of(text: &str) -> String {
    let code = text.find("#[cfg(test)]\nmod tests").map_or(text, |at| &text[..at]);
    code.lines().map(|line| line.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every name that follows `crate::` in `text`, including each name of a grouped
/// `crate::{a, b::c}` import.
fn crate_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item.trim().chars().take_while(|&c| is_ident(c)).collect();
                if !name.is_empty() {
                    names.insert(name);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

/// Names `lib.rs` re-exports (`pub use module::{A, B};`) → their module.
fn reexports(lib: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for statement in lib.split(';') {
        let Some(at) = statement.find("pub use ") else { continue };
        let path = statement[at + "pub use ".len()..].trim();
        let Some((module, items)) = path.split_once("::") else { continue };
        for item in items.split(|c: char| !is_ident(c)).filter(|s| !s.is_empty()) {
            out.insert(item.to_owned(), module.to_owned());
        }
    }
    out
}

fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules(src);
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("reading lib.rs");
    let reexported = reexports(&lib);
    modules
        .iter()
        .map(|(name, text)| {
            let deps = crate_names(&code_of(text))
                .into_iter()
                .map(|n| reexported.get(&n).cloned().unwrap_or(n))
                .filter(|n| n != name && modules.contains_key(n))
                .collect();
            (name.clone(), deps)
        })
        .collect()
}

/// The strongly connected components of more than one node (Tarjan's algorithm).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: HashMap<&'a str, usize>,
        low: HashMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in &s.graph[v] {
            if !s.index.contains_key(w.as_str()) {
                visit(s, w);
                let low = s.low[v].min(s.low[w.as_str()]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w.as_str()) {
                let low = s.low[v].min(s.index[w.as_str()]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.out
}

fn src() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn the_frontend_modules_import_one_another_without_a_cycle() {
    let graph = graph(&src());
    assert!(graph.len() > 20, "found only {} modules in {}", graph.len(), src().display());
    let found = cycles(&graph);
    let shown: Vec<String> = graph.iter().map(|(m, deps)| format!("{m} -> {deps:?}")).collect();
    assert!(found.is_empty(), "import cycles among {found:?}\n{}", shown.join("\n"));
}

#[test]
fn the_checker_finds_a_cycle_and_a_reexported_name() {
    let lib = "pub use a::{Thing, Other};\npub use b::Single;";
    let reexported = reexports(lib);
    assert_eq!(reexported.get("Thing").map(String::as_str), Some("a"));
    assert_eq!(reexported.get("Single").map(String::as_str), Some("b"));
    let code =
        code_of("use crate::{x::Y, z};\n/// [`crate::v`]\nfn f() { crate::w::g(); }\n#[cfg(test)]\nmod tests {}");
    let names = crate_names(&code);
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["w", "x", "z"]);
    let edges = |pairs: &[(&str, &[&str])]| -> BTreeMap<String, BTreeSet<String>> {
        pairs.iter().map(|(m, d)| (m.to_string(), d.iter().map(|s| s.to_string()).collect())).collect()
    };
    let looped = edges(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &["a"])]);
    assert_eq!(cycles(&looped), vec![vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]]);
    let layered = edges(&[("a", &["b", "c"]), ("b", &["c"]), ("c", &[])]);
    assert!(cycles(&layered).is_empty());
}

/// Whether `code` names the type `strata_log::Log`: the path itself, or `Log` among the
/// items of a `use strata_log::{...}`.
fn names_the_log(code: &str) -> bool {
    let mut rest = code;
    while let Some(at) = rest.find("strata_log::") {
        rest = &rest[at + "strata_log::".len()..];
        let items = match rest.strip_prefix('{') {
            Some(group) => &group[..group.find('}').unwrap_or(group.len())],
            None => &rest[..rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len())],
        };
        if items.split(|c: char| !is_ident(c)).any(|item| item == "Log") {
            return true;
        }
    }
    false
}

#[test]
fn only_the_partition_handle_names_the_log() {
    let naming: Vec<String> = modules(&src())
        .into_iter()
        .filter(|(name, text)| name != "partition" && names_the_log(&code_of(text)))
        .map(|(name, _)| name)
        .collect();
    assert!(naming.is_empty(), "modules naming strata_log::Log besides partition/: {naming:?}");
    assert!(names_the_log("use strata_log::{LogConfig, Log, Record};"));
    assert!(names_the_log("fn f(log: &strata_log::Log) {}"));
    assert!(!names_the_log("use strata_log::{LogConfig, LogError};\nfn f() -> strata_log::LogOffsets {}"));
}
