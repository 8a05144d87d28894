//! A temporary Cloacina home, the real `cloacinactl` run in it, and (once started) the daemon
//! running in it. Dropping the home kills a daemon still running.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use cloacina::Store;
use cloacina::package::archive;
use cloacina::store::{ExecutionFilter, ExecutionRecord};

use crate::bins;
use crate::packages;

pub struct Home {
    dir: tempfile::TempDir,
    pub daemon: Option<Child>,
}

impl Default for Home {
    fn default() -> Self {
        Self::new()
    }
}

impl Home {
    pub fn new() -> Home {
        Home {
            dir: tempfile::tempdir().expect("temp home"),
            daemon: None,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn packages_dir(&self) -> PathBuf {
        self.path().join("packages")
    }

    /// `cloacinactl --home <home> ARGS`, waited for.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bins::cloacinactl())
            .arg("--home")
            .arg(self.path())
            .args(args)
            .output()
            .expect("run cloacinactl")
    }

    /// `cloacinactl daemon start` in the background (it execs the daemon, so the child is the
    /// daemon), stderr kept in `<home>/daemon.stderr` for failure messages; returns once the
    /// health socket answers.
    pub fn start(&mut self, extra: &[&str]) {
        self.spawn(extra);
        self.wait_for("the daemon answers its health socket", |h| {
            h.ctl(&["daemon", "health"]).status.success()
        });
    }

    /// Like [`Home::start`], without waiting for anything.
    pub fn spawn(&mut self, extra: &[&str]) {
        let stderr = std::fs::File::create(self.path().join("daemon.stderr")).expect("stderr file");
        let child = Command::new(bins::cloacinactl())
            .arg("--home")
            .arg(self.path())
            .args(["daemon", "start", "--poll-interval", "200"])
            .args(extra)
            .env("PATH", bins::bin_dir())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start the daemon");
        self.daemon = Some(child);
    }

    pub fn daemon_pid(&self) -> u32 {
        self.daemon
            .as_ref()
            .map(|c| c.id())
            .expect("the daemon was started")
    }

    /// Sends `signal` (a `kill` name: `HUP`, `INT`, `KILL`, ...) to the daemon.
    pub fn signal(&self, signal: &str) {
        crate::faults::send_signal(self.daemon_pid(), signal);
    }

    /// Waits for the daemon process to exit and returns its exit code.
    pub fn exit_code(&mut self) -> Option<i32> {
        let mut child = self.daemon.take().expect("the daemon was started");
        child.wait().expect("wait for the daemon").code()
    }

    /// `daemon status -o json`, which must succeed.
    pub fn status(&self) -> serde_json::Value {
        let out = self.ctl(&["daemon", "status", "-o", "json"]);
        assert!(
            out.status.success(),
            "status failed: {}",
            self.context(&out)
        );
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    /// Waits until `cond` holds, failing with the daemon's logs.
    pub fn wait_for(&self, what: &str, mut cond: impl FnMut(&Home) -> bool) {
        crate::wait_for(what, || cond(self), || self.logs());
    }

    /// The daemon's stderr so far.
    pub fn logs(&self) -> String {
        let stderr = std::fs::read_to_string(self.path().join("daemon.stderr")).unwrap_or_default();
        format!("--- daemon stderr ---\n{stderr}")
    }

    /// The JSON log file's text.
    pub fn json_log(&self) -> String {
        std::fs::read_to_string(self.path().join("logs/cloacina.log")).unwrap_or_default()
    }

    /// Everything about a finished command, for a failure message.
    pub fn context(&self, out: &Output) -> String {
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        )
    }

    /// Every execution in the daemon's database, read through the library as another process.
    pub fn executions(&self) -> Vec<ExecutionRecord> {
        let url = format!("sqlite://{}", self.path().join("cloacina.db").display());
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async {
                let store = Store::open(&url).await.expect("open the daemon's database");
                store
                    .execution_list(ExecutionFilter {
                        limit: Some(10_000),
                        ..ExecutionFilter::default()
                    })
                    .await
                    .expect("list executions")
            })
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Packs example `name` into `dir` as `<name>.cloacina`, returning the archive's path.
pub fn pack_example(name: &'static str, dir: &Path) -> PathBuf {
    let ex = packages::example(name);
    let out = dir.join(format!("{}.cloacina", name.replace('/', "-")));
    pack_to(&ex.dir, &ex.library, &out);
    out
}

/// Packs the package in `src` (built library `library`) and moves the archive to `out`
/// atomically, as a user's `mv` would (replacing any file there).
pub fn pack_to(src: &Path, library: &Path, out: &Path) {
    let tmp = out.with_extension("partial");
    archive::pack(
        src,
        &[(archive::HOST_TARGET.to_string(), library.to_path_buf())],
        &tmp,
    )
    .expect("pack");
    std::fs::rename(&tmp, out).expect("move into place");
}

/// The `packages` entry of a status document named `name`.
pub fn package_line(status: &serde_json::Value, name: &str) -> Option<serde_json::Value> {
    status["packages"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
}

/// `(name, state)` of every package in a status document.
pub fn package_names(status: &serde_json::Value) -> Vec<(String, String)> {
    status["packages"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap_or_default().to_string(),
                        p["state"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Home {
    /// Runs `f` against the daemon's database, opened through the library as another process.
    pub fn with_store<T>(&self, f: impl AsyncFnOnce(&Store) -> T) -> T {
        let url = format!("sqlite://{}", self.path().join("cloacina.db").display());
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async {
                let store = Store::open(&url).await.expect("open the daemon's database");
                f(&store).await
            })
    }

    /// Every stored cron schedule.
    pub fn cron_schedules(&self) -> Vec<cloacina::store::CronScheduleRecord> {
        self.with_store(async |s: &Store| {
            s.cron_schedule_list(cloacina::store::CronScheduleFilter::default())
                .await
                .expect("list cron schedules")
        })
    }

    /// Every fired cron instant still recorded (a deleted schedule's fires go with it).
    pub fn cron_fires(&self) -> Vec<cloacina::store::CronFireRecord> {
        self.with_store(async |s: &Store| {
            s.cron_fire_list(None, 100_000)
                .await
                .expect("list cron fires")
        })
    }
}
