//! Embeds the sources of the ABI crates (`crates/cloacina-workflow`, `crates/cloacina-macros`)
//! and the workspace manifest they inherit from, so the compiler builds every package against
//! exactly the copies it was built with: `$OUT_DIR/abi_sources.rs` defines `ABI_SOURCES`.
//! Only `Cargo.toml` and `src/**` of each crate are embedded (tests and benches are not built).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const CRATES: [&str; 2] = ["cloacina-workflow", "cloacina-macros"];

fn files(dir: &Path, rel: &str, out: &mut Vec<(String, PathBuf)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())))
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let rel = format!("{rel}/{name}");
        if path.is_dir() {
            files(&path, &rel, out);
        } else {
            out.push((rel, path));
        }
    }
}

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("the compiler lives in the workspace")
        .to_path_buf();
    let workspace_manifest = root.join("Cargo.toml");
    println!("cargo::rerun-if-changed={}", workspace_manifest.display());
    let mut code = String::from("/// The ABI crates this compiler builds packages against.\n");
    code.push_str("pub static ABI_SOURCES: cloacina::compiler::AbiSources = cloacina::compiler::AbiSources {\n");
    let _ = writeln!(
        code,
        "    workspace_manifest: include_str!({:?}),",
        workspace_manifest.display().to_string()
    );
    code.push_str("    crates: &[\n");
    for name in CRATES {
        let dir = root.join("crates").join(name);
        println!(
            "cargo::rerun-if-changed={}",
            dir.join("Cargo.toml").display()
        );
        println!("cargo::rerun-if-changed={}", dir.join("src").display());
        let mut found = vec![("Cargo.toml".to_string(), dir.join("Cargo.toml"))];
        files(&dir.join("src"), "src", &mut found);
        let _ = writeln!(
            code,
            "        cloacina::compiler::AbiCrate {{ name: {name:?}, dir: {:?}, files: &[",
            format!("crates/{name}")
        );
        for (rel, path) in found {
            let _ = writeln!(
                code,
                "            ({rel:?}, include_str!({:?})),",
                path.display().to_string()
            );
        }
        code.push_str("        ] },\n");
    }
    code.push_str("    ],\n};\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("abi_sources.rs");
    std::fs::write(&out, code).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}
