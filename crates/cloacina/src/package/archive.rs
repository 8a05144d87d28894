//! `.cloacina` archives: packing a package directory, defensive unpacking, SHA-256 identity.
//!
//! An archive is a gzip-compressed tar holding, as regular files only:
//!
//! | entry | |
//! |---|---|
//! | `package.toml` | the manifest (required) |
//! | `Cargo.toml`, `Cargo.lock`, `build.rs` | the crate source (`Cargo.lock` and `build.rs` if present) |
//! | `src/**` | the crate source |
//! | `lib/<target-triple>/<file>` | at most one compiled library per target triple |
//!
//! [`pack`] is deterministic: entries are sorted, every mtime is 0, uid/gid are 0, modes are
//! 0644 (0755 for libraries), and the gzip header carries no time or OS, so the same inputs
//! give the same bytes and therefore the same SHA-256, which is the archive's identity.
//!
//! [`unpack`] trusts nothing: it refuses absolute paths, `..`, links, devices, control
//! characters in names and any name outside the layout above, bounds the entry count and the
//! expanded size (counting the bytes it actually writes), reads GNU long-name and PAX records
//! itself with a bound ([`MAX_NAME_RECORD_BYTES`], [`MAX_PAX_RECORD_BYTES`]), and works in a
//! temporary directory beside the destination that is renamed into place only when
//! everything succeeded, so a failure never leaves a half-written package behind.
//!
//! [`pack`] refuses a library whose structure runs past the end of its file (see
//! [`super::loader::check_library_structure`]): it would crash whoever loads it.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use flate2::{Compression, GzBuilder, read::GzDecoder};
use sha2::{Digest, Sha256};

use super::manifest::{Manifest, ManifestError};
use super::{printable, printable_bytes, shown_path};

/// The target triple this library was compiled for, e.g. `x86_64-unknown-linux-gnu`: the
/// `lib/<target-triple>/` directory of an archive that this process can load.
pub const HOST_TARGET: &str = env!("CLOACINA_HOST_TARGET");

/// The file extension of package archives (without the dot).
pub const ARCHIVE_EXTENSION: &str = "cloacina";

/// What an archive may hold at its top level, for messages.
const LAYOUT: &str =
    "package.toml, Cargo.toml, Cargo.lock, build.rs, src/ and lib/<target-triple>/<library>";

/// Top-level files an archive may hold.
const TOP_LEVEL_FILES: [&str; 4] = ["package.toml", "Cargo.toml", "Cargo.lock", "build.rs"];

/// Why an entry of an archive was refused by [`unpack`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryProblem {
    /// `/etc/passwd`, `C:\x`.
    AbsolutePath,
    /// A `..` component anywhere in the path.
    ParentDirectory,
    /// The path bytes are not UTF-8.
    NonUtf8Path,
    /// A symbolic link, with its target.
    SymbolicLink { target: String },
    /// A hard link, with its target.
    HardLink { target: String },
    /// A character or block device or a FIFO (`"a character device"`, ...).
    Special(&'static str),
    /// Any other tar entry type (sparse files, pax global headers, ...).
    UnsupportedType(u8),
    /// A control character (newline, escape, NUL, ...) in the path.
    ControlCharacter,
    /// A name outside the package layout.
    UnexpectedName,
    /// Something under `lib/` that is not `lib/<target-triple>/<file>`.
    MisplacedLibrary,
    /// `lib/<target-triple>/` with an implausible triple.
    InvalidTarget,
    /// A second library for the same target.
    SecondLibrary { target: String },
    /// A directory where the layout needs a file.
    DirectoryNotFile,
    /// A file where the layout needs a directory (`src`, `lib`, `lib/<target-triple>`).
    FileNotDirectory,
    /// The same path twice, or a path below an earlier file.
    Duplicate,
}

impl fmt::Display for EntryProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryProblem::AbsolutePath => f.write_str("has an absolute path"),
            EntryProblem::ParentDirectory => f.write_str("has a '..' component"),
            EntryProblem::NonUtf8Path => f.write_str("has a path that is not valid UTF-8"),
            EntryProblem::SymbolicLink { target } => {
                write!(f, "is a symbolic link (to '{target}')")
            }
            EntryProblem::HardLink { target } => write!(f, "is a hard link (to '{target}')"),
            EntryProblem::Special(kind) => write!(f, "is {kind}"),
            EntryProblem::UnsupportedType(t) => {
                write!(f, "has unsupported tar entry type {}", describe_type(*t))
            }
            EntryProblem::ControlCharacter => {
                f.write_str("has a control character in its name (shown escaped)")
            }
            EntryProblem::UnexpectedName => f.write_str("is not part of a package"),
            EntryProblem::MisplacedLibrary => {
                f.write_str("is not of the form lib/<target-triple>/<library>")
            }
            EntryProblem::InvalidTarget => f.write_str("does not name a valid target triple"),
            EntryProblem::SecondLibrary { target } => write!(
                f,
                "is a second library for {target} (an archive holds at most one per target)"
            ),
            EntryProblem::DirectoryNotFile => f.write_str("is a directory but must be a file"),
            EntryProblem::FileNotDirectory => f.write_str("is a file but must be a directory"),
            EntryProblem::Duplicate => f.write_str("clashes with an earlier entry"),
        }
    }
}

fn describe_type(t: u8) -> String {
    if t.is_ascii_graphic() {
        format!("'{}'", t as char)
    } else {
        format!("0x{t:02x}")
    }
}

