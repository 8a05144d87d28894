//! Watch folders and the `.cloacina` files in them: the daemon's desired set.

use std::collections::{BTreeMap, HashMap};
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
        let dir = dir.map_err(|e| DaemonError::Config(e.to_string()))?;
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
    /// The archive's SHA-256: the package's identity in the daemon.
    pub sha256: String,
}

/// Finds archives, hashing each file only when its size or modification time changed.
#[derive(Debug, Default)]
pub struct Scanner {
    hashes: HashMap<PathBuf, (u64, Option<SystemTime>, String)>,
}

impl Scanner {
    /// The `.cloacina` files directly inside `dirs`, one per content hash (the first path
    /// wins), sorted by path. Unreadable folders and files are reported in `problems`.
    pub fn scan(&mut self, dirs: &[PathBuf]) -> (Vec<FoundPackage>, Vec<String>) {
        let mut by_hash: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut problems = Vec::new();
        let mut present = Vec::new();
        for dir in dirs {
            let entries = match std::fs::read_dir(dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    problems.push(format!("cannot read watch folder {}: {e}", dir.display()));
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
            for path in files {
                present.push(path.clone());
                match self.hash(&path) {
                    Ok(sha) => {
                        by_hash.entry(sha).or_insert(path);
                    }
                    Err(e) => problems.push(e),
                }
            }
        }
        self.hashes.retain(|p, _| present.contains(p));
        let mut found: Vec<FoundPackage> = by_hash
            .into_iter()
            .map(|(sha256, path)| FoundPackage { path, sha256 })
            .collect();
        found.sort_by(|a, b| a.path.cmp(&b.path));
        (found, problems)
    }

    fn hash(&mut self, path: &Path) -> Result<String, String> {
        let meta =
            std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let (size, modified) = (meta.len(), meta.modified().ok());
        if let Some((s, m, sha)) = self.hashes.get(path)
            && *s == size
            && *m == modified
        {
            return Ok(sha.clone());
        }
        let sha = archive::sha256_file(path).map_err(|e| e.to_string())?;
        self.hashes
            .insert(path.to_path_buf(), (size, modified, sha.clone()));
        Ok(sha)
    }
}

/// One reconciliation pass over the archives now in the watch folders: each file is a desired
/// package of tenant `public`, identified by its content hash (so replacing a file with another
/// version is an upgrade, and an unchanged file is a no-op). Folder problems are logged.
pub async fn folders_reconcile(
    reconciler: &crate::reconciler::Reconciler,
    scanner: &mut Scanner,
    dirs: &[PathBuf],
) -> crate::reconciler::ReconcileReport {
    use crate::reconciler::{DesiredPackage, PackageSource};
    let (found, problems) = scanner.scan(dirs);
    for p in problems {
        tracing::warn!("{p}");
    }
    let desired = found
        .into_iter()
        .map(|f| DesiredPackage {
            id: f.sha256,
            tenant: "public".to_string(),
            source: PackageSource::Archive(f.path),
        })
        .collect();
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
    fn scanning_finds_archives_once_per_content() {
        let root = tempfile::tempdir().expect("tmp");
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        std::fs::create_dir_all(&a).expect("mkdir");
        std::fs::create_dir_all(&b).expect("mkdir");
        std::fs::write(a.join("x-1.0.0.cloacina"), b"one").expect("write");
        std::fs::write(b.join("copy-of-x.cloacina"), b"one").expect("write");
        std::fs::write(b.join("y-1.0.0.cloacina"), b"two").expect("write");
        std::fs::write(b.join("notes.txt"), b"ignored").expect("write");
        let mut scanner = Scanner::default();
        let (found, problems) = scanner.scan(&[a.clone(), b.clone(), root.path().join("missing")]);
        assert!(problems.is_empty(), "{problems:?}");
        let names: Vec<String> = found
            .iter()
            .map(|f| {
                f.path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(names, vec!["x-1.0.0.cloacina", "y-1.0.0.cloacina"]);
        // Changing a file changes its identity.
        std::fs::write(b.join("y-1.0.0.cloacina"), b"two, rebuilt").expect("write");
        let (again, _) = scanner.scan(&[a, b]);
        assert_ne!(found[1].sha256, again[1].sha256);
    }
}
