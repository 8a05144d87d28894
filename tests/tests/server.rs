//! End-to-end: the real `cloacina-server`, started in a temporary home (through
//! `cloacinactl server start` or directly) on a free port, managed with the real
//! `cloacinactl server status|health|stop` and driven over HTTP: the bootstrap key, one server
//! per home, secrets kept off the command line, start-up refusals, signature enforcement, and
//! a graceful stop with a run in flight.

use std::os::unix::fs::PermissionsExt as _;

use cloacina::package::signing;
use cloacina_e2e::home::pack_example;
use cloacina_e2e::server::{Backend, ServerHome, Start};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

/// The non-empty lines of a text.
fn lines(s: &str) -> Vec<&str> {
    s.lines().filter(|l| !l.trim().is_empty()).collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Lifecycle

#[test]
fn the_bootstrap_key_is_generated_once_and_the_server_is_managed_with_cloacinactl() {
    let home = ServerHome::sqlite();
    let mut server = home.start(Start::ctl());

    // The first start made one admin key, in a file only the owner can read.
    let file = home.bootstrap_key_file();
    let meta = std::fs::metadata(&file).expect("<home>/bootstrap-key exists");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{}", home.logs());
    let key = home.bootstrap_key();
    assert!(key.starts_with("clk_") && key.len() == 47, "{key}");
    let keys = server.get_ok("/v1/auth/keys");
    assert_eq!(keys["total"], 1, "{keys}");
    let whoami = server.get_ok("/v1/auth/whoami");
    assert_eq!(whoami["is_admin"], true, "{whoami}");

    // health: exit 0, silent.
    let out = home.ctl(&["server", "health"]);
    assert_eq!(out.status.code(), Some(0), "{}", home.context(&out));
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "{}",
        home.context(&out)
    );

    // status with the key: the backend and version.
    let out = home.ctl(&["server", "status", "--api-key", &key, "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", home.context(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(status["backend"], "sqlite", "{status}");
    assert!(
        status["version"].as_str().is_some_and(|v| !v.is_empty()),
        "{status}"
    );

    // A wrong key: exit 4.
    let wrong = format!("clk_{}", "A".repeat(43));
    let out = home.ctl(&["server", "status", "--api-key", &wrong]);
    assert_eq!(out.status.code(), Some(4), "{}", home.context(&out));

    // One server per home.
    let (code, stderr) = home.start_failing(Start::ctl());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("already running"), "{stderr}");
    assert!(server.running(), "the first server still runs");

    // stop: exit 0, the server exits 0 and its PID file goes.
    let out = home.ctl(&["server", "stop"]);
    assert_eq!(out.status.code(), Some(0), "{}", home.context(&out));
    assert_eq!(server.wait_exit(), Some(0), "{}", home.logs());
    assert!(!home.pid_file().exists(), "the PID file is removed");
    drop(server);

    // A restart keeps the key: the file is untouched and no second key is made.
    let before = std::fs::read(&file).expect("read the key file");
    let modified = meta.modified().expect("mtime");
    let server = home.start(Start::ctl());
    assert_eq!(std::fs::read(&file).expect("read"), before);
    assert_eq!(
        std::fs::metadata(&file)
            .expect("meta")
            .modified()
            .expect("mtime"),
        modified
    );
    assert_eq!(server.key, key);
    let keys = server.get_ok("/v1/auth/keys");
    assert_eq!(keys["total"], 1, "{keys}");
    let out = home.ctl(&["server", "health"]);
    assert_eq!(out.status.code(), Some(0), "{}", home.context(&out));
}

/// `cloacinactl server start --database-url URL --bootstrap-key KEY` execs the server with
/// both in its environment: neither shows in the server's `/proc/<pid>/cmdline`.
fn secrets_stay_off_the_command_line(backend: Backend) {
    let Some(home) = ServerHome::new(backend) else {
        return;
    };
    let secret = "hunter2-s3cret";
    let url = match backend {
        // Trust authentication ignores the password; the URL still carries one.
        Backend::Postgres => home.database_url.replacen(
            "postgres://postgres@",
            &format!("postgres://postgres:{secret}@"),
            1,
        ),
        Backend::Sqlite => {
            let dir = home.path().join(secret);
            std::fs::create_dir_all(&dir).expect("db dir");
            format!("sqlite://{}", dir.join("cloacina.db").display())
        }
    };
    assert!(url.contains(secret), "{url}");
    let key = format!("clk_{}", "b".repeat(43));
    let server = home.start(Start {
        args: vec!["--database-url".to_string(), url],
        bootstrap_key: Some(key.clone()),
        ..Start::ctl()
    });
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", server.pid())).expect("cmdline");
    let cmdline = text(&cmdline).replace('\0', " ");
    assert!(
        cmdline.contains("cloacina-server"),
        "the child is the server: {cmdline}"
    );
    assert!(!cmdline.contains(secret), "{cmdline}");
    assert!(!cmdline.contains(&key), "{cmdline}");
    // The key given was recorded and works; no key file was written.
    assert_eq!(server.get_ok("/v1/auth/whoami")["is_admin"], true);
    assert!(!home.bootstrap_key_file().exists());
    // Nor does the secret reach the logs.
    assert!(!home.logs().contains(secret), "{}", home.logs());
}

#[test]
fn secrets_stay_off_the_command_line_sqlite() {
    secrets_stay_off_the_command_line(Backend::Sqlite);
}

#[test]
fn secrets_stay_off_the_command_line_postgres() {
    secrets_stay_off_the_command_line(Backend::Postgres);
}

#[test]
fn a_missing_database_url_is_a_one_line_error() {
    let home = ServerHome::sqlite();
    for how in [Start::direct(), Start::ctl()] {
        let (code, stderr) = home.start_failing(Start {
            no_database: true,
            ..how.clone()
        });
        assert_eq!(code, Some(1), "{how:?}: {stderr}");
        assert_eq!(lines(&stderr).len(), 1, "{how:?}: {stderr}");
        assert!(stderr.contains("database"), "{how:?}: {stderr}");
    }
    assert!(!home.pid_file().exists());
}

#[test]
fn an_unreachable_postgres_is_a_one_line_error_naming_the_redacted_url() {
    let home = ServerHome::sqlite();
    let (code, stderr) = home.start_failing(Start {
        database_url: Some("postgres://cloacina:topsecretpw@127.0.0.1:1/nowhere".to_string()),
        ..Start::direct()
    });
    assert_eq!(code, Some(1), "{stderr}");
    let errors: Vec<&str> = lines(&stderr)
        .into_iter()
        .filter(|l| l.starts_with("Error"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("postgres://cloacina:***@127.0.0.1:1/nowhere"),
        "{stderr}"
    );
    assert!(!stderr.contains("topsecretpw"), "{stderr}");
    assert!(!home.pid_file().exists(), "{stderr}");
}

#[test]
fn require_signatures_without_a_trusted_key_is_refused_at_start() {
    let home = ServerHome::sqlite();
    for how in [Start::direct(), Start::ctl()] {
        let (code, stderr) = home.start_failing(how.clone().arg("--require-signatures"));
        assert_eq!(code, Some(1), "{how:?}: {stderr}");
        let errors: Vec<&str> = lines(&stderr)
            .into_iter()
            .filter(|l| l.starts_with("Error"))
            .collect();
        assert_eq!(errors.len(), 1, "{how:?}: {stderr}");
        assert!(errors[0].contains("--trusted-key"), "{how:?}: {stderr}");
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Signatures

#[test]
fn a_server_requiring_signatures_accepts_only_archives_signed_by_a_trusted_key() {
    let keys = tempfile::tempdir().expect("keys dir");
    let trusted = keys.path().join("trusted.key");
    let other = keys.path().join("other.key");
    signing::generate_keypair(&trusted).expect("trusted key pair");
    signing::generate_keypair(&other).expect("other key pair");
    let pub_file = signing::public_key_path(&trusted);

    let home = ServerHome::sqlite();
    let server = home.start(
        Start::ctl()
            .arg("--require-signatures")
            .arg("--trusted-key")
            .arg(pub_file.display().to_string()),
    );
    let archive = pack_example("hello-orders", keys.path());
    let bytes = std::fs::read(&archive).expect("read archive");
    let sign_with = |keyfile: &std::path::Path| {
        let key = signing::load_signing_key(keyfile).expect("load key");
        let sig = signing::sign_archive(&archive, &key).expect("sign");
        std::fs::read_to_string(sig).expect("read .sig")
    };

    let r = server.upload_multipart("public", &bytes, None);
    assert_eq!(
        (r.status, r.code().as_str()),
        (403, "signature_rejected"),
        "{r}"
    );
    let r = server.upload_raw("public", &bytes);
    assert_eq!(
        (r.status, r.code().as_str()),
        (403, "signature_rejected"),
        "{r}"
    );
    let r = server.upload_multipart("public", &bytes, Some(&sign_with(&other)));
    assert_eq!(
        (r.status, r.code().as_str()),
        (403, "signature_rejected"),
        "{r}"
    );
    assert_eq!(
        server.get_ok("/v1/packages")["total"],
        0,
        "nothing was stored"
    );

    let r = server.upload_multipart("public", &bytes, Some(&sign_with(&trusted)));
    assert_eq!(r.status, 201, "{r}\n{}", server.logs());
    assert_eq!(r.json()["state"], "loaded", "{r}");
    let id = r.json()["package_id"].as_str().expect("id").to_string();
    let info = server.get_ok(&format!("/v1/packages/{id}"));
    assert_eq!(info["signed"], true, "{info}");
    let exec = server.execute("public", "hello", &serde_json::json!({}));
    assert_eq!(
        server.wait_execution("public", &exec)["status"],
        "Completed"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Graceful stop

#[test]
fn sigterm_with_a_run_in_flight_stops_cleanly_and_loses_no_run() {
    let home = ServerHome::sqlite();
    let mut server = home.start(Start::direct().arg("--shutdown-timeout-s").arg("30"));
    let archive = pack_example("heartbeat", home.path());
    let r = server.upload_raw("public", &std::fs::read(&archive).expect("read"));
    assert_eq!(r.status, 201, "{r}\n{}", server.logs());

    // Cron starts `beat` every second; its task takes 1.5 s: wait for one to be running.
    let mut in_flight = String::new();
    cloacina_e2e::wait_for(
        "a heartbeat run is in flight",
        || {
            let running = server.get_ok("/v1/tenants/public/executions?status=Running");
            match running["items"][0]["id"].as_str() {
                Some(id) => {
                    in_flight = id.to_string();
                    true
                }
                None => false,
            }
        },
        || server.logs(),
    );
    server.signal("TERM");
    assert_eq!(server.wait_exit(), Some(0), "{}", server.logs());
    assert!(!home.pid_file().exists(), "the PID file is removed");
    let log = home.logs();
    assert!(log.contains("server stopped"), "{log}");
    drop(server);

    // Every run known at the stop either completed or was handed back: a second start
    // finishes those handed back, so in the end none is left unfinished or failed.
    let server = home.start(Start::direct());
    // The run in flight at the stop was drained (completed) or handed back, never failed.
    let status = server.get_ok(&format!("/v1/tenants/public/executions/{in_flight}"));
    assert!(
        matches!(
            status["status"].as_str(),
            Some("Completed" | "Running" | "Pending")
        ),
        "{status}"
    );
    let listed = server.get_ok("/v1/tenants/public/executions?limit=1000");
    let at_stop: Vec<String> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_string())
        .collect();
    assert!(!at_stop.is_empty(), "{listed}");
    for id in &at_stop {
        let status = server.wait_execution("public", id);
        assert_eq!(status["status"], "Completed", "{status}\n{}", server.logs());
    }
}

/// An event stream and a long poll (`?wait=60s`) open on a long run do not hold the stop up:
/// the stream ends, the poll is answered with the run's status, the drain hands the run back
/// after `--shutdown-timeout-s`, and the server exits 0 long before the run (60 s) could have
/// finished.
#[test]
fn sigterm_ends_open_event_streams_instead_of_waiting_for_them() {
    let home = ServerHome::sqlite();
    let mut server = home.start(Start::direct().arg("--shutdown-timeout-s").arg("1"));
    let archive = pack_example("hello-orders", home.path());
    let r = server.upload_raw("public", &std::fs::read(&archive).expect("read"));
    assert_eq!(r.status, 201, "{r}\n{}", server.logs());
    let exec = server.execute("public", "orders", &serde_json::json!({"delay_ms": 60_000}));
    cloacina_e2e::wait_for(
        "the long run is running",
        || server.get_ok(&format!("/v1/tenants/public/executions/{exec}"))["status"] == "Running",
        || server.logs(),
    );
    let stream_path = format!("/v1/tenants/public/executions/{exec}/events/stream");
    let started = std::time::Instant::now();
    let poll_path = format!("/v1/tenants/public/executions/{exec}?wait=60s");
    let (events, polled) = std::thread::scope(|scope| {
        let reader = scope.spawn(|| server.sse(&stream_path, None));
        let poller = scope.spawn(|| server.get(&poll_path));
        // Let the stream and the poll open, then stop the server.
        std::thread::sleep(std::time::Duration::from_millis(500));
        server.signal("TERM");
        (
            reader.join().expect("the stream reader"),
            poller.join().expect("the long poll"),
        )
    });
    assert_eq!(polled.status, 200, "{polled}\n{}", server.logs());
    assert_eq!(polled.json()["status"], "Running", "{polled}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "the stream ended only after {:?}",
        started.elapsed()
    );
    assert!(
        events
            .iter()
            .any(|e| e.event.as_deref() == Some("task_claimed")),
        "the stream delivered the run's events before the stop: {events:?}"
    );
    assert_eq!(server.wait_exit(), Some(0), "{}", server.logs());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "the server exited only after {:?}",
        started.elapsed()
    );
}