/// Why an archive could not be packed or unpacked. Every message names the archive (or
/// directory) and, where there is one, the offending entry, and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The package directory's `package.toml` is missing or invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),

    /// A required part of the crate source is missing from the package directory.
    #[error(
        "package directory {dir} has no {file}; a package is a Rust crate with package.toml, Cargo.toml and src/ (create one with 'cloacinactl package new NAME')"
    )]
    MissingSource { dir: String, file: &'static str },

    /// A file of the package directory cannot go into an archive.
    #[error("cannot pack {path}: it {problem}; a package may only contain regular files")]
    UnpackableFile { path: String, problem: String },

    /// A library given to [`pack`] is unusable.
    #[error("cannot pack library {path} for {target}: {problem}")]
    BadLibrary {
        target: String,
        path: String,
        problem: String,
    },

    /// Reading or writing a file failed. The I/O error is kept typed (its text is part of the
    /// message).
    #[error("cannot {action} {path}: {cause}")]
    Io {
        action: &'static str,
        path: String,
        cause: io::Error,
    },

    /// The archive file is larger than [`MAX_ARCHIVE_BYTES`]: refused unread.
    #[error(
        "cannot load {path}: the file is {size} bytes, larger than the {MAX_ARCHIVE_BYTES}-byte limit of a .cloacina archive (MAX_ARCHIVE_BYTES); it was not read. Remove it from the watch folder"
    )]
    FileTooLarge { path: String, size: u64 },

    /// The bytes are not a gzip-compressed tar.
    #[error(
        "{archive} is not a valid .cloacina archive (corrupt or truncated gzip/tar data: {message}); download it or pack it again"
    )]
    Corrupt { archive: String, message: String },

    /// An entry breaks the rules; nothing was unpacked.
    #[error(
        "{archive}: entry '{entry}' {problem}; the archive was rejected and nothing was unpacked. A .cloacina archive holds only {LAYOUT}, as regular files: pack it again with 'cloacinactl package pack' and do not use this file"
    )]
    UnsafeEntry {
        archive: String,
        entry: String,
        problem: EntryProblem,
    },

    /// A GNU long-name/long-link record or PAX header larger than any genuine one.
    #[error(
        "{archive}: entry '{entry}' is a {what} of {size} bytes, more than the {limit} allowed; the archive was rejected and nothing was unpacked. Check where this file came from, and pack it again with 'cloacinactl package pack'"
    )]
    RecordTooLarge {
        archive: String,
        entry: String,
        what: &'static str,
        size: u64,
        limit: u64,
    },

    /// More entries than [`UnpackLimits::max_entries`].
    #[error(
        "{archive} has more than {limit} entries (at entry '{entry}'); the archive was rejected and nothing was unpacked. Check where this file came from, or raise the unpack limit if it is genuine"
    )]
    TooManyEntries {
        archive: String,
        entry: String,
        limit: usize,
    },

    /// One entry expands beyond [`UnpackLimits::max_entry_bytes`].
    #[error(
        "{archive}: entry '{entry}' is larger than {limit} bytes; the archive was rejected and nothing was unpacked. Check where this file came from, or raise the unpack limit if it is genuine"
    )]
    EntryTooLarge {
        archive: String,
        entry: String,
        limit: u64,
    },

    /// The archive expands beyond [`UnpackLimits::max_total_bytes`].
    #[error(
        "{archive} expands to more than {limit} bytes (at entry '{entry}'); the archive was rejected and nothing was unpacked. Check where this file came from, or raise the unpack limit if it is genuine"
    )]
    TooLarge {
        archive: String,
        entry: String,
        limit: u64,
    },

    /// No `package.toml` entry.
    #[error(
        "{archive} has no package.toml, so it is not a package archive; nothing was unpacked. Pack a package directory with 'cloacinactl package pack DIR'"
    )]
    MissingManifest { archive: String },

    /// The archive's `package.toml` is invalid.
    #[error("{cause}; nothing was unpacked. Fix package.toml and pack the archive again")]
    InvalidManifest {
        archive: String,
        cause: ManifestError,
    },

    /// [`unpack`] does not overwrite.
    #[error(
        "cannot unpack {archive} into {dest}: it already exists; remove it or choose another destination"
    )]
    DestinationExists { archive: String, dest: String },

    /// The archive has libraries, but none for the wanted target.
    #[error(
        "package '{name}' {version} has no library for {target} (it has: {available}); build it on this platform with 'cloacinactl package build' and pack again"
    )]
    NoLibraryForTarget {
        name: String,
        version: String,
        target: String,
        available: String,
    },

    /// The archive carries no library at all.
    #[error(
        "package '{name}' {version} is source-only (its archive holds no compiled library, and {target} needs one); build it with 'cloacinactl package build' and pack again, or upload it to a server whose compiler service builds it"
    )]
    SourceOnly {
        name: String,
        version: String,
        target: String,
    },
}

fn io_error(action: &'static str, path: &Path, e: io::Error) -> ArchiveError {
    ArchiveError::Io {
        action,
        path: shown_path(path),
        cause: e,
    }
}

/// What [`pack`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedArchive {
    /// The archive file.
    pub path: PathBuf,
    /// SHA-256 of the archive bytes, lowercase hex: the archive's identity.
    pub sha256: String,
    /// Size of the archive in bytes.
    pub size: u64,
    /// `package.name`.
    pub name: String,
    /// `package.version`.
    pub version: String,
    /// Target triples of the libraries it holds, sorted (empty for a source-only archive).
    pub targets: Vec<String>,
}

/// Bounds [`unpack`] enforces against archive bombs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Most entries (files and directories). Default 10 000.
    pub max_entries: usize,
    /// Most bytes all files may expand to together. Default 512 MiB.
    pub max_total_bytes: u64,
    /// Most bytes one file may expand to. Default 256 MiB.
    pub max_entry_bytes: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_entries: 10_000,
            max_total_bytes: 512 * 1024 * 1024,
            max_entry_bytes: 256 * 1024 * 1024,
        }
    }
}

/// An archive [`unpack`]ed into a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// Its validated `package.toml`.
    pub manifest: Manifest,
    /// The directory it was unpacked into (the `dest` given to [`unpack`]).
    pub root: PathBuf,
    /// `(target triple, library file under root)`, sorted by triple.
    pub libraries: Vec<(String, PathBuf)>,
    /// SHA-256 of the archive bytes that were unpacked, lowercase hex.
    pub sha256: String,
}

impl Unpacked {
    /// The target triples this archive has libraries for.
    pub fn targets(&self) -> Vec<&str> {
        self.libraries.iter().map(|(t, _)| t.as_str()).collect()
    }
}

