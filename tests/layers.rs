//! The module graph reads top-down: no module reaches into a layer above its own, and no two top-level
//! modules use each other, directly or through others. The layers are the README's (Architecture); a
//! new top-level module must be placed in one here, or this test fails naming it.
//!
//! Edges are every `crate::<module>` path in code (comments and doc comments skipped), `use crate::{a,
//! b}` groups, and the crate root's re-exports (`crate::Pipeline` is `pipeline`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Highest first. A module may use its own layer and those below it.
const LAYERS: &[(&str, &[&str])] = &[
    ("cli", &["cli"]),
    ("bench", &["bench"]),
    ("commands", &["run", "verify", "gc", "pictures", "chart"]),
    ("exec", &["exec"]),
    ("plan", &["plan"]),
    ("pipeline", &["pipeline"]),
    ("stages", &["stages"]),
    ("study", &["export", "predict"]),
    ("work", &["train", "dicom", "augment"]),
    ("models", &["models"]),
    ("nn", &["nn"]),
    ("data", &["metrics", "classes", "folds", "codec", "npy", "qupath"]),
    ("store", &["store"]),
    ("core", &["error", "fsio", "hash", "term", "parquet", "suggest", "vars"]),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, ms)| ms.contains(&module))
}

/// Code without comments (line comments, doc comments, block comments) and string literals.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' && (i == 0 || b[i - 1] != b'\'') {
            // a string literal (not the char '"'): skip to its closing quote
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// The top-level modules (and root re-exports) a file's code names.
fn targets(code: &str, reexports: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(p) = rest.find("crate::") {
        let before_ok = p == 0 || !rest.as_bytes()[p - 1].is_ascii_alphanumeric() && rest.as_bytes()[p - 1] != b'_';
        rest = &rest[p + "crate::".len()..];
        if !before_ok {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a::b, c}`: the first segment of each top-level entry
            let mut depth = 0;
            let mut entry_start = true;
            for (k, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        rest = &group[k..];
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => entry_start = true,
                    c if entry_start && (c.is_alphanumeric() || c == '_') => {
                        let name: String = group[k..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                        out.insert(name);
                        entry_start = false;
                    }
                    _ => {}
                }
            }
            continue;
        }
        let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out.into_iter().map(|n| reexports.get(&n).cloned().unwrap_or(n)).collect()
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `pub use module::{A, B}` / `pub use module::A` at the crate root: name -> module; and `#[macro_export]`
/// macros -> the module defining them.
fn root_names(src: &Path) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for line in std::fs::read_to_string(src.join("lib.rs")).unwrap().lines() {
        let Some(rest) = line.trim().strip_prefix("pub use ") else { continue };
        let (module, names) = rest.trim_end_matches(';').split_once("::").unwrap();
        for n in names.trim_matches(|c| c == '{' || c == '}').split(',') {
            m.insert(n.trim().to_string(), module.to_string());
        }
    }
    let mut files = Vec::new();
    rust_files(src, &mut files);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let rel = f.strip_prefix(src).unwrap();
        let top = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        for (k, _) in text.match_indices("#[macro_export]") {
            if let Some(name) = text[k..].split("macro_rules!").nth(1).and_then(|r| r.split_whitespace().next()) {
                m.insert(name.trim_end_matches('{').to_string(), top.clone());
            }
        }
    }
    m
}

/// Every edge between top-level modules: `from -> {to: first file naming it}`.
fn edges(src: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let reexports = root_names(src);
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut g: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(src).unwrap();
        let top = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        if top == "lib" || top == "main" {
            continue; // the root declares and re-exports every module
        }
        let code = code_only(&std::fs::read_to_string(&f).unwrap());
        for t in targets(&code, &reexports) {
            if t != top {
                g.entry(top.clone()).or_default().entry(t).or_insert_with(|| rel.display().to_string());
            }
        }
    }
    g
}

#[test]
fn no_module_reaches_upward_and_the_graph_has_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = edges(&src);
    let mut problems = Vec::new();
    let mut modules: BTreeSet<&String> = g.keys().collect();
    modules.extend(g.values().flat_map(|m| m.keys()));
    for m in modules {
        if layer_of(m).is_none() {
            problems.push(format!("module `{m}` is in no layer: place it in tests/layers.rs and the README's architecture section"));
        }
    }
    for (from, tos) in &g {
        for (to, file) in tos {
            if let (Some(a), Some(b)) = (layer_of(from), layer_of(to)) {
                if b < a {
                    problems.push(format!("{file}: `{from}` (layer {}) uses `{to}` (layer {}, above it)", LAYERS[a].0, LAYERS[b].0));
                }
            }
        }
    }
    // cycles among top-level modules (possible only within a layer once the above holds)
    fn visit<'a>(n: &'a str, g: &'a BTreeMap<String, BTreeMap<String, String>>, state: &mut BTreeMap<&'a str, u8>, stack: &mut Vec<&'a str>, found: &mut Vec<String>) {
        state.insert(n, 1);
        stack.push(n);
        for to in g.get(n).into_iter().flat_map(|m| m.keys()) {
            match state.get(to.as_str()) {
                Some(1) => {
                    let at = stack.iter().position(|s| s == to).unwrap();
                    found.push(format!("cycle: {} -> {to}", stack[at..].join(" -> ")));
                }
                Some(_) => {}
                None => visit(to, g, state, stack, found),
            }
        }
        stack.pop();
        state.insert(n, 2);
    }
    let mut state = BTreeMap::new();
    let mut found = Vec::new();
    for n in g.keys() {
        if !state.contains_key(n.as_str()) {
            visit(n, &g, &mut state, &mut Vec::new(), &mut found);
        }
    }
    problems.extend(found);
    assert!(problems.is_empty(), "module graph:\n{}", problems.join("\n"));
}

#[test]
fn the_checker_sees_edges_in_paths_groups_and_reexports_but_not_in_comments() {
    let re: BTreeMap<String, String> = [("Pipeline".to_string(), "pipeline".to_string())].into();
    let code = code_only("use crate::{store::Record, hash};\n// crate::cli in a comment\nlet s = \"crate::bench\";\nfn f(p: &crate::Pipeline) { crate::exec::run() }");
    let t = targets(&code, &re);
    assert_eq!(t, ["exec", "hash", "pipeline", "store"].iter().map(|s| s.to_string()).collect::<BTreeSet<_>>());
}
