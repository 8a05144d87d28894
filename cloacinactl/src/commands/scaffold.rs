//! The files `cloacinactl package new NAME` writes.

use std::path::{Path, PathBuf};

use crate::error::CliError;

/// The Cloacina checkout this binary was built from: scaffolds depend on its crates by path.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest_dir.to_path_buf())
}

/// Paths of `cloacina-workflow` and `cloacina-macros` in [`workspace_root`], if they exist.
pub fn crate_paths() -> Result<(PathBuf, PathBuf), CliError> {
    let root = workspace_root();
    let workflow = root.join("crates").join("cloacina-workflow");
    let macros = root.join("crates").join("cloacina-macros");
    for krate in [&workflow, &macros] {
        if !krate.join("Cargo.toml").is_file() {
            return Err(CliError::User(format!(
                "cannot create a package: this cloacinactl was built from the Cloacina checkout at {}, which no longer holds {}; rebuild cloacinactl from a Cloacina checkout",
                root.display(),
                krate.display()
            )));
        }
    }
    Ok((workflow, macros))
}

/// Names a package may not take although `package.toml` accepts them: Rust keywords and
/// built-in crates (the library would not compile) and the crates a package depends on.
pub fn reserved_name(name: &str) -> Option<&'static str> {
    const KEYWORDS: &[&str] = &[
        "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum",
        "extern", "false", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod",
        "move", "mut", "pub", "ref", "return", "self", "static", "struct", "super", "trait",
        "true", "try", "type", "unsafe", "use", "where", "while", "abstract", "become", "box",
        "do", "final", "macro", "override", "priv", "typeof", "unsized", "virtual", "yield",
    ];
    const BUILTIN: &[&str] = &["std", "core", "alloc", "proc_macro", "test"];
    const DEPENDENCIES: &[&str] = &["cloacina_workflow", "cloacina_macros", "cloacina"];
    let ident = name.replace('-', "_");
    if KEYWORDS.contains(&ident.as_str()) {
        Some("it is a Rust keyword")
    } else if BUILTIN.contains(&ident.as_str()) {
        Some("it is the name of a built-in Rust crate")
    } else if DEPENDENCIES.contains(&ident.as_str()) {
        Some("it is the name of a Cloacina crate the package depends on")
    } else {
        None
    }
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// `Cargo.toml`: a standalone `cdylib` crate depending on this checkout's crates.
pub fn cargo_toml(name: &str, workflow: &Path, macros: &Path) -> String {
    format!(
        r#"[package]
name = {name}
version = "0.1.0"
edition = "2024"
publish = false

# A Cloacina package is a dynamic library that the daemon or the server loads.
[lib]
crate-type = ["cdylib"]

[dependencies]
# `plugin` provides export_package! and the runtime that runs async tasks inside the library.
# Default features are off to build faster; add features = ["plugin", "validate"] to check
# cron expressions and time zones at build time too (the host always checks them at load).
cloacina-workflow = {{ path = {workflow}, default-features = false, features = ["plugin"] }}
cloacina-macros = {{ path = {macros} }}

# An empty workspace table: this package builds on its own, wherever it lives.
[workspace]
"#,
        name = toml_string(name),
        workflow = toml_string(&workflow.display().to_string()),
        macros = toml_string(&macros.display().to_string()),
    )
}

/// `package.toml`.
pub fn package_toml(name: &str) -> String {
    format!(
        "# The package's identity for Cloacina (see docs/packages-archive.md).\n[package]\nname = {}\nversion = \"0.1.0\"\ndescription = {}\n",
        toml_string(name),
        toml_string(&format!("The {name} workflow package")),
    )
}

/// `src/lib.rs`: one workflow with one task, exported.
pub const LIB_RS: &str = r#"//! A Cloacina workflow package.
//!
//! Build it with `cloacinactl package build .`, then pack it into a `.cloacina` archive with
//! `cloacinactl package pack .`.

use cloacina_macros::{task, workflow};
use cloacina_workflow::{Context, TaskError};

#[workflow(name = "hello", description = "Says hello")]
pub mod hello {
    use super::*;

    #[task]
    pub async fn greet(ctx: &mut Context) -> Result<(), TaskError> {
        let who: String = ctx.get_opt("name")?.unwrap_or_else(|| "world".to_string());
        ctx.set("greeting", format!("hello, {who}"))?;
        Ok(())
    }
}

cloacina_workflow::export_package! {
    workflows: [hello::workflow],
}
"#;

/// `.gitignore`.
pub const GITIGNORE: &str = "/target\n*.cloacina\n*.cloacina.sig\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_manifests_parse() {
        let text = cargo_toml("demo", Path::new("/a \"b\"/w"), Path::new("/m"));
        let value: toml::Table = toml::from_str(&text).expect("valid TOML");
        assert_eq!(
            value["dependencies"]["cloacina-workflow"]["path"].as_str(),
            Some("/a \"b\"/w")
        );
        assert!(value["workspace"].as_table().is_some_and(|t| t.is_empty()));
        let m = cloacina::package::manifest::Manifest::parse(&package_toml("demo"), "p")
            .expect("valid manifest");
        assert_eq!((m.name(), m.version()), ("demo", "0.1.0"));
    }

    #[test]
    fn reserved() {
        assert!(reserved_name("fn").is_some());
        assert!(reserved_name("std").is_some());
        assert!(reserved_name("cloacina-workflow").is_some());
        assert!(reserved_name("orders").is_none());
    }
}
