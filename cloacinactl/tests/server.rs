//! `cloacinactl server` without a running server: exit codes and messages of every verb when
//! nothing listens, no PID file exists, the binary is missing or no database is configured.
//! The running server (status table, health 200, stop) is tested end to end in `tests/`.

mod common;

use std::fs;
use std::process::Command;

use common::Env;

/// A local port nothing listens on: bound by the OS, then released.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn home(env: &Env) -> String {
    env.join("home").to_str().expect("utf-8 path").to_string()
}

#[test]
fn health_and_status_with_nothing_listening_exit_2() {
    let env = Env::new();
    let home = home(&env);
    let url = format!("http://127.0.0.1:{}", closed_port());
    let out = env.run(&["--home", &home, "--server", &url, "server", "health"]);
    out.code(2);
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out}");
    env.run(&[
        "--home",
        &home,
        "--server",
        &url,
        "--api-key",
        "clk_x",
        "server",
        "status",
    ])
    .code(2)
    .stderr_has(&format!(
        "cannot reach the server at {url}/v1/health/status"
    ));
    // Without a key the server is still asked first: unreachable is unreachable.
    env.run(&["--home", &home, "--server", &url, "server", "status"])
        .code(2);
}

#[test]
fn the_address_comes_from_the_profile_then_the_pid_file() {
    let env = Env::new();
    let home = home(&env);
    let port = closed_port();
    // The PID file's address (a dead server's) is where health and status look.
    env.write(
        "home/server.pid",
        format!("99999999\naddr=0.0.0.0:{port}\n"),
    );
    env.run(&["--home", &home, "server", "health"]).code(2);
    env.run(&["--home", &home, "--api-key", "k", "server", "status"])
        .code(2)
        .stderr_has(&format!("http://127.0.0.1:{port}/v1/health/status"));
    // A profile's server wins over the PID file; its key is decoded by scheme.
    let other = closed_port();
    env.write(
        "home/config.toml",
        format!(
            "default_profile = \"local\"\n[profiles.local]\nserver = \"http://127.0.0.1:{other}\"\napi_key = \"env:CLOACINA_TEST_KEY_UNSET\"\n"
        ),
    );
    env.run(&["--home", &home, "server", "status"]).error(
        1,
        "profile 'local' api_key: the environment variable CLOACINA_TEST_KEY_UNSET is not set",
    );
    env.run(&["--home", &home, "--api-key", "k", "server", "status"])
        .code(2)
        .stderr_has(&format!("http://127.0.0.1:{other}/v1/health/status"));
    env.run(&["--home", &home, "--profile", "nope", "server", "health"])
        .code(1)
        .stderr_has("profile 'nope' (--profile) is not defined in");
}

#[test]
fn https_is_refused_with_a_clear_message() {
    let env = Env::new();
    let home = home(&env);
    env.run(&[
        "--home",
        &home,
        "--server",
        "https://api.example.com",
        "--api-key",
        "k",
        "server",
        "status",
    ])
    .code(1)
    .stderr_has("https is not supported by cloacinactl yet");
}

#[test]
fn stop_without_a_server_exits_2_and_signals_nothing() {
    let env = Env::new();
    let home = home(&env);
    env.run(&["--home", &home, "server", "stop"]).error(
        2,
        &format!("no server PID file at {home}/server.pid; the server is not running"),
    );
    // A file nobody holds: stale, whatever pid it names (pid 1 is alive, and not ours).
    env.write("home/server.pid", "1\naddr=127.0.0.1:8080\n");
    for args in [&["server", "stop"][..], &["server", "stop", "--force"]] {
        let mut full = vec!["--home", home.as_str()];
        full.extend_from_slice(args);
        env.run(&full)
            .code(2)
            .stderr_has("the server is not running")
            .stderr_has("is stale (it records pid 1")
            .stderr_has("nothing was signalled");
    }
}

#[test]
fn start_without_a_database_url_says_how_to_give_one() {
    let mut env = Env::new();
    env.unset_env("DATABASE_URL");
    let home = home(&env);
    env.run(&["--home", &home, "server", "start"])
        .code(1)
        .stderr_has("the server needs a database: pass --database-url URL, set DATABASE_URL, or set database_url in");
}

/// A copy of cloacinactl alone in a folder (so nothing is found beside it), run with `PATH`
/// set to `path`.
fn lonely(env: &Env, path: &std::path::Path) -> Command {
    let bin = env.join("bin/cloacinactl");
    if !bin.exists() {
        fs::create_dir_all(env.join("bin")).expect("mkdir");
        fs::copy(env!("CARGO_BIN_EXE_cloacinactl"), &bin).expect("copy");
    }
    let mut cmd = Command::new(bin);
    cmd.env("PATH", path)
        .env_remove("DATABASE_URL")
        .env_remove("CLOACINA_BOOTSTRAP_KEY")
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR");
    cmd
}

#[test]
fn start_says_where_it_looked_for_the_server() {
    let env = Env::new();
    // The database URL from config.toml is enough to get past the database check.
    env.write(
        "home/config.toml",
        "database_url = \"sqlite:///tmp/x.db\"\n",
    );
    let out = lonely(&env, &env.join("empty"))
        .arg("--home")
        .arg(env.join("home"))
        .args(["server", "start"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot find cloacina-server beside cloacinactl ({})",
            env.join("bin/cloacina-server").display()
        )) && err.contains("or on PATH")
            && err.contains("cargo build -p cloacina-server"),
        "{err}"
    );
}
