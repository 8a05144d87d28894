//! Packages: `.cloacina` archives (a Rust `cdylib` plus its source and manifest), their
//! signatures, and loading their libraries through Cloacina's versioned C ABI.
//!
//! - `manifest`: `package.toml`.
//! - `build`: building a package's source directory with cargo, and packing (and signing)
//!   the result.
//! - `archive`: packing and defensive unpacking of `.cloacina` archives, SHA-256 identity.
//! - `signing`: Ed25519 keys and detached signature side-cars (`<archive>.sig`).
//! - `loader`: opening a package's library once per version, ABI check, description
//!   validation, calls into the plugin.

pub mod archive;
pub mod build;
pub mod loader;
pub mod manifest;
pub mod signing;

/// Any package failure; each variant's message names the package or file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
    #[error(transparent)]
    Signature(#[from] signing::SignatureError),
    #[error(transparent)]
    Load(#[from] loader::LoadError),
    #[error(transparent)]
    Build(#[from] build::BuildError),
}

/// `s` with control characters escaped, cut to at most `max` characters (marked with `…`),
/// so that text from a hostile archive or library cannot drive the terminal or log viewer it
/// is printed on.
pub(crate) fn printable(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Bytes that should be a name, shown safely: [`printable`] when they are UTF-8, else with
/// every byte that is not printable ASCII escaped (`\xff`).
pub(crate) fn printable_bytes(bytes: &[u8], max: usize) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => printable(s, max),
        Err(_) => printable(&bytes.escape_ascii().to_string(), max),
    }
}

/// A path for a message: control characters in its names escaped (a file dropped in a watched
/// folder may be named to drive a terminal), invalid UTF-8 shown lossily.
pub(crate) fn shown_path(path: &std::path::Path) -> String {
    printable(&path.display().to_string(), 4096)
}
