//! The ABI crates a package is built against: the compiler's own copies of
//! `cloacina-workflow` and `cloacina-macros` (embedded in the compiler binary when it was
//! built), written once per content to `<abi root>/<digest>/`, and the rewrite that points an
//! uploaded `Cargo.toml`'s dependencies on them there, whatever paths or versions it named.
//!
//! The copies keep the workspace layout they were embedded from (`crates/<name>/`), under a
//! generated workspace manifest carrying what they inherit (`[workspace.package]`,
//! `[workspace.dependencies]` without the path dependencies that are not there,
//! `[workspace.lints]`). They are written once and never touched again, so cargo's
//! fingerprints stay fresh and a shared target directory compiles them once.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// One embedded crate: its name, its directory relative to the workspace it came from, and
/// its files (`(path relative to the crate, contents)`).
#[derive(Debug, Clone, Copy)]
pub struct AbiCrate {
    pub name: &'static str,
    pub dir: &'static str,
    pub files: &'static [(&'static str, &'static str)],
}

/// The ABI crates a compiler builds packages against, with the manifest of the workspace they
/// were embedded from (for what they inherit from it).
#[derive(Debug, Clone, Copy)]
pub struct AbiSources {
    pub workspace_manifest: &'static str,
    pub crates: &'static [AbiCrate],
}

impl AbiSources {
    /// A short digest of everything embedded: the directory name of this set of copies.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.workspace_manifest.as_bytes());
        for c in self.crates {
            for part in [c.name, c.dir] {
                h.update((part.len() as u64).to_le_bytes());
                h.update(part.as_bytes());
            }
            for (path, text) in c.files {
                h.update((path.len() as u64).to_le_bytes());
                h.update(path.as_bytes());
                h.update((text.len() as u64).to_le_bytes());
                h.update(text.as_bytes());
            }
        }
        hex::encode(&h.finalize()[..8])
    }

    /// The workspace manifest the copies are written under: members are the embedded crates,
    /// and everything they inherit is kept, except path dependencies that are not among them.
    pub fn workspace_manifest(&self) -> Result<String, String> {
        let original: toml::Table = toml::from_str(self.workspace_manifest)
            .map_err(|e| format!("the embedded workspace manifest: {e}"))?;
        let ws = original
            .get("workspace")
            .and_then(toml::Value::as_table)
            .cloned()
            .unwrap_or_default();
        let mut out = toml::Table::new();
        out.insert("resolver".to_string(), "3".into());
        out.insert(
            "members".to_string(),
            toml::Value::Array(self.crates.iter().map(|c| c.dir.into()).collect()),
        );
        if let Some(package) = ws.get("package") {
            out.insert("package".to_string(), package.clone());
        }
        if let Some(lints) = ws.get("lints") {
            out.insert("lints".to_string(), lints.clone());
        }
        if let Some(deps) = ws.get("dependencies").and_then(toml::Value::as_table) {
            let present: Vec<&str> = self.crates.iter().map(|c| c.dir).collect();
            let kept: toml::Table = deps
                .iter()
                .filter(
                    |(_, spec)| match spec.get("path").and_then(toml::Value::as_str) {
                        Some(path) => present.contains(&path.trim_end_matches('/')),
                        None => true,
                    },
                )
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            out.insert("dependencies".to_string(), toml::Value::Table(kept));
        }
        let mut root = toml::Table::new();
        root.insert("workspace".to_string(), toml::Value::Table(out));
        let text = toml::to_string(&root).map_err(|e| e.to_string())?;
        Ok(format!(
            "# Written by cloacina-compiler: the ABI crates packages are built against.\n{text}"
        ))
    }

    /// Writes the copies under `root` (once per digest: a complete directory is reused) and
    /// returns each crate's directory by crate name.
    pub fn install(&self, root: &Path) -> io::Result<BTreeMap<String, PathBuf>> {
        let dest = root.join(self.digest());
        let dirs = self
            .crates
            .iter()
            .map(|c| (c.name.to_string(), dest.join(c.dir)))
            .collect();
        if dest.join(COMPLETE).is_file() {
            return Ok(dirs);
        }
        fs::create_dir_all(root)?;
        let tmp = root.join(format!(".partial-{:016x}", rand::random::<u64>()));
        let written = self.write_into(&tmp);
        let written = written.and_then(|()| match fs::rename(&tmp, &dest) {
            Ok(()) => Ok(()),
            // Another compiler sharing this home wrote the same copies first.
            Err(_) if dest.join(COMPLETE).is_file() => Ok(()),
            Err(e) => {
                // A partial directory left by a killed run: replace it.
                if dest.exists() && !dest.join(COMPLETE).is_file() {
                    fs::remove_dir_all(&dest)?;
                    fs::rename(&tmp, &dest)
                } else {
                    Err(e)
                }
            }
        });
        let _ = fs::remove_dir_all(&tmp);
        written.map(|()| dirs)
    }

    fn write_into(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)?;
        let manifest = self.workspace_manifest().map_err(io::Error::other)?;
        fs::write(dir.join("Cargo.toml"), manifest)?;
        for c in self.crates {
            for (path, text) in c.files {
                let file = dir.join(c.dir).join(path);
                if let Some(parent) = file.parent() {
                    fs::create_dir_all(parent)?;
                }
                fs::write(file, text)?;
            }
        }
        fs::write(dir.join(COMPLETE), "")
    }
}

