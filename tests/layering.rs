//! The server's modules depend one way: `main` → `router` → `api` → `service` →
//! `storage` (docs/architecture.md). This test reads every `crate::` path in `src/` and
//! fails on one that points the other way, or from a handler straight into storage.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

/// The layer a source file belongs to: its top-level module (`main` for `main.rs` and
/// `lib.rs`).
fn layer_of(relative: &Path) -> String {
    let first = relative
        .components()
        .next()
        .and_then(|component| component.as_os_str().to_str())
        .unwrap_or_default();
    match first.strip_suffix(".rs").unwrap_or(first) {
        "main" | "lib" => "main".to_owned(),
        module => module.to_owned(),
    }
}

/// What each layer may name with a `crate::` path besides itself. `config`, `error` and
/// `json` (and the crate root's re-exports `Error` and `Result`) are shared by all, and
/// every layer records its figures in `metrics`, which names no other module.
fn allowed(layer: &str) -> Option<&'static [&'static str]> {
    const SHARED: &[&str] = &["config", "error", "json", "Error", "Result"];
    Some(match layer {
        "main" => &[
            "router", "api", "service", "storage", "config", "error", "json", "metrics", "Error",
            "Result",
        ],
        "router" => &[
            "api", "service", "config", "error", "json", "metrics", "Error", "Result",
        ],
        // Handlers call services; they never touch storage.
        "api" => &[
            "service", "config", "error", "json", "metrics", "Error", "Result",
        ],
        "service" => &[
            "storage", "config", "error", "json", "metrics", "Error", "Result",
        ],
        "storage" => &["error", "metrics", "Error", "Result"],
        "metrics" => &[],
        "config" | "json" => SHARED,
        // The one error type wraps storage's errors.
        "error" => &["storage", "config", "json"],
        _ => return None,
    })
}

/// The top-level module of every `crate::` path in `source`, grouped imports
/// (`use crate::{a::b, c}`) included.
fn crate_paths(source: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in source.match_indices("crate::") {
        let preceded_by_ident = source[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$');
        if preceded_by_ident {
            continue; // `$crate::`, `palisade_crate::`, ...
        }
        let rest = &source[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.extend(first_ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 || c != '{' {
                    item.push(c);
                }
            }
            found.extend(first_ident(&item));
        } else {
            found.extend(first_ident(rest));
        }
    }
    found
}

fn first_ident(text: &str) -> Option<String> {
    let ident: String = text
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!ident.is_empty() && ident != "self").then_some(ident)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn modules_depend_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(files.len() > 50, "the sources were not found in {src:?}");
    let mut wrong = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let layer = layer_of(relative);
        let Some(allowed) = allowed(&layer) else {
            wrong.push(format!(
                "{}: top-level module `{layer}` has no place in the layering; add it to this test and to docs/architecture.md",
                relative.display()
            ));
            continue;
        };
        let source = std::fs::read_to_string(file).unwrap();
        for target in crate_paths(&source) {
            if target != layer && !allowed.contains(&target.as_str()) {
                wrong.push(format!(
                    "{}: `{layer}` names `crate::{target}`",
                    relative.display()
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layering (main → router → api → service → storage):\n{}",
        wrong.join("\n")
    );
}

/// The source of every file under `src/{dir}`, with its path relative to `src/`.
fn sources_under(dir: &str) -> Vec<(PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src.join(dir), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let source = std::fs::read_to_string(&file).unwrap();
            (file.strip_prefix(&src).unwrap().to_owned(), source)
        })
        .collect()
}

fn names_word(source: &str, word: &str) -> bool {
    source.match_indices(word).any(|(at, _)| {
        let before = source[..at].chars().next_back();
        let after = source[at + word.len()..].chars().next();
        let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !ident(before) && !ident(after)
    })
}

/// Services are built with the handles they use (`Services::open` wires them): none
/// below `service/mod.rs` takes the whole set, and the set holds no database handle
/// for a handler to reach storage through.
#[test]
fn services_get_their_handles() {
    let mut wrong = Vec::new();
    for (path, source) in sources_under("service") {
        if path != Path::new("service/mod.rs") && names_word(&source, "Services") {
            wrong.push(format!("{}: names `Services`", path.display()));
        }
    }
    for (path, source) in sources_under("api") {
        if source.contains("services.db") || source.contains("Batch") {
            wrong.push(format!("{}: writes storage batches", path.display()));
        }
    }
    let services =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/service/mod.rs"))
            .unwrap();
    let fields = &services[services.find("pub struct Services").unwrap()..];
    let fields = &fields[..fields.find("\n}").unwrap()];
    if fields.contains("Db>") {
        wrong.push("service/mod.rs: `Services` holds the database".to_owned());
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn crate_paths_reads_grouped_imports() {
    let source = "use crate::{\n    Error, Result,\n    api::{Ruma, RumaRouter},\n    service::{Services, users::Sender},\n};\nlet x = crate::storage::Db::open(); let y = $crate::router::x;";
    let found: Vec<String> = crate_paths(source).into_iter().collect();
    assert_eq!(found, ["Error", "Result", "api", "service", "storage"]);
}
