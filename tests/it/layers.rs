//! Repository checks on the module graph, read from the source: the lower layers never
//! import the handlers or the pipeline above them, and no two files import each other,
//! directly or around a loop. A cycle makes a module impossible to understand or test
//! without the ones above it, and the layers of ARCHITECTURE.md stay true only while a
//! test holds them.
//!
//! The graph is built from the text of `src/**/*.rs` outside `#[cfg(test)]` modules: every
//! `crate::` and `super::` path (in `use` lines and inline, `{...}` groups expanded), and in
//! a file that declares child modules, the paths that start with a child's name. A path
//! names the file of its longest prefix that is a module with its own file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers that sit below the handlers: none of them may reach up into these.
const LOWER: &[&str] = &[
    "db",
    "http",
    "error",
    "auth",
    "kb",
    "config",
    "chat",
    "platforms",
    "mcp",
    "plugins",
    "skills",
    "archive",
    "attachments",
    "compress",
];
const UPPER: &[&str] = &["api", "pipeline", "routes", "server", "cli"];

/// Known cycle edges tolerated while a refactor is under way (none today). Each entry must
/// still exist, so the list empties as the refactor lands instead of hiding a new cycle.
const PENDING: &[(&str, &str)] = &[];

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/api/mod.rs` is `api`, `src/db/chat.rs` is `db::chat`, `src/main.rs` is `crate`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "main") {
        parts.pop();
    }
    if parts.is_empty() { "crate".to_owned() } else { parts.join("::") }
}

/// The code of a file without its comments and its test module.
fn code_of(text: &str) -> String {
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(end) => &text[..end],
        None => text,
    };
    code.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| l.split(" // ").next().unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path that starts at `start` in `code`, with `use` groups expanded, and the name
/// an `as` gives it.
fn paths_from(code: &str, start: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut from = 0;
    while let Some(i) = code[from..].find(start).map(|i| i + from) {
        from = i + start.len();
        let before = if i > 0 { bytes[i - 1] } else { b' ' };
        if !(before.is_ascii_alphanumeric() || before == b'_' || before == b':') {
            expand(&code[i..], "", &mut out);
        }
    }
    out
}

/// Reads one path (and its `{...}` group, if any) at the start of `text`, prefixed.
fn expand(text: &str, prefix: &str, out: &mut Vec<(String, Option<String>)>) {
    let is_path = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let end = text.find(|c: char| !is_path(c)).unwrap_or(text.len());
    let head = format!("{prefix}{}", &text[..end]);
    if !head.ends_with("::") || !text[end..].starts_with('{') {
        let alias = text[end..].trim_start().strip_prefix("as ").map(|rest| {
            let rest = rest.trim_start();
            rest[..rest.find(|c: char| !is_path(c)).unwrap_or(rest.len())].to_owned()
        });
        out.push((head.trim_end_matches(':').to_owned(), alias));
        return;
    }
    let group = &text[end + 1..];
    let (mut depth, mut item_start) = (0, 0);
    for (j, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth > 0 => depth -= 1,
            ',' | '}' if depth == 0 => {
                let item = group[item_start..j].trim();
                if !item.is_empty() {
                    expand(item, &head, out);
                }
                if c == '}' {
                    return;
                }
                item_start = j + 1;
            }
            _ => {}
        }
    }
}

/// The file module a path names: its longest prefix that is one.
fn target(path: &[&str], modules: &BTreeSet<String>) -> Option<String> {
    (1..=path.len()).rev().map(|n| path[..n].join("::")).find(|m| modules.contains(m))
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut graph = Graph::new();
    for file in &files {
        let module = module_of(&src, file);
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        graph.insert(module.clone(), edges_of(&module, &code, &modules));
    }
    graph
}

/// The file modules that the code of `module` names.
fn edges_of(module: &str, code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let own: Vec<&str> = if module == "crate" { Vec::new() } else { module.split("::").collect() };
    let parent = &own[..own.len().saturating_sub(1)];
    // Paths from the crate root and from the parent, as segments below the root.
    let mut rooted: Vec<(Vec<String>, Option<String>)> = Vec::new();
    for (path, alias) in paths_from(code, "crate::") {
        rooted.push((path.split("::").skip(1).map(str::to_owned).collect(), alias));
    }
    for (path, alias) in paths_from(code, "super::") {
        let segments = parent.iter().copied().chain(path.split("::").skip(1));
        rooted.push((segments.map(str::to_owned).collect(), alias));
    }
    // Names that stand for a file module in this file: its children, and modules imported
    // by name (`use crate::db;`, `use crate::db::chat::{self as store}`).
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    for child in modules.iter().filter(|m| m.rsplit_once("::").map(|(p, _)| p) == Some(module)) {
        names.insert(child.rsplit("::").next().unwrap_or(child).to_owned(), child.clone());
    }
    if module == "crate" {
        names.extend(modules.iter().filter(|m| !m.contains("::")).map(|m| (m.clone(), m.clone())));
    }
    for (segments, alias) in &rooted {
        let trimmed: Vec<&str> = segments.iter().map(String::as_str).filter(|s| *s != "self").collect();
        let joined = trimmed.join("::");
        if modules.contains(&joined) {
            let name = alias.clone().unwrap_or_else(|| trimmed.last().copied().unwrap_or("").to_owned());
            names.insert(name, joined);
        }
    }
    for (name, target_module) in &names {
        for (path, _) in paths_from(code, &format!("{name}::")) {
            let below = path.split("::").skip(1).map(str::to_owned);
            let segments = target_module.split("::").map(str::to_owned).chain(below).collect();
            rooted.push((segments, None));
        }
    }
    let mut edges = BTreeSet::new();
    for (segments, _) in &rooted {
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        edges.extend(target(&segments, modules));
    }
    edges.remove(module);
    edges
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

#[test]
fn lower_layers_never_import_the_handlers_or_the_pipeline() {
    let graph = graph();
    let mut upward = Vec::new();
    for (from, edges) in &graph {
        for to in edges {
            if LOWER.contains(&top(from)) && UPPER.contains(&top(to)) {
                upward.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(upward.is_empty(), "lower layers import from above:\n{}", upward.join("\n"));
    assert!(
        graph["pipeline"].contains("api::admin") || graph["routes"].contains("api"),
        "the graph sees imports"
    );
}

#[test]
fn no_import_cycle_between_files() {
    let mut graph = graph();
    for (from, to) in PENDING {
        let edges = graph.get_mut(*from).unwrap_or_else(|| panic!("no module {from}"));
        assert!(edges.remove(*to), "{from} -> {to} is gone: remove it from PENDING");
    }
    // Depth-first search; a grey node met again closes a cycle, printed from where it starts.
    fn visit<'a>(node: &'a str, graph: &'a Graph, stack: &mut Vec<&'a str>, done: &mut BTreeSet<&'a str>) {
        if done.contains(node) {
            return;
        }
        if let Some(at) = stack.iter().position(|n| *n == node) {
            panic!("import cycle: {} -> {node}", stack[at..].join(" -> "));
        }
        stack.push(node);
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, stack, done);
        }
        stack.pop();
        done.insert(node);
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, &graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_graph_reader_expands_groups_and_skips_comments() {
    let code = code_of(
        "// use crate::api;\nuse crate::db::{self, chat::{Passage, x}, Db};\nlet a = crate::kb::search(x);\n#[cfg(test)]\nmod tests {\n use crate::cli;\n}\n",
    );
    let paths: Vec<String> = paths_from(&code, "crate::").into_iter().map(|(p, _)| p).collect();
    let expected = ["db::self", "db::chat::Passage", "db::chat::x", "db::Db", "kb::search"];
    assert_eq!(paths, expected.map(|p| format!("crate::{p}")));
    let code =
        "use crate::db::chat::{self as store};\nuse crate::api;\nfn f() { store::x(); api::meta::y(); }";
    let modules = ["api", "api::meta", "db", "db::chat"].map(str::to_owned).into_iter().collect();
    let edges: Vec<String> = edges_of("kb", code, &modules).into_iter().collect();
    assert_eq!(edges, ["api", "api::meta", "db::chat"]);
}
