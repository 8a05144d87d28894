//! The real `cloacina-compiler` in a temporary home of its own, on a free port, against a
//! server's database; and source-only packages for it to build.
//!
//! Every compiler of the test run shares one cargo target directory,
//! `<workspace>/target/compiler-builds` (`--target-dir`), so the packages' dependencies are
//! compiled once (release builds are slow) and each later build compiles only the package.
//! A [`CompilerProcess`] is killed on drop; on a failing test its stderr and JSON log are
//! printed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bins;
use crate::packages::{examples_dir, workspace_root};
use crate::wait::WAIT_LIMIT;

pub fn cloacina_compiler() -> PathBuf {
    bins::bin("cloacina-compiler")
}

/// The cargo target directory every compiler in the tests builds into.
pub fn builds_target_dir() -> PathBuf {
    workspace_root().join("target").join("compiler-builds")
}

/// How long a test waits for builds: the first one of a run compiles every dependency in
/// release mode on a small machine, and tests wait on each other's builds.
pub const BUILD_WAIT: Duration = Duration::from_secs(900);

/// Flags every test compiler gets unless the test gives them: quick polls, heartbeats and
/// sweeps, a short stale threshold, and the shared target directory.
fn defaults() -> Vec<(&'static str, String)> {
    vec![
        ("--bind", "127.0.0.1:0".to_string()),
        ("--poll-interval-ms", "200".to_string()),
        ("--heartbeat-interval-s", "1".to_string()),
        ("--stale-threshold-s", "5".to_string()),
        ("--sweep-interval-s", "1".to_string()),
        ("--target-dir", builds_target_dir().display().to_string()),
    ]
}

/// A running compiler. Killed on drop (its logs printed if the test is failing).
pub struct CompilerProcess {
    home: tempfile::TempDir,
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    agent: ureq::Agent,
}

impl CompilerProcess {
    /// Starts `cloacina-compiler` with `DATABASE_URL=database_url` and `args` (plus the test
    /// defaults for flags not in `args`) in a new temporary home, and waits for `/health`.
    pub fn start(database_url: &str, args: &[&str]) -> CompilerProcess {
        let home = tempfile::tempdir().expect("compiler home");
        Self::start_in(home, database_url, args)
    }

    /// Like [`CompilerProcess::start`], in `home`.
    pub fn start_in(home: tempfile::TempDir, database_url: &str, args: &[&str]) -> CompilerProcess {
        let mut cmd = Command::new(cloacina_compiler());
        cmd.arg("--home").arg(home.path());
        for (flag, value) in defaults() {
            if !args.contains(&flag) {
                cmd.arg(flag).arg(value);
            }
        }
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(home.path().join("compiler.stderr"))
            .expect("stderr file");
        cmd.args(args)
            .env("DATABASE_URL", database_url)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = cmd.spawn().expect("start the compiler");
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_global(Some(Duration::from_secs(30)))
            .build();
        let mut compiler = CompilerProcess {
            home,
            child: Some(child),
            url: String::new(),
            agent: ureq::Agent::new_with_config(config),
        };
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            if let Some(status) = compiler
                .child
                .as_mut()
                .and_then(|c| c.try_wait().expect("poll the compiler"))
            {
                panic!(
                    "the compiler exited while starting ({status})\n{}",
                    compiler.logs()
                );
            }
            let addr = cloacina::daemon::pidfile::read_record(&compiler.pid_file())
                .ok()
                .flatten()
                .and_then(|r| r.addr);
            if let Some(addr) = addr {
                compiler.url = format!("http://{addr}");
                if compiler.get("/health").0 == 200 {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the compiler did not answer /health\n{}",
                compiler.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        compiler
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    pub fn pid_file(&self) -> PathBuf {
        self.home().join("compiler.pid")
    }

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(Child::id)
            .expect("the compiler runs")
    }

    /// `GET path`: status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        match self.agent.get(format!("{}{path}", self.url)).call() {
            Ok(mut resp) => (
                resp.status().as_u16(),
                resp.body_mut().read_to_string().unwrap_or_default(),
            ),
            Err(e) => (0, e.to_string()),
        }
    }

