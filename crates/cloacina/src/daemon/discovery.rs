//! Watch folders and the `.cloacina` files in them: the daemon's desired set.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::{Home, expand_tilde};
use crate::package::archive;

use super::DaemonError;

/// The merged, de-duplicated watch folders: `<home>/packages` always first, then the
/// command-line folders, then `[watch] directories` (with `~` expanded). Two spellings of one
/// folder count once.
pub fn watch_dirs(
    home: &Home,
    cli: &[PathBuf],
    config: &[String],
) -> Result<Vec<PathBuf>, DaemonError> {
    let mut out: Vec<PathBuf> = Vec::new();
    let mut seen: Vec<PathBuf> = Vec::new();
    let candidates = std::iter::once(Ok(home.packages()))
        .chain(cli.iter().map(|p| expand_tilde(p)))
        .chain(config.iter().map(|p| expand_tilde(Path::new(p))));
    for dir in candidates {
        let dir = dir.map_err(DaemonError::Config)?;
        let dir = if dir.is_relative() {
            std::env::current_dir().map(|c| c.join(&dir)).unwrap_or(dir)
        } else {
            dir
        };
        let key = std::fs::canonicalize(&dir).unwrap_or_else(|_| normalize(&dir));
        if !seen.contains(&key) {
            seen.push(key);
            out.push(dir);
        }
    }
    Ok(out)
}

/// `a/./b/../c` → `a/c`, without touching the file system (for folders that do not exist yet).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// A package archive found in a watch folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundPackage {
    pub path: PathBuf,
    /// The package's id in the daemon: see [`package_id`].
    pub id: String,
    /// The archive's SHA-256, or `None` for a file that is not hashed because it cannot be a
    /// package (larger than [`archive::MAX_ARCHIVE_BYTES`], or not gzip data); loading it then
    /// fails with that reason, without the file being read.
    pub sha256: Option<String>,
}

/// The namespace of daemon package ids (a fixed random UUID).
const PACKAGE_ID_NAMESPACE: &[u8; 16] =
    b"\x6f\x0e\x3c\x52\x9a\x41\x4d\x1b\x8e\x77\x25\xc4\x0b\xd9\x63\xa1";

/// A name-based UUID (RFC 9562 version 8, SHA-256 based): the first 16 bytes of
/// SHA-256(namespace || name), with the version and variant bits set.
fn name_uuid(name: &str) -> String {
    let mut bytes = Vec::with_capacity(16 + name.len());
    bytes.extend_from_slice(PACKAGE_ID_NAMESPACE);
    bytes.extend_from_slice(name.as_bytes());
    let digest = archive::sha256_bytes(&bytes);
    let mut raw = [0u8; 16];
    for (i, b) in raw.iter_mut().enumerate() {
        *b = u8::from_str_radix(&digest[2 * i..2 * i + 2], 16).unwrap_or(0);
    }
    uuid::Builder::from_custom_bytes(raw)
        .into_uuid()
        .to_string()
}

/// The daemon's id of the archive with SHA-256 `sha256`: a UUID derived from the hash, so the
/// same archive has the same id across restarts and wherever it lies, and a rebuilt one
/// another. Cron rows, executions, reactors and logs (`package_id=`) all use it.
pub fn package_id(sha256: &str) -> String {
    name_uuid(&format!("sha256:{sha256}"))
}

/// The id of a file that is not hashed (see [`FoundPackage::sha256`]): stable while the file
/// is unchanged.
fn unhashed_id(path: &Path, size: u64, modified: Option<SystemTime>) -> String {
    let stamp = modified
        .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    name_uuid(&format!("unhashed:{}:{size}:{stamp}", path.display()))
}

/// What one scan found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Every `.cloacina` file, sorted by path within each folder, folders in order (copies
    /// included: the reconciler reports them as superseded).
    pub found: Vec<FoundPackage>,
    /// Folders that exist but cannot be read: their packages are kept as they were in the
    /// last good scan, and the daemon reports them as errors (health degraded).
    pub folder_errors: Vec<String>,
}

/// Finds archives, hashing each file only when its size or modification time changed.
#[derive(Debug, Default)]
pub struct Scanner {
    hashes: HashMap<PathBuf, (u64, Option<SystemTime>, Option<String>)>,
    /// The last good listing of each folder, kept while it cannot be read.
    last_good: HashMap<PathBuf, Vec<FoundPackage>>,
    /// How many passes [`folders_reconcile`] has run (the first one sweeps orphans).
    pub(crate) passes: u64,
}

