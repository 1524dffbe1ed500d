//! The house's layering, checked by reading the sources (no build of anything else, no root,
//! no peer): modules point one way, nothing imports in a circle, and only `src/sys/` touches
//! the operating system (docs/ARCHITECTURE.md, "Layers").
//!
//! - **Layers.** A top-level module may only name (`crate::x`) modules below it in [`LAYERS`].
//! - **No circles.** Among the submodules of any module, the graph of `crate::…`, `super::…`
//!   and `self::…` references in production code has no cycle (a parent's `mod.rs` and its children are not
//!   siblings: a child naming its parent's types is how Rust modules are built).
//! - **The OS boundary.** Outside `src/sys/`, production code (test modules and the test-only
//!   `testing` module excepted) has no `libc`/`nix`/`rustix` call, no `/proc` or `/sys` path,
//!   no subprocess and no file read except through `sys::fs` (the bounded reader).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. `testing` is compiled for tests only; `runtime` holds what every task is
/// started with (`TaskCtx`: the config, the OS seams); `cli` is clap's model of the command
/// line (no logic); `exit` the table of exit statuses every command and doc reads; `manual`
/// the man pages made from the CLI and the config; `report` is every task's report gathered for `status` and `/metrics`;
/// `control` is the control socket's protocol and client.
const LAYERS: &[&str] = &[
    "testing",
    "sys",
    "fault",
    "exit",
    "config",
    "runtime",
    "cli",
    "logging",
    "sampler",
    "alerts",
    "swap",
    "health",
    "optimize",
    "emergency",
    "report",
    "control",
    "metrics",
    "daemon",
    "manual",
    "commands",
];

struct Source {
    /// Module path: `src/swap/engine.rs` is `["swap", "engine"]`, `src/swap/mod.rs` `["swap"]`.
    module: Vec<String>,
    path: PathBuf,
    /// Code lines (comments dropped), with the line number.
    code: Vec<(usize, String)>,
    /// The file is test code as a whole (tests.rs, props.rs, testing.rs).
    test_only: bool,
}

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src/") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&root).expect("under src/");
            let mut module: Vec<String> = rel.iter().map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string()).collect();
            if module.last().is_some_and(|m| m == "mod" || m == "lib" || m == "main") {
                module.pop();
            }
            let name = module.last().cloned().unwrap_or_default();
            let test_only = name == "tests" || name == "props" || module.first().is_some_and(|m| m == "testing");
            let text = std::fs::read_to_string(&path).expect("read a source file");
            let code = text.lines().enumerate().map(|(i, l)| (i + 1, strip_comment(l))).filter(|(_, l)| !l.trim().is_empty()).collect();
            out.push(Source { module, path, code, test_only });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    assert!(out.len() > 50, "found only {} source files under {}", out.len(), root.display());
    out
}

/// The line without a `//` comment (a `//` inside a string literal is kept: a URL, say).
fn strip_comment(line: &str) -> String {
    let mut in_str = false;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '"' if prev != '\\' => in_str = !in_str,
            '/' if !in_str && prev == '/' => return line[..i - 1].to_string(),
            _ => {}
        }
        prev = if prev == '\\' && c == '\\' { ' ' } else { c };
    }
    line.to_string()
}

/// The production lines of a file: everything before a top-level `#[cfg(test)]` (the test
/// module sits at the end of a file, by the house's convention), none of a test-only file.
fn production(src: &Source) -> Vec<&(usize, String)> {
    if src.test_only {
        return Vec::new();
    }
    let mut out = Vec::new();
    for line in &src.code {
        if line.1.starts_with("#[cfg(test)]") {
            break;
        }
        out.push(line);
    }
    out
}

/// Every module path a line names through `crate::`, `super::` or `self::`, resolved from
/// `module` (the file's module: `super` of `src/swap/mod.rs` is the crate root).
fn references(module: &[String], line: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < line.len() {
        let rest = &line[i..];
        let start_ok = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_' || bytes[i - 1] == b':');
        let base: Option<(Vec<String>, usize)> = if !start_ok {
            None
        } else if rest.starts_with("crate::") {
            Some((Vec::new(), "crate::".len()))
        } else if rest.starts_with("super::") || rest.starts_with("self::") {
            // A file's own module for `self`; `super` is its parent (for mod.rs, the module
            // the directory is).
            let mut base = module.to_vec();
            let mut at = 0;
            if rest.starts_with("self::") {
                at = "self::".len();
            } else {
                while rest[at..].starts_with("super::") {
                    at += "super::".len();
                    base.pop();
                }
            }
            Some((base, at))
        } else {
            None
        };
        let Some((base, at)) = base else {
            i += rest.chars().next().map_or(1, char::len_utf8);
            continue;
        };
        let tail = &rest[at..];
        if let Some(group) = tail.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let seg: String = item.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if !seg.is_empty() && seg != "self" {
                    let mut p = base.clone();
                    p.push(seg);
                    out.push(p);
                }
            }
        } else {
            let mut p = base.clone();
            for seg in tail.split("::") {
                let name: String = seg.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                // Module names are lower case; stop at a type, a function call or a macro
                // (`crate::proc_fixture!`).
                let after = &seg[name.len()..];
                if name.is_empty() || name.starts_with(|c: char| c.is_ascii_uppercase()) || after.starts_with('(') || after.starts_with('!')
                {
                    break;
                }
                p.push(name);
                if !after.is_empty() {
                    break;
                }
            }
            if p.len() > base.len() {
                out.push(p);
            }
        }
        i += at.max(1);
    }
    out
}