/// The file name cargo gives crate `crate_name`'s `cdylib` on this platform
/// (`hello-orders` -> `libhello_orders.so` on Linux).
pub fn library_file_name(crate_name: &str) -> String {
    format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        crate_name.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    )
}

/// The library of `unpacked` for `target` (usually [`HOST_TARGET`]), or an error that says
/// which targets the archive does have and how to get the missing one.
pub fn library_for(unpacked: &Unpacked, target: &str) -> Result<PathBuf, ArchiveError> {
    if let Some((_, path)) = unpacked.libraries.iter().find(|(t, _)| t == target) {
        return Ok(path.clone());
    }
    let name = unpacked.manifest.name().to_string();
    let version = unpacked.manifest.version().to_string();
    if unpacked.libraries.is_empty() {
        return Err(ArchiveError::SourceOnly {
            name,
            version,
            target: target.to_string(),
        });
    }
    Err(ArchiveError::NoLibraryForTarget {
        name,
        version,
        target: target.to_string(),
        available: unpacked.targets().join(", "),
    })
}

/// SHA-256 of a file's bytes, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, ArchiveError> {
    let mut file = fs::File::open(path).map_err(|e| io_error("read", path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(|e| io_error("read", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// SHA-256 of bytes, lowercase hex.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Whether `s` looks like a target triple (`x86_64-unknown-linux-gnu`): 1-100 ASCII letters,
/// digits, `-`, `_` or `.`, starting with a letter or digit.
pub fn is_valid_target(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

// ---------------------------------------------------------------------------------------------
// Packing

/// Packs the package directory `dir` (its `package.toml`, `Cargo.toml`, `Cargo.lock` and
/// `build.rs` if present, and `src/**`) and the given compiled `libraries`
/// (`(target triple, file)`, stored as `lib/<triple>/<file name>`) into the archive `out`.
///
/// The manifest is read and validated with [`Manifest::from_dir`]. The archive is written
/// to a temporary file beside `out` and renamed over it, so `out` is either the old file or
/// the complete new one. The output is deterministic (see the module documentation).
pub fn pack(
    dir: &Path,
    libraries: &[(String, PathBuf)],
    out: &Path,
) -> Result<PackedArchive, ArchiveError> {
    let manifest = Manifest::from_dir(dir)?;
    let shown_dir = shown_path(dir);
    for required in ["Cargo.toml", "src"] {
        let path = dir.join(required);
        let ok = if required == "src" {
            path.is_dir()
        } else {
            path.is_file()
        };
        if !ok {
            return Err(ArchiveError::MissingSource {
                dir: shown_dir,
                file: if required == "src" {
                    "src/ directory"
                } else {
                    "Cargo.toml"
                },
            });
        }
    }

    // archive path -> (source file, executable)
    let mut files: BTreeMap<String, (PathBuf, bool)> = BTreeMap::new();
    for name in TOP_LEVEL_FILES {
        let path = dir.join(name);
        match fs::symlink_metadata(&path) {
            Ok(meta) => {
                check_regular(&path, &meta)?;
                files.insert(name.to_string(), (path, false));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("read", &path, e)),
        }
    }
    collect_dir(&dir.join("src"), "src", &mut files)?;

    let mut targets = Vec::new();
    for (target, path) in libraries {
        let bad = |problem: &str| ArchiveError::BadLibrary {
            target: printable(target, 100),
            path: shown_path(path),
            problem: problem.to_string(),
        };
        if !is_valid_target(target) {
            return Err(bad("that is not a valid target triple"));
        }
        if targets.contains(target) {
            return Err(bad("a library for this target was already given"));
        }
        let meta = fs::metadata(path).map_err(|e| bad(&e.to_string()))?;
        if !meta.is_file() {
            return Err(bad("it is not a regular file"));
        }
        let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
            return Err(bad("its file name is not valid UTF-8"));
        };
        if file_name.chars().any(char::is_control) {
            return Err(bad("its file name has a control character; rename it"));
        }
        // A library whose segments lie past its end crashes whoever maps it: refuse it here,
        // with the loader's words, rather than ship it.
        let bytes = fs::read(path).map_err(|e| bad(&e.to_string()))?;
        super::loader::check_library_structure(&bytes).map_err(|problem| bad(&problem))?;
        files.insert(format!("lib/{target}/{file_name}"), (path.clone(), true));
        targets.push(target.clone());
    }
    targets.sort();

    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let out_name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "archive".to_string());
    let tmp = parent.join(format!(
        ".{out_name}.partial-{:016x}",
        rand::random::<u64>()
    ));
    let mut guard = RemoveOnDrop::file(tmp.clone());

    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| io_error("write", out, e))?;
    let gz = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(file, Compression::default());
    let mut builder = tar::Builder::new(gz);
    for (name, (source, executable)) in &files {
        let data = fs::read(source).map_err(|e| io_error("read", source, e))?;
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        header.set_mode(if *executable { 0o755 } else { 0o644 });
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        builder
            .append_data(&mut header, name, data.as_slice())
            .map_err(|e| io_error("write", out, e))?;
    }
    let gz = builder
        .into_inner()
        .map_err(|e| io_error("write", out, e))?;
    let file = gz.finish().map_err(|e| io_error("write", out, e))?;
    file.sync_all().map_err(|e| io_error("write", out, e))?;
    drop(file);
    fs::rename(&tmp, out).map_err(|e| io_error("write", out, e))?;
    guard.disarm();

    let sha256 = sha256_file(out)?;
    let size = fs::metadata(out)
        .map_err(|e| io_error("read", out, e))?
        .len();
    Ok(PackedArchive {
        path: out.to_path_buf(),
        sha256,
        size,
        name: manifest.name().to_string(),
        version: manifest.version().to_string(),
        targets,
    })
}

fn check_regular(path: &Path, meta: &fs::Metadata) -> Result<(), ArchiveError> {
    let ft = meta.file_type();
    if ft.is_file() {
        return Ok(());
    }
    let problem = if ft.is_symlink() {
        "is a symbolic link (replace it with the file it points to)"
    } else if ft.is_dir() {
        "is a directory"
    } else {
        "is not a regular file"
    };
    Err(ArchiveError::UnpackableFile {
        path: shown_path(path),
        problem: problem.to_string(),
    })
}

fn collect_dir(
    dir: &Path,
    prefix: &str,
    files: &mut BTreeMap<String, (PathBuf, bool)>,
) -> Result<(), ArchiveError> {
    let entries = fs::read_dir(dir).map_err(|e| io_error("read directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error("read directory", dir, e))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            return Err(ArchiveError::UnpackableFile {
                path: printable_bytes(path.as_os_str().as_encoded_bytes(), 300),
                problem: "has a name that is not valid UTF-8".to_string(),
            });
        };
        if name.chars().any(char::is_control) {
            return Err(ArchiveError::UnpackableFile {
                path: shown_path(&path),
                problem: "has a control character in its name".to_string(),
            });
        }
        let meta = fs::symlink_metadata(&path).map_err(|e| io_error("read", &path, e))?;
        let archive_name = format!("{prefix}/{name}");
        if meta.is_dir() {
            collect_dir(&path, &archive_name, files)?;
        } else {
            check_regular(&path, &meta)?;
            files.insert(archive_name, (path, false));
        }
    }
    Ok(())
}

