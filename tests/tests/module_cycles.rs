//! No import cycle between the modules of `shared/`, `webhook/` and
//! `enforcer/` (issue 14): each library's modules form a one-way graph, so a
//! module can be read knowing only the ones below it.
//!
//! A module is a source file (`a.rs` and `a/mod.rs` are `a`; `lib.rs` is the
//! crate root; `main.rs` and test modules are left out). `A -> B` when A's
//! code outside its `#[cfg(test)]` module names `crate::B...`, or a
//! `super::`/`self::` path that resolves to B (the longest module prefix of
//! the path; a re-export counts as the module that re-exports it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use tierguard_integration::repo_root;

type Module = Vec<String>;

fn name(m: &[String]) -> String {
    if m.is_empty() {
        "crate".to_string()
    } else {
        m.join("::")
    }
}

/// Every non-test module of a crate's `src/`, with its source.
fn modules(src: &Path) -> BTreeMap<Module, String> {
    let files = tierguard::input::files_under(&[src.to_path_buf()], &["rs"]).unwrap_or_else(|e| panic!("{e}"));
    let mut out = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap().with_extension("");
        let mut parts: Module = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        if parts.iter().any(|p| p == "tests") || parts.last().is_some_and(|p| p == "main") {
            continue;
        }
        if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
            parts.pop();
        }
        out.insert(parts, std::fs::read_to_string(&file).unwrap());
    }
    out
}

