//! End-to-end: hostile packages against the real `cloacina-daemon` and `cloacinactl`
//! binaries. A library runs inside the daemon's process, so each case checks that the daemon
//! survives it (or, where surviving is impossible, does not crash again), reports the package
//! as failed with a reason, and keeps serving the others.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cloacina::package::archive::{self, HOST_TARGET};
use cloacina::package::signing;
use cloacina_e2e::home::{Home, pack_example, package_line};
use cloacina_e2e::{bins, packages};

/// The status line of the package whose archive is `file_name` (a package that never loaded
/// has no name to look it up by).
fn package_at(status: &serde_json::Value, file_name: &str) -> Option<serde_json::Value> {
    status["packages"]
        .as_array()?
        .iter()
        .find(|p| {
            p["path"]
                .as_str()
                .is_some_and(|path| path.ends_with(&format!("/{file_name}")))
        })
        .cloned()
}

fn last_error(status: &serde_json::Value, file_name: &str) -> String {
    package_at(status, file_name)
        .and_then(|p| p["last_error"].as_str().map(str::to_string))
        .unwrap_or_default()
}

fn loaded(status: &serde_json::Value, name: &str) -> bool {
    package_line(status, name).is_some_and(|p| p["state"] == "loaded")
}

/// The home's packages folder, created, with the well-behaved `hello-orders` in it: the
/// package a hostile one sits beside, which must stay served.
fn packages_with_hello_orders(home: &Home) -> PathBuf {
    let dir = home.packages_dir();
    std::fs::create_dir_all(&dir).expect("packages dir");
    pack_example("hello-orders", &dir);
    dir
}

/// A `.cloacina` archive of example `name` whose library is replaced by `library` bytes,
/// written entry by entry (`archive::pack` refuses such libraries).
fn hand_packed(name: &'static str, library: &[u8], out: &Path) {
    let ex = packages::example(name);
    let file = std::fs::File::create(out).expect("create archive");
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut add = |path: &str, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        tar.append_data(&mut header, path, data).expect("append");
    };
    for file in ["package.toml", "Cargo.toml", "src/lib.rs"] {
        add(
            file,
            &std::fs::read(ex.dir.join(file)).expect("read source"),
        );
    }
    let lib_name = ex.library.file_name().expect("file name").to_string_lossy();
    add(&format!("lib/{HOST_TARGET}/{lib_name}"), library);
    tar.into_inner()
        .expect("finish tar")
        .finish()
        .expect("finish gzip")
        .flush()
        .expect("flush");
}

// ---------------------------------------------------------------------------------------------
// 1. Truncated libraries

#[test]
fn a_truncated_library_is_refused_and_the_daemon_keeps_serving() {
    let mut home = Home::new();
    let dir = packages_with_hello_orders(&home);
    // Cut inside the loadable segments: mapping this library is SIGBUS in the daemon.
    let mut library = std::fs::read(packages::example("heartbeat").library).expect("read");
    library.truncate(library.len() / 8);
    hand_packed("heartbeat", &library, &dir.join("truncated.cloacina"));

    home.start(&[]);
    home.wait_for(
        "hello-orders loaded and the truncated package refused",
        |h| {
            let s = h.status();
            loaded(&s, "hello-orders")
                && package_at(&s, "truncated.cloacina").is_some_and(|p| p["state"] == "failed")
        },
    );
    let s = home.status();
    assert_eq!(s["health"], "degraded");
    let error = last_error(&s, "truncated.cloacina");
    assert!(
        error.contains("cannot be loaded: it is truncated or corrupt: its ")
            && error.contains("lies past the end of the file")
            && error.contains("it was not opened"),
        "{error}"
    );
    assert!(home.ctl(&["daemon", "health"]).status.success(), "still up");
    assert!(
        home.json_log().contains("truncated or corrupt"),
        "the refusal is logged"
    );
    assert!(home.ctl(&["daemon", "stop"]).status.success());
}

// ---------------------------------------------------------------------------------------------
// 2. Crash quarantine

