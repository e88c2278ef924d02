//! What a run measured, as a fingerprint per component it started: the
//! service, the reducer, the relay and the generator, each from the Rust
//! tokens of every workspace crate it is built from (comments, doc
//! comments and formatting do not count), the files those crates embed,
//! and the resolved version, source and features of every dependency.
//!
//! A stored run is stale only when a component it ran has another
//! fingerprint now: a comment, a `cargo fmt` or a change to a crate the
//! component does not link leaves it fresh.

use anyhow::Context;
use proc_macro2::{Delimiter, TokenStream, TokenTree};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The components a run can start, by the package their binary is in.
pub const COMPONENTS: &[(&str, &str)] = &[
    ("service", "button-service"),
    ("reducer", "button-reducer"),
    ("relay", "button-relay"),
    ("generator", "loadgen"),
];

/// Files a crate reads at compile time outside its `src/` (`migrate!`,
/// `include_str!`): they change what the binary does. A test checks that
/// every such path in the workspace is covered here.
const EMBEDDED: &[(&str, &str)] = &[
    ("button-store", "migrations"),
    ("button-service", "service/web"),
];

/// Component name → hex SHA-256, for the workspace at `root`.
pub fn of_workspace(root: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let metadata = metadata(root)?;
    let by_id: BTreeMap<&str, &Package> = metadata
        .packages
        .iter()
        .map(|p| (p.id.as_str(), p))
        .collect();
    let nodes: BTreeMap<&str, &Node> = metadata
        .resolve
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n))
        .collect();
    let workspace_root = PathBuf::from(&metadata.workspace_root);
    let mut crate_hashes: BTreeMap<&str, String> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (component, package) in COMPONENTS {
        let Some(root_pkg) = metadata.packages.iter().find(|p| p.name == *package) else {
            continue;
        };
        let mut hasher = Sha256::new();
        for id in closure(&root_pkg.id, &nodes) {
            let pkg = by_id
                .get(id)
                .with_context(|| format!("cargo metadata names {id} but does not describe it"))?;
            let features = nodes
                .get(id)
                .map(|n| n.features.join(","))
                .unwrap_or_default();
            hasher.update(format!("{} {} {features}\n", pkg.name, pkg.version).as_bytes());
            if pkg.source.is_none() {
                // A workspace crate: its code, not its version number.
                if !crate_hashes.contains_key(id) {
                    let h = crate_code(pkg, &workspace_root)?;
                    crate_hashes.insert(id, h);
                }
                hasher.update(crate_hashes[id].as_bytes());
            } else {
                hasher.update(pkg.source.as_deref().unwrap_or_default().as_bytes());
            }
            hasher.update(b"\n");
        }
        out.insert((*component).to_owned(), hex::encode(hasher.finalize()));
    }
    Ok(out)
}

#[derive(Deserialize)]
struct Metadata {
    packages: Vec<Package>,
    resolve: Resolve,
    workspace_root: String,
}

#[derive(Deserialize)]
struct Package {
    id: String,
    name: String,
    version: String,
    source: Option<String>,
    manifest_path: String,
}

#[derive(Deserialize)]
struct Resolve {
    nodes: Vec<Node>,
}

#[derive(Deserialize)]
struct Node {
    id: String,
    deps: Vec<NodeDep>,
    #[serde(default)]
    features: Vec<String>,
}

#[derive(Deserialize)]
struct NodeDep {
    pkg: String,
    dep_kinds: Vec<DepKind>,
}

#[derive(Deserialize)]
struct DepKind {
    kind: Option<String>,
}

fn metadata(root: &Path) -> anyhow::Result<Metadata> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let run = |offline: bool| {
        let mut cmd = std::process::Command::new(&cargo);
        cmd.current_dir(root)
            .args(["metadata", "--format-version", "1", "--locked"]);
        if offline {
            cmd.arg("--offline");
        }
        cmd.output()
    };
    // Offline first: every crate a built tree needs is in cargo's cache.
    let out = match run(true) {
        Ok(o) if o.status.success() => o,
        _ => run(false).context("running cargo metadata")?,
    };
    anyhow::ensure!(
        out.status.success(),
        "cargo metadata in {}: {}",
        root.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    serde_json::from_slice(&out.stdout).context("reading cargo metadata's output")
}

