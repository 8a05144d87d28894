//! Every code the server can answer is documented in docs/http-api.md: the HTTP layer's own
//! codes (`cloacina_server::error::HTTP_CODES`) and the library's (`cloacina::error::CODES`),
//! and every code the server's source produces is in one of those tables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Every code with its status and meaning, the HTTP layer's first.
fn all_codes() -> BTreeMap<&'static str, (u16, &'static str)> {
    let mut all = BTreeMap::new();
    for c in cloacina::error::CODES {
        all.insert(c.code, (c.kind.http_status(), c.meaning));
    }
    for &(code, status, meaning) in cloacina_server::error::HTTP_CODES {
        all.insert(code, (status, meaning));
    }
    all
}

#[test]
fn every_code_is_in_the_http_doc() {
    let path = workspace_root().join("docs/http-api.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_default();
    let missing: Vec<String> = all_codes()
        .into_iter()
        .filter(|(code, _)| !doc.contains(&format!("`{code}`")))
        .map(|(code, (status, meaning))| format!("| `{code}` | {status} | {meaning} |"))
        .collect();
    assert!(
        missing.is_empty(),
        "{} has no row for {} code(s); add these rows to its table of codes:\n{}",
        path.display(),
        missing.len(),
        missing.join("\n")
    );
}

/// A code both tables list must mean the same status in both.
#[test]
fn http_codes_agree_with_the_library() {
    let mut clashes = Vec::new();
    for &(code, status, _) in cloacina_server::error::HTTP_CODES {
        if let Some(c) = cloacina::error::CODES.iter().find(|c| c.code == code)
            && c.kind.http_status() != status
        {
            clashes.push(format!(
                "{code}: HTTP_CODES says {status}, the library {}",
                c.kind.http_status()
            ));
        }
    }
    assert!(clashes.is_empty(), "{}", clashes.join("\n"));
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = entry.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

fn is_code(s: &str) -> bool {
    s.contains('_')
        && !s.starts_with('_')
        && !s.ends_with('_')
        && s.chars().all(|c| c.is_ascii_lowercase() || c == '_')
}

/// The string literals of `text` that look like codes, within the arguments of each
/// `ApiError::new(`/`bad_request(`/`not_found(` call and each `(` `"code",` pair of the
/// middleware's fallback table.
fn codes_in(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for marker in [
        "ApiError::new(",
        "ApiError::bad_request(",
        "ApiError::not_found(",
        "=> (\n",
        "=> (",
    ] {
        for (i, _) in text.match_indices(marker) {
            let window = &text[i + marker.len()..];
            let window = &window[..window.len().min(200)];
            // The first literal in the call is the code (after the status for `new`).
            if let Some(start) = window.find('"') {
                let rest = &window[start + 1..];
                if let Some(end) = rest.find('"') {
                    let lit = &rest[..end];
                    if is_code(lit) {
                        found.push(lit.to_string());
                    }
                }
            }
        }
    }
    found
}

#[test]
fn every_code_the_server_produces_is_listed() {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let all = all_codes();
    let mut unlisted = Vec::new();
    let mut seen = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read source");
        for code in codes_in(&text) {
            seen += 1;
            if !all.contains_key(code.as_str()) {
                unlisted.push(format!("{code} ({})", f.display()));
            }
        }
    }
    assert!(seen > 20, "the scan found only {seen} codes; is it broken?");
    unlisted.sort();
    unlisted.dedup();
    assert!(
        unlisted.is_empty(),
        "codes the server answers that neither cloacina_server::error::HTTP_CODES nor cloacina::error::CODES lists (add them, with docs/http-api.md rows):\n{}",
        unlisted.join("\n")
    );
}