#[test]
fn a_library_that_crashes_the_process_opening_it_is_refused_and_the_daemon_keeps_serving() {
    let mut home = Home::new();
    let dir = packages_with_hello_orders(&home);
    let crashing = pack_example("hostile/abort-on-load", &dir);
    let crashing_name = crashing
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();

    // The library aborts whatever process opens it; the daemon opens it in a probe process
    // first, so only the probe dies, and the package is refused with the reason.
    home.start(&[]);
    home.wait_for("hello-orders loaded and abort-on-load refused", |h| {
        let s = h.status();
        loaded(&s, "hello-orders")
            && package_at(&s, &crashing_name).is_some_and(|p| p["state"] == "failed")
    });
    let s = home.status();
    assert_eq!(s["health"], "degraded");
    let error = last_error(&s, &crashing_name);
    assert!(
        error.contains(
            "cannot be loaded: the library killed the process that opened it (SIGABRT (signal 6))"
        ) && error.contains("this process is unharmed")
            && error.contains("publish a new build"),
        "{error}"
    );
    // It stays refused across passes, and the daemon stays up with the other package.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(home.ctl(&["daemon", "health"]).status.success(), "still up");
    assert!(loaded(&home.status(), "hello-orders"));
    assert!(home.ctl(&["daemon", "stop"]).status.success());
}

