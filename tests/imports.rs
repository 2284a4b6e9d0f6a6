//! The library's import graph is a tree: no module reaches, through
//! `crate::` paths, a module that reaches it back (directly or through
//! others), and none imports through the crate root (`lib.rs` re-exports
//! for users; inside, a name is imported from the module that owns it). A
//! child may name its ancestors (`mod` already ties them), and unit-test
//! modules may look anywhere. `../shared/tools/import-circles.py` reads the
//! graph the same way. (`main.rs` is the binary's crate: it imports
//! `ssehub::`, not `crate::`.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path ("engine::log") -> source text, for every file under `src/`.
fn modules(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if path.is_dir() {
            let mut inner = prefix.to_vec();
            inner.push(name);
            modules(&path, &inner, out);
        } else if let Some(stem) = name.strip_suffix(".rs").filter(|_| name != "main.rs") {
            let mut module = prefix.to_vec();
            if !matches!(stem, "mod" | "lib" | "main") {
                module.push(stem.to_string());
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Unit tests may look anywhere: everything from their module on.
            let text = match text.find("#[cfg(test)]\nmod tests {") {
                Some(at) => text[..at].to_string(),
                None => text,
            };
            out.insert(module.join("::"), text);
        }
    }
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path a `crate::` reference names, groups (`crate::{a::{b, c}, d}`) expanded.
fn crate_paths(text: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(is_ident) {
            continue;
        }
        expand("", rest, &mut paths);
    }
    paths
}

/// Reads one path (or brace group) at the start of `text`, prefixed with `prefix`.
fn expand(prefix: &str, text: &str, out: &mut Vec<String>) {
    let mut path = prefix.to_string();
    let mut rest = text;
    loop {
        let len = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
        if len == 0 {
            break;
        }
        if !path.is_empty() {
            path.push_str("::");
        }
        path.push_str(&rest[..len]);
        rest = &rest[len..];
        match rest.strip_prefix("::") {
            Some(next) => rest = next,
            None => break,
        }
    }
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    expand(&path, group[start..i].trim_start(), out);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&path, group[start..i].trim_start(), out);
                    start = i + 1;
                }
                _ => {}
            }
        }
    } else if !path.is_empty() {
        out.push(path);
    }
}

/// The longest module that is a prefix of `path`.
fn module_of<'a>(path: &str, modules: &'a BTreeMap<String, String>) -> Option<&'a str> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len()).rev().find_map(|n| modules.get_key_value(&parts[..n].join("::")).map(|(k, _)| k.as_str()))
}

fn edges(modules: &BTreeMap<String, String>) -> BTreeMap<&str, BTreeSet<&str>> {
    let mut edges = BTreeMap::new();
    for (module, text) in modules {
        let targets: &mut BTreeSet<&str> = edges.entry(module.as_str()).or_default();
        for path in crate_paths(text) {
            let Some(target) = module_of(&path, modules) else { continue };
            let ancestor = module.starts_with(&format!("{target}::")) || target.is_empty();
            if target != module && !ancestor {
                targets.insert(target);
            }
        }
    }
    edges
}

/// The circles: strongly connected components of more than one module.
fn circles<'a>(edges: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Vec<Vec<&'a str>> {
    // Kosaraju: finish order on the graph, then components on its reverse.
    fn visit<'a>(v: &'a str, edges: &BTreeMap<&'a str, BTreeSet<&'a str>>, seen: &mut BTreeSet<&'a str>, order: &mut Vec<&'a str>) {
        if !seen.insert(v) {
            return;
        }
        for &w in edges.get(v).into_iter().flatten() {
            visit(w, edges, seen, order);
        }
        order.push(v);
    }
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for &v in edges.keys() {
        visit(v, edges, &mut seen, &mut order);
    }
    let mut reverse: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (&v, targets) in edges {
        for &w in targets {
            reverse.entry(w).or_default().insert(v);
        }
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for &v in order.iter().rev() {
        let mut component = Vec::new();
        visit(v, &reverse, &mut seen, &mut component);
        if component.len() > 1 {
            component.sort();
            out.push(component);
        }
    }
    out
}

#[test]
fn the_import_graph_has_no_circle() {
    let mut all = BTreeMap::new();
    modules(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &[], &mut all);
    assert!(all.contains_key("engine::log") && all.contains_key(""), "{:?}", all.keys());
    let found = circles(&edges(&all));
    assert!(found.is_empty(), "import circles (a module reaches one that reaches it back):\n{found:#?}");
}

#[test]
fn nothing_inside_imports_through_the_crate_root() {
    let mut all = BTreeMap::new();
    modules(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &[], &mut all);
    let mut through_root = Vec::new();
    let unit_tests = |m: &str| m == "tests" || m.ends_with("::tests");
    for (module, text) in all.iter().filter(|(m, _)| !m.is_empty() && !unit_tests(m)) {
        for path in crate_paths(text) {
            if module_of(&path, &all).is_none() {
                through_root.push(format!("{module}: crate::{path}"));
            }
        }
    }
    assert!(through_root.is_empty(), "imported through lib.rs instead of the owning module:\n{}", through_root.join("\n"));
}

#[test]
fn the_reader_expands_groups_and_finds_circles() {
    let text = "use crate::{a::{self, B}, c::d::{E, f::G}};\nfn x() { crate::h::i(); my_crate::z(); }";
    assert_eq!(crate_paths(text), ["a::self", "a::B", "c::d::E", "c::d::f::G", "h::i"]);
    let modules: BTreeMap<String, String> = [
        ("", ""),
        ("a", "use crate::b::X;"),
        ("b", "use crate::c::{Y};"),
        ("c", "fn f() { crate::a::z(); }"),
        ("c::inner", "use crate::c::Y;"),
        ("d", "use crate::a::X;"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(circles(&edges(&modules)), [vec!["a", "b", "c"]]);
}