    /// `GET /v1/status`, which must answer 200.
    pub fn status(&self) -> Value {
        let (code, body) = self.get("/v1/status");
        assert_eq!(code, 200, "GET /v1/status: {body}\n{}", self.logs());
        serde_json::from_str(&body).expect("the status is JSON")
    }

    /// The value of the metric line starting with `series` (e.g.
    /// `cloacina_compiler_builds_total{outcome="success"}`), 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(series).map(str::trim))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// The JSON log (`<home>/logs/cloacina-compiler.log`).
    pub fn json_log(&self) -> String {
        std::fs::read_to_string(self.home().join("logs/cloacina-compiler.log")).unwrap_or_default()
    }

    /// Stderr (every start in this home) and the JSON log.
    pub fn logs(&self) -> String {
        let stderr =
            std::fs::read_to_string(self.home().join("compiler.stderr")).unwrap_or_default();
        format!(
            "--- compiler stderr ({}) ---\n{stderr}\n--- compiler log ---\n{}",
            self.home().display(),
            self.json_log()
        )
    }

    /// Sends `signal` (a `kill` name: `TERM`, `INT`, `KILL`) to the compiler.
    pub fn signal(&self, signal: &str) {
        crate::faults::send_signal(self.pid(), signal);
    }

    /// Waits for the compiler to exit; its exit code (`None`: killed by a signal).
    pub fn wait_exit(&mut self) -> Option<i32> {
        let mut child = self.child.take().expect("the compiler runs");
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            if let Some(status) = child.try_wait().expect("poll the compiler") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the compiler did not exit\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for CompilerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// A source-only package made from example `name` (which must be at version 1.0.0): copied to
/// `dir/<tag>/` as `version`, with `lib_rs` as its `src/lib.rs` when given, `build_rs` as its
/// build script when given, and the examples' `Cargo.lock`; packed without any library into
/// `dir/<tag>.cloacina`. Its `Cargo.toml` keeps the example's relative paths to
/// `cloacina-workflow` and `cloacina-macros`, which lead nowhere from there: the compiler
/// must build it against its own copies.
pub fn source_only(
    name: &str,
    dir: &Path,
    tag: &str,
    version: &str,
    lib_rs: Option<&str>,
    build_rs: Option<&str>,
) -> PathBuf {
    let src = examples_dir().join(name);
    let out = dir.join(tag);
    std::fs::create_dir_all(out.join("src")).expect("create the package directory");
    let versioned = format!("version = \"{version}\"");
    for file in ["Cargo.toml", "package.toml"] {
        let text = std::fs::read_to_string(src.join(file))
            .unwrap_or_else(|e| panic!("read {name}/{file}: {e}"))
            .replacen("version = \"1.0.0\"", &versioned, 1);
        std::fs::write(out.join(file), text).expect("write the manifest");
    }
    let lib = match lib_rs {
        Some(text) => text.to_string(),
        None => std::fs::read_to_string(src.join("src/lib.rs")).expect("read lib.rs"),
    };
    std::fs::write(out.join("src/lib.rs"), lib).expect("write lib.rs");
    if let Some(text) = build_rs {
        std::fs::write(out.join("build.rs"), text).expect("write build.rs");
    }
    std::fs::copy(examples_dir().join("Cargo.lock"), out.join("Cargo.lock"))
        .expect("copy Cargo.lock");
    let archive = dir.join(format!("{tag}.cloacina"));
    let packed = cloacina::package::archive::pack(&out, &[], &archive).expect("pack the source");
    assert!(packed.targets.is_empty());
    archive
}

/// A build script that makes a build last `secs` seconds (for tests that stop or kill a
/// compiler mid-build).
pub fn slow_build_rs(secs: u64) -> String {
    format!(
        "fn main() {{\n    println!(\"cargo::rerun-if-changed=build.rs\");\n    std::thread::sleep(std::time::Duration::from_secs({secs}));\n}}\n"
    )
}
