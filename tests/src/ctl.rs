//! The real `cloacinactl` as a client of a real server: [`Ctl`] runs it against a
//! [`ServerProcess`] with that server's URL and an API key (passed as `env:`, so no key is on
//! a command line), no terminal on stdin, and gives back exit code and output. A failed
//! expectation prints the command, its output and the server's logs.

use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::bins;
use crate::server::ServerProcess;

/// One finished `cloacinactl` run.
#[derive(Debug)]
pub struct CtlOut {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for CtlOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cloacinactl {}\nexit {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }
}

impl CtlOut {
    /// Stdout parsed as JSON (for `-o json` runs).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }
}

/// `cloacinactl` aimed at one server as one caller.
pub struct Ctl<'a, 'h> {
    pub server: &'a ServerProcess<'h>,
    /// The API key sent (the server's admin key unless [`Ctl::with_key`]).
    pub key: String,
}

impl<'a, 'h> Ctl<'a, 'h> {
    /// As the server's bootstrap (global admin) key.
    pub fn new(server: &'a ServerProcess<'h>) -> Ctl<'a, 'h> {
        Ctl {
            server,
            key: server.key.clone(),
        }
    }

    /// As another key.
    pub fn with_key(server: &'a ServerProcess<'h>, key: &str) -> Ctl<'a, 'h> {
        Ctl {
            server,
            key: key.to_string(),
        }
    }

    /// The command: `cloacinactl --home H --server URL --api-key env:CLOACINA_TEST_KEY ARGS`,
    /// with no colour and no inherited database or key variables.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bins::cloacinactl());
        cmd.arg("--home")
            .arg(self.server.home.path())
            .arg("--server")
            .arg(&self.server.url)
            .arg("--api-key")
            .arg("env:CLOACINA_TEST_KEY")
            .args(args)
            .env("CLOACINA_TEST_KEY", &self.key)
            .env("NO_COLOR", "1")
            .env_remove("DATABASE_URL")
            .env_remove("CLOACINA_BOOTSTRAP_KEY")
            .env_remove("RUST_LOG");
        cmd
    }

    /// Runs `args` with stdin closed (no terminal) and waits.
    pub fn run(&self, args: &[&str]) -> CtlOut {
        self.run_with_stdin(args, None)
    }

    /// Runs `args` with `input` on stdin (closed when `None`).
    pub fn run_with_stdin(&self, args: &[&str], input: Option<&[u8]>) -> CtlOut {
        let mut cmd = self.command(args);
        cmd.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start cloacinactl");
        if let Some(bytes) = input {
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(bytes).expect("write stdin");
        }
        let out = child.wait_with_output().expect("wait for cloacinactl");
        CtlOut {
            args: args.iter().map(|a| a.to_string()).collect(),
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `args`, which must exit 0.
    pub fn ok(&self, args: &[&str]) -> CtlOut {
        let out = self.run(args);
        assert_eq!(out.code, 0, "{out}\n{}", self.server.logs());
        out
    }

    /// Runs `args`, which must exit `code`.
    pub fn fails(&self, args: &[&str], code: i32) -> CtlOut {
        let out = self.run(args);
        assert_eq!(out.code, code, "{out}\n{}", self.server.logs());
        out
    }

    /// `args` with `-o json` appended, which must exit 0; stdout as JSON.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-o", "json"]);
        self.ok(&all).json()
    }
}
