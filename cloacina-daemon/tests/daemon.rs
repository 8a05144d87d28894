//! End-to-end: the real `cloacinactl` and `cloacina-daemon` binaries in temporary homes.

#[path = "../../crates/cloacina/tests/common_packages/mod.rs"]
mod common_packages;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cloacina::package::archive;

/// `cloacinactl`, built beside this package's binary (building it if a test run skipped it).
fn cloacinactl() -> PathBuf {
    let daemon = PathBuf::from(env!("CARGO_BIN_EXE_cloacina-daemon"));
    let ctl = daemon.with_file_name("cloacinactl");
    if !ctl.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "cloacinactl"])
            .current_dir(common_packages::workspace_root())
            .status()
            .expect("cargo build -p cloacinactl");
        assert!(status.success(), "building cloacinactl failed");
    }
    ctl
}

/// A temporary home and, once started, the daemon running in it.
struct Home {
    dir: tempfile::TempDir,
    daemon: Option<Child>,
}

impl Home {
    fn new() -> Home {
        Home {
            dir: tempfile::tempdir().expect("temp home"),
            daemon: None,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(cloacinactl())
            .arg("--home")
            .arg(self.path())
            .args(args)
            .output()
            .expect("run cloacinactl")
    }

    /// `cloacinactl daemon start` in the background (it execs the daemon, so the child is the
    /// daemon), stderr kept in `<home>/daemon.stderr` for failure messages.
    fn start(&mut self, extra: &[&str]) {
        let stderr = std::fs::File::create(self.path().join("daemon.stderr")).expect("stderr file");
        let child = Command::new(cloacinactl())
            .arg("--home")
            .arg(self.path())
            .args(["daemon", "start", "--poll-interval", "200"])
            .args(extra)
            .env(
                "PATH",
                Path::new(env!("CARGO_BIN_EXE_cloacina-daemon"))
                    .parent()
                    .expect("bin dir"),
            )
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start the daemon");
        self.daemon = Some(child);
        self.wait_for("the daemon answers its health socket", |h| {
            h.ctl(&["daemon", "health"]).status.success()
        });
    }

    fn status(&self) -> serde_json::Value {
        let out = self.ctl(&["daemon", "status", "-o", "json"]);
        assert!(
            out.status.success(),
            "status failed: {}",
            self.context(&out)
        );
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    fn wait_for(&self, what: &str, mut cond: impl FnMut(&Home) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cond(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for: {what}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn logs(&self) -> String {
        let stderr = std::fs::read_to_string(self.path().join("daemon.stderr")).unwrap_or_default();
        format!("--- daemon stderr ---\n{stderr}")
    }

    fn context(&self, out: &Output) -> String {
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        )
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

/// Packs example `name` into `dir`, returning the archive's path.
fn pack_example(name: &'static str, dir: &Path) -> PathBuf {
    let ex = common_packages::example(name);
    let out = dir.join(format!("{}.cloacina", name.replace('/', "-")));
    let tmp = dir.join(format!(".{}.partial", name.replace('/', "-")));
    archive::pack(
        &ex.dir,
        &[(archive::HOST_TARGET.to_string(), ex.library.clone())],
        &tmp,
    )
    .expect("pack");
    // Appear atomically, as a user's `mv` would.
    std::fs::rename(&tmp, &out).expect("move into place");
    out
}

fn package_names(status: &serde_json::Value) -> Vec<(String, String)> {
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

#[test]
fn lifecycle_start_health_status_stop_and_stale_pid() {
    let mut home = Home::new();
    let out = home.ctl(&["daemon", "health"]);
    assert_eq!(out.status.code(), Some(2), "not running yet");
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "health prints nothing"
    );

    home.start(&[]);
    for dir in ["packages", "logs"] {
        assert!(home.path().join(dir).is_dir(), "{dir} created");
    }
    assert!(home.path().join("cloacina.db").is_file());
    let pid = home.daemon.as_ref().map(|c| c.id()).expect("child");
    let recorded: u32 = std::fs::read_to_string(home.path().join("daemon.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    assert_eq!(recorded, pid);
    let s = home.status();
    assert_eq!(s["health"], "healthy");
    assert_eq!(s["pid"], pid);
    assert_eq!(s["packages_loaded"], 0);
    assert!(s["uptime_s"].is_u64());
    assert!(s["last_reconciliation"].is_i64());
    let table = home.ctl(&["--no-color", "daemon", "status"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("health") && text.contains("healthy") && text.contains("packages loaded"),
        "{text}"
    );

    // A second start refuses while the first runs.
    let again = home.ctl(&["daemon", "start"]);
    assert_eq!(again.status.code(), Some(1), "{}", home.context(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already running"),
        "{}",
        home.context(&again)
    );

    // JSON logs are written.
    let log = std::fs::read_to_string(home.path().join("logs/cloacina.log")).expect("log file");
    let first = log.lines().next().expect("a log line");
    serde_json::from_str::<serde_json::Value>(first).expect("JSON log line");

    let stop = home.ctl(&["daemon", "stop"]);
    assert!(stop.status.success(), "{}", home.context(&stop));
    let exit = home
        .daemon
        .take()
        .map(|mut c| c.wait().expect("wait"))
        .expect("child");
    assert_eq!(
        exit.code(),
        Some(0),
        "graceful stop exits 0\n{}",
        home.logs()
    );
    assert!(
        !home.path().join("daemon.pid").exists(),
        "PID file removed at exit"
    );
    assert_eq!(home.ctl(&["daemon", "health"]).status.code(), Some(2));
    assert_eq!(
        home.ctl(&["daemon", "stop"]).status.code(),
        Some(2),
        "no PID file"
    );

    // A stale PID file (its process is gone) does not stop a new start.
    std::fs::write(home.path().join("daemon.pid"), "99999999\n").expect("stale pid");
    home.start(&[]);
    assert_eq!(home.status()["health"], "healthy");
    assert!(home.ctl(&["daemon", "stop"]).status.success());
}

#[test]
fn unknown_config_keys_stop_the_start_with_the_key_named() {
    let home = Home::new();
    std::fs::write(
        home.path().join("config.toml"),
        "[daemon]\npoll_intervall_ms = 100\n",
    )
    .expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_cloacina-daemon"))
        .arg("--home")
        .arg(home.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("poll_intervall_ms") && err.contains("config.toml"),
        "{err}"
    );
}

#[test]
fn dropping_and_removing_an_archive_loads_and_unloads_it() {
    let mut home = Home::new();
    home.start(&[]);
    let archive = pack_example("hello-orders", &home.path().join("packages"));
    home.wait_for("hello-orders loaded", |h| {
        package_names(&h.status()).contains(&("hello-orders".to_string(), "loaded".to_string()))
    });
    assert_eq!(home.status()["packages_loaded"], 1);
    std::fs::remove_file(&archive).expect("remove");
    home.wait_for("hello-orders unloaded", |h| {
        h.status()["packages"]
            .as_array()
            .is_some_and(|a| a.is_empty())
    });
    // A broken archive is reported while everything else keeps running.
    std::fs::write(
        home.path().join("packages/broken.cloacina"),
        b"not an archive",
    )
    .expect("write");
    home.wait_for("the broken archive is reported", |h| {
        let s = h.status();
        s["health"] == "degraded" && package_names(&s).iter().any(|(_, state)| state == "failed")
    });
    assert!(home.ctl(&["daemon", "health"]).status.success(), "still up");
    assert!(home.ctl(&["daemon", "stop"]).status.success());
}
