//! End-to-end: the real `cloacina-compiler` beside the real `cloacina-server`, on SQLite and
//! PostgreSQL. A source-only upload is built (against the compiler's own ABI crates, in an
//! environment without the database URL), signed, loaded by the server and run; a package
//! that does not compile ends `failed` with the compiler's error and log in `package inspect`
//! while the previous version keeps serving; a compiler stopped mid-build releases its claim,
//! one killed mid-build has its claim reclaimed after the stale threshold and another
//! compiler finishes it; two compilers on one PostgreSQL never build a package twice; and
//! `cloacinactl compiler start|stop|status|health` with and without a compiler.
//!
//! Release builds are slow here: every compiler shares one target directory
//! (`target/compiler-builds`), so dependencies compile once per test run, and the tests keep
//! the number of builds small.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cloacina::package::signing;
use cloacina_e2e::compiler::{BUILD_WAIT, CompilerProcess, slow_build_rs, source_only};
use cloacina_e2e::ctl::Ctl;
use cloacina_e2e::home::pack_example;
use cloacina_e2e::server::{Backend, ServerHome, ServerProcess, Start};
use cloacina_e2e::{bins, both_backends, packages};
use serde_json::{Value, json};

/// Polls `cond` every 250 ms for up to `limit`; panics with `what` and `context()` after.
fn wait_long(
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {}s waiting for: {what}\n{}",
            limit.as_secs(),
            context()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read archive")
}

fn package(server: &ServerProcess<'_>, id: &str) -> Value {
    server.get_ok(&format!("/v1/packages/{id}"))
}

/// Waits until package `id`'s field `key` is `want` (builds can take minutes).
fn wait_package(
    server: &ServerProcess<'_>,
    compilers: &[&CompilerProcess],
    id: &str,
    key: &str,
    want: &str,
) -> Value {
    let last = std::cell::RefCell::new(Value::Null);
    wait_long(
        &format!("package {id} {key} = {want}"),
        BUILD_WAIT,
        || {
            let now = package(server, id);
            let done = now[key] == want;
            *last.borrow_mut() = now;
            done
        },
        || {
            let logs: Vec<String> = compilers.iter().map(|c| c.logs()).collect();
            format!(
                "last: {}\n{}\n{}",
                last.borrow(),
                server.logs(),
                logs.join("\n")
            )
        },
    );
    last.into_inner()
}

/// Refuses to build when the compiler's database URL reached the build's environment.
const GUARD_BUILD_RS: &str = r#"fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    for name in ["DATABASE_URL", "CLOACINA_BOOTSTRAP_KEY"] {
        if std::env::var_os(name).is_some() {
            panic!("{name} leaked into the package build");
        }
    }
}
"#;

// ---------------------------------------------------------------------------------------------