/// Removes a file or directory when dropped, unless disarmed.
struct RemoveOnDrop {
    path: Option<PathBuf>,
    dir: bool,
}

impl RemoveOnDrop {
    fn file(path: PathBuf) -> Self {
        RemoveOnDrop {
            path: Some(path),
            dir: false,
        }
    }

    fn dir(path: PathBuf) -> Self {
        RemoveOnDrop {
            path: Some(path),
            dir: true,
        }
    }

    fn disarm(&mut self) {
        self.path = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = if self.dir {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Unpacking

/// Hashes every byte read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Fails once more than `cap` bytes were read, and records that it did.
struct CappedReader<R> {
    inner: R,
    read: u64,
    cap: u64,
    exceeded: Rc<Cell<bool>>,
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read = self.read.saturating_add(n as u64);
        if self.read > self.cap {
            self.exceeded.set(true);
            return Err(io::Error::other("decompressed size limit exceeded"));
        }
        Ok(n)
    }
}

/// Most bytes of a GNU long-name or long-link record: far more than any path a file system
/// accepts (Linux's `PATH_MAX` is 4096).
pub const MAX_NAME_RECORD_BYTES: u64 = 4096;

/// Most bytes of a PAX extended header: room for a long path, a link path and the usual
/// attributes many times over.
pub const MAX_PAX_RECORD_BYTES: u64 = 64 * 1024;

/// A metadata entry of a tar stream that describes the entry after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Record {
    LongName,
    LongLink,
    Pax,
}

impl Record {
    fn of(kind: tar::EntryType) -> Option<Record> {
        match kind {
            tar::EntryType::GNULongName => Some(Record::LongName),
            tar::EntryType::GNULongLink => Some(Record::LongLink),
            tar::EntryType::XHeader => Some(Record::Pax),
            _ => None,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Record::LongName => "GNU long-name record",
            Record::LongLink => "GNU long-link record",
            Record::Pax => "PAX extended header",
        }
    }

    fn limit(self) -> u64 {
        match self {
            Record::Pax => MAX_PAX_RECORD_BYTES,
            Record::LongName | Record::LongLink => MAX_NAME_RECORD_BYTES,
        }
    }
}

/// The metadata records read since the last entry, for the next one.
#[derive(Debug, Default)]
struct PendingRecords {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Vec<u8>>,
}

impl PendingRecords {
    fn is_empty(&self) -> bool {
        self.long_name.is_none() && self.long_link.is_none() && self.pax.is_none()
    }

    fn add(&mut self, record: Record, data: Vec<u8>) -> Result<(), String> {
        let slot = match record {
            Record::LongName => &mut self.long_name,
            Record::LongLink => &mut self.long_link,
            Record::Pax => {
                for ext in tar::PaxExtensions::new(&data) {
                    ext.map_err(|_| "its PAX records are malformed".to_string())?;
                }
                &mut self.pax
            }
        };
        if slot.is_some() {
            return Err(format!("a second {} for the same entry", record.what()));
        }
        *slot = Some(data);
        Ok(())
    }

    fn pax_value(&self, key: &str) -> Option<Vec<u8>> {
        let pax = self.pax.as_ref()?;
        tar::PaxExtensions::new(pax)
            .filter_map(Result::ok)
            .filter(|e| e.key_bytes() == key.as_bytes())
            .last()
            .map(|e| e.value_bytes().to_vec())
    }

    /// The entry's path: the GNU long name (without its trailing NUL), else the PAX `path`.
    fn path(&self) -> Option<Vec<u8>> {
        match &self.long_name {
            Some(name) => Some(trim_nul(name)),
            None => self.pax_value("path"),
        }
    }

    fn link(&self) -> Option<Vec<u8>> {
        match &self.long_link {
            Some(name) => Some(trim_nul(name)),
            None => self.pax_value("linkpath"),
        }
    }

