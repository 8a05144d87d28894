//! `package.toml`: a package's identity and optional declarations that must agree with what
//! its library describes.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::printable;

/// Most bytes of a `package.toml` read from a directory: a genuine one is a few hundred.
pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// Why a manifest was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(
        "package manifest {path} is missing; a package directory needs a package.toml beside its Cargo.toml"
    )]
    Missing { path: String },
    #[error("cannot read package manifest {path}: {message}")]
    Read { path: String, message: String },
    #[error("package manifest {path} is malformed: {message}")]
    Malformed { path: String, message: String },
    #[error("package manifest {path}: {field} {message}")]
    Invalid {
        path: String,
        field: &'static str,
        message: String,
    },
}

/// The `[package]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageInfo {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub authors: Vec<String>,
}

/// The optional `[declares]` table: names the library must describe, no more and no fewer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declarations {
    #[serde(default)]
    pub workflows: Option<Vec<String>>,
    #[serde(default)]
    pub cron: Option<Vec<String>>,
    #[serde(default)]
    pub triggers: Option<Vec<String>>,
    #[serde(default)]
    pub reactors: Option<Vec<String>>,
    #[serde(default)]
    pub graphs: Option<Vec<String>>,
}

/// A parsed, validated `package.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub package: PackageInfo,
    #[serde(default)]
    pub declares: Declarations,
}

impl Manifest {
    /// Parses and validates manifest text; `path` is only used in messages.
    pub fn parse(text: &str, path: &str) -> Result<Manifest, ManifestError> {
        let m: Manifest = toml::from_str(text).map_err(|e| ManifestError::Malformed {
            path: path.to_string(),
            // The parser quotes the offending line: keep its layout, escape anything else.
            message: e
                .to_string()
                .trim()
                .lines()
                .map(|l| printable(l, 500))
                .collect::<Vec<_>>()
                .join("\n"),
        })?;
        m.validate(path)?;
        Ok(m)
    }

    /// Reads `package.toml` from a package directory: a regular file of at most
    /// [`MAX_MANIFEST_BYTES`] (checked before it is opened, and while it is read).
    pub fn from_dir(dir: &Path) -> Result<Manifest, ManifestError> {
        use std::io::Read;
        let path = dir.join("package.toml");
        let shown = path.display().to_string();
        let read_error = |message: String| ManifestError::Read {
            path: shown.clone(),
            message,
        };
        let io_error = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ManifestError::Missing {
                    path: shown.clone(),
                }
            } else {
                read_error(e.to_string())
            }
        };
        let meta = std::fs::metadata(&path).map_err(io_error)?;
        if !meta.is_file() {
            return Err(read_error(
                if meta.is_dir() {
                    "it is a directory"
                } else {
                    "it is not a regular file (it is a FIFO, device or socket)"
                }
                .to_string(),
            ));
        }
        let too_large = || {
            read_error(format!(
                "it is larger than {MAX_MANIFEST_BYTES} bytes, far larger than a genuine one"
            ))
        };
        if meta.len() > MAX_MANIFEST_BYTES {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut bytes))
            .map_err(io_error)?;
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(too_large());
        }
        let text =
            String::from_utf8(bytes).map_err(|_| read_error("it is not UTF-8 text".to_string()))?;
        Self::parse(&text, &shown)
    }

    pub fn name(&self) -> &str {
        &self.package.name
    }

    pub fn version(&self) -> &str {
        &self.package.version
    }

    fn validate(&self, path: &str) -> Result<(), ManifestError> {
        let invalid = |field, message: &str| ManifestError::Invalid {
            path: path.to_string(),
            field,
            message: message.to_string(),
        };
        let name = &self.package.name;
        if name.is_empty()
            || name.len() > 64
            || !name.starts_with(|c: char| c.is_ascii_alphabetic())
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(
                "package.name",
                &format!(
                    "'{}' is not valid: use 1-64 letters, digits, '-' or '_', starting with a letter",
                    printable(name, 100)
                ),
            ));
        }
        let v = &self.package.version;
        let core = v.split(['-', '+']).next().unwrap_or("");
        let parts: Vec<&str> = core.split('.').collect();
        if parts.len() != 3
            || parts
                .iter()
                .any(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()))
            || !v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-+".contains(c))
        {
            return Err(invalid(
                "package.version",
                &format!(
                    "'{}' is not a semantic version like 1.2.3",
                    printable(v, 100)
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        let m = Manifest::parse(
            "[package]\nname = \"etl\"\nversion = \"1.0.2\"\nauthors = [\"a\"]\n[declares]\nworkflows = [\"daily\"]\n",
            "package.toml",
        )
        .expect("valid");
        assert_eq!((m.name(), m.version()), ("etl", "1.0.2"));
        assert_eq!(m.declares.workflows, Some(vec!["daily".to_string()]));
        let e = Manifest::parse("[package]\nname = \"etl\"\n", "p/package.toml")
            .expect_err("no version");
        assert!(
            e.to_string()
                .starts_with("package manifest p/package.toml is malformed: "),
            "{e}"
        );
        let e = Manifest::parse(
            "[package]\nname = \"etl\"\nversion = \"1.0\"\n",
            "package.toml",
        )
        .expect_err("bad version");
        assert_eq!(
            e.to_string(),
            "package manifest package.toml: package.version '1.0' is not a semantic version like 1.2.3"
        );
        let e = Manifest::parse(
            "[package]\nname = \"../x\"\nversion = \"1.0.0\"\n",
            "package.toml",
        )
        .expect_err("bad name");
        assert!(e.to_string().contains("'../x' is not valid"), "{e}");
        let e = Manifest::parse(
            "[package]\nname = \"x\"\nversion = \"1.0.0\"\nnmae = 1\n",
            "package.toml",
        )
        .expect_err("unknown key");
        assert!(e.to_string().contains("nmae"), "{e}");
    }

    #[test]
    fn from_dir_reads_only_a_small_regular_file() {
        let tmp = std::env::temp_dir().join(format!("cloacina-manifest-{}", rand::random::<u64>()));
        std::fs::create_dir_all(tmp.join("dir/package.toml")).expect("mkdir");
        let e = Manifest::from_dir(&tmp.join("dir")).expect_err("directory");
        assert!(e.to_string().ends_with(": it is a directory"), "{e}");
        std::fs::create_dir_all(tmp.join("big")).expect("mkdir");
        std::fs::File::create(tmp.join("big/package.toml"))
            .and_then(|f| f.set_len(1 << 30))
            .expect("sparse");
        let e = Manifest::from_dir(&tmp.join("big")).expect_err("big");
        assert!(e.to_string().contains("larger than 1048576 bytes"), "{e}");
        let _ = std::fs::remove_dir_all(&tmp);
    }

    #[test]
    fn quoted_values_are_escaped() {
        let e = Manifest::parse(
            "[package]\nname = \"a\\u001b[2J\"\nversion = \"1.0.0\"\n",
            "package.toml",
        )
        .expect_err("bad name");
        assert!(e.to_string().contains("'a\\u{1b}[2J' is not valid"), "{e}");
    }
}
