//! The shape of the source tree, checked: `cargo test --test architecture`.
//!
//! Reads every `src/**/*.rs` file and fails on
//! - a cycle between top-level modules (from the `crate::MODULE` paths each module names, in
//!   `use` lines and inline paths alike; `super::` stays within a module),
//! - a source file over [`MAX_LINES`] lines,
//! - the word `unsafe` in code outside `src/sys/`,
//! - a module below `cli` that imports `cli`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest source file, in lines.
const MAX_LINES: usize = 700;

fn sources() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                out.push((p, text));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    walk(&root.join("src"), &mut out);
    out.into_iter()
        .map(|(p, t)| (p.strip_prefix(root).unwrap().to_path_buf(), t))
        .collect()
}

/// The top-level module a file belongs to (`src/overlay/fs.rs` → `overlay`); `None` for the
/// crate root and the binary.
fn top_module(path: &Path) -> Option<String> {
    let rel = path.strip_prefix("src").ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// The code of a file without its comments (line comments, doc comments) and string literals,
/// roughly: enough that a word in prose or in a message is not taken for code.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut in_str = false;
        let mut prev = '\0';
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if in_str {
                if c == '"' && prev != '\\' {
                    in_str = false;
                }
                prev = if prev == '\\' && c == '\\' { '\0' } else { c };
                continue;
            }
            if c == '/' && chars.peek() == Some(&'/') {
                break;
            }
            if c == '"' {
                in_str = true;
                prev = '\0';
                continue;
            }
            out.push(c);
        }
        out.push('\n');
    }
    out
}

/// The top-level modules a file's code names through `crate::` (including inside
/// `use crate::{a::x, b}` groups).
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a::b, c, d::{e, f}}`: the first segment of each top-level item.
            let mut depth = 0usize;
            let mut item_start = true;
            let mut word = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_alphanumeric() || c == '_') => word.push(c),
                    _ if item_start && !word.is_empty() => {
                        found.insert(std::mem::take(&mut word));
                        item_start = false;
                    }
                    _ => {}
                }
            }
            if !word.is_empty() {
                found.insert(word);
            }
        } else {
            let word: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !word.is_empty() {
                found.insert(word);
            }
        }
    }
    found
}

/// Top-level module → the top-level modules it uses.
fn module_graph(files: &[(PathBuf, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = files.iter().filter_map(|(p, _)| top_module(p)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in files {
        let Some(from) = top_module(path) else {
            continue;
        };
        let deps = graph.entry(from.clone()).or_default();
        for to in crate_paths(&code_only(text)) {
            if to != from && modules.contains(&to) {
                deps.insert(to);
            }
        }
    }
    graph
}

/// One cycle, if the graph has any (depth-first search).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            match state.get(m.as_str()).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|s| s == m).unwrap();
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(m, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0 {
            let mut stack = Vec::new();
            if let Some(c) = visit(n, graph, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn no_cycle_between_top_level_modules() {
    let graph = module_graph(&sources());
    assert!(graph.contains_key("overlay") && graph.contains_key("daemon"));
    if let Some(cycle) = find_cycle(&graph) {
        let edges: Vec<String> = graph
            .iter()
            .map(|(k, v)| {
                format!(
                    "  {k} -> {}",
                    v.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            })
            .collect();
        panic!(
            "import cycle: {}\nthe graph:\n{}",
            cycle.join(" -> "),
            edges.join("\n")
        );
    }
}

#[test]
fn nothing_below_cli_imports_it() {
    for (path, text) in sources() {
        if top_module(&path).as_deref() == Some("cli") || top_module(&path).is_none() {
            continue;
        }
        assert!(
            !crate_paths(&code_only(&text)).contains("cli"),
            "{} imports cli",
            path.display()
        );
    }
}

#[test]
fn no_source_file_over_the_limit() {
    let mut over = Vec::new();
    for (path, text) in sources() {
        let lines = text.lines().count();
        if lines > MAX_LINES {
            over.push(format!(
                "{}: {lines} lines (at most {MAX_LINES})",
                path.display()
            ));
        }
    }
    assert!(
        over.is_empty(),
        "files over the limit:\n{}",
        over.join("\n")
    );
}

#[test]
fn unsafe_only_in_sys() {
    let mut found = Vec::new();
    for (path, text) in sources() {
        if path.starts_with("src/sys") {
            continue;
        }
        for (n, line) in code_only(&text).lines().enumerate() {
            let words = line.split(|c: char| !(c.is_alphanumeric() || c == '_'));
            if words.into_iter().any(|w| w == "unsafe") {
                found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "unsafe outside src/sys:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_checker_sees_cycles_and_groups() {
    let files = vec![
        (
            PathBuf::from("src/a.rs"),
            "use crate::{b::X, c};".to_string(),
        ),
        (
            PathBuf::from("src/b/mod.rs"),
            "fn f() { crate::a::g() } // crate::c".to_string(),
        ),
        (
            PathBuf::from("src/c.rs"),
            "const S: &str = \"crate::a\";".to_string(),
        ),
    ];
    let g = module_graph(&files);
    assert_eq!(g["a"], BTreeSet::from(["b".to_string(), "c".to_string()]));
    assert_eq!(g["b"], BTreeSet::from(["a".to_string()]));
    assert!(g["c"].is_empty());
    assert!(find_cycle(&g).is_some());
}
