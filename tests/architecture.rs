//! The shape of `src/`, kept true: the layering of `src/lib.rs` (each layer
//! imports only the layers before it; adapters never import each other or
//! the store), no import cycles between modules, outside crates only in
//! their adapter, no tokio in the domain, no source file over 600 lines
//! (tests aside), and a `//!` opening every module.
//!
//! It reads the source: comments and string literals are stripped, `use`
//! trees are parsed, and every `crate::`/`super::`/`self::` path is
//! resolved to the module it names. The checker is tested on a small tree
//! with a planted fault of each kind, so it cannot pass by seeing nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A top-level module's layer; lower numbers are further in.
fn layer(top: &str) -> Option<u8> {
    Some(match top {
        "domain" | "sys" => 0,
        "config" => 1,
        "store" => 2,
        "station" => 3,
        "reader" | "network" | "hotplug" | "identity" | "xmpp" | "herd" | "web" | "screen"
        | "control" => 4,
        "app" => 5,
        "cli" => 6,
        _ => return None,
    })
}

/// Whether top-level module `from` may import `to`.
fn may_import(from: &str, to: &str) -> bool {
    let (Some(a), Some(b)) = (layer(from), layer(to)) else {
        return false;
    };
    match from {
        // The two leaves import nothing of the crate.
        "domain" | "sys" => false,
        // Adapters: the Station's API and view, the domain, config, sys.
        _ if a == 4 => matches!(to, "station" | "domain" | "config" | "sys"),
        _ => b < a,
    }
}

/// Outside crates that belong to one place only.
fn crate_home(krate: &str) -> Option<&'static [&'static str]> {
    Some(match krate {
        "axum" | "tower_http" => &["web"],
        "zbus" => &["network", "hotplug"],
        "tokio_xmpp" | "xmpp_parsers" | "minidom" => &["xmpp"],
        "gtk4" | "gtk" | "glib" | "async_channel" => &["screen"],
        "reqwest" => &["identity"],
        "rusqlite" => &["store"],
        _ => return None,
    })
}

/// Crates the domain may use. `utoipa` only for `derive(utoipa::ToSchema)`
/// on the types the HTTP API serializes: it describes their JSON shape for
/// the OpenAPI document (generated from the same types, so it cannot drift)
/// and adds no behaviour.
const DOMAIN_CRATES: &[&str] = &[
    "std",
    "core",
    "alloc",
    "serde",
    "thiserror",
    "hex",
    "utoipa",
];

/// Primitive types, whose associated functions look like paths.
const PRIMITIVES: &[&str] = &[
    "bool", "char", "str", "i8", "i16", "i32", "i64", "i128", "isize", "u8", "u16", "u32", "u64",
    "u128", "usize", "f32", "f64",
];

const MAX_LINES: usize = 600;