/// Marks a directory of copies as completely written.
const COMPLETE: &str = ".complete";

/// Keys of a dependency specification kept when it is pointed at the compiler's copy.
const KEPT_KEYS: [&str; 5] = [
    "features",
    "default-features",
    "default_features",
    "optional",
    "package",
];

/// Rewrites the package manifest `text` so that every dependency on one of `crates` (by crate
/// name, renamed ones too; normal, build and dev dependencies, also under `[target.*]`) is a
/// path dependency on the directory given, keeping only its features, `default-features`,
/// `optional` and `package`; drops `[patch]`/`[replace]` entries for them; and makes the
/// package a workspace of its own (an empty `[workspace]`) unless it declares one, so no
/// manifest above the build directory is consulted. Returns the new manifest and the names of
/// the dependencies rewritten.
pub fn rewrite_manifest(
    text: &str,
    crates: &BTreeMap<String, PathBuf>,
) -> Result<(String, Vec<String>), String> {
    let mut doc: toml::Table =
        toml::from_str(text).map_err(|e| format!("Cargo.toml is not valid TOML: {e}"))?;
    let mut rewritten = Vec::new();
    const KINDS: [&str; 4] = [
        "dependencies",
        "build-dependencies",
        "build_dependencies",
        "dev-dependencies",
    ];
    let mut tables: Vec<&mut toml::Table> = Vec::new();
    let (top, rest): (Vec<_>, Vec<_>) = doc
        .iter_mut()
        .partition(|(k, _)| KINDS.contains(&k.as_str()));
    for (_, v) in top {
        if let Some(t) = v.as_table_mut() {
            tables.push(t);
        }
    }
    for (k, v) in rest {
        if k != "target" {
            continue;
        }
        let Some(targets) = v.as_table_mut() else {
            continue;
        };
        for (_, platform) in targets.iter_mut() {
            let Some(platform) = platform.as_table_mut() else {
                continue;
            };
            for (kind, deps) in platform.iter_mut() {
                if KINDS.contains(&kind.as_str())
                    && let Some(t) = deps.as_table_mut()
                {
                    tables.push(t);
                }
            }
        }
    }
    for deps in tables {
        for (key, spec) in deps.iter_mut() {
            let real = spec
                .get("package")
                .and_then(toml::Value::as_str)
                .unwrap_or(key)
                .to_string();
            let Some(dir) = crates.get(&real) else {
                continue;
            };
            let mut new = toml::Table::new();
            if let Some(old) = spec.as_table() {
                for k in KEPT_KEYS {
                    if let Some(v) = old.get(k) {
                        new.insert(k.to_string(), v.clone());
                    }
                }
            }
            new.insert(
                "path".to_string(),
                toml::Value::String(dir.display().to_string()),
            );
            *spec = toml::Value::Table(new);
            rewritten.push(key.clone());
        }
    }
    for section in ["patch", "replace"] {
        if let Some(t) = doc.get_mut(section).and_then(toml::Value::as_table_mut) {
            if section == "patch" {
                for (_, source) in t.iter_mut() {
                    if let Some(source) = source.as_table_mut() {
                        source.retain(|name, _| !crates.contains_key(name));
                    }
                }
            } else {
                t.retain(|spec, _| {
                    !crates
                        .keys()
                        .any(|name| spec == name || spec.starts_with(&format!("{name}:")))
                });
            }
        }
    }
    if !doc.contains_key("workspace") {
        doc.insert(
            "workspace".to_string(),
            toml::Value::Table(toml::Table::new()),
        );
    }
    rewritten.sort();
    rewritten.dedup();
    let out = toml::to_string(&doc).map_err(|e| format!("writing Cargo.toml: {e}"))?;
    Ok((out, rewritten))
}

#[cfg(test)]
mod tests {
    use super::*;

    static SOURCES: AbiSources = AbiSources {
        workspace_manifest: r#"
[workspace]
resolver = "3"
members = ["crates/a", "crates/cloacina-workflow", "crates/cloacina-macros"]

[workspace.package]
version = "0.1.0"
edition = "2024"

[workspace.dependencies]
cloacina = { path = "crates/cloacina" }
cloacina-workflow = { path = "crates/cloacina-workflow" }
serde = { version = "1", features = ["derive"] }

[workspace.lints.rust]
unsafe_code = "deny"
"#,
        crates: &[
            AbiCrate {
                name: "cloacina-workflow",
                dir: "crates/cloacina-workflow",
                files: &[
                    (
                        "Cargo.toml",
                        "[package]\nname = \"cloacina-workflow\"\nversion.workspace = true\n",
                    ),
                    ("src/lib.rs", "pub fn f() {}\n"),
                ],
            },
            AbiCrate {
                name: "cloacina-macros",
                dir: "crates/cloacina-macros",
                files: &[(
                    "Cargo.toml",
                    "[package]\nname = \"cloacina-macros\"\nversion.workspace = true\n",
                )],
            },
        ],
    };