#[test]
fn top_level_modules_point_down_only() {
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
    let mut wrong = Vec::new();
    for src in sources() {
        let Some(own) = src.module.first() else { continue };
        let Some(own_rank) = rank(own) else {
            wrong.push(format!("{}: module `{own}` is not in LAYERS (tests/layers.rs): place it", src.path.display()));
            continue;
        };
        for (n, line) in &src.code {
            for r in references(&src.module, line) {
                let Some(target) = r.first() else { continue };
                if target == own {
                    continue;
                }
                match rank(target) {
                    Some(t) if t < own_rank => {}
                    Some(_) => {
                        wrong.push(format!("{}:{n}: `{own}` names `{target}`, a layer above it: {}", src.path.display(), line.trim()))
                    }
                    None => {}
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{} upward imports:\n{}", wrong.len(), wrong.join("\n"));
}

#[test]
fn no_import_circle_among_sibling_modules() {
    let srcs = sources();
    // parent module -> (child -> children it names)
    let mut graphs: BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    let mut at: BTreeMap<(Vec<String>, String, String), String> = BTreeMap::new();
    for src in &srcs {
        for (n, line) in production(src) {
            for r in references(&src.module, line) {
                // The deepest common parent of the file's module and the target, and the two
                // children of it they fall under.
                let common = src.module.iter().zip(&r).take_while(|(a, b)| a == b).count();
                if common >= src.module.len() || common >= r.len() {
                    continue; // parent and child
                }
                let parent = src.module[..common].to_vec();
                let (from, to) = (src.module[common].clone(), r[common].clone());
                graphs.entry(parent.clone()).or_default().entry(from.clone()).or_default().insert(to.clone());
                at.entry((parent, from, to)).or_insert_with(|| format!("{}:{n}", src.path.display()));
            }
        }
    }
    let mut circles = Vec::new();
    for (parent, graph) in &graphs {
        for start in graph.keys() {
            // A path from `start` back to itself.
            let mut stack = vec![(start.clone(), vec![start.clone()])];
            let mut seen = BTreeSet::new();
            while let Some((node, path)) = stack.pop() {
                for next in graph.get(&node).into_iter().flatten() {
                    if next == start {
                        let mut cycle = path.clone();
                        cycle.push(next.clone());
                        let hops: Vec<String> = cycle
                            .windows(2)
                            .map(|w| format!("{} -> {} ({})", w[0], w[1], at[&(parent.clone(), w[0].clone(), w[1].clone())]))
                            .collect();
                        circles.push(format!("in crate::{}: {}", parent.join("::"), hops.join(", ")));
                    } else if seen.insert(next.clone()) {
                        let mut p = path.clone();
                        p.push(next.clone());
                        stack.push((next.clone(), p));
                    }
                }
            }
        }
    }
    circles.sort();
    circles.dedup();
    assert!(circles.is_empty(), "import circles:\n{}", circles.join("\n"));
}

#[test]
fn only_sys_touches_the_operating_system() {
    // What counts as touching the OS, and why it is caught by its text.
    let forbidden: &[(&str, &str)] = &[
        ("libc::", "a libc call"),
        ("nix::", "a nix call"),
        ("rustix::", "a rustix call"),
        ("\"/proc", "a /proc path"),
        ("\"/sys/", "a /sys path"),
        ("process::Command", "a subprocess"),
        ("Command::new", "a subprocess"),
        ("fs::read_to_string", "a file read past sys::fs's bounded reader"),
        ("fs::read(", "a file read past sys::fs's bounded reader"),
        ("File::open", "a file read past sys::fs's bounded reader"),
        ("unsafe", "unsafe code"),
    ];
    let mut wrong = Vec::new();
    for src in sources() {
        if src.module.first().is_some_and(|m| m == "sys") {
            continue;
        }
        for (n, line) in production(&src) {
            for (needle, what) in forbidden {
                if contains_word(line, needle) {
                    wrong.push(format!("{}:{n}: {what} outside src/sys/: {}", src.path.display(), line.trim()));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{} OS calls outside src/sys/:\n{}", wrong.len(), wrong.join("\n"));
}

/// `needle` in `line`, not as the tail of a longer name (`unix::` is not `nix::`).
fn contains_word(line: &str, needle: &str) -> bool {
    line.match_indices(needle).any(|(i, _)| !line[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_'))
}

#[test]
fn the_checks_see_what_they_look_for() {
    // The reference parser and the comment stripper, on the shapes the sources use: a check
    // that saw nothing would pass on anything.
    let m = |s: &str| s.split("::").map(String::from).collect::<Vec<_>>();
    assert_eq!(references(&m("swap::files"), "use super::engine::SwapError;"), vec![m("swap::engine")]);
    assert_eq!(references(&m("swap"), "use super::{a, b::C};"), vec![m("a"), m("b")]);
    assert_eq!(references(&m("x"), "let v = crate::sys::fs::read_text(p, crate::sys::fs::SMALL_FILE);"), vec![m("sys::fs"), m("sys::fs")]);
    assert_eq!(references(&m("x"), "const A: &str = crate::proc_fixture!(\"stat\");"), Vec::<Vec<String>>::new());
    assert!(contains_word("let _ = nix::unistd::sync();", "nix::") && !contains_word("use std::os::unix::fs;", "nix::"));
    assert_eq!(strip_comment("let u = \"http://x\"; // a /proc note"), "let u = \"http://x\"; ");
    assert!(sources().iter().any(|s| s.module == m("swap::engine") && !production(s).is_empty()));
}