/// Every package the binary links: normal and build dependencies, not
/// dev-dependencies, in a stable order.
fn closure<'a>(root: &'a str, nodes: &BTreeMap<&'a str, &'a Node>) -> BTreeSet<&'a str> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![root];
    while let Some(id) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        if let Some(node) = nodes.get(id) {
            for dep in &node.deps {
                if dep
                    .dep_kinds
                    .iter()
                    .any(|k| k.kind.as_deref() != Some("dev"))
                {
                    todo.push(dep.pkg.as_str());
                }
            }
        }
    }
    seen
}

/// A workspace crate's code: the tokens of `src/**/*.rs` and `build.rs`,
/// and the bytes of every other file under `src/` and of what it embeds.
fn crate_code(pkg: &Package, workspace_root: &Path) -> anyhow::Result<String> {
    let dir = Path::new(&pkg.manifest_path)
        .parent()
        .context("a manifest path without a folder")?;
    let mut files = Vec::new();
    collect_files(&dir.join("src"), &mut files)?;
    let build = dir.join("build.rs");
    if build.is_file() {
        files.push(build);
    }
    for (name, path) in EMBEDDED {
        if *name == pkg.name {
            collect_files(&workspace_root.join(path), &mut files)?;
        }
    }
    files.sort();
    let mut hasher = Sha256::new();
    for file in files {
        let rel = file.strip_prefix(workspace_root).unwrap_or(&file);
        hasher.update(rel.to_string_lossy().as_bytes());
        hasher.update([0]);
        let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        if file.extension().is_some_and(|e| e == "rs") {
            hasher.update(code_tokens(&String::from_utf8_lossy(&bytes)).as_bytes());
        } else {
            hasher.update(&bytes);
        }
        hasher.update([0]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// Rust source as its tokens, one per line, without comments or doc
/// comments; source that does not lex is taken as it is.
pub fn code_tokens(source: &str) -> String {
    match TokenStream::from_str(source) {
        Ok(tokens) => {
            let mut out = String::new();
            write_tokens(tokens, &mut out);
            out
        }
        Err(_) => source.to_owned(),
    }
}

fn write_tokens(tokens: TokenStream, out: &mut String) {
    let mut tokens = tokens.into_iter().peekable();
    while let Some(token) = tokens.next() {
        // `///` and `//!` lex as `#[doc = "…"]` and `#![doc = "…"]`.
        if let TokenTree::Punct(p) = &token
            && p.as_char() == '#'
        {
            let mut ahead = tokens.clone();
            let bang = matches!(ahead.peek(), Some(TokenTree::Punct(p)) if p.as_char() == '!');
            if bang {
                ahead.next();
            }
            if let Some(TokenTree::Group(g)) = ahead.peek()
                && g.delimiter() == Delimiter::Bracket
                && is_doc(g.stream())
            {
                ahead.next();
                tokens = ahead;
                continue;
            }
            // `#[cfg(test)]` and the item it gates: tests are not in the
            // binary a run starts.
            if !bang
                && let Some(TokenTree::Group(g)) = ahead.peek()
                && g.delimiter() == Delimiter::Bracket
                && g.stream().to_string().replace(' ', "") == "cfg(test)"
            {
                ahead.next();
                for t in ahead.by_ref() {
                    match t {
                        TokenTree::Group(g) if g.delimiter() == Delimiter::Brace => break,
                        TokenTree::Punct(p) if p.as_char() == ';' => break,
                        _ => {}
                    }
                }
                tokens = ahead;
                continue;
            }
        }
        match token {
            TokenTree::Group(g) => {
                let (open, close) = match g.delimiter() {
                    Delimiter::Parenthesis => ("(", ")"),
                    Delimiter::Brace => ("{", "}"),
                    Delimiter::Bracket => ("[", "]"),
                    Delimiter::None => ("", ""),
                };
                out.push_str(open);
                out.push('\n');
                write_tokens(g.stream(), out);
                out.push_str(close);
            }
            TokenTree::Punct(p) => {
                out.push(p.as_char());
                if p.spacing() == proc_macro2::Spacing::Joint {
                    out.push('+');
                }
            }
            TokenTree::Ident(i) => out.push_str(&i.to_string()),
            TokenTree::Literal(l) => out.push_str(&l.to_string()),
        }
        out.push('\n');
    }
}

fn is_doc(attr: TokenStream) -> bool {
    let mut it = attr.into_iter();
    matches!(it.next(), Some(TokenTree::Ident(i)) if i == "doc")
        && matches!(it.next(), Some(TokenTree::Punct(p)) if p.as_char() == '=')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_doc_comments_and_layout_do_not_count() {
        let a = "//! The crate.\n/// Adds.\nfn add(a: u32, b: u32) -> u32 { a + b } // sum\n";
        let b = "/// Adds two numbers.\n#[doc = \"more\"]\nfn add(a: u32,\n       b: u32)\n    -> u32 {\n    /* the sum */ a + b\n}\n";
        assert_eq!(code_tokens(a), code_tokens(b));
    }

    #[test]
    fn test_modules_do_not_count() {
        let code = "fn add(a: u32) -> u32 { a + 1 }\n";
        let with_tests = format!(
            "{code}#[cfg(test)]\nmod tests {{ #[test] fn t() {{ assert_eq!(super::add(1), 2); }} }}\n#[cfg(test)]\nuse std::fmt;\n"
        );
        assert_eq!(code_tokens(code), code_tokens(&with_tests));
        assert_ne!(
            code_tokens(code),
            code_tokens("fn add(a: u32) -> u32 { a + 1 }\n#[cfg(feature = \"x\")]\nfn more() {}\n")
        );
    }

    #[test]
    fn code_and_other_attributes_count() {
        let base = code_tokens("fn add(a: u32, b: u32) -> u32 { a + b }");
        assert_ne!(base, code_tokens("fn add(a: u32, b: u32) -> u32 { a - b }"));
        assert_ne!(base, code_tokens("fn add(a: u32, b: u32) -> u32 { b + a }"));
        assert_ne!(
            base,
            code_tokens("#[inline] fn add(a: u32, b: u32) -> u32 { a + b }")
        );
        assert_ne!(code_tokens("a += b;"), code_tokens("a + = b;"));
        assert_ne!(code_tokens("let s = \"x\";"), code_tokens("let s = \"y\";"));
    }

    #[test]
    fn every_component_of_this_workspace_has_a_fingerprint_and_they_differ() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let prints = of_workspace(&root).unwrap();
        let names: Vec<&str> = prints.keys().map(String::as_str).collect();
        assert_eq!(names, ["generator", "reducer", "relay", "service"]);
        let distinct: BTreeSet<&String> = prints.values().collect();
        assert_eq!(distinct.len(), 4, "{prints:?}");
    }

    /// Every file a workspace crate embeds at compile time is covered by
    /// [`EMBEDDED`] or lies under the crate's own `src/`.
    #[test]
    fn every_embedded_file_is_part_of_a_fingerprint() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let metadata = metadata(&root).unwrap();
        let root = PathBuf::from(&metadata.workspace_root);
        for pkg in metadata.packages.iter().filter(|p| p.source.is_none()) {
            let dir = Path::new(&pkg.manifest_path).parent().unwrap();
            let mut files = Vec::new();
            collect_files(&dir.join("src"), &mut files).unwrap();
            for file in files
                .iter()
                .filter(|f| f.extension().is_some_and(|e| e == "rs"))
            {
                let text = std::fs::read_to_string(file).unwrap();
                for mac in ["include_str!(\"", "include_bytes!(\"", "migrate!(\""] {
                    for (at, _) in text.match_indices(mac) {
                        let rest = &text[at + mac.len()..];
                        let rel = &rest[..rest.find('"').unwrap()];
                        let base = if mac == "migrate!(\"" {
                            dir
                        } else {
                            file.parent().unwrap()
                        };
                        let target = normalise(&base.join(rel));
                        if target.starts_with(dir.join("src")) {
                            continue;
                        }
                        if pkg.name == "loadgen" && file.ends_with("lab.rs") {
                            // A test reads the workspace manifest.
                            continue;
                        }
                        let covered = EMBEDDED.iter().any(|(name, path)| {
                            *name == pkg.name && target.starts_with(root.join(path))
                        });
                        assert!(
                            covered,
                            "{} embeds {} which no fingerprint covers: add it to EMBEDDED",
                            file.display(),
                            target.display()
                        );
                    }
                }
            }
        }
    }

    fn normalise(path: &Path) -> PathBuf {
        let mut out = PathBuf::new();
        for c in path.components() {
            match c {
                std::path::Component::ParentDir => {
                    out.pop();
                }
                std::path::Component::CurDir => {}
                c => out.push(c),
            }
        }
        out
    }
}
