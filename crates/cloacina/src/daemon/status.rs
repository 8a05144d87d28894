//! The daemon's health socket (`<home>/daemon.sock`): connect, read one JSON status document,
//! done. `cloacinactl daemon status` and `daemon health` are its clients.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use super::DaemonError;
use crate::reconciler::{PackageState, Reconciler};
use crate::store::{ExecutionStatus, Store, WriteFailure};

/// What the socket answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// `healthy`, or `degraded` when a package failed to load, is stuck part-way, could not
    /// be unloaded (guard refusal), a watch folder cannot be read, or commits to the database
    /// are failing.
    pub health: String,
    pub pid: u32,
    pub uptime_s: u64,
    pub packages_loaded: usize,
    /// When the last reconciliation pass finished (Unix milliseconds), if any has.
    pub last_reconciliation: Option<i64>,
    /// Executions of this daemon not yet finished.
    pub active_workflows: usize,
    pub watch_dirs: Vec<String>,
    /// Watch folders that exist but cannot be read (their packages stay loaded).
    #[serde(default)]
    pub folder_errors: Vec<String>,
    /// Commits to the database are failing (a full disk, a locked or read-only file): the
    /// last failure and since when; `None` once a commit succeeds again.
    #[serde(default)]
    pub write_failure: Option<WriteFailure>,
    pub packages: Vec<PackageLine>,
}

/// One package as `daemon status` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageLine {
    /// The package id: a UUID derived from the archive's SHA-256, as in every log line's
    /// `package_id` field.
    #[serde(default)]
    pub id: String,
    /// From the library, or from the manifest when the load failed (`(unreadable)` when
    /// neither could be read).
    pub name: String,
    pub version: String,
    /// `loaded`, `waiting`, `failed`, `partially_unloaded`, `unload_refused` or `superseded`.
    pub state: String,
    /// The whole error (or what a waiting package waits for).
    pub last_error: Option<String>,
    pub path: Option<String>,
    /// The file is gone but the package is still loaded (its unload was refused or stopped).
    #[serde(default)]
    pub path_missing: bool,
    /// For a superseded package: what is served instead (`name version (path, id)`).
    #[serde(default)]
    pub superseded_by: Option<String>,
}

impl DaemonStatus {
    /// What the socket answers before the first reconciliation pass has finished.
    pub fn starting() -> DaemonStatus {
        DaemonStatus {
            health: "starting".to_string(),
            pid: std::process::id(),
            uptime_s: 0,
            packages_loaded: 0,
            last_reconciliation: None,
            active_workflows: 0,
            watch_dirs: Vec::new(),
            folder_errors: Vec::new(),
            write_failure: None,
            packages: Vec::new(),
        }
    }

    /// The status now: packages from the reconciler, unfinished executions from the store.
    /// `degraded` as [`DaemonStatus::health`] says.
    pub async fn collect(
        reconciler: &Reconciler,
        store: &Store,
        watch_dirs: &[PathBuf],
        uptime: Duration,
        last_reconciliation: Option<i64>,
    ) -> DaemonStatus {
        let unfinished = [
            ExecutionStatus::Pending,
            ExecutionStatus::Running,
            ExecutionStatus::Paused,
        ];
        let active = match store.execution_count(&unfinished).await {
            Ok(n) => n.max(0) as usize,
            Err(e) => {
                tracing::warn!("status: cannot count active workflows: {e}");
                0
            }
        };
        let statuses = reconciler.statuses();
        let folder_errors = reconciler.source_problems();
        let write_failure = store.write_health();
        let degraded = !folder_errors.is_empty()
            || write_failure.is_some()
            || statuses.iter().any(|s| {
                matches!(
                    s.state,
                    PackageState::Failed
                        | PackageState::PartiallyUnloaded
                        | PackageState::UnloadRefused
                )
            });
        let mut packages: Vec<PackageLine> = statuses
            .iter()
            .map(|s| PackageLine {
                id: s.id.clone(),
                name: s.name.clone().unwrap_or_else(|| "(unreadable)".to_string()),
                version: s.version.clone().unwrap_or_default(),
                state: serde_json::to_value(s.state)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                last_error: s.last_error.clone().or_else(|| s.waiting_for.clone()),
                path: s.source.clone(),
                path_missing: s.removed,
                superseded_by: s.superseded_by.clone(),
            })
            .collect();
        // Versions of one package side by side.
        packages.sort_by(|a, b| (&a.name, &a.path).cmp(&(&b.name, &b.path)));
        DaemonStatus {
            health: if degraded { "degraded" } else { "healthy" }.to_string(),
            pid: std::process::id(),
            uptime_s: uptime.as_secs(),
            // A refused unload leaves the package fully loaded and serving.
            packages_loaded: statuses
                .iter()
                .filter(|s| matches!(s.state, PackageState::Loaded | PackageState::UnloadRefused))
                .count(),
            last_reconciliation,
            active_workflows: active,
            watch_dirs: watch_dirs.iter().map(|d| d.display().to_string()).collect(),
            folder_errors,
            write_failure,
            packages,
        }
    }
}