    /// The PAX `size`, which would override the header's: raw entries are read with the
    /// header's size, so one that disagrees is refused rather than read differently from
    /// other tools. An unreadable value counts as a disagreement.
    fn pax_size(&self) -> Option<u64> {
        self.pax_value("size").map(|v| {
            std::str::from_utf8(&v)
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(u64::MAX)
        })
    }
}

fn trim_nul(bytes: &[u8]) -> Vec<u8> {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    bytes[..end].to_vec()
}

/// Where an accepted entry goes.
enum Placement {
    Dir,
    File { library_target: Option<String> },
}

/// Checks an entry's path against the layout and returns its normalised form.
fn place(path: &str, is_dir: bool) -> Result<(String, Placement), EntryProblem> {
    if path.chars().any(char::is_control) {
        return Err(EntryProblem::ControlCharacter);
    }
    if path.contains('\\') {
        // Not a separator on Unix, but one on Windows: never let it through.
        return Err(EntryProblem::UnexpectedName);
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Prefix(_) | Component::RootDir => return Err(EntryProblem::AbsolutePath),
            Component::ParentDir => return Err(EntryProblem::ParentDirectory),
            Component::CurDir => {}
            Component::Normal(s) => match s.to_str() {
                Some(s) => parts.push(s),
                None => return Err(EntryProblem::NonUtf8Path),
            },
        }
    }
    let normalised = parts.join("/");
    let placement = match parts.as_slice() {
        [] => return Err(EntryProblem::UnexpectedName),
        [top] if TOP_LEVEL_FILES.contains(top) => {
            if is_dir {
                return Err(EntryProblem::DirectoryNotFile);
            }
            Placement::File {
                library_target: None,
            }
        }
        ["src"] | ["lib"] => {
            if !is_dir {
                return Err(EntryProblem::FileNotDirectory);
            }
            Placement::Dir
        }
        ["src", ..] => {
            if is_dir {
                Placement::Dir
            } else {
                Placement::File {
                    library_target: None,
                }
            }
        }
        ["lib", target, rest @ ..] => {
            if !is_valid_target(target) {
                return Err(EntryProblem::InvalidTarget);
            }
            match (rest, is_dir) {
                ([], true) => Placement::Dir,
                ([], false) => return Err(EntryProblem::FileNotDirectory),
                ([_file], false) => Placement::File {
                    library_target: Some((*target).to_string()),
                },
                _ => return Err(EntryProblem::MisplacedLibrary),
            }
        }
        _ => return Err(EntryProblem::UnexpectedName),
    };
    Ok((normalised, placement))
}

/// Unpacks the archive at `archive` into the new directory `dest` (which must not exist;
/// its parent is created if needed), enforcing `limits` and the layout described in the
/// module documentation, and validates its `package.toml`.
///
/// Everything is written to a temporary directory beside `dest` and renamed to `dest` only on
/// success; on any error the temporary directory is removed and `dest` is untouched.
pub fn unpack(
    archive: &Path,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<Unpacked, ArchiveError> {
    let shown = shown_path(archive);
    if fs::symlink_metadata(dest).is_ok() {
        return Err(ArchiveError::DestinationExists {
            archive: shown,
            dest: shown_path(dest),
        });
    }
    let file = fs::File::open(archive).map_err(|e| io_error("read", archive, e))?;

    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(|e| io_error("create directory", &parent, e))?;
    let dest_name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "package".to_string());
    let tmp = parent.join(format!(
        ".{dest_name}.partial-{:016x}",
        rand::random::<u64>()
    ));
    fs::create_dir(&tmp).map_err(|e| io_error("create directory", &tmp, e))?;
    let mut guard = RemoveOnDrop::dir(tmp.clone());

    let (manifest, libraries, sha256) = unpack_into(file, &shown, archive, &tmp, limits)?;

    match fs::rename(&tmp, dest) {
        Ok(()) => {}
        Err(e)
            if dest.exists()
                || matches!(
                    e.kind(),
                    io::ErrorKind::AlreadyExists | io::ErrorKind::DirectoryNotEmpty
                ) =>
        {
            return Err(ArchiveError::DestinationExists {
                archive: shown,
                dest: shown_path(dest),
            });
        }
        Err(e) => return Err(io_error("write", dest, e)),
    }
    guard.disarm();

    Ok(Unpacked {
        manifest,
        root: dest.to_path_buf(),
        libraries: libraries
            .into_iter()
            .map(|(t, rel)| (t, dest.join(rel)))
            .collect(),
        sha256,
    })
}

type UnpackOutcome = (Manifest, Vec<(String, String)>, String);

