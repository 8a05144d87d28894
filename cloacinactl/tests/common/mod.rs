//! Drives the real `cloacinactl` binary in a temporary directory per test.

#![allow(
    dead_code,
    reason = "each test file uses a different part of this helper"
)]

use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const BIN: &str = env!("CARGO_BIN_EXE_cloacinactl");

/// The Cloacina workspace this crate belongs to.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cloacinactl lives in the workspace")
        .to_path_buf()
}

/// A temporary working directory; every command runs in it.
pub struct Env {
    tmp: tempfile::TempDir,
    envs: Vec<(String, String)>,
    removed: Vec<String>,
}

impl Env {
    pub fn new() -> Env {
        Env {
            tmp: tempfile::tempdir().expect("tempdir"),
            envs: Vec::new(),
            removed: Vec::new(),
        }
    }

    /// Sets an environment variable for every command run from now on.
    pub fn set_env(&mut self, key: &str, value: impl AsRef<OsStr>) {
        self.envs.push((
            key.to_string(),
            value.as_ref().to_string_lossy().into_owned(),
        ));
    }

    /// Removes an inherited environment variable for every command run from now on.
    pub fn unset_env(&mut self, key: &str) {
        self.removed.push(key.to_string());
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        fs::write(&path, text).expect("write");
        path
    }

    /// Runs `cloacinactl ARGS` in the temporary directory.
    pub fn run(&self, args: &[&str]) -> Out {
        let mut cmd = Command::new(BIN);
        cmd.args(args).current_dir(self.tmp.path());
        cmd.env_remove("NO_COLOR").env_remove("RUST_LOG");
        for k in &self.removed {
            cmd.env_remove(k);
        }
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let output = cmd.output().expect("run cloacinactl");
        Out {
            args: args.iter().map(|s| s.to_string()).collect(),
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// A minimal package without dependencies: `Cargo.toml` (cdylib), `package.toml`,
    /// `src/lib.rs`.
    pub fn fake_package(&self, dir: &str, name: &str) -> PathBuf {
        self.write(
            &format!("{dir}/Cargo.toml"),
            format!(
                "[package]\nname = \"{name}\"\nversion = \"0.3.0\"\nedition = \"2024\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n[workspace]\n"
            ),
        );
        self.write(
            &format!("{dir}/package.toml"),
            format!("[package]\nname = \"{name}\"\nversion = \"0.3.0\"\n"),
        );
        self.write(
            &format!("{dir}/src/lib.rs"),
            "pub fn answer() -> u32 { 42 }\n",
        );
        self.join(dir)
    }
}

/// What a run printed and returned. `Display` shows everything, for assertion messages.
pub struct Out {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cloacinactl {:?}\nexit code: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n---",
            self.args, self.code, self.stdout, self.stderr
        )
    }
}

impl Out {
    /// Asserts the exit code, showing the whole run if it differs.
    #[track_caller]
    pub fn code(&self, code: i32) -> &Out {
        assert_eq!(self.code, code, "unexpected exit code\n{self}");
        self
    }

    #[track_caller]
    pub fn success(&self) -> &Out {
        self.code(0)
    }

    /// Asserts the run failed with `code` and printed exactly `Error: <message>` on stderr
    /// (as its last line).
    #[track_caller]
    pub fn error(&self, code: i32, message: &str) -> &Out {
        self.code(code);
        let last = self.stderr.trim_end().lines().last().unwrap_or_default();
        assert_eq!(
            last,
            format!("Error: {message}"),
            "unexpected error\n{self}"
        );
        self
    }

    /// Asserts stderr contains `text`.
    #[track_caller]
    pub fn stderr_has(&self, text: &str) -> &Out {
        assert!(self.stderr.contains(text), "stderr lacks {text:?}\n{self}");
        self
    }

    /// Asserts stdout contains `text`.
    #[track_caller]
    pub fn stdout_has(&self, text: &str) -> &Out {
        assert!(self.stdout.contains(text), "stdout lacks {text:?}\n{self}");
        self
    }

    /// stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{self}"))
    }
}

/// The entries of a `.cloacina` archive, unpacked with the library.
pub fn unpack(archive: &Path, into: &Path) -> cloacina::package::archive::Unpacked {
    cloacina::package::archive::unpack(
        archive,
        into,
        &cloacina::package::archive::UnpackLimits::default(),
    )
    .expect("the archive unpacks")
}

#[cfg(unix)]
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}