/// A task that aborts the process running it (native code with a fatal bug) cannot be caught
/// like a panic: the daemon dies with it. Restarted (by its supervisor; here, the test), the
/// daemon takes the task back at once, since its PID lock proves the process that held it is
/// dead, and after `max_recoveries` (3) recoveries the task fails with the reason: four
/// crashes, then a daemon that serves the other packages, never a crash loop.
#[test]
fn a_task_that_aborts_the_daemon_fails_after_its_recoveries_and_the_daemon_serves_on() {
    use cloacina::store::{ExecutionStatus, Store, TaskStatus};
    use std::os::unix::process::ExitStatusExt as _;

    let mut home = Home::new();
    let dir = packages_with_hello_orders(&home);
    let aborting = pack_example("hostile/abort-in-task", &dir);
    let sha = archive::sha256_file(&aborting).expect("hash");
    let package =
        cloacina::package::loader::load_archive(&aborting, &home.path().join("test-cache"))
            .expect("load abort-in-task in the test");
    let workflow = package.workflow("abort_in_task").expect("the workflow");
    let run = home.with_store(async |s: &Store| {
        let made = cloacina_e2e::rows::execution_ready(
            s,
            &workflow,
            cloacina::workflow::Context::new(),
            Some(cloacina::daemon::discovery::package_id(&sha)),
        )
        .await;
        s.close().await;
        made
    });

    let started = Instant::now();
    let mut crashes = 0;
    loop {
        home.spawn(&[]);
        let deadline = Instant::now() + cloacina_e2e::wait::WAIT_LIMIT;
        let crashed = loop {
            let child = home.daemon.as_mut().expect("the daemon was started");
            if let Some(status) = child.try_wait().expect("wait for the daemon") {
                assert_eq!(
                    status.signal(),
                    Some(6),
                    "killed by SIGABRT\n{}",
                    home.logs()
                );
                break true;
            }
            let finished = home
                .executions()
                .iter()
                .any(|e| e.id == run.id && e.status == ExecutionStatus::Failed);
            if finished {
                break false;
            }
            assert!(
                Instant::now() < deadline,
                "neither a crash nor the run's end\n{}",
                home.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        if !crashed {
            break;
        }
        home.daemon = None;
        crashes += 1;
        assert!(
            crashes <= 4,
            "a crash loop: {crashes} crashes\n{}",
            home.logs()
        );
    }
    assert_eq!(
        crashes,
        4,
        "the first attempt and three recoveries\n{}",
        home.logs()
    );
    eprintln!(
        "4 crashes, then the task failed, in {:?}",
        started.elapsed()
    );

    let tasks = home.with_store(async |s: &Store| {
        let t = s.task_list(run.id).await.expect("tasks");
        s.close().await;
        t
    });
    assert_eq!(tasks[0].status, TaskStatus::Failed);
    let error = tasks[0].error.clone().unwrap_or_default();
    assert!(
        error.contains("expired after 3 earlier recoveries; giving up (max_recoveries = 3)"),
        "{error}"
    );
    // The daemon that gave up on it serves on.
    home.wait_for("the daemon answers its health socket", |h| {
        h.ctl(&["daemon", "health"]).status.success()
    });
    assert!(loaded(&home.status(), "hello-orders"));
    assert!(home.ctl(&["daemon", "stop"]).status.success());
}

// ---------------------------------------------------------------------------------------------
// 5. Signatures

fn write_config(home: &Home, text: &str) {
    std::fs::write(home.path().join("config.toml"), text).expect("config");
}

fn keygen(home: &Home, name: &str) -> PathBuf {
    let key = home.path().join(name);
    let out = home.ctl(&["package", "keygen", key.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", home.context(&out));
    key
}

#[test]
fn required_signatures_refuse_unsigned_and_untrusted_archives() {
    let mut home = Home::new();
    let trusted = keygen(&home, "trusted.key");
    let stranger = keygen(&home, "stranger.key");
    // Relative to the home, where config.toml is.
    write_config(
        &home,
        "[daemon]\nrequire_signatures = true\ntrusted_keys = [\"trusted.key.pub\"]\n",
    );
    let dir = home.packages_dir();
    std::fs::create_dir_all(&dir).expect("packages dir");
    let signed = pack_example("price-publisher", &dir);
    let key = signing::load_signing_key(&trusted).expect("key");
    signing::sign_archive(&signed, &key).expect("sign");
    let unsigned = pack_example("hello-orders", &dir);
    let untrusted = pack_example("heartbeat", &dir);
    signing::sign_archive(
        &untrusted,
        &signing::load_signing_key(&stranger).expect("key"),
    )
    .expect("sign");

    home.start(&[]);
    home.wait_for("the signed package loads, the others fail", |h| {
        let s = h.status();
        loaded(&s, "price-publisher")
            && !last_error(&s, "hello-orders.cloacina").is_empty()
            && !last_error(&s, "heartbeat.cloacina").is_empty()
    });
    let s = home.status();
    assert_eq!(s["health"], "degraded");
    assert_eq!(
        last_error(&s, "hello-orders.cloacina"),
        format!(
            "cannot load package archive {a}: {a} is not signed (no {a}.sig) and this host requires signatures (daemon.require_signatures); sign it with a trusted key: 'cloacinactl package pack DIR --sign KEYFILE'",
            a = unsigned.display()
        )
    );
    let error = last_error(&s, "heartbeat.cloacina");
    assert!(error.contains("which is not trusted"), "{error}");
    assert!(home.ctl(&["daemon", "stop"]).status.success());
}

#[test]
fn a_forged_side_car_is_refused_even_when_signatures_are_optional() {
    let mut home = Home::new();
    let dir = home.packages_dir();
    std::fs::create_dir_all(&dir).expect("packages dir");
    let archive = pack_example("hello-orders", &dir);
    pack_example("heartbeat", &dir);
    let sig = signing::signature_path(&archive);
    let forged = format!(
        "{{\"algorithm\":\"ed25519\",\"sha256\":\"{}\",\"public_key\":\"{}\",\"signature\":\"{}\"}}\n",
        archive::sha256_file(&archive).expect("sha"),
        "11".repeat(32),
        "22".repeat(64)
    );
    std::fs::write(&sig, forged).expect("forged side-car");

    home.start(&[]);
    home.wait_for("heartbeat loads, the forged one fails", |h| {
        let s = h.status();
        loaded(&s, "heartbeat") && !last_error(&s, "hello-orders.cloacina").is_empty()
    });
    let error = last_error(&home.status(), "hello-orders.cloacina");
    assert!(
        error.starts_with(&format!(
            "cannot load package archive {}: ",
            archive.display()
        )) && (error.contains("is malformed") || error.contains("is not valid for")),
        "{error}"
    );
    assert!(!loaded(&home.status(), "hello-orders"));
    assert!(home.ctl(&["daemon", "stop"]).status.success());
}

#[test]
fn a_missing_trusted_key_stops_the_start() {
    let home = Home::new();
    let missing = home.path().join("nope.pub");
    write_config(
        &home,
        &format!(
            "[daemon]\nrequire_signatures = true\ntrusted_keys = [\"{}\"]\n",
            missing.display()
        ),
    );
    let out = Command::new(bins::cloacina_daemon())
        .arg("--home")
        .arg(home.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot use trusted key {m} (daemon.trusted_keys in config.toml): key file {m} not found",
            m = missing.display()
        )),
        "{err}"
    );

    // Required without any key is a configuration error too.
    write_config(&home, "[daemon]\nrequire_signatures = true\n");
    let out = Command::new(bins::cloacina_daemon())
        .arg("--home")
        .arg(home.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "daemon.require_signatures is set but daemon.trusted_keys lists no public key file"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// cloacinactl package pack / verify on hostile inputs

/// `cloacinactl ARGS` in `dir` with extra environment, killed (and the test failed) after
/// 30 seconds: reading a FIFO or /dev/zero must never hang.
fn ctl_in(dir: &Path, env: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut cmd = Command::new(bins::cloacinactl());
    cmd.current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run cloacinactl");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cloacinactl {args:?} still runs after 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn verify_names_what_a_path_is_and_reads_nothing_unbounded() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let home = Home::new();
    let key = keygen(&home, "k");
    let public = signing::public_key_path(&key);
    let public = public.to_str().expect("utf-8");
    let verify = |file: &str| ctl_in(dir, &[], &["package", "verify", file, "--key", public]);

    // A directory.
    std::fs::create_dir(dir.join("d.cloacina")).expect("mkdir");
    let out = verify("d.cloacina");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("archive d.cloacina is a directory; give the path of a regular file"),
        "{}",
        stderr(&out)
    );

    // A FIFO: never opened (opening it would wait for a writer).
    let fifo = Command::new("mkfifo")
        .arg(dir.join("f.cloacina"))
        .status()
        .expect("mkfifo");
    assert!(fifo.success());
    let out = verify("f.cloacina");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("archive f.cloacina is not a regular file (it is a FIFO, device or socket)"),
        "{}",
        stderr(&out)
    );

    // A real archive whose side-car is /dev/zero behind a link, then a huge sparse file.
    let archive = pack_example("hello-orders", dir);
    let name = archive
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let sig = signing::signature_path(&archive);
    std::os::unix::fs::symlink("/dev/zero", &sig).expect("symlink");
    let out = verify(&name);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "signature file {name}.sig is not a regular file (it is a FIFO, device or socket)"
        )),
        "{}",
        stderr(&out)
    );
    std::fs::remove_file(&sig).expect("rm");
    std::fs::File::create(&sig)
        .and_then(|f| f.set_len(10 << 30))
        .expect("sparse side-car");
    let out = verify(&name);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "signature file {name}.sig is larger than 4096 bytes, far larger than a genuine one"
        )),
        "{}",
        stderr(&out)
    );

    // A key file that is /dev/zero.
    let out = ctl_in(
        dir,
        &[],
        &["package", "verify", &name, "--key", "/dev/zero"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("key file /dev/zero is not a regular file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn pack_refuses_a_truncated_library() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let pkg = dir.join("pkg");
    std::fs::create_dir_all(pkg.join("src")).expect("mkdir");
    std::fs::write(
        pkg.join("Cargo.toml"),
        "[package]\nname = \"fake\"\nversion = \"0.3.0\"\nedition = \"2024\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n[workspace]\n",
    )
    .expect("write");
    std::fs::write(
        pkg.join("package.toml"),
        "[package]\nname = \"fake\"\nversion = \"0.3.0\"\n",
    )
    .expect("write");
    std::fs::write(pkg.join("src/lib.rs"), "").expect("write");
    let target = dir.join("target");
    std::fs::create_dir_all(target.join("debug")).expect("mkdir");
    let mut library = std::fs::read(packages::example("hello-orders").library).expect("read");
    library.truncate(library.len() / 8);
    let lib = target
        .join("debug")
        .join(archive::library_file_name("fake"));
    std::fs::write(&lib, &library).expect("write");

    let out = ctl_in(
        dir,
        &[("CARGO_TARGET_DIR", &target)],
        &["package", "pack", "pkg"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "cannot pack library {} for {HOST_TARGET}: it is truncated or corrupt: its ",
            lib.display()
        )) && stderr(&out).contains("lies past the end of the file"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.join("fake-0.3.0.cloacina").exists());
}

/// SIGHUP applies the signature settings to every load from then on; a reload whose key file
/// is missing keeps the old settings (and says why).
#[test]
fn sighup_applies_the_signature_settings() {
    let mut home = Home::new();
    keygen(&home, "trusted.key");
    home.start(&[]);
    let dir = home.packages_dir();
    pack_example("hello-orders", &dir);
    home.wait_for(
        "an unsigned package loads while signatures are optional",
        |h| loaded(&h.status(), "hello-orders"),
    );

    // A key file that does not exist: the reload fails and signatures stay optional.
    write_config(
        &home,
        "[daemon]\nrequire_signatures = true\ntrusted_keys = [\"missing.key.pub\"]\n",
    );
    home.signal("HUP");
    home.wait_for("the failed reload is logged", |h| {
        h.logs().contains("configuration reload failed")
    });

    write_config(
        &home,
        "[daemon]\nrequire_signatures = true\ntrusted_keys = [\"trusted.key.pub\"]\n",
    );
    home.signal("HUP");
    home.wait_for("the reload is logged", |h| {
        h.logs().contains("require_signatures: false -> true")
    });
    let unsigned = pack_example("heartbeat", &dir);
    home.wait_for("a new unsigned package is refused", |h| {
        last_error(&h.status(), "heartbeat.cloacina").contains("is not signed")
    });
    assert!(
        loaded(&home.status(), "hello-orders"),
        "what was loaded stays loaded"
    );
    assert!(unsigned.exists());
    assert!(home.ctl(&["daemon", "stop"]).status.success());
}