fn unpack_into(
    file: fs::File,
    shown: &str,
    archive_path: &Path,
    tmp: &Path,
    limits: &UnpackLimits,
) -> Result<UnpackOutcome, ArchiveError> {
    // Library messages may quote hostile bytes: keep them printable and short.
    let corrupt = |e: &io::Error| ArchiveError::Corrupt {
        archive: shown.to_string(),
        message: printable(&e.to_string(), 120),
    };
    let unsafe_entry = |entry: &str, problem: EntryProblem| ArchiveError::UnsafeEntry {
        archive: shown.to_string(),
        entry: entry.to_string(),
        problem,
    };

    let exceeded = Rc::new(Cell::new(false));
    // Headers, long-name records and padding cost at most a few KiB per entry.
    let stream_cap = limits
        .max_total_bytes
        .saturating_add((limits.max_entries as u64).saturating_mul(8192))
        .saturating_add(1 << 20);
    let hashing = HashingReader {
        inner: io::BufReader::new(file),
        hasher: Sha256::new(),
    };
    let capped = CappedReader {
        inner: GzDecoder::new(hashing),
        read: 0,
        cap: stream_cap,
        exceeded: exceeded.clone(),
    };
    let mut tar = tar::Archive::new(capped);

    let mut seen: BTreeMap<String, bool> = BTreeMap::new(); // path -> is_dir
    let mut libraries: Vec<(String, String)> = Vec::new();
    let mut manifest_text: Option<Vec<u8>> = None;
    let mut count = 0usize;
    let mut total = 0u64;
    let mut last_entry = String::new();

    let too_large_stream = |last: &str| ArchiveError::TooLarge {
        archive: shown.to_string(),
        entry: last.to_string(),
        limit: limits.max_total_bytes,
    };

    // Raw entries: GNU long-name/long-link and PAX records come to us as entries and are read
    // here with a bound (the tar crate would read them whole into memory, whatever their size)
    // and applied to the entry that follows.
    let entries = tar.entries().map_err(|e| corrupt(&e))?.raw(true);
    let mut pending = PendingRecords::default();
    let mut records = 0usize;
    for entry in entries {
        let mut entry = match entry {
            Ok(e) => e,
            Err(_) if exceeded.get() => return Err(too_large_stream(&last_entry)),
            Err(e) => return Err(corrupt(&e)),
        };
        let header_name = printable_bytes(&entry.header().path_bytes(), 300);
        last_entry.clone_from(&header_name);

        if let Some(record) = Record::of(entry.header().entry_type()) {
            records += 1;
            if records > limits.max_entries {
                return Err(ArchiveError::TooManyEntries {
                    archive: shown.to_string(),
                    entry: header_name,
                    limit: limits.max_entries,
                });
            }
            let too_large = |size: u64| ArchiveError::RecordTooLarge {
                archive: shown.to_string(),
                entry: header_name.clone(),
                what: record.what(),
                size,
                limit: record.limit(),
            };
            let declared = entry.size();
            if declared > record.limit() {
                return Err(too_large(declared));
            }
            let mut data = Vec::new();
            match (&mut entry).take(record.limit() + 1).read_to_end(&mut data) {
                Ok(_) => {}
                Err(_) if exceeded.get() => return Err(too_large_stream(&last_entry)),
                Err(e) => return Err(corrupt(&e)),
            }
            if data.len() as u64 > record.limit() {
                return Err(too_large(data.len() as u64));
            }
            pending
                .add(record, data)
                .map_err(|message| ArchiveError::Corrupt {
                    archive: shown.to_string(),
                    message: format!("entry '{header_name}': {message}"),
                })?;
            continue;
        }
        let records_for_entry = std::mem::take(&mut pending);
        if let Some(pax_size) = records_for_entry.pax_size()
            && pax_size != entry.size()
        {
            return Err(ArchiveError::Corrupt {
                archive: shown.to_string(),
                message: format!(
                    "entry '{header_name}': its PAX record gives size {pax_size} but its header {}",
                    entry.size()
                ),
            });
        }

        let raw_path = records_for_entry
            .path()
            .unwrap_or_else(|| entry.header().path_bytes().into_owned());
        let shown_entry = printable_bytes(&raw_path, 300);
        last_entry.clone_from(&shown_entry);

        count += 1;
        if count > limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                archive: shown.to_string(),
                entry: shown_entry,
                limit: limits.max_entries,
            });
        }

        let Ok(path) = std::str::from_utf8(&raw_path) else {
            return Err(unsafe_entry(&shown_entry, EntryProblem::NonUtf8Path));
        };
        // Path safety first: absolute and `..` paths are refused whatever their type.
        if path.starts_with('/') {
            return Err(unsafe_entry(&shown_entry, EntryProblem::AbsolutePath));
        }
        if path.split(['/', '\\']).any(|c| c == "..") {
            return Err(unsafe_entry(&shown_entry, EntryProblem::ParentDirectory));
        }

        let link_target = || {
            let bytes = records_for_entry.link().or_else(|| {
                entry
                    .header()
                    .link_name_bytes()
                    .map(std::borrow::Cow::into_owned)
            });
            bytes
                .map(|b| printable(&String::from_utf8_lossy(&b), 300))
                .unwrap_or_default()
        };
        let kind = entry.header().entry_type();
        let is_dir = match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => false,
            tar::EntryType::Directory => true,
            tar::EntryType::Symlink => {
                let target = link_target();
                return Err(unsafe_entry(
                    &shown_entry,
                    EntryProblem::SymbolicLink { target },
                ));
            }
            tar::EntryType::Link => {
                let target = link_target();
                return Err(unsafe_entry(
                    &shown_entry,
                    EntryProblem::HardLink { target },
                ));
            }
            tar::EntryType::Char => {
                return Err(unsafe_entry(
                    &shown_entry,
                    EntryProblem::Special("a character device"),
                ));
            }
            tar::EntryType::Block => {
                return Err(unsafe_entry(
                    &shown_entry,
                    EntryProblem::Special("a block device"),
                ));
            }
            tar::EntryType::Fifo => {
                return Err(unsafe_entry(&shown_entry, EntryProblem::Special("a FIFO")));
            }
            other => {
                return Err(unsafe_entry(
                    &shown_entry,
                    EntryProblem::UnsupportedType(other.as_byte()),
                ));
            }
        };

        let (normalised, placement) =
            place(path, is_dir).map_err(|p| unsafe_entry(&shown_entry, p))?;

        // Duplicates, and anything below an earlier file.
        match seen.get(&normalised) {
            Some(true) if is_dir => {}
            Some(_) => return Err(unsafe_entry(&shown_entry, EntryProblem::Duplicate)),
            None => {}
        }
        // Every ancestor is (or becomes) a directory.
        let mut prefix = String::new();
        for part in normalised.split('/') {
            if !prefix.is_empty() {
                if seen.insert(prefix.clone(), true) == Some(false) {
                    return Err(unsafe_entry(&shown_entry, EntryProblem::Duplicate));
                }
                prefix.push('/');
            }
            prefix.push_str(part);
        }
        seen.insert(normalised.clone(), is_dir);

        let target_path = tmp.join(&normalised);
        match placement {
            Placement::Dir => {
                fs::create_dir_all(&target_path)
                    .map_err(|e| io_error("create directory", &target_path, e))?;
            }
            Placement::File { library_target } => {
                if let Some(target) = &library_target
                    && libraries.iter().any(|(t, _)| t == target)
                {
                    return Err(unsafe_entry(
                        &shown_entry,
                        EntryProblem::SecondLibrary {
                            target: target.clone(),
                        },
                    ));
                }
                let entry_too_large = || ArchiveError::EntryTooLarge {
                    archive: shown.to_string(),
                    entry: shown_entry.clone(),
                    limit: limits.max_entry_bytes,
                };
                let too_large = || ArchiveError::TooLarge {
                    archive: shown.to_string(),
                    entry: shown_entry.clone(),
                    limit: limits.max_total_bytes,
                };
                // Cheap checks on the declared size first ...
                let declared = entry.size();
                if declared > limits.max_entry_bytes {
                    return Err(entry_too_large());
                }
                if total.saturating_add(declared) > limits.max_total_bytes {
                    return Err(too_large());
                }
                // ... then count what is actually written.
                if let Some(dir) = target_path.parent() {
                    fs::create_dir_all(dir).map_err(|e| io_error("create directory", dir, e))?;
                }
                let mut out = create_file(&target_path, library_target.is_some())?;
                let budget = limits
                    .max_entry_bytes
                    .min(limits.max_total_bytes.saturating_sub(total));
                let mut limited = (&mut entry).take(budget.saturating_add(1));
                let is_manifest = normalised == "package.toml";
                let mut buf = vec![0u8; 64 * 1024];
                let mut keep = Vec::new();
                let mut written = 0u64;
                loop {
                    let n = match limited.read(&mut buf) {
                        Ok(n) => n,
                        Err(_) if exceeded.get() => return Err(too_large()),
                        Err(e) => return Err(corrupt(&e)),
                    };
                    if n == 0 {
                        break;
                    }
                    written += n as u64;
                    if written > budget {
                        return Err(if written > limits.max_entry_bytes {
                            entry_too_large()
                        } else {
                            too_large()
                        });
                    }
                    out.write_all(&buf[..n])
                        .map_err(|e| io_error("write", &target_path, e))?;
                    if is_manifest {
                        keep.extend_from_slice(&buf[..n]);
                    }
                }
                out.flush()
                    .map_err(|e| io_error("write", &target_path, e))?;
                total += written;
                if is_manifest {
                    manifest_text = Some(keep);
                }
                if let Some(target) = library_target {
                    libraries.push((target, normalised.clone()));
                }
            }
        }
    }

    if !pending.is_empty() {
        return Err(ArchiveError::Corrupt {
            archive: shown.to_string(),
            message: format!(
                "entry '{last_entry}' is a long-name or PAX record that no entry follows"
            ),
        });
    }

    // Read to the end of the gzip stream so its checksum is verified, then to the end of the
    // file so the digest covers every byte.
    let mut capped = tar.into_inner();
    if let Err(e) = io::copy(&mut capped, &mut io::sink()) {
        if exceeded.get() {
            return Err(too_large_stream(&last_entry));
        }
        return Err(corrupt(&e));
    }
    let mut hashing = capped.inner.into_inner();
    io::copy(&mut hashing, &mut io::sink()).map_err(|e| io_error("read", archive_path, e))?;
    let sha256 = hex::encode(hashing.hasher.finalize());

    let Some(text) = manifest_text else {
        return Err(ArchiveError::MissingManifest {
            archive: shown.to_string(),
        });
    };
    let manifest_path = format!("{shown}:package.toml");
    let manifest = match String::from_utf8(text) {
        Ok(text) => Manifest::parse(&text, &manifest_path),
        Err(_) => Err(ManifestError::Malformed {
            path: manifest_path,
            message: "it is not valid UTF-8".to_string(),
        }),
    }
    .map_err(|cause| ArchiveError::InvalidManifest {
        archive: shown.to_string(),
        cause,
    })?;

    libraries.sort();
    Ok((manifest, libraries, sha256))
}