/// Source with comments and string/char literals blanked (line breaks kept).
fn strip(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let blank = |out: &mut String, s: &[u8]| {
        for &c in s {
            out.push(if c == b'\n' { '\n' } else { ' ' });
        }
    };
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            let end = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest.starts_with(b"/*") {
            let mut depth = 0;
            let mut j = 0;
            while j < rest.len() {
                if rest[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if rest[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, &rest[..j]);
            i += j;
        } else if rest[0] == b'r'
            && (rest.starts_with(b"r\"") || rest.starts_with(b"r#"))
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
        {
            let hashes = rest[1..].iter().take_while(|&&c| c == b'#').count();
            if rest.get(1 + hashes) != Some(&b'"') {
                out.push('r');
                i += 1;
                continue;
            }
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            let body = 2 + hashes;
            let end = rest[body..]
                .windows(close.len())
                .position(|w| w == close.as_slice())
                .map_or(rest.len(), |p| body + p + close.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest[0] == b'"' {
            let mut j = 1;
            while j < rest.len() && rest[j] != b'"' {
                j += if rest[j] == b'\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(rest.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest[0] == b'\'' {
            // A char literal ('x', '\n', '\u{1}'), not a lifetime ('a).
            let lit = if rest.get(1) == Some(&b'\\') {
                rest[2..].iter().position(|&c| c == b'\'').map(|p| p + 3)
            } else if rest.get(2) == Some(&b'\'') {
                Some(3)
            } else {
                std::str::from_utf8(&rest[1..rest.len().min(6)])
                    .ok()
                    .or_else(|| std::str::from_utf8(&rest[1..rest.len().min(5)]).ok())
                    .and_then(|s| s.chars().next())
                    .filter(|c| !c.is_ascii())
                    .map(|c| 1 + c.len_utf8() + 1)
                    .filter(|&n| rest.get(n - 1) == Some(&b'\''))
            };
            match lit {
                Some(n) => {
                    blank(&mut out, &rest[..n]);
                    i += n;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            let ch = src[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// The code before a trailing `#[cfg(test)] mod … {` block (tests go last).
fn without_tests(code: &str) -> &str {
    let mut at = 0;
    while let Some(p) = code[at..].find("#[cfg(test)]") {
        let start = at + p;
        let after = code[start + 12..].trim_start();
        if after.starts_with("mod ") && after.split_once('{').is_some_and(|(h, _)| !h.contains(';'))
        {
            return &code[..start];
        }
        at = start + 12;
    }
    code
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Sep,
    Open,
    Close,
    Comma,
    Star,
    Dot,
}

fn tokens(s: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ':' if chars.peek() == Some(&':') => {
                chars.next();
                out.push(Tok::Sep);
            }
            '{' => out.push(Tok::Open),
            '}' => out.push(Tok::Close),
            ',' => out.push(Tok::Comma),
            '*' => out.push(Tok::Star),
            '.' => out.push(Tok::Dot),
            c if c.is_alphanumeric() || c == '_' => {
                let mut id = c.to_string();
                while let Some(&n) = chars.peek() {
                    if n.is_alphanumeric() || n == '_' {
                        id.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(Tok::Ident(id));
            }
            _ => {}
        }
    }
    out
}

/// Every path a `use` tree names (aliases dropped, `self` folded).
fn use_paths(tree: &str) -> Vec<Vec<String>> {
    fn walk(t: &[Tok], i: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
        let mut path = prefix.to_vec();
        loop {
            match t.get(*i) {
                Some(Tok::Ident(id)) if id == "as" => {
                    *i += 2;
                    out.push(path);
                    return;
                }
                Some(Tok::Ident(id)) => {
                    if id != "self" || path.is_empty() {
                        path.push(id.clone());
                    }
                    *i += 1;
                    if t.get(*i) == Some(&Tok::Sep) {
                        *i += 1;
                        continue;
                    }
                    if matches!(t.get(*i), Some(Tok::Ident(a)) if a == "as") {
                        *i += 2;
                    }
                    out.push(path);
                    return;
                }
                Some(Tok::Open) => {
                    *i += 1;
                    while *i < t.len() && t[*i] != Tok::Close {
                        walk(t, i, &path, out);
                        if t.get(*i) == Some(&Tok::Comma) {
                            *i += 1;
                        }
                    }
                    *i += 1;
                    return;
                }
                Some(Tok::Star) => {
                    *i += 1;
                    out.push(path);
                    return;
                }
                _ => {
                    out.push(path);
                    return;
                }
            }
        }
    }
    let t = tokens(tree);
    let mut out = Vec::new();
    let mut i = 0;
    walk(&t, &mut i, &[], &mut out);
    out
}

/// One module of the crate: its path and its code (comments, strings and
/// tests stripped).
struct Module {
    path: Vec<String>,
    file: PathBuf,
    code: String,
    lines: usize,
    documented: bool,
}

fn modules(src: &Path) -> Vec<Module> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(src).unwrap();
            let mut path: Vec<String> = rel
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                path.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                path.pop();
            }
            let text = std::fs::read_to_string(&p).unwrap();
            let stripped = strip(&text);
            // A test module in a file of its own (`#[cfg(test)] mod tests;`)
            // is test code, as a trailing `mod tests { … }` is.
            let code = if rel.file_stem().is_some_and(|f| f == "tests") {
                String::new()
            } else {
                without_tests(&stripped).to_string()
            };
            out.push(Module {
                lines: code.lines().count(),
                documented: text.trim_start().starts_with("//!"),
                path,
                file: rel.to_path_buf(),
                code,
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// What one module refers to: crate modules (resolved) and outside crates.
fn references(
    m: &Module,
    known: &BTreeSet<Vec<String>>,
) -> (BTreeSet<Vec<String>>, BTreeSet<String>) {
    let mut paths: Vec<Vec<String>> = Vec::new();
    // `use` trees.
    let mut rest = m.code.as_str();
    while let Some(p) = rest.find("use ") {
        let before = rest[..p].chars().next_back();
        let tail = &rest[p + 4..];
        let end = tail.find(';').unwrap_or(tail.len());
        if before.is_none_or(|c| !(c.is_alphanumeric() || c == '_')) {
            paths.extend(use_paths(&tail[..end]));
        }
        rest = &tail[end..];
    }
    // What `use` made a local name: its last segment names the whole path.
    let aliases: BTreeMap<String, Vec<String>> = paths
        .iter()
        .filter_map(|p| Some((p.last()?.clone(), p.clone())))
        .collect();
    // Paths written inline: `crate::a::b`, `super::x`, `tokio::spawn`.
    let t = tokens(&m.code);
    for (i, w) in t.windows(2).enumerate() {
        if let [Tok::Ident(first), Tok::Sep] = w {
            if i > 0 && matches!(t[i - 1], Tok::Sep | Tok::Dot) {
                continue;
            }
            let mut path = match aliases.get(first) {
                Some(full) if full.len() > 1 => full.clone(),
                _ => vec![first.clone()],
            };
            let mut j = i + 2;
            while let (Some(Tok::Ident(id)), next) = (t.get(j), t.get(j + 1)) {
                path.push(id.clone());
                if next != Some(&Tok::Sep) {
                    break;
                }
                j += 2;
            }
            paths.push(path);
        }
    }
    let mut mods = BTreeSet::new();
    let mut crates = BTreeSet::new();
    let parent = |p: &[String]| p[..p.len().saturating_sub(1)].to_vec();
    for p in paths {
        let Some(first) = p.first() else { continue };
        let mut abs: Vec<String> = match first.as_str() {
            "crate" => p[1..].to_vec(),
            "super" => {
                let mut base = parent(&m.path);
                let mut k = 1;
                while p.get(k).map(String::as_str) == Some("super") {
                    base = parent(&base);
                    k += 1;
                }
                base.extend(p[k..].iter().cloned());
                base
            }
            "self" => {
                let mut base = m.path.clone();
                base.extend(p[1..].iter().cloned());
                base
            }
            name => {
                // A child module of this one, written without `self::`.
                let mut child = m.path.clone();
                child.push(name.to_string());
                if known.contains(&child) {
                    let mut full = m.path.clone();
                    full.extend(p.iter().cloned());
                    full
                } else {
                    if name.chars().next().is_some_and(char::is_lowercase)
                        && !PRIMITIVES.contains(&name)
                    {
                        crates.insert(name.to_string());
                    }
                    continue;
                }
            }
        };
        while !abs.is_empty() && !known.contains(&abs) {
            abs.pop();
        }
        if !abs.is_empty() && abs != m.path {
            mods.insert(abs);
        }
    }
    (mods, crates)
}

/// Every violation in the tree under `src`.
fn violations(src: &Path) -> Vec<String> {
    let mods = modules(src);
    let known: BTreeSet<Vec<String>> = mods.iter().map(|m| m.path.clone()).collect();
    let mut out = Vec::new();
    let mut graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for m in &mods {
        let file = m.file.display();
        if !m.documented {
            out.push(format!(
                "{file}: does not open with a //! saying what it owns"
            ));
        }
        if m.lines > MAX_LINES {
            out.push(format!(
                "{file}: {} lines (tests aside), more than {MAX_LINES}",
                m.lines
            ));
        }
        let (refs, crates) = references(m, &known);
        let top = m.path.first().map(String::as_str).unwrap_or("");
        for r in &refs {
            let to = r[0].as_str();
            if !top.is_empty() && to != top && !may_import(top, to) {
                out.push(format!(
                    "{file}: {top} may not import {to} (crate::{})",
                    r.join("::")
                ));
            }
        }
        for k in &crates {
            if let Some(home) = crate_home(k)
                && !top.is_empty()
                && !home.contains(&top)
            {
                out.push(format!(
                    "{file}: uses {k}, which belongs in {}",
                    home.join(" or ")
                ));
            }
            if top == "domain" && !DOMAIN_CRATES.contains(&k.as_str()) {
                out.push(format!(
                    "{file}: the domain uses {k} (only {} allowed)",
                    DOMAIN_CRATES.join(", ")
                ));
            }
        }
        graph.insert(m.path.clone(), refs);
    }
    // Cycles between modules (a module and its own children aside).
    let edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = graph
        .iter()
        .map(|(a, rs)| {
            let keep = rs
                .iter()
                .filter(|b| !b.starts_with(a) && !a.starts_with(b))
                .cloned()
                .collect();
            (a.clone(), keep)
        })
        .collect();
    let mut state: BTreeMap<Vec<String>, u8> = BTreeMap::new();
    fn visit(
        n: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        state: &mut BTreeMap<Vec<String>, u8>,
        stack: &mut Vec<Vec<String>>,
        out: &mut Vec<String>,
    ) {
        match state.get(n) {
            Some(2) => return,
            Some(1) => {
                let from = stack.iter().position(|s| s == n).unwrap_or(0);
                let cycle: Vec<String> = stack[from..]
                    .iter()
                    .chain([n])
                    .map(|p| p.join("::"))
                    .collect();
                out.push(format!("import cycle: {}", cycle.join(" → ")));
                return;
            }
            _ => {}
        }
        state.insert(n.clone(), 1);
        stack.push(n.clone());
        for m in edges.get(n).into_iter().flatten() {
            visit(m, edges, state, stack, out);
        }
        stack.pop();
        state.insert(n.clone(), 2);
    }
    for n in edges.keys() {
        visit(n, &edges, &mut state, &mut Vec::new(), &mut out);
    }
    out
}

#[test]
fn the_source_keeps_its_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let v = violations(&src);
    assert!(v.is_empty(), "{} violation(s):\n{}", v.len(), v.join("\n"));
    // It saw the crate: every layer's modules are there.
    let mods = modules(&src);
    for top in [
        "domain", "sys", "config", "store", "station", "reader", "web", "app", "cli",
    ] {
        assert!(
            mods.iter()
                .any(|m| m.path.first().map(String::as_str) == Some(top)),
            "{top}"
        );
    }
}

#[test]
fn the_checker_finds_each_kind_of_fault() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    let write = |p: &str, text: &str| {
        let p = src.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write(
        "lib.rs",
        "//! root\npub mod domain;\npub mod store;\npub mod web;\npub mod xmpp;\npub mod station;\n",
    );
    // The domain reaching for tokio and the store; a string and a comment
    // that only look like imports must not count.
    write(
        "domain/mod.rs",
        "//! d\npub mod a;\nuse crate::store::Store; // crate::web::x\nfn f() { tokio::spawn(async {}); let _ = \"crate::xmpp::y\"; }\n",
    );
    write("domain/a.rs", "//! a\nuse super::b;\n");
    // An adapter importing another, and the store directly; axum outside web.
    write(
        "web/mod.rs",
        "//! w\nuse crate::{xmpp::Thing, store::{Store, Record}};\n",
    );
    write("xmpp/mod.rs", "//! x\nfn g() { axum::serve(); }\n");
    // A cycle inside the station, and a file without its //!.
    write("station/mod.rs", "//! s\nmod p;\nmod q;\n");
    write("station/p.rs", "//! p\nuse super::q::Q;\n");
    write("station/q.rs", "use super::p::P;\n");
    // Too long.
    write(
        "store/mod.rs",
        &format!("//! st\n{}", "fn x() {}\n".repeat(MAX_LINES)),
    );
    let v = violations(src);
    let has = |needle: &str| v.iter().any(|l| l.contains(needle));
    assert!(has("domain/mod.rs: domain may not import store"), "{v:#?}");
    assert!(has("domain/mod.rs: the domain uses tokio"), "{v:#?}");
    assert!(
        !has("domain may not import web") && !has("domain may not import xmpp"),
        "strings and comments count: {v:#?}"
    );
    assert!(has("web/mod.rs: web may not import xmpp"), "{v:#?}");
    assert!(has("web/mod.rs: web may not import store"), "{v:#?}");
    assert!(
        has("xmpp/mod.rs: uses axum, which belongs in web"),
        "{v:#?}"
    );
    assert!(
        has("import cycle: station::p → station::q → station::p")
            || has("import cycle: station::q → station::p → station::q"),
        "{v:#?}"
    );
    assert!(has("station/q.rs: does not open with a //!"), "{v:#?}");
    assert!(has("store/mod.rs: 601 lines"), "{v:#?}");
}

#[test]
fn use_trees_are_read_whole() {
    let p = use_paths("crate::{a::{b, c::D as E}, self, f::*}");
    let s: Vec<String> = p.iter().map(|v| v.join("::")).collect();
    assert_eq!(s, ["crate::a::b", "crate::a::c::D", "crate", "crate::f"]);
    assert_eq!(
        strip("let s = \"a // b\"; // c\nx"),
        "let s =         ;     \nx"
    );
    assert_eq!(strip("r#\"crate::x\"# y"), "              y");
    assert_eq!(strip("'a' '\\n' &'static"), "         &'static");
}
