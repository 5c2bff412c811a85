//! The crate's layers, stated once and checked on every test run (in the spirit of ArchUnit and
//! import-linter): a module may use only the modules listed for it. An import that runs back up
//! the layers, or across, fails this test with the file and line.
//!
//! From the bottom up:
//! - leaves, which use nothing of the crate: `domain` (pure rules), `signing` (canonical text and
//!   HMAC), `backoff`, `shutdown`, `telemetry`;
//! - `config`: the settings, typed (it may name a leaf's types, e.g. a key's signing encoding);
//! - `store` (PostgreSQL, blobs): `domain` only (a submission's metadata and the attachment rows
//!   live in `domain` and `store`, not in `broker` or `worker`);
//! - `broker` (topology, envelope, publisher): leaves and `config`, never `worker` or `ingress`;
//! - `health` (the /healthz, /readyz and /metrics endpoints): `telemetry`;
//! - the roles, `ingress` and `worker`, and the operator's `dlq` (with its commands);
//! - `app`, `sign`: the top (`main.rs` and `lib.rs` are not checked: they name everything).

use std::{collections::BTreeMap, path::Path};

/// Which top-level modules each top-level module may use.
const ALLOWED: &[(&str, &[&str])] = &[
    ("domain", &[]),
    ("signing", &[]),
    ("backoff", &[]),
    ("shutdown", &[]),
    ("telemetry", &[]),
    ("config", &["signing"]),
    ("store", &["domain"]),
    ("broker", &["domain", "config", "backoff"]),
    ("ingress", &["domain", "signing", "config", "backoff", "broker", "telemetry", "health"]),
    ("worker", &["domain", "config", "backoff", "broker", "store", "health", "telemetry"]),
    ("dlq", &["domain", "config", "broker", "store"]),
    ("health", &["telemetry"]),
    ("sign", &["signing"]),
    ("console", &["domain", "config", "broker", "store", "dlq", "health", "telemetry"]),
    ("app", &["config", "ingress", "worker", "console", "store", "dlq", "telemetry", "shutdown"]),
];

fn module_of(path: &Path, src: &Path) -> String {
    let rel = path.strip_prefix(src).unwrap();
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy().to_string();
    first.trim_end_matches(".rs").to_string()
}

/// The top-level modules a file names through `crate::…`, with the line of each: `crate::a::b`,
/// and every first name in a `crate::{a, b::{c, d}}` group, also when rustfmt spread the group
/// over several lines. Comments are skipped.
fn uses(text: &str) -> Vec<(usize, String)> {
    // The code without comments, each character with its line.
    let mut code: Vec<(char, usize)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split("//").next().unwrap_or("");
        code.extend(line.chars().map(|c| (c, n + 1)));
        code.push(('\n', n + 1));
    }
    let chars: Vec<char> = code.iter().map(|(c, _)| *c).collect();
    let ident =
        |from: usize| -> String { chars[from..].iter().take_while(|c| c.is_alphanumeric() || **c == '_').collect() };
    let mut out = Vec::new();
    let mut i = 0;
    while i + 7 <= chars.len() {
        if chars[i..i + 7].iter().collect::<String>() != "crate::" {
            i += 1;
            continue;
        }
        i += 7;
        if chars.get(i) != Some(&'{') {
            let name = ident(i);
            if !name.is_empty() {
                out.push((code[i].1, name));
            }
            continue;
        }
        // A group: the first name after `{` and after each `,` at depth 1.
        let mut depth = 0;
        let mut expect_name = false;
        while i < chars.len() {
            match chars[i] {
                '{' => {
                    depth += 1;
                    expect_name = depth == 1;
                }
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                ',' if depth == 1 => expect_name = true,
                c if expect_name && (c.is_alphanumeric() || c == '_') => {
                    out.push((code[i].1, ident(i)));
                    expect_name = false;
                }
                _ => {}
            }
            i += 1;
        }
    }
    out
}

#[test]
fn the_reader_sees_paths_groups_and_groups_over_several_lines() {
    let text = "use crate::a::X;\nuse crate::{b, c::{d, e}};\nuse crate::{\n    f::G,\n    h::{i, j},\n};\n// crate::k\nlet x = crate::l::m(); // crate::n\n";
    let names: Vec<(usize, String)> = uses(text);
    let want = [(1, "a"), (2, "b"), (2, "c"), (4, "f"), (5, "h"), (8, "l")];
    assert_eq!(names, want.map(|(n, s)| (n, s.to_string())));
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_import_points_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut broken = Vec::new();
    for path in all {
        let module = module_of(&path, &src);
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(may) = allowed.get(module.as_str()) else {
            broken
                .push(format!("{}: module `{module}` has no place in the layers (add it to ALLOWED)", path.display()));
            continue;
        };
        let text = std::fs::read_to_string(&path).unwrap();
        for (line, used) in uses(&text) {
            if used != module && !may.contains(&used.as_str()) {
                broken.push(format!("{}:{line}: `{module}` uses `{used}`", path.display()));
            }
        }
    }
    assert!(broken.is_empty(), "imports against the layers:\n{}", broken.join("\n"));
}
