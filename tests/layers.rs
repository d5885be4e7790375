//! The layering stays true: every top-level module imports only from the layers below it (so the modules
//! form no cycle), nothing below the HTTP layer names actix, and every module of `src/lib.rs` has a place
//! in the layer list. `docs/architecture.md` explains the layers; a new module gets a place here first.
//!
//! The check reads the source text: every `crate::name` path (in `use` lists and in expressions), after
//! comments are stripped. The checker checks itself on a planted upward import and a planted cycle.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. A module may use the modules before it, never one after it.
const LAYERS: &[&str] = &[
    "dps",
    "hashing",
    "geo",
    "policy",
    "engine",
    "answer",
    "fixtures",
    "simulate",
    "plan",
    "rollout",
    "telemetry",
    "server",
    "http",
    "cli",
];

/// The first layer allowed to name the HTTP framework.
const HTTP_LAYER: &str = "http";

/// Every `.rs` file under `dir`, with the top-level module it belongs to (`src/a.rs` and `src/a/**`
/// belong to `a`; `lib.rs` and `main.rs` to none).
fn files(src: &Path) -> Vec<(String, PathBuf)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("readable source directory") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut all = Vec::new();
    walk(src, &mut all);
    all.sort();
    all.into_iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(src).ok()?;
            let first = rel.components().next()?.as_os_str().to_string_lossy().into_owned();
            let module = first.strip_suffix(".rs").unwrap_or(&first).to_owned();
            (module != "lib" && module != "main").then_some((module, p))
        })
        .collect()
}

/// The text without `//` comments (doc comments included) and without string literals' contents, so a
/// path in prose or in a message is not an import.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut in_str = false;
        let mut prev = '\0';
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if !in_str && c == '/' && chars.peek() == Some(&'/') {
                break;
            }
            if c == '"' && prev != '\\' && prev != '\'' {
                in_str = !in_str;
            }
            if !in_str {
                out.push(c);
            }
            prev = if prev == '\\' && c == '\\' { '\0' } else { c };
        }
        out.push('\n');
    }
    out
}

/// The top-level modules a piece of code names through `crate::`: `crate::a::b`, `crate::{a, b::c}`.
fn crate_refs(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `dps_allocator_crate::` or similar: not this crate
        }
        let trimmed = rest.trim_start();
        if let Some(group) = trimmed.strip_prefix('{') {
            // Split the group at its top-level commas; each item's first name is a module.
            let mut depth = 0;
            let mut items = vec![String::new()];
            for c in group.chars() {
                match c {
                    '}' if depth == 0 => break,
                    ',' if depth == 0 => {
                        items.push(String::new());
                        continue;
                    }
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if let Some(item) = items.last_mut() {
                    item.push(c);
                }
            }
            for item in items {
                let name: String = item
                    .trim_start()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        } else {
            let name: String = trimmed
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

/// Everything wrong with the layering of the source tree at `src`.
fn violations(src: &Path, layers: &[&str]) -> Vec<String> {
    let rank: BTreeMap<&str, usize> = layers.iter().enumerate().map(|(i, l)| (*l, i)).collect();
    let http = rank.get(HTTP_LAYER).copied().unwrap_or(usize::MAX);
    let mut problems = Vec::new();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, path) in files(src) {
        let text = std::fs::read_to_string(&path).expect("readable source file");
        let code = code_only(&text);
        let shown = path.strip_prefix(src).unwrap_or(&path).display().to_string();
        let Some(&mine) = rank.get(module.as_str()) else {
            problems.push(format!("src/{shown}: module `{module}` has no place in the layer list"));
            continue;
        };
        for used in crate_refs(&code) {
            if used == module {
                continue;
            }
            graph.entry(module.clone()).or_default().insert(used.clone());
            match rank.get(used.as_str()) {
                Some(&theirs) if theirs > mine => problems.push(format!(
                    "src/{shown}: `{module}` imports `crate::{used}`, a layer above it"
                )),
                Some(_) => {}
                None => problems.push(format!(
                    "src/{shown}: `crate::{used}` is not a module of the layer list"
                )),
            }
        }
        if mine < http && code.contains("actix") {
            problems.push(format!(
                "src/{shown}: `{module}` is below the HTTP layer but names actix"
            ));
        }
    }
    if let Some(cycle) = find_cycle(&graph) {
        problems.push(format!("the top-level modules form a cycle: {}", cycle.join(" -> ")));
    }
    problems
}

/// A cycle in the module graph, if any (depth-first search).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn every_module_imports_only_from_the_layers_below_it() {
    let problems = violations(&src(), LAYERS);
    assert!(problems.is_empty(), "layering broken:\n{}", problems.join("\n"));
}

#[test]
fn the_layer_list_is_the_crates_module_list() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("lib.rs");
    let declared: BTreeSet<&str> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod ")?.strip_suffix(';'))
        .collect();
    let listed: BTreeSet<&str> = LAYERS.iter().copied().collect();
    assert_eq!(declared, listed, "src/lib.rs modules and the layer list differ");
}

/// A throwaway tree for the checker's own tests.
fn planted(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dps-layers-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (name, text) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }
    dir
}

#[test]
fn the_checker_catches_a_planted_upward_import_a_cycle_and_actix_below_http() {
    let layers = ["low", "mid", "http", "top"];
    let clean = planted(
        "clean",
        &[
            ("low.rs", "//! Mentions crate::top in a comment only.\npub fn f() {}\n"),
            (
                "mid/inner.rs",
                "use crate::{low::f, mid};\nconst S: &str = \"crate::top\";\n",
            ),
            ("http.rs", "use actix_web::HttpResponse;\nuse crate::mid::inner;\n"),
            ("top.rs", "use crate::http;\n"),
        ],
    );
    assert_eq!(violations(&clean, &layers), Vec::<String>::new());

    let upward = planted(
        "upward",
        &[
            ("low.rs", "pub fn f() {}\n"),
            ("mid/inner.rs", "use crate::{low, top::Thing};\n"),
            ("top.rs", "use crate::mid;\n"),
        ],
    );
    let found = violations(&upward, &layers);
    assert!(
        found
            .iter()
            .any(|p| p.contains("`mid` imports `crate::top`, a layer above it")),
        "{found:?}"
    );
    assert!(found.iter().any(|p| p.contains("cycle: ")), "{found:?}");

    let actix = planted("actix", &[("low.rs", "use actix_web::web::Bytes;\n")]);
    let found = violations(&actix, &layers);
    assert!(found.iter().any(|p| p.contains("names actix")), "{found:?}");

    let stray = planted("stray", &[("extra.rs", "pub fn g() {}\n")]);
    assert!(violations(&stray, &layers)[0].contains("no place in the layer list"));
    for d in [clean, upward, actix, stray] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn grouped_and_nested_paths_are_all_seen() {
    let refs = crate_refs("use crate::{a::{x, y}, b, c::d as e};\nlet v = crate::f::g();\n");
    assert_eq!(
        refs,
        ["a", "b", "c", "f"]
            .into_iter()
            .map(str::to_owned)
            .collect::<BTreeSet<_>>()
    );
}