/// The code without comments and without the inline test module.
fn code(text: &str) -> String {
    let uncommented: String = text
        .lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n");
    let mut rest = uncommented.as_str();
    let mut kept = 0;
    while let Some(i) = rest.find("#[cfg(test)]") {
        let after = rest[i + "#[cfg(test)]".len()..].trim_start();
        let after = after.strip_prefix("pub(crate) ").unwrap_or(after);
        if after.starts_with("mod ") && after.split(';').next().is_some_and(|s| s.contains('{')) {
            return uncommented[..kept + i].to_string();
        }
        kept += i + 1;
        rest = &rest[i + 1..];
    }
    uncommented
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `a::{b, c::{d, e as f}}` -> `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap_or(tree).trim().to_string()];
    };
    let head = &tree[..open];
    let body = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut parts, mut depth, mut current) = (Vec::new(), 0, String::new());
    for c in body.chars() {
        match c {
            ',' if depth == 0 => parts.push(std::mem::take(&mut current)),
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if !(c == ',' && depth == 0) {
            current.push(c);
        }
    }
    parts.push(current);
    let mut out = Vec::new();
    for part in parts.iter().filter(|p| !p.trim().is_empty()) {
        for path in expand(part) {
            out.push(if path == "self" {
                head.trim_end_matches(':').to_string()
            } else {
                format!("{head}{path}")
            });
        }
    }
    out
}

/// The `crate::`, `super::` and `self::` paths a module's code names.
fn paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut body = String::new();
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let boundary = rest[..i].chars().next_back().is_none_or(|c| !is_ident(c));
        let end = rest[i..].find(';').map_or(rest.len(), |e| i + e);
        let tree = rest[i + 4..end].trim();
        body.push_str(&rest[..i]);
        if boundary && ["crate::", "super::", "self::"].iter().any(|p| tree.starts_with(p)) {
            out.extend(expand(tree));
            rest = &rest[end..];
        } else {
            // another crate's path, or the word in a string: scanned below
            body.push_str("use ");
            rest = &rest[i + 4..];
        }
    }
    body.push_str(rest);
    for root in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = body[from..].find(root).map(|i| from + i) {
            from = i + root.len();
            // inside a longer path (`super::super::`) or a longer name
            if body[..i].chars().next_back().is_some_and(|c| is_ident(c) || c == ':') {
                continue;
            }
            let tail: String = body[i..].chars().take_while(|&c| is_ident(c) || c == ':').collect();
            out.push(tail.trim_end_matches(':').to_string());
        }
    }
    out
}

fn resolve(me: &[String], path: &str, modules: &BTreeMap<Module, String>) -> Module {
    let mut parts = path.split("::").peekable();
    let mut base: Module = if parts.peek() == Some(&"crate") {
        parts.next();
        Vec::new()
    } else {
        me.to_vec()
    };
    while let Some(&p) = parts.peek() {
        match p {
            "super" => {
                base.pop();
            }
            "self" => {}
            _ => break,
        }
        parts.next();
    }
    let mut best = base.clone();
    for part in parts {
        base.push(part.to_string());
        if modules.contains_key(&base) {
            best = base.clone();
        }
    }
    best
}

fn graph(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let modules = modules(src);
    assert!(
        modules.len() > 5,
        "{}: only {} modules found",
        src.display(),
        modules.len()
    );
    modules
        .iter()
        .map(|(me, text)| {
            let uses = paths(&code(text))
                .iter()
                .map(|p| resolve(me, p, &modules))
                .filter(|t| t != me && modules.contains_key(t))
                .collect();
            (me.clone(), uses)
        })
        .collect()
}

/// A cycle through `start`, as the modules on it.
fn cycle_through(graph: &BTreeMap<Module, BTreeSet<Module>>, start: &Module) -> Option<Vec<Module>> {
    let mut stack = vec![(start.clone(), vec![start.clone()])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for next in graph.get(&at).into_iter().flatten() {
            if next == start {
                return Some(path);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push((next.clone(), longer));
            }
        }
    }
    None
}

fn cycles(src: &Path) -> Vec<String> {
    let graph = graph(src);
    let mut found = BTreeSet::new();
    for start in graph.keys() {
        if let Some(cycle) = cycle_through(&graph, start) {
            let mut names: Vec<String> = cycle.iter().map(|m| name(m)).collect();
            names.push(name(start));
            found.insert(names.join(" -> "));
        }
    }
    found.into_iter().collect()
}

#[test]
fn the_libraries_have_no_import_cycles() {
    for krate in ["shared", "webhook", "enforcer"] {
        let src = repo_root().join(krate).join("src");
        let found = cycles(&src);
        assert!(found.is_empty(), "{krate}: import cycles:\n{}", found.join("\n"));
    }
}

#[test]
fn a_cycle_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir(src.join("b")).unwrap();
    let files = [
        (
            "lib.rs",
            "pub mod a;\npub mod b;\npub mod c;\npub mod d;\npub mod e;\npub mod f;\n",
        ),
        ("a.rs", "use crate::b::{self, inner::X};\n"),
        ("b/mod.rs", "pub mod inner;\n"),
        (
            "b/inner.rs",
            "// crate::e in a comment\npub fn f() { super::super::c::g() }\n",
        ),
        ("c.rs", "use crate::{d::Y, f as other};\n"),
        (
            "d.rs",
            "pub struct Y;\n#[cfg(test)]\nmod tests {\n    use crate::a::X;\n}\n",
        ),
        ("e.rs", "pub(crate) fn e() { crate::a::x() }\n"),
        ("f.rs", "fn f() { let _ = crate::a::X; }\n"),
    ];
    for (file, text) in files {
        std::fs::write(src.join(file), text).unwrap();
    }
    let graph = graph(src);
    let node = |s: &str| -> Module { s.split("::").map(String::from).collect() };
    let edges = |s: &str| graph[&node(s)].iter().map(|m| name(m)).collect::<Vec<_>>();
    assert_eq!(edges("a"), ["b", "b::inner"]);
    assert_eq!(edges("b::inner"), ["c"]);
    assert_eq!(edges("c"), ["d", "f"]);
    assert!(edges("d").is_empty(), "test modules are left out");
    assert_eq!(edges("e"), ["a"]);
    assert_eq!(
        cycles(src),
        [
            "a -> b::inner -> c -> f -> a",
            "b::inner -> c -> f -> a -> b::inner",
            "c -> f -> a -> b::inner -> c",
            "f -> a -> b::inner -> c -> f",
        ]
    );
}