fn create_file(path: &Path, executable: bool) -> Result<fs::File, ArchiveError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if executable { 0o755 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = executable;
    options.open(path).map_err(|e| io_error("create", path, e))
}

/// The largest `.cloacina` file anything reads: the default unpack budget
/// ([`UnpackLimits::max_total_bytes`], 512 MiB). An archive that unpacks within that budget
/// is no larger (gzip adds only a few bytes per block), so a bigger file cannot be a loadable
/// package; checking the size first refuses it without reading (or hashing) it at all.
pub const MAX_ARCHIVE_BYTES: u64 = 512 * 1024 * 1024;

/// Reads only the `package.toml` of the archive at `path`, without unpacking anything or
/// opening its library: how a reconciler learns a package's name and version before deciding
/// whether to load it. Refuses, before reading the whole file, one larger than
/// [`MAX_ARCHIVE_BYTES`] or not starting with the gzip magic bytes; the decompressed bytes it
/// reads are bounded by the default [`UnpackLimits`].
pub fn read_manifest(path: &Path) -> Result<Manifest, ArchiveError> {
    scan(path, false).map(|s| s.manifest)
}

/// What an archive declares, read without unpacking it or opening a library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSummary {
    pub manifest: Manifest,
    /// Target triples of the libraries it holds, sorted (empty for a source-only archive).
    pub targets: Vec<String>,
}

impl ArchiveSummary {
    /// Whether it holds a library this host can load ([`HOST_TARGET`]).
    pub fn has_host_library(&self) -> bool {
        self.targets.iter().any(|t| t == HOST_TARGET)
    }
}

/// [`read_manifest`], plus the targets of the libraries the archive holds (every entry is
/// listed, within the same bounds): how a server decides whether an upload can be loaded at
/// once or waits for the compiler.
pub fn read_summary(path: &Path) -> Result<ArchiveSummary, ArchiveError> {
    scan(path, true)
}

