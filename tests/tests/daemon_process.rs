//! End-to-end: the daemon as a process — its PID lock, what `daemon stop` may signal, signals
//! during start, settings ranges, what SIGHUP applies, the scratch sweep and colour. Real
//! `cloacinactl` and `cloacina-daemon` binaries in temporary homes.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cloacina::store::ExecutionStatus;
use cloacina_e2e::home::{Home, pack_example};
use cloacina_e2e::{bins, wait_for};

/// A process that is alive and is not a daemon (a `sleep`), killed when dropped.
struct Stranger(Child);

impl Stranger {
    fn spawn() -> Stranger {
        Stranger(
            Command::new("sleep")
                .arg("120")
                .spawn()
                .expect("spawn sleep"),
        )
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
    fn alive(&mut self) -> bool {
        self.0.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Stranger {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Waits until the daemon answers its health socket, failing at once (with its stderr) if it
/// exits instead.
fn wait_running(home: &mut Home) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = home
            .daemon
            .as_mut()
            .expect("spawned")
            .try_wait()
            .expect("try_wait")
        {
            panic!(
                "the daemon exited ({status}) instead of starting\n{}",
                home.logs()
            );
        }
        if home.ctl(&["daemon", "health"]).status.success() {
            return;
        }
        assert!(Instant::now() < deadline, "no health\n{}", home.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `cloacina-daemon ARGS` in `home`, giving it `limit` to exit (it must refuse to start);
/// `None` if it was still running (then it is killed).
fn daemon_exit(home: &Home, args: &[&str], limit: Duration) -> (Option<i32>, String) {
    let err_path = home.path().join("refused.stderr");
    let err = std::fs::File::create(&err_path).expect("stderr file");
    let mut child = Command::new(bins::cloacina_daemon())
        .arg("--home")
        .arg(home.path())
        .args(args)
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .expect("run the daemon");
    let deadline = Instant::now() + limit;
    let code = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (code, std::fs::read_to_string(&err_path).unwrap_or_default())
}

fn recorded_pid(home: &Home) -> Option<u32> {
    std::fs::read_to_string(home.path().join("daemon.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[test]
fn stop_never_signals_a_process_that_is_not_this_homes_daemon() {
    let home = Home::new();
    let mut stranger = Stranger::spawn();
    let pid_file = home.path().join("daemon.pid");
    for force in [false, true] {
        std::fs::write(&pid_file, format!("{}\n", stranger.pid())).expect("pid file");
        let args: &[&str] = if force {
            &["daemon", "stop", "--force"]
        } else {
            &["daemon", "stop"]
        };
        let out = home.ctl(args);
        assert_eq!(out.status.code(), Some(2), "{}", home.context(&out));
        assert!(
            stderr(&out).contains("nothing was signalled"),
            "{}",
            home.context(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
        assert!(stranger.alive(), "the stranger was not signalled");
    }
    // Pid 1 is alive and no daemon either.
    std::fs::write(&pid_file, "1\n").expect("pid file");
    let out = home.ctl(&["daemon", "stop"]);
    assert_eq!(out.status.code(), Some(2), "{}", home.context(&out));

    // The pid of a real daemon, but of another home: not this home's daemon.
    let mut other = Home::new();
    other.start(&[]);
    std::fs::write(&pid_file, format!("{}\n", other.daemon_pid())).expect("pid file");
    let out = home.ctl(&["daemon", "stop"]);
    assert_eq!(out.status.code(), Some(2), "{}", home.context(&out));
    assert!(
        other.ctl(&["daemon", "health"]).status.success(),
        "the other home's daemon still runs"
    );
    assert!(other.ctl(&["daemon", "stop"]).status.success());
    assert_eq!(other.exit_code(), Some(0));
}

/// A PID file locked by something that is not a daemon (a `sleep` holding `flock(1)`'s lock): `stop` cannot verify
/// the recorded pid, so it signals nothing and exits 2; `start` sees the lock and refuses.
/// Skipped where util-linux's `flock` is missing.
#[test]
fn a_locked_pid_file_naming_a_stranger_is_never_signalled() {
    let home = Home::new();
    let pid_file = home.path().join("daemon.pid");
    if Command::new("flock").arg("--version").output().is_err() {
        eprintln!("flock(1) is not installed; skipped");
        return;
    }
    // One process (the shell becomes `sleep`) holding the lock on fd 9.
    let mut locker = Command::new("sh")
        .arg("-c")
        .arg("exec 9>>\"$1\" && flock --exclusive 9 && exec sleep 120")
        .arg("sh")
        .arg(&pid_file)
        .spawn()
        .expect("spawn the locker");
    wait_for(
        "flock holds the lock",
        || {
            cloacina::daemon::pidfile::Probe::open(&pid_file)
                .ok()
                .flatten()
                .is_some_and(|p| p.held().unwrap_or(false))
        },
        String::new,
    );
    std::fs::write(&pid_file, format!("{}\n", locker.id())).expect("pid file");
    for args in [&["daemon", "stop"][..], &["daemon", "stop", "--force"][..]] {
        let out = home.ctl(args);
        assert_eq!(out.status.code(), Some(2), "{}", home.context(&out));
        let err = stderr(&out);
        assert!(
            err.contains("not cloacina-daemon") && err.contains("nothing was signalled"),
            "{err}"
        );
    }
    assert!(
        locker.try_wait().expect("try_wait").is_none(),
        "not signalled"
    );
    let (code, err) = daemon_exit(&home, &[], Duration::from_secs(20));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("already running"), "{err}");
    let _ = locker.kill();
    let _ = locker.wait();
}

/// `--force` kills the verified daemon; its PID file, stale once the lock is gone, and its
/// socket are cleared, and the next start needs nothing else.
#[test]
fn stop_force_kills_this_homes_daemon_and_clears_its_files() {
    let mut home = Home::new();
    home.start(&[]);
    let out = home.ctl(&["daemon", "stop", "--force"]);
    assert!(out.status.success(), "{}", home.context(&out));
    assert_eq!(home.exit_code(), None, "killed by SIGKILL");
    assert!(!home.path().join("daemon.pid").exists());
    assert!(!home.path().join("daemon.sock").exists());
    home.start(&[]);
    assert!(home.ctl(&["daemon", "stop"]).status.success());
    assert_eq!(home.exit_code(), Some(0));
}

#[test]
fn a_stale_pid_naming_a_live_process_does_not_block_start() {
    let mut home = Home::new();
    let mut stranger = Stranger::spawn();
    std::fs::write(
        home.path().join("daemon.pid"),
        format!("{}\n", stranger.pid()),
    )
    .expect("pid file");
    home.spawn(&[]);
    wait_running(&mut home);
    assert_eq!(recorded_pid(&home), Some(home.daemon_pid()), "replaced");
    assert!(stranger.alive());
    let stop = home.ctl(&["daemon", "stop"]);
    assert!(stop.status.success(), "{}", home.context(&stop));
    assert_eq!(home.exit_code(), Some(0), "{}", home.logs());
    assert!(stranger.alive());
    assert!(!home.path().join("daemon.pid").exists());
}

#[test]
fn two_daemons_started_at_once_exactly_one_runs() {
    for round in 0..3 {
        let home = Home::new();
        let spawn = |n: usize| {
            let err = std::fs::File::create(home.path().join(format!("d{n}.stderr")))
                .expect("stderr file");
            Command::new(bins::cloacina_daemon())
                .arg("--home")
                .arg(home.path())
                .args(["--poll-interval", "200"])
                .stdout(Stdio::null())
                .stderr(err)
                .spawn()
                .expect("spawn the daemon")
        };
        let mut daemons = [spawn(0), spawn(1)];
        let mut exited = None;
        wait_for(
            "one of the two daemons exits",
            || {
                exited = daemons
                    .iter_mut()
                    .enumerate()
                    .find_map(|(i, c)| c.try_wait().ok().flatten().map(|s| (i, s.code())));
                exited.is_some()
            },
            || format!("round {round}: both still run"),
        );
        let (loser, code) = exited.expect("one exited");
        let winner = 1 - loser;
        let text = std::fs::read_to_string(home.path().join(format!("d{loser}.stderr")))
            .unwrap_or_default();
        assert_eq!(code, Some(1), "round {round}: {text}");
        assert!(text.contains("already running"), "round {round}: {text}");
        wait_for(
            "the winner answers",
            || home.ctl(&["daemon", "health"]).status.success(),
            String::new,
        );
        let winner_pid = daemons[winner].id();
        assert_eq!(recorded_pid(&home), Some(winner_pid), "round {round}");
        assert_eq!(home.status()["pid"], winner_pid);
        let stop = home.ctl(&["daemon", "stop"]);
        assert!(stop.status.success(), "{}", home.context(&stop));
        let status = daemons[winner].wait().expect("wait");
        assert_eq!(status.code(), Some(0));
    }
}

/// Six example archives, packed once per test binary: the first reconciliation pass over
/// them takes seconds, the window in which the signals below arrive.
fn six_archives() -> &'static [PathBuf] {
    static PACKED: OnceLock<(tempfile::TempDir, Vec<PathBuf>)> = OnceLock::new();
    &PACKED
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("tmp");
            let names = [
                "hello-orders",
                "heartbeat",
                "price-publisher",
                "price-subscriber",
                "scheduled-reports",
                "graph-in-task",
            ];
            let files = names
                .into_iter()
                .map(|n| pack_example(n, dir.path()))
                .collect();
            (dir, files)
        })
        .1
}

/// Starts a daemon over six packages and sends `signal` as soon as its PID file is written,
/// while the first pass still runs.
fn signal_during_start(signal: &str) -> Home {
    let mut home = Home::new();
    let packages = home.packages_dir();
    std::fs::create_dir_all(&packages).expect("packages dir");
    for archive in six_archives() {
        let name = archive.file_name().expect("file name");
        std::fs::copy(archive, packages.join(name)).expect("copy archive");
    }
    home.spawn(&[]);
    home.wait_for("the PID file is written", |h| recorded_pid(h).is_some());
    assert!(
        !home.logs().contains("daemon started"),
        "the signal must arrive before the first pass ends\n{}",
        home.logs()
    );
    home.signal(signal);
    home
}

#[test]
fn sigterm_or_sigint_during_start_is_a_graceful_stop() {
    for signal in ["TERM", "INT"] {
        let mut home = signal_during_start(signal);
        let code = home.exit_code();
        assert_eq!(code, Some(0), "SIG{signal} during start\n{}", home.logs());
        assert!(
            !home.path().join("daemon.pid").exists(),
            "PID file removed\n{}",
            home.logs()
        );
        assert!(!home.path().join("daemon.sock").exists(), "socket removed");
        assert!(home.logs().contains("daemon stopped"), "{}", home.logs());
    }
}

/// Ctrl-C twice during a slow start exits at once with 1, as it does while draining.
#[test]
fn a_second_interrupt_during_start_exits_1() {
    let mut home = signal_during_start("INT");
    home.wait_for("the first interrupt noted", |h| {
        h.logs().contains("interrupted during start")
    });
    home.signal("INT");
    assert_eq!(home.exit_code(), Some(1), "{}", home.logs());
    assert!(home.logs().contains("second interrupt"), "{}", home.logs());
}

#[test]
fn sighup_during_start_is_not_fatal() {
    let mut home = signal_during_start("HUP");
    wait_running(&mut home);
    home.wait_for("the reload applied", |h| {
        h.logs().contains("configuration reloaded")
    });
    assert_eq!(home.status()["pid"], home.daemon_pid());
    assert!(home.ctl(&["daemon", "stop"]).status.success());
    assert_eq!(home.exit_code(), Some(0), "{}", home.logs());
}

#[test]
fn out_of_range_settings_are_refused_at_start_naming_key_value_and_range() {
    let home = Home::new();
    // The flag, on the daemon and through cloacinactl (which used to exec a daemon that
    // panicked).
    let (code, err) = daemon_exit(&home, &["--poll-interval", "0"], Duration::from_secs(20));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("--poll-interval = 0 is out of range") && err.contains("10 ms..1 h"),
        "{err}"
    );
    let out = Command::new(bins::cloacinactl())
        .arg("--home")
        .arg(home.path())
        .args(["daemon", "start", "--poll-interval", "0"])
        .env("PATH", bins::bin_dir())
        .output()
        .expect("run cloacinactl");
    assert_eq!(out.status.code(), Some(1), "{}", home.context(&out));
    assert!(
        stderr(&out).contains("--poll-interval = 0 is out of range"),
        "{}",
        home.context(&out)
    );
    // The file: a zero debounce used to spin a core; a huge timeout overflowed `stop`.
    for (line, expected) in [
        (
            "watcher_debounce_ms = 0",
            "daemon.watcher_debounce_ms = 0 is out of range: it must be between 10 and 60000 (10 ms..1 min)",
        ),
        (
            "shutdown_timeout_s = 9223372036854775807",
            "daemon.shutdown_timeout_s = 9223372036854775807 is out of range",
        ),
        (
            "poll_interval_ms = 1",
            "daemon.poll_interval_ms = 1 is out of range",
        ),
        (
            "cron_recovery_interval_s = 0",
            "daemon.cron_recovery_interval_s = 0 is out of range",
        ),
    ] {
        std::fs::write(
            home.path().join("config.toml"),
            format!("[daemon]\n{line}\n"),
        )
        .expect("config");
        let (code, err) = daemon_exit(&home, &[], Duration::from_secs(20));
        assert_eq!(code, Some(1), "{line}: {err}");
        assert!(
            err.contains(expected) && err.contains("config.toml"),
            "{err}"
        );
        assert!(!home.path().join("daemon.pid").exists(), "{line}");
    }
}

#[test]
fn stop_survives_a_huge_shutdown_timeout_written_after_start() {
    let mut home = Home::new();
    home.start(&[]);
    std::fs::write(
        home.path().join("config.toml"),
        "[daemon]\nshutdown_timeout_s = 9223372036854775807\n",
    )
    .expect("config");
    let stop = home.ctl(&["daemon", "stop"]);
    assert!(stop.status.success(), "{}", home.context(&stop));
    assert!(
        !stderr(&stop).contains("panicked"),
        "{}",
        home.context(&stop)
    );
    assert_eq!(home.exit_code(), Some(0), "{}", home.logs());
}

/// SIGHUP applies the log level and the shutdown timeout (which used to keep their start
/// values) and names every change in the log.
#[test]
fn sighup_applies_the_log_level_and_the_shutdown_timeout() {
    let mut home = Home::new();
    home.start(&[]);
    pack_example("heartbeat", &home.packages_dir());
    home.wait_for("a cron run completed", |h| {
        h.executions()
            .iter()
            .any(|e| e.status == ExecutionStatus::Completed)
    });
    assert!(!home.json_log().contains("\"level\":\"DEBUG\""));
    std::fs::write(
        home.path().join("config.toml"),
        "[daemon]\nlog_level = \"debug\"\nshutdown_timeout_s = 0\ntrigger_poll_interval_ms = 2000\n\
         cron_recovery_interval_s = 60\ncron_lost_threshold_min = 5\nwatcher_debounce_ms = 100\n",
    )
    .expect("config");
    home.signal("HUP");
    home.wait_for("the reload logged", |h| {
        h.logs().contains("configuration reloaded")
    });
    let logs = home.logs();
    for change in [
        "log_level: info -> debug",
        "shutdown_timeout_s: 30 -> 0",
        "trigger_poll_interval_ms: 1000 -> 2000",
        "cron_recovery_interval_s: 300 -> 60",
        "cron_lost_threshold_min: 10 -> 5",
        "watcher_debounce_ms: 500 -> 100",
    ] {
        assert!(logs.contains(change), "{change}\n{logs}");
    }
    home.wait_for("debug lines in the JSON log", |h| {
        h.json_log().contains("\"level\":\"DEBUG\"")
    });
    home.wait_for("a run in flight", |h| {
        h.executions()
            .iter()
            .any(|e| e.status == ExecutionStatus::Running)
    });
    let stop = home.ctl(&["daemon", "stop"]);
    assert!(stop.status.success(), "{}", home.context(&stop));
    assert_eq!(home.exit_code(), Some(0), "{}", home.logs());
    assert!(
        home.logs().contains("shutdown timeout reached"),
        "a 0 s timeout releases the run in flight instead of draining it\n{}",
        home.logs()
    );
}

#[test]
fn scratch_left_by_a_crashed_daemon_is_swept_at_start() {
    let mut home = Home::new();
    let unpack = home.path().join("cache/libraries/unpack");
    let left: Vec<PathBuf> = [
        "99999999-00000000deadbeef",
        ".99999999-00000000deadbeef.partial-0123456789abcdef",
    ]
    .iter()
    .map(|n| unpack.join(n))
    .collect();
    for d in &left {
        std::fs::create_dir_all(d.join("lib")).expect("mkdir");
        std::fs::write(d.join("lib/libx.so"), b"x").expect("write");
    }
    home.start(&[]);
    for d in &left {
        assert!(!d.exists(), "{} swept\n{}", d.display(), home.logs());
    }
    assert!(home.ctl(&["daemon", "stop"]).status.success());
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

#[test]
fn no_colour_off_a_terminal_and_no_color_reaches_the_daemon() {
    let mut home = Home::new();
    home.start(&[]);
    let logs = home.logs();
    assert!(logs.contains("daemon started"), "{logs}");
    assert!(
        !logs.contains('\x1b'),
        "no ANSI codes in redirected stderr\n{logs}"
    );
    assert!(!cmdline(home.daemon_pid()).contains("--no-color"));
    assert!(home.ctl(&["daemon", "stop"]).status.success());
    assert_eq!(home.exit_code(), Some(0));

    let mut home = Home::new();
    home.start(&["--no-color"]);
    assert!(
        cmdline(home.daemon_pid()).contains("--no-color"),
        "{}",
        cmdline(home.daemon_pid())
    );
    assert!(home.ctl(&["daemon", "stop"]).status.success());
    assert_eq!(home.exit_code(), Some(0));
}