impl Scanner {
    /// The `.cloacina` files directly inside `dirs`. A folder that does not exist has none; a
    /// folder that exists but cannot be read keeps what it had.
    pub fn scan(&mut self, dirs: &[PathBuf]) -> Scan {
        let mut scan = Scan::default();
        let mut present = Vec::new();
        self.last_good.retain(|d, _| dirs.contains(d));
        for dir in dirs {
            let entries = match std::fs::read_dir(dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.last_good.remove(dir);
                    continue;
                }
                Err(e) => {
                    let kept = self.last_good.get(dir).cloned().unwrap_or_default();
                    scan.folder_errors.push(format!(
                        "cannot read watch folder {}: {e}; its {} package(s) stay loaded until it can be read again or is removed from the configuration",
                        dir.display(),
                        kept.len()
                    ));
                    present.extend(kept.iter().map(|f| f.path.clone()));
                    scan.found.extend(kept);
                    continue;
                }
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.extension()
                        .is_some_and(|x| x == archive::ARCHIVE_EXTENSION)
                })
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            let mut listing = Vec::new();
            for path in files {
                match self.identify(&path) {
                    Ok(Some(f)) => {
                        present.push(path);
                        listing.push(f);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        // Unreadable now: keep what it was, like an unreadable folder.
                        if let Some(f) = self
                            .last_good
                            .get(dir)
                            .and_then(|l| l.iter().find(|f| f.path == path))
                        {
                            present.push(path);
                            listing.push(f.clone());
                        }
                        scan.folder_errors.push(e);
                    }
                }
            }
            self.last_good.insert(dir.clone(), listing.clone());
            scan.found.extend(listing);
        }
        self.hashes.retain(|p, _| present.contains(p));
        scan
    }

    /// The file's id, hashing it only if it changed and only if it can be a package;
    /// `None` when it vanished since the folder was listed.
    fn identify(&mut self, path: &Path) -> Result<Option<FoundPackage>, String> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!("package file vanished during the scan: {}", path.display());
                return Ok(None);
            }
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let (size, modified) = (meta.len(), meta.modified().ok());
        let sha = match self.hashes.get(path) {
            Some((s, m, sha)) if *s == size && *m == modified => sha.clone(),
            _ => {
                let sha = if size > archive::MAX_ARCHIVE_BYTES || !gzip_magic(path) {
                    None
                } else {
                    match archive::sha256_file(path) {
                        Ok(sha) => Some(sha),
                        Err(_) if !path.exists() => return Ok(None),
                        Err(e) => return Err(e.to_string()),
                    }
                };
                self.hashes
                    .insert(path.to_path_buf(), (size, modified, sha.clone()));
                sha
            }
        };
        Ok(Some(FoundPackage {
            path: path.to_path_buf(),
            id: match &sha {
                Some(sha) => package_id(sha),
                None => unhashed_id(path, size, modified),
            },
            sha256: sha,
        }))
    }
}

/// Whether the file starts with the gzip magic bytes (reads two bytes).
fn gzip_magic(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == [0x1f, 0x8b]
}