fn a_source_only_package_is_built_signed_and_runs(backend: Backend) {
    let Some(home) = ServerHome::new(backend) else {
        return;
    };
    let keys = tempfile::tempdir().expect("keys");
    let uploader = signing::generate_keypair(&keys.path().join("uploader")).expect("keygen");
    let builder = signing::generate_keypair(&keys.path().join("compiler")).expect("keygen");
    let server = home.start(
        Start::direct()
            .arg("--require-signatures")
            .arg("--trusted-key")
            .arg(uploader.public_key_path.display().to_string())
            .arg("--trusted-key")
            .arg(builder.public_key_path.display().to_string()),
    );

    // A source-only upload, signed by its author: accepted, pending.
    let archive = source_only(
        "hello-orders",
        home.path(),
        "hello-src",
        "1.0.0",
        None,
        Some(GUARD_BUILD_RS),
    );
    let key = signing::load_signing_key(&uploader.private_key_path).expect("key");
    let sig = signing::sign_archive(&archive, &key).expect("sign");
    let sig = std::fs::read_to_string(sig).expect("read sig");
    let r = server.upload_multipart("public", &read(&archive), Some(&sig));
    assert_eq!(r.status, 201, "{r}\n{}", server.logs());
    assert_eq!(r.json()["state"], "pending", "{r}");
    let id = r.json()["package_id"].as_str().expect("id").to_string();

    // The compiler, with the database URL in its environment as an operator sets it, builds
    // it against its own ABI crates, signs it, and the server loads it.
    let compiler = CompilerProcess::start(
        &home.database_url,
        &[
            "--signing-key",
            &builder.private_key_path.display().to_string(),
        ],
    );
    let info = wait_package(&server, &[&compiler], &id, "state", "loaded");
    assert_eq!(info["build_status"], "success", "{info}");
    assert_eq!(info["build_error"], Value::Null, "{info}");
    assert_eq!(info["signed"], true, "{info}");
    let log = info["build_log"].as_str().expect("build log");
    assert!(log.contains("cargo build --release"), "{log}");
    assert!(log.contains("signed with key"), "{log}");
    assert!(
        log.contains("dependencies built against the compiler's ABI crates: cloacina-macros, cloacina-workflow"),
        "{log}"
    );

    // It runs.
    let exec = server.execute("public", "hello", &json!({"name": "compiler"}));
    assert_eq!(
        server.wait_execution("public", &exec)["status"],
        "Completed"
    );

    // `package inspect` shows the build and its log.
    let out = Ctl::new(&server).ok(&["package", "inspect", &id]);
    assert!(out.stdout.contains("success"), "{out}");
    assert!(out.stdout.contains("build log (tail):"), "{out}");

    // The compiler says so too.
    let status = compiler.status();
    assert_eq!(status["status"], "ok", "{status}");
    assert_eq!(
        (status["pending"].clone(), status["building"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(status["builds_succeeded"], 1, "{status}");
    assert!(status["last_success_at"].is_string(), "{status}");
    assert_eq!(status["last_failure_at"], Value::Null, "{status}");
    assert!(
        status["seconds_since_heartbeat"]
            .as_u64()
            .is_some_and(|s| s < 10),
        "{status}"
    );
    assert_eq!(
        compiler.metric("cloacina_compiler_builds_total{outcome=\"success\"}"),
        1.0
    );
    assert_eq!(compiler.metric("cloacina_compiler_queue_depth"), 0.0);
}
both_backends!(a_source_only_package_is_built_signed_and_runs);

// ---------------------------------------------------------------------------------------------

fn a_failed_build_keeps_the_previous_version_serving(backend: Backend) {
    let Some(home) = ServerHome::new(backend) else {
        return;
    };
    let server = home.start(Start::direct());
    // Version 1.0.0 with its library: loaded at once.
    let r = server.upload_raw("public", &read(&pack_example("hello-orders", home.path())));
    assert_eq!(r.status, 201, "{r}");
    assert_eq!(r.json()["state"], "loaded", "{r}");

    // 1.1.0 as source that does not compile.
    let lib = std::fs::read_to_string(packages::examples_dir().join("hello-orders/src/lib.rs"))
        .expect("read lib.rs")
        + "\npub fn broken() -> u32 {\n    \"not a number\"\n}\n";
    let archive = source_only(
        "hello-orders",
        home.path(),
        "broken",
        "1.1.0",
        Some(&lib),
        None,
    );
    let r = server.upload_raw("public", &read(&archive));
    assert_eq!(r.status, 201, "{r}");
    let id = r.json()["package_id"].as_str().expect("id").to_string();

    let compiler = CompilerProcess::start(&home.database_url, &[]);
    let info = wait_package(&server, &[&compiler], &id, "build_status", "failed");
    assert_eq!(info["state"], "build_failed", "{info}");
    let error = info["build_error"].as_str().expect("build error");
    assert!(error.contains("cargo build --release failed"), "{error}");
    assert!(error.contains("error[E0308]: mismatched types"), "{error}");
    assert!(error.contains("src/lib.rs"), "{error}");
    let log = info["build_log"].as_str().expect("build log");
    assert!(log.contains("error[E0308]"), "{log}");
    assert!(log.contains("build failed:"), "{log}");

    // `package inspect` shows the state, the error and the log's tail.
    let out = Ctl::new(&server).ok(&["package", "inspect", &id]);
    for want in ["build_failed", "build error", "E0308", "build log (tail):"] {
        assert!(out.stdout.contains(want), "{want}: {out}");
    }

    // 1.0.0 still serves.
    let workflows = server.get_ok("/v1/tenants/public/workflows");
    let hello = workflows["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|w| w["workflow_name"] == "hello")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(hello["version"], "1.0.0", "{workflows}");
    let exec = server.execute("public", "hello", &json!({}));
    assert_eq!(
        server.wait_execution("public", &exec)["status"],
        "Completed"
    );

    let status = compiler.status();
    assert_eq!(status["builds_failed"], 1, "{status}");
    assert!(status["last_failure_at"].is_string(), "{status}");
    assert_eq!(status["failed"], 1, "{status}");
    assert_eq!(
        compiler.metric("cloacina_compiler_builds_total{outcome=\"failed\"}"),
        1.0
    );
}
both_backends!(a_failed_build_keeps_the_previous_version_serving);

// ---------------------------------------------------------------------------------------------

/// Waits until `compiler` reports a build in progress.
fn wait_building(compiler: &CompilerProcess) {
    wait_long(
        "the compiler claims the package",
        BUILD_WAIT,
        || compiler.status()["current_build"].is_object(),
        || compiler.logs(),
    );
}

fn stopped_and_killed_compilers_never_strand_a_build(backend: Backend) {
    let Some(home) = ServerHome::new(backend) else {
        return;
    };
    let server = home.start(Start::direct());
    // A build that takes a while (its build script sleeps).
    let archive = source_only(
        "hello-orders",
        home.path(),
        "slow",
        "1.0.0",
        None,
        Some(&slow_build_rs(4)),
    );
    let r = server.upload_raw("public", &read(&archive));
    assert_eq!(r.status, 201, "{r}");
    let id = r.json()["package_id"].as_str().expect("id").to_string();

    // Stopped mid-build (SIGTERM): the build is released back to pending at once.
    let mut first = CompilerProcess::start(&home.database_url, &[]);
    wait_building(&first);
    first.signal("TERM");
    assert_eq!(first.wait_exit(), Some(0), "{}", first.logs());
    assert!(
        first.json_log().contains("released back to pending"),
        "{}",
        first.logs()
    );
    let info = package(&server, &id);
    assert_eq!(info["build_status"], "pending", "{info}");

    // Killed mid-build (SIGKILL): the claim stays until its heartbeat is stale...
    let mut second = CompilerProcess::start(&home.database_url, &[]);
    wait_building(&second);
    second.signal("KILL");
    assert_eq!(second.wait_exit(), None);
    let info = package(&server, &id);
    assert_eq!(info["build_status"], "building", "{info}");

    // ...then another compiler's sweep reclaims it and the build finishes.
    let third = CompilerProcess::start(&home.database_url, &[]);
    let info = wait_package(&server, &[&third], &id, "state", "loaded");
    assert_eq!(info["build_status"], "success", "{info}");
    let log = third.json_log();
    assert!(
        log.contains("reclaimed a stale build claim"),
        "{}",
        third.logs()
    );
    assert!(
        third.metric("cloacina_compiler_stale_claims_reclaimed_total{result=\"requeued\"}") >= 1.0,
        "{}",
        third.logs()
    );
    let exec = server.execute("public", "hello", &json!({}));
    assert_eq!(
        server.wait_execution("public", &exec)["status"],
        "Completed"
    );
}
both_backends!(stopped_and_killed_compilers_never_strand_a_build);

// ---------------------------------------------------------------------------------------------

/// Package ids in the "build claimed" lines of a compiler's JSON log.
fn claimed_ids(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "build claimed")
        .filter_map(|v| v["fields"]["package_id"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn two_compilers_on_one_postgres_never_build_a_package_twice() {
    let Some(home) = ServerHome::postgres() else {
        return;
    };
    // Three source-only packages queued straight in the database (no server: only the
    // queue matters here).
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let store = rt
        .block_on(cloacina::store::Store::open(&home.database_url))
        .expect("open the database");
    let mut ids = BTreeSet::new();
    for (i, version) in ["2.0.0", "2.0.1", "2.0.2"].into_iter().enumerate() {
        let archive = source_only(
            "hello-orders",
            home.path(),
            &format!("queued-{i}"),
            version,
            None,
            None,
        );
        let p = rt
            .block_on(store.package_create(cloacina::store::NewPackage {
                tenant: "public".to_string(),
                name: "hello-orders".to_string(),
                version: version.to_string(),
                archive: read(&archive),
                signature: None,
                has_library: false,
                build_status: cloacina::store::BuildStatus::Pending,
            }))
            .expect("queue a package");
        ids.insert(p.id.to_string());
    }

    let a = CompilerProcess::start(&home.database_url, &["--poll-interval-ms", "50"]);
    let b = CompilerProcess::start(&home.database_url, &["--poll-interval-ms", "50"]);
    wait_long(
        "every queued package is built",
        BUILD_WAIT,
        || {
            rt.block_on(store.package_list(None))
                .expect("list")
                .iter()
                .all(|p| p.build_status == cloacina::store::BuildStatus::Success)
        },
        || format!("{}\n{}", a.logs(), b.logs()),
    );
    for p in rt.block_on(store.package_list(None)).expect("list") {
        assert_eq!(p.build_attempts, 1, "{p:?}");
        assert!(p.has_library, "{p:?}");
    }
    let mut claimed = claimed_ids(&a.json_log());
    claimed.extend(claimed_ids(&b.json_log()));
    claimed.sort();
    assert_eq!(
        claimed,
        ids.iter().cloned().collect::<Vec<_>>(),
        "each package claimed exactly once across both compilers\n{}\n{}",
        a.logs(),
        b.logs()
    );
    let built = a.status()["builds_succeeded"].as_u64().unwrap_or(0)
        + b.status()["builds_succeeded"].as_u64().unwrap_or(0);
    assert_eq!(built, 3);
    rt.block_on(store.close());
}

// ---------------------------------------------------------------------------------------------

/// `cloacinactl --home HOME ARGS`, without a database URL in its environment.
fn ctl(home: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bins::cloacinactl())
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("DATABASE_URL")
        .env("NO_COLOR", "1")
        .output()
        .expect("run cloacinactl")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn cloacinactl_compiler_start_status_health_and_stop() {
    let db = ServerHome::sqlite();
    let home = tempfile::tempdir().expect("home");
    // Nobody listens at the address the home's config names.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    std::fs::write(
        home.path().join("config.toml"),
        format!("[compiler]\nlocal_addr = \"127.0.0.1:{port}\"\n"),
    )
    .expect("write config");

    // Without a compiler: health and status exit 2, stop says it is not running.
    let out = ctl(home.path(), &["compiler", "health"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "{}",
        text(&out)
    );
    let out = ctl(home.path(), &["compiler", "status"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach the compiler"),
        "{}",
        text(&out)
    );
    let out = ctl(home.path(), &["compiler", "stop"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // start without a database URL: a user error naming what to set.
    let out = ctl(home.path(), &["compiler", "start"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--database-url"),
        "{}",
        text(&out)
    );

    // `compiler start` execs the compiler in the foreground, the URL in its environment.
    let stderr = std::fs::File::create(home.path().join("compiler.stderr")).expect("stderr");
    let mut child = Command::new(bins::cloacinactl())
        .arg("--home")
        .arg(home.path())
        .args(["compiler", "start", "--bind", &format!("127.0.0.1:{port}")])
        .args(["--poll-interval-ms", "200", "--heartbeat-interval-s", "2"])
        .args(["--stale-threshold-s", "20", "--sweep-interval-s", "5"])
        .env("DATABASE_URL", &db.database_url)
        .env("PATH", bins::bin_dir())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start");
    let logs = || std::fs::read_to_string(home.path().join("compiler.stderr")).unwrap_or_default();
    wait_long(
        "compiler health answers",
        Duration::from_secs(60),
        || ctl(home.path(), &["compiler", "health"]).status.code() == Some(0),
        logs,
    );
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(cmdline.contains("cloacina-compiler"), "{cmdline}");
    assert!(!cmdline.contains(&db.database_url), "{cmdline}");

    let out = ctl(home.path(), &["compiler", "status"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out), logs());
    let stdout = String::from_utf8_lossy(&out.stdout);
    for want in [
        "status         ok",
        "pending        0",
        "building       0",
        "current build  none",
    ] {
        assert!(stdout.contains(want), "{want}: {}", text(&out));
    }
    let out = ctl(home.path(), &["compiler", "status", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("json");
    for key in [
        "status",
        "pending",
        "building",
        "seconds_since_heartbeat",
        "last_success_at",
        "last_failure_at",
    ] {
        assert!(doc.get(key).is_some(), "{key}: {doc}");
    }
    assert_eq!(doc["backend"], "sqlite");
    // Without the config, the address comes from the PID file.
    std::fs::remove_file(home.path().join("config.toml")).expect("remove config");
    let out = ctl(home.path(), &["compiler", "health"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(home.path().join("compiler.pid").is_file());
    assert!(home.path().join("logs/cloacina-compiler.log").is_file());

    // Stop: SIGTERM through the PID file; the compiler exits 0.
    let out = ctl(home.path(), &["compiler", "stop"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out), logs());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("stopped the compiler"),
        "{}",
        text(&out)
    );
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "{}", logs());
    assert!(!home.path().join("compiler.pid").exists());
    let out = ctl(home.path(), &["compiler", "health"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}
