//! The shape of the code (issue 23 "Acceptance"), checked on the source files:
//! - inside `authz` the top-level modules form layers: no module imports one that imports it,
//!   directly or through others (`crate::<module>` and `super::super::<module>` paths, test
//!   modules and comments aside);
//! - no engine file (`authz/src`) over 700 lines;
//! - no file in `filter/src` over 400 lines and `filter/src` at most 2,000 lines, test modules
//!   aside (the scheduler is the engine's, `authz/src/schedule.rs`: the filter only carries out
//!   its actions).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ENGINE_FILE_MAX: usize = 700;
const FILTER_FILE_MAX: usize = 400;
const FILTER_TOTAL_MAX: usize = 2000;
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The code of a file: the lines before its test module (`#[cfg(test)]`), comment lines (and
/// so doc links) left out; nothing for a `tests.rs` file.
fn code(path: &Path) -> String {
    non_test(path)
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The text before the file's test module (`#[cfg(test)]`), or nothing for a `tests.rs` file.
fn non_test(path: &Path) -> String {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The top-level module of an `authz/src` file (`decision` for `decision/session.rs`), `None`
/// for `lib.rs`.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (name != "lib").then_some(name)
}

/// The top-level modules a file's code names: `crate::<m>`, and `super::super::<m>` from a
/// file two levels down (`decision/session.rs`).
fn imports(src: &Path, file: &Path, text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let depth = file.strip_prefix(src).unwrap().components().count();
    let mut out = BTreeSet::new();
    let mut prefixes = vec!["crate::".to_string()];
    if depth >= 2 {
        prefixes.push("super::".repeat(depth - 1));
    }
    for prefix in &prefixes {
        for (at, _) in text.match_indices(prefix.as_str()) {
            // `super::super::` inside a longer `super::super::super::` is not this prefix.
            if text[..at].ends_with("super::") {
                continue;
            }
            let rest = &text[at + prefix.len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if modules.contains(&name) {
                out.insert(name);
            }
        }
    }
    out
}

/// The import graph of `authz`'s top-level modules (self-imports left out).
fn authz_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = root().join("authz/src");
    let files = rust_files(&src);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(&src, f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for f in &files {
        let Some(m) = module_of(&src, f) else {
            continue;
        };
        let mut uses = imports(&src, f, &code(f), &modules);
        uses.remove(&m);
        graph.get_mut(&m).unwrap().extend(uses);
    }
    graph
}

/// A cycle of the graph, if it has one (depth-first search).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut cycle = path[i..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for next in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, graph, done, path) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for n in graph.keys() {
        if let Some(c) = visit(n, graph, &mut done, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

#[test]
fn authz_modules_form_layers() {
    let graph = authz_graph();
    assert!(graph.contains_key("decision") && graph.contains_key("config"));
    assert!(
        graph["config"].contains("decision"),
        "the scan sees imports: {graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle between authz modules: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let g = |edges: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    };
    assert_eq!(
        find_cycle(&g(&[
            ("decision", "config"),
            ("config", "audit"),
            ("audit", "decision")
        ])),
        Some(vec![
            "audit".to_string(),
            "decision".into(),
            "config".into(),
            "audit".into()
        ])
    );
    assert_eq!(
        find_cycle(&g(&[
            ("config", "audit"),
            ("audit", "decision"),
            ("config", "decision")
        ])),
        None
    );
}

#[test]
fn no_engine_file_over_700_lines() {
    let over: Vec<String> = rust_files(&root().join("authz/src"))
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > ENGINE_FILE_MAX).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(
        over.is_empty(),
        "over {ENGINE_FILE_MAX} lines: {over:?}: split along a seam"
    );
}

#[test]
fn filter_files_stay_small() {
    let src = root().join("filter/src");
    let mut total = 0;
    let mut over = Vec::new();
    for f in rust_files(&src) {
        let n = non_test(&f).lines().count();
        total += n;
        let name = f.strip_prefix(&src).unwrap().display().to_string();
        if n > FILTER_FILE_MAX {
            over.push(format!("{name}: {n} lines (at most {FILTER_FILE_MAX})"));
        }
    }
    assert!(over.is_empty(), "filter files too long: {over:?}");
    assert!(
        total <= FILTER_TOTAL_MAX,
        "filter/src has {total} lines, at most {FILTER_TOTAL_MAX}"
    );
}