/// One reconciliation pass over the archives now in the watch folders: each file is a desired
/// package of tenant `public`, identified by [`package_id`] (so replacing a file with another
/// version is an upgrade, and an unchanged file is a no-op). Folders that cannot be read are
/// logged (once per change) and recorded as the reconciler's source problems. The first pass
/// first deletes the cron rows of packages not in the folders (removed while the daemon was
/// down, or stored under an older id), so they never fire beside the rows it writes.
pub async fn folders_reconcile(
    reconciler: &crate::reconciler::Reconciler,
    scanner: &mut Scanner,
    dirs: &[PathBuf],
) -> crate::reconciler::ReconcileReport {
    use crate::reconciler::{DesiredPackage, PackageSource};
    let scan = scanner.scan(dirs);
    let before = reconciler.source_problems();
    for p in &scan.folder_errors {
        if !before.contains(p) {
            tracing::error!("{p}");
        }
    }
    reconciler.set_source_problems(scan.folder_errors);
    let desired: Vec<DesiredPackage> = scan
        .found
        .into_iter()
        .map(|f| DesiredPackage {
            id: f.id,
            tenant: "public".to_string(),
            source: PackageSource::Archive(f.path),
        })
        .collect();
    if scanner.passes == 0 {
        let keep = desired.iter().map(|d| d.id.clone()).collect();
        if let Err(e) = reconciler.cron_orphans_delete_keeping(&keep).await {
            tracing::error!("{e}");
        }
    }
    scanner.passes += 1;
    let report = reconciler.reconcile(desired).await;
    if !(report.loaded.is_empty() && report.unloaded.is_empty() && report.upgraded.is_empty()) {
        tracing::info!(
            loaded = report.loaded.len(),
            unloaded = report.unloaded.len(),
            upgraded = report.upgraded.len(),
            "reconciliation pass"
        );
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_dirs_merge_and_deduplicate() {
        let root = tempfile::tempdir().expect("tmp");
        let home = Home::at(root.path().join("home"));
        std::fs::create_dir_all(home.packages()).expect("mkdir");
        let extra = root.path().join("extra");
        std::fs::create_dir_all(&extra).expect("mkdir");
        let again = root.path().join("extra/../extra/.");
        let dirs = watch_dirs(
            &home,
            &[extra.clone(), home.packages()],
            &[again.display().to_string(), extra.display().to_string()],
        )
        .expect("dirs");
        assert_eq!(dirs, vec![home.packages(), extra]);
    }

    #[test]
    fn scanning_lists_every_archive_with_content_ids() {
        let root = tempfile::tempdir().expect("tmp");
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        std::fs::create_dir_all(&a).expect("mkdir");
        std::fs::create_dir_all(&b).expect("mkdir");
        let gz = |text: &str| [&[0x1f, 0x8b][..], text.as_bytes()].concat();
        std::fs::write(a.join("x-1.0.0.cloacina"), gz("one")).expect("write");
        std::fs::write(b.join("copy-of-x.cloacina"), gz("one")).expect("write");
        std::fs::write(b.join("y-1.0.0.cloacina"), gz("two")).expect("write");
        std::fs::write(b.join("notes.txt"), b"ignored").expect("write");
        let mut scanner = Scanner::default();
        let scan = scanner.scan(&[a.clone(), b.clone(), root.path().join("missing")]);
        assert!(scan.folder_errors.is_empty(), "{:?}", scan.folder_errors);
        let names: Vec<String> = scan
            .found
            .iter()
            .map(|f| {
                f.path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        // The copy is listed too: the reconciler reports it as superseded.
        assert_eq!(
            names,
            vec!["x-1.0.0.cloacina", "copy-of-x.cloacina", "y-1.0.0.cloacina"]
        );
        assert_eq!(scan.found[0].id, scan.found[1].id, "same content, same id");
        let sha = scan.found[0].sha256.clone().expect("hashed");
        assert_eq!(scan.found[0].id, package_id(&sha));
        assert!(uuid::Uuid::parse_str(&scan.found[0].id).is_ok());
        // Changing a file changes its identity.
        std::fs::write(b.join("y-1.0.0.cloacina"), gz("two, rebuilt")).expect("write");
        let again = scanner.scan(&[a, b]);
        assert_ne!(scan.found[2].id, again.found[2].id);
    }

    #[test]
    fn ids_are_stable_uuids_of_the_hash() {
        let id = package_id("00ff");
        assert_eq!(id, package_id("00ff"));
        assert_ne!(id, package_id("00fe"));
        let parsed = uuid::Uuid::parse_str(&id).expect("a UUID");
        assert_eq!(parsed.get_version_num(), 8);
    }

    /// A file that cannot be a package (too large, or not gzip) is not read, let alone hashed.
    #[test]
    fn huge_or_non_gzip_files_are_not_hashed() {
        let root = tempfile::tempdir().expect("tmp");
        let huge = root.path().join("huge.cloacina");
        let f = std::fs::File::create(&huge).expect("create");
        f.set_len(archive::MAX_ARCHIVE_BYTES + 1).expect("sparse");
        std::fs::write(root.path().join("text.cloacina"), b"plain text").expect("write");
        let started = std::time::Instant::now();
        let scan = Scanner::default().scan(&[root.path().to_path_buf()]);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert_eq!(scan.found.len(), 2);
        assert!(scan.found.iter().all(|f| f.sha256.is_none()), "{scan:?}");
    }

    /// A folder that cannot be read keeps its packages; only a folder that is gone loses them.
    #[test]
    fn unreadable_folders_keep_their_packages() {
        let root = tempfile::tempdir().expect("tmp");
        let dir = root.path().join("w");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("x.cloacina"), [0x1f, 0x8b, 1]).expect("write");
        let mut scanner = Scanner::default();
        let first = scanner.scan(std::slice::from_ref(&dir));
        assert_eq!(first.found.len(), 1);
        // Replaced by a regular file: reading it as a folder fails (even as root).
        std::fs::rename(&dir, root.path().join("moved")).expect("move away");
        std::fs::write(&dir, b"now a file").expect("file");
        let broken = scanner.scan(std::slice::from_ref(&dir));
        assert_eq!(broken.found, first.found, "kept");
        assert_eq!(broken.folder_errors.len(), 1, "{broken:?}");
        assert!(
            broken.folder_errors[0].contains("cannot read watch folder"),
            "{broken:?}"
        );
        // Really gone: nothing.
        std::fs::remove_file(&dir).expect("rm");
        let gone = scanner.scan(&[dir]);
        assert!(
            gone.found.is_empty() && gone.folder_errors.is_empty(),
            "{gone:?}"
        );
    }
}