fn scan(path: &Path, all_entries: bool) -> Result<ArchiveSummary, ArchiveError> {
    const MANIFEST_MAX_BYTES: u64 = 64 * 1024;
    let shown = path.display().to_string();
    let mut file = fs::File::open(path).map_err(|e| io_error("read", path, e))?;
    let size = file
        .metadata()
        .map_err(|e| io_error("read", path, e))?
        .len();
    if size > MAX_ARCHIVE_BYTES {
        return Err(ArchiveError::FileTooLarge { path: shown, size });
    }
    let mut magic = [0u8; 2];
    let corrupt = |message: String| ArchiveError::Corrupt {
        archive: shown.clone(),
        message,
    };
    if file.read_exact(&mut magic).is_err() || magic != [0x1f, 0x8b] {
        return Err(corrupt(
            "it does not start with the gzip magic bytes 1f 8b".to_string(),
        ));
    }
    let file = fs::File::open(path).map_err(|e| io_error("read", path, e))?;
    let limits = UnpackLimits::default();
    let cap = limits
        .max_total_bytes
        .saturating_add((limits.max_entries as u64).saturating_mul(8192));
    let mut tar = tar::Archive::new(GzDecoder::new(io::BufReader::new(file)).take(cap));
    // Raw entries, as in `unpack`: long-name and PAX records are read here with a bound (the
    // tar crate would read them whole into memory, whatever size they declare), and declared
    // sizes are checked before an entry is skipped, so a bomb is refused unread.
    let entries = tar
        .entries()
        .map_err(|e| corrupt(printable(&e.to_string(), 120)))?
        .raw(true);
    let mut manifest = None;
    let mut targets = std::collections::BTreeSet::new();
    let mut pending = PendingRecords::default();
    let mut records = 0usize;
    let mut count = 0usize;
    let mut total = 0u64;
    for entry in entries {
        let mut entry = entry.map_err(|e| corrupt(printable(&e.to_string(), 120)))?;
        let header_name = printable_bytes(&entry.header().path_bytes(), 300);
        if let Some(record) = Record::of(entry.header().entry_type()) {
            records += 1;
            if records > limits.max_entries {
                return Err(ArchiveError::TooManyEntries {
                    archive: shown,
                    entry: header_name,
                    limit: limits.max_entries,
                });
            }
            let too_large = |size: u64| ArchiveError::RecordTooLarge {
                archive: shown.clone(),
                entry: header_name.clone(),
                what: record.what(),
                size,
                limit: record.limit(),
            };
            if entry.size() > record.limit() {
                return Err(too_large(entry.size()));
            }
            let mut data = Vec::new();
            (&mut entry)
                .take(record.limit() + 1)
                .read_to_end(&mut data)
                .map_err(|e| corrupt(printable(&e.to_string(), 120)))?;
            if data.len() as u64 > record.limit() {
                return Err(too_large(data.len() as u64));
            }
            pending
                .add(record, data)
                .map_err(|message| corrupt(format!("entry '{header_name}': {message}")))?;
            continue;
        }
        let records_for_entry = std::mem::take(&mut pending);
        let raw = records_for_entry
            .path()
            .unwrap_or_else(|| entry.header().path_bytes().into_owned());
        let shown_entry = printable_bytes(&raw, 300);
        // Refused as `unpack` would refuse it (not read as "no package.toml" when the
        // manifest comes after the limit).
        count += 1;
        if count > limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                archive: shown,
                entry: shown_entry,
                limit: limits.max_entries,
            });
        }
        let declared = entry.size();
        if declared > limits.max_entry_bytes {
            return Err(ArchiveError::EntryTooLarge {
                archive: shown,
                entry: shown_entry,
                limit: limits.max_entry_bytes,
            });
        }
        total = total.saturating_add(declared);
        if total > limits.max_total_bytes {
            return Err(ArchiveError::TooLarge {
                archive: shown,
                entry: shown_entry,
                limit: limits.max_total_bytes,
            });
        }
        let name = String::from_utf8_lossy(&raw);
        let name = name.trim_start_matches("./");
        if let Some(rest) = name.strip_prefix("lib/") {
            if let Some((target, file)) = rest.split_once('/')
                && is_valid_target(target)
                && !file.is_empty()
                && !file.contains('/')
            {
                targets.insert(target.to_string());
            }
            continue;
        }
        if name != "package.toml" || manifest.is_some() {
            continue;
        }
        if entry.size() > MANIFEST_MAX_BYTES {
            return Err(ArchiveError::EntryTooLarge {
                archive: shown,
                entry: "package.toml".to_string(),
                limit: MANIFEST_MAX_BYTES,
            });
        }
        let mut text = String::new();
        (&mut entry)
            .take(MANIFEST_MAX_BYTES)
            .read_to_string(&mut text)
            .map_err(|e| corrupt(printable(&e.to_string(), 120)))?;
        let parsed =
            Manifest::parse(&text, &format!("{shown} (package.toml)")).map_err(|cause| {
                ArchiveError::InvalidManifest {
                    archive: shown.clone(),
                    cause,
                }
            })?;
        if !all_entries {
            return Ok(ArchiveSummary {
                manifest: parsed,
                targets: Vec::new(),
            });
        }
        manifest = Some(parsed);
    }
    match manifest {
        Some(manifest) => Ok(ArchiveSummary {
            manifest,
            targets: targets.into_iter().collect(),
        }),
        None => Err(ArchiveError::MissingManifest { archive: shown }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_rules() {
        assert!(matches!(
            place("src/lib.rs", false),
            Ok((_, Placement::File { .. }))
        ));
        assert!(matches!(
            place("./package.toml", false),
            Ok((p, Placement::File { .. })) if p == "package.toml"
        ));
        assert!(matches!(
            place("lib/x86_64-unknown-linux-gnu/libx.so", false),
            Ok((_, Placement::File { library_target: Some(t) })) if t == "x86_64-unknown-linux-gnu"
        ));
        assert_eq!(
            place("/etc/passwd", false).err(),
            Some(EntryProblem::AbsolutePath)
        );
        assert_eq!(
            place("src/../../x", false).err(),
            Some(EntryProblem::ParentDirectory)
        );
        assert_eq!(
            place("target/debug/x", false).err(),
            Some(EntryProblem::UnexpectedName)
        );
        assert_eq!(
            place("lib/x86_64-unknown-linux-gnu/a/b.so", false).err(),
            Some(EntryProblem::MisplacedLibrary)
        );
        assert_eq!(
            place("lib/-bad/x.so", false).err(),
            Some(EntryProblem::InvalidTarget)
        );
        assert_eq!(
            place("package.toml", true).err(),
            Some(EntryProblem::DirectoryNotFile)
        );
        assert_eq!(
            place("src", false).err(),
            Some(EntryProblem::FileNotDirectory)
        );
        assert_eq!(
            place("src\\..\\x", false).err(),
            Some(EntryProblem::UnexpectedName)
        );
    }

    #[test]
    fn errors_stay_small() {
        // clippy::result_large_err fires at 128 bytes.
        assert!(std::mem::size_of::<ArchiveError>() < 128);
    }

    #[test]
    fn targets() {
        assert!(is_valid_target(HOST_TARGET), "{HOST_TARGET}");
        assert_eq!(printable("a\u{1b}[31mb", 100), "a\\u{1b}[31mb");
        assert_eq!(printable("abcdef", 3), "abc…");
        assert!(is_valid_target("aarch64-apple-darwin"));
        assert!(!is_valid_target(""));
        assert!(!is_valid_target(".hidden"));
        assert!(!is_valid_target("a/b"));
    }
}