    fn crates() -> BTreeMap<String, PathBuf> {
        [
            ("cloacina-workflow", "/abi/crates/cloacina-workflow"),
            ("cloacina-macros", "/abi/crates/cloacina-macros"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), PathBuf::from(v)))
        .collect()
    }

    #[test]
    fn the_workspace_keeps_what_the_crates_inherit() {
        let text = SOURCES.workspace_manifest().expect("manifest");
        let doc: toml::Table = toml::from_str(&text).expect("valid TOML");
        let ws = doc["workspace"].as_table().expect("workspace");
        assert_eq!(
            ws["members"],
            toml::Value::Array(vec![
                "crates/cloacina-workflow".into(),
                "crates/cloacina-macros".into()
            ])
        );
        assert_eq!(ws["package"]["edition"].as_str(), Some("2024"));
        assert!(ws["lints"]["rust"].get("unsafe_code").is_some());
        let deps = ws["dependencies"].as_table().expect("deps");
        assert!(deps.contains_key("serde") && deps.contains_key("cloacina-workflow"));
        assert!(!deps.contains_key("cloacina"), "{text}");
    }

    #[test]
    fn installs_once_per_digest() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dirs = SOURCES.install(tmp.path()).expect("install");
        let wf = &dirs["cloacina-workflow"];
        assert_eq!(
            fs::read_to_string(wf.join("src/lib.rs")).expect("read"),
            "pub fn f() {}\n"
        );
        assert!(wf.starts_with(tmp.path().join(SOURCES.digest())));
        let before = fs::metadata(wf.join("src/lib.rs"))
            .and_then(|m| m.modified())
            .expect("mtime");
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(SOURCES.install(tmp.path()).expect("again"), dirs);
        let after = fs::metadata(wf.join("src/lib.rs"))
            .and_then(|m| m.modified())
            .expect("mtime");
        assert_eq!(before, after, "copies are never rewritten");
        let entries: Vec<_> = fs::read_dir(tmp.path())
            .expect("read")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(entries.len(), 1, "no partial directory left: {entries:?}");
    }

    #[test]
    fn dependencies_on_the_abi_crates_point_at_the_copies() {
        let text = r#"
[package]
name = "p"
version = "1.0.0"

[lib]
crate-type = ["cdylib"]

[dependencies]
cloacina-workflow = { path = "../../../crates/cloacina-workflow", version = "0.1", default-features = false, features = ["plugin"] }
macros = { package = "cloacina-macros", git = "https://example.invalid/x", branch = "main" }
serde_json = "1"

[target.'cfg(unix)'.dev-dependencies]
cloacina-workflow = "0.1"

[patch.crates-io]
cloacina-workflow = { path = "/elsewhere" }
other = { path = "/other" }
"#;
        let (out, names) = rewrite_manifest(text, &crates()).expect("rewrite");
        assert_eq!(names, ["cloacina-workflow", "macros"]);
        let doc: toml::Table = toml::from_str(&out).expect("valid");
        let wf = doc["dependencies"]["cloacina-workflow"]
            .as_table()
            .expect("table");
        assert_eq!(
            wf.get("path").and_then(toml::Value::as_str),
            Some("/abi/crates/cloacina-workflow")
        );
        assert_eq!(wf.get("version"), None);
        assert_eq!(
            wf.get("default-features").and_then(toml::Value::as_bool),
            Some(false)
        );
        assert_eq!(wf["features"], toml::Value::Array(vec!["plugin".into()]));
        let m = doc["dependencies"]["macros"].as_table().expect("table");
        assert_eq!(m.get("git"), None);
        assert_eq!(m["package"].as_str(), Some("cloacina-macros"));
        assert_eq!(m["path"].as_str(), Some("/abi/crates/cloacina-macros"));
        assert_eq!(doc["dependencies"]["serde_json"].as_str(), Some("1"));
        let dev = &doc["target"]["cfg(unix)"]["dev-dependencies"]["cloacina-workflow"];
        assert_eq!(dev["path"].as_str(), Some("/abi/crates/cloacina-workflow"));
        let patch = doc["patch"]["crates-io"].as_table().expect("patch");
        assert!(!patch.contains_key("cloacina-workflow") && patch.contains_key("other"));
        assert!(doc["workspace"].as_table().is_some_and(|t| t.is_empty()));
        assert_eq!(doc["lib"]["crate-type"][0].as_str(), Some("cdylib"));
    }

    #[test]
    fn a_declared_workspace_is_kept_and_bad_toml_is_named() {
        let text = "[package]\nname = \"p\"\n[workspace]\nmembers = []\n";
        let (out, names) = rewrite_manifest(text, &crates()).expect("rewrite");
        assert!(names.is_empty());
        assert!(out.contains("members = []"), "{out}");
        let e = rewrite_manifest("[package", &crates()).expect_err("invalid");
        assert!(e.contains("Cargo.toml is not valid TOML"), "{e}");
    }
}