/// Produces the current status on each connection.
pub type StatusFn = Arc<dyn Fn() -> DaemonStatus + Send + Sync>;

/// Binds the socket (replacing a stale one) and answers every connection with the status.
pub async fn serve(
    path: &Path,
    status: StatusFn,
) -> Result<tokio::task::JoinHandle<()>, DaemonError> {
    if path.exists() {
        // A live daemon is excluded by the PID file, so a socket file here is stale.
        std::fs::remove_file(path).map_err(|e| DaemonError::Io {
            path: path.display().to_string(),
            cause: e,
        })?;
    }
    let listener = UnixListener::bind(path).map_err(|e| DaemonError::Listen {
        path: path.display().to_string(),
        cause: e,
    })?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let doc = status();
            tokio::spawn(async move {
                if let Ok(mut text) = serde_json::to_vec(&doc) {
                    text.push(b'\n');
                    let _ = stream.write_all(&text).await;
                    let _ = stream.shutdown().await;
                }
            });
        }
    }))
}

/// Reads one status document from the socket.
pub async fn probe(path: &Path, timeout: Duration) -> Result<DaemonStatus, DaemonError> {
    let unreachable = |message: String| DaemonError::Unreachable {
        path: path.display().to_string(),
        message,
    };
    let read = async {
        let mut stream = UnixStream::connect(path)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let mut buf = Vec::new();
        stream
            .read_to_end(&mut buf)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        serde_json::from_slice::<DaemonStatus>(&buf)
            .map_err(|e| unreachable(format!("unreadable status: {e}")))
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| unreachable(format!("no answer within {timeout:?}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_and_probes() {
        let dir = tempfile::tempdir().expect("tmp");
        let sock = dir.path().join("daemon.sock");
        std::fs::write(&sock, b"stale").expect("stale file");
        let doc = DaemonStatus {
            health: "healthy".into(),
            pid: 42,
            uptime_s: 7,
            packages_loaded: 1,
            last_reconciliation: Some(1),
            active_workflows: 0,
            watch_dirs: vec!["/w".into()],
            folder_errors: Vec::new(),
            write_failure: None,
            packages: vec![PackageLine {
                id: "6f0e3c52-9a41-8d1b-8e77-25c40bd963a1".into(),
                name: "p".into(),
                version: "1.0.0".into(),
                state: "loaded".into(),
                last_error: None,
                path: None,
                path_missing: false,
                superseded_by: None,
            }],
        };
        let expected = doc.clone();
        let server = serve(&sock, Arc::new(move || doc.clone()))
            .await
            .expect("serve");
        let got = probe(&sock, Duration::from_secs(5)).await.expect("probe");
        assert_eq!(got, expected);
        server.abort();
        let missing = probe(&dir.path().join("nope.sock"), Duration::from_secs(1))
            .await
            .expect_err("nothing there");
        assert!(
            missing
                .to_string()
                .starts_with("cannot reach the daemon at"),
            "{missing}"
        );
    }
}
