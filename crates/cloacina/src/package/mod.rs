//! Packages: `.cloacina` archives (a Rust `cdylib` plus its source and manifest), their
//! signatures, and loading their libraries through Cloacina's versioned C ABI.
//!
//! - `manifest`: `package.toml`.
//! - `archive`: packing and defensive unpacking of `.cloacina` archives, SHA-256 identity.
//! - `signing`: Ed25519 keys and detached signature side-cars (`<archive>.sig`).
//! - `loader`: opening a package's library once per version, ABI check, description
//!   validation, calls into the plugin.

pub mod archive;
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
}
