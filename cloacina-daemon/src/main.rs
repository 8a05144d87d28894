//! `cloacina-daemon`: the workstation scheduler. Thin by design: it parses arguments, sets up
//! logging, starts a [`cloacina::host::Host`] on the home's database, serves the health socket
//! and turns file-system events, timers and signals into reconciliation passes. The rules live
//! in `cloacina::{host, daemon, reconciler, ...}`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use cloacina::RunnerConfig;
use cloacina::config::{Config, Home, bounds};
use cloacina::daemon::discovery::{self, Scanner};
use cloacina::daemon::pidfile::PidFile;
use cloacina::daemon::status::{self, DaemonStatus};
use cloacina::host::{self, Host, HostConfig, HostSettings, ReactorStarter};
use cloacina::package::signing::SignaturePolicy;
use cloacina::schedule::cron::CronConfig;
use cloacina::schedule::trigger::TriggerConfig;
use cloacina::store::{Store, now_ms};
use notify_debouncer_full::notify::RecursiveMode;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

#[derive(Parser, Debug)]
#[command(
    name = "cloacina-daemon",
    about = "Cloacina's workstation daemon",
    version
)]
struct Args {
    /// The Cloacina home directory (default ~/.cloacina).
    #[arg(long)]
    home: Option<PathBuf>,
    /// Another package folder to watch (repeatable); merged with the default folder and
    /// `[watch] directories`.
    #[arg(long = "watch-dir")]
    watch_dirs: Vec<PathBuf>,
    /// Reconciler fallback poll interval in milliseconds, 10..3600000 (default: `[daemon]
    /// poll_interval_ms`, else 500).
    #[arg(long)]
    poll_interval: Option<u64>,
    /// Debug-level logging on stderr.
    #[arg(short, long)]
    verbose: bool,
    /// No ANSI colours on stderr (colours are only ever used when stderr is a terminal; the
    /// NO_COLOR environment variable is honoured too).
    #[arg(long)]
    no_color: bool,
}

/// mimalloc rather than glibc's allocator: malloc and free were a quarter of the database
/// writer thread's instructions (docs/performance.md). Package libraries keep their own
/// allocator; the ABI hands every buffer back to the library that made it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // A probe child (a copy of this binary opening a package library) ends here.
    cloacina::package::probe::serve_or_enable();
    // A bad command line exits 1 like every other start failure (help and version exit 0).
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() { 1 } else { 0 });
        }
    };
    let code = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => match rt.block_on(run(args)) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("Error: {e:#}");
                1
            }
        },
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            1
        }
    };
    std::process::exit(code);
}

async fn run(args: Args) -> anyhow::Result<i32> {
    // Handlers first, before anything slow (the first reconciliation pass takes seconds): a
    // SIGTERM or SIGINT during start is then a normal graceful stop once the pass ends, and a
    // SIGHUP a reload, instead of killing the process with its PID file left behind.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;

    let home = Home::resolve(args.home.as_deref())?;
    if let Some(ms) = args.poll_interval {
        bounds::POLL_INTERVAL_MS.check_as("--poll-interval", ms)?;
    }
    for dir in [home.root().to_path_buf(), home.packages(), home.logs()] {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let config = Config::load(&home.config())?;
    // Held (locked) until we exit: the proof for `daemon stop` and any second start.
    let _pid = PidFile::acquire(&home.daemon_pid())?;
    let log = init_logging(&home, &config, &args)?;
    let started = Instant::now();
    // Scratch left by a daemon killed mid-unpack; we hold the lock, so it is nobody's.
    let swept = cloacina::daemon::sweep_scratch(&home.library_cache());
    if swept > 0 {
        tracing::info!(
            removed = swept,
            "removed scratch directories left by a previous daemon"
        );
    }

    let url = format!("sqlite://{}", home.database().display());
    // Store errors name the database file themselves.
    let store = Store::open(&url).await?;
    // [daemon] require_signatures / trusted_keys: a missing or bad key stops the start.
    let signatures = SignaturePolicy::from_daemon_config(&config.daemon, home.root())?;
    let host = Host::start(
        store,
        HostConfig {
            runner: RunnerConfig {
                shutdown_timeout: config.daemon.shutdown_timeout(),
                ..RunnerConfig::default()
            },
            cron: CronConfig::from_daemon(&config.daemon),
            triggers: TriggerConfig::from_daemon(&config.daemon),
            library_cache: home.library_cache(),
            signatures,
            reactor_starter: ReactorStarter::Runner,
            // The PID lock proves every earlier daemon of this home is gone: the tasks it held
            // when it died run again at once.
            instance: Some(format!(
                "daemon-{}",
                host::instance_id(home.root()).with_context(|| format!(
                    "writing {}",
                    home.root().join(host::INSTANCE_ID_FILE).display()
                ))?
            )),
        },
    )
    .await?;
    let reconciler = host.reconciler().clone();
    let store = host.store().clone();

    let mut config = config;
    let mut dirs = discovery::watch_dirs(&home, &args.watch_dirs, &config.watch.directories)?;
    let mut scanner = Scanner::default();
    let snapshot = Arc::new(Mutex::new(None::<DaemonStatus>));
    let refresh = async |dirs: &[PathBuf], last_pass: Option<i64>| {
        let now =
            DaemonStatus::collect(&reconciler, &store, dirs, started.elapsed(), last_pass).await;
        *lock(&snapshot) = Some(now);
    };

    let first_pass = async {
        discovery::folders_reconcile(&reconciler, &mut scanner, &dirs).await;
        // The folders are the desired set: schedules of packages removed while we were down go.
        if let Err(e) = reconciler.cron_orphans_delete().await {
            tracing::error!("{e}");
        }
    };
    let stop_requested = during_start(first_pass, &mut sigint, &mut sigterm).await;
    refresh(&dirs, Some(now_ms())).await;
    let status_fn = {
        let snapshot = snapshot.clone();
        Arc::new(move || {
            lock(&snapshot)
                .clone()
                .unwrap_or_else(DaemonStatus::starting)
        }) as status::StatusFn
    };
    let socket = status::serve(&home.daemon_socket(), status_fn).await?;

    let (fs_tx, mut fs_rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = watch(&dirs, config.daemon.watcher_debounce(), fs_tx.clone())?;
    let poll_every = |config: &Config| {
        args.poll_interval
            .map(Duration::from_millis)
            .unwrap_or_else(|| config.daemon.poll_interval())
    };
    let mut interval = poll_timer(poll_every(&config));
    tracing::info!(watch_dirs = ?dirs, pid = std::process::id(), "daemon started");

    // A stop asked for during start skips the event loop.
    if !stop_requested {
        loop {
            // Signals first: one that arrived during start is handled before any further pass.
            tokio::select! {
                biased;
                _ = sigint.recv() => break,
                _ = sigterm.recv() => break,
                _ = sighup.recv() => {
                    // A bad key file fails the whole reload: the old configuration stays.
                    let fresh = Config::load(&home.config()).map_err(anyhow::Error::from).and_then(|c| {
                        let d = discovery::watch_dirs(&home, &args.watch_dirs, &c.watch.directories)?;
                        let p = SignaturePolicy::from_daemon_config(&c.daemon, home.root())?;
                        Ok((c, d, p))
                    });
                    match fresh {
                        Ok((fresh, d, policy)) => {
                            let changed = config.daemon.changes(&fresh.daemon);
                            config = fresh;
                            dirs = d;
                            // Every [daemon] setting applies now.
                            host.apply(HostSettings {
                                cron: CronConfig::from_daemon(&config.daemon),
                                triggers: TriggerConfig::from_daemon(&config.daemon),
                                shutdown_timeout: config.daemon.shutdown_timeout(),
                                signatures: policy,
                            });
                            match watch(&dirs, config.daemon.watcher_debounce(), fs_tx.clone()) {
                                Ok(w) => watcher = w,
                                Err(e) => tracing::error!(
                                    "cannot watch the new folders ({e}); the poll interval still covers them"
                                ),
                            }
                            interval = poll_timer(poll_every(&config));
                            let mut overridden = Vec::new();
                            if args.poll_interval.is_some() {
                                overridden.push("poll_interval_ms (--poll-interval given)");
                            }
                            if let Some(by) = log.set_level(&config.daemon.log_level) {
                                overridden.push(by);
                            }
                            tracing::info!(
                                watch_dirs = ?dirs,
                                changed = ?changed,
                                overridden = ?overridden,
                                needs_restart = "none",
                                "configuration reloaded (SIGHUP)"
                            );
                            tracing::debug!(log_level = %config.daemon.log_level, "log filter in force");
                        }
                        Err(e) => tracing::error!("configuration reload failed, keeping the old one: {e:#}"),
                    }
                }
                Some(()) = fs_rx.recv() => {
                    while fs_rx.try_recv().is_ok() {}
                }
                _ = interval.tick() => {}
            }
            discovery::folders_reconcile(&reconciler, &mut scanner, &dirs).await;
            refresh(&dirs, Some(now_ms())).await;
        }
    }

    // Graceful shutdown: a second SIGINT exits at once with status 1.
    tracing::info!(
        timeout_s = config.daemon.shutdown_timeout_s,
        "shutting down: draining in-flight workflows"
    );
    tokio::spawn(async move {
        if sigint.recv().await.is_some() {
            eprintln!("second interrupt: exiting now");
            std::process::exit(1);
        }
    });
    drop(watcher);
    // Schedulers, reactors, the runner's drain, then the store: closing it commits what is
    // queued and checkpoints the WAL, so only `cloacina.db` is left.
    let report = host.shutdown().await?;
    socket.abort();
    let _ = std::fs::remove_file(home.daemon_socket());
    tracing::info!(
        drained = report.drained,
        released = report.released,
        "daemon stopped"
    );
    Ok(0)
}

/// Awaits the start-up's slow first pass while watching the stop signals: a SIGINT or SIGTERM
/// is remembered (`true`: the daemon then stops gracefully, without cutting the pass off
/// half-way), and a second SIGINT exits at once with status 1, as it does while draining.
/// SIGHUP needs nothing here: it stays pending and the main loop applies it.
async fn during_start(
    work: impl std::future::Future<Output = ()>,
    sigint: &mut tokio::signal::unix::Signal,
    sigterm: &mut tokio::signal::unix::Signal,
) -> bool {
    tokio::pin!(work);
    let mut stop = false;
    loop {
        tokio::select! {
            () = &mut work => return stop,
            _ = sigint.recv() => {
                if stop {
                    eprintln!("second interrupt: exiting now");
                    std::process::exit(1);
                }
                stop = true;
                tracing::info!("interrupted during start: stopping once the first pass ends");
            }
            _ = sigterm.recv() => {
                stop = true;
                tracing::info!("terminated during start: stopping once the first pass ends");
            }
        }
    }
}

/// The reconciler's safety-net timer; a late tick is delayed, not bunched up.
fn poll_timer(every: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

/// Watches the folders (debounced); each settled burst of changes sends one wake-up.
fn watch(
    dirs: &[PathBuf],
    debounce: Duration,
    tx: mpsc::UnboundedSender<()>,
) -> anyhow::Result<
    notify_debouncer_full::Debouncer<
        notify_debouncer_full::notify::RecommendedWatcher,
        notify_debouncer_full::RecommendedCache,
    >,
> {
    let mut debouncer = notify_debouncer_full::new_debouncer(debounce, None, move |_events| {
        let _ = tx.send(());
    })?;
    for dir in dirs {
        if let Err(e) = std::fs::create_dir_all(dir) {
            tracing::warn!("cannot create watch folder {}: {e}", dir.display());
            continue;
        }
        if let Err(e) = debouncer.watch(dir, RecursiveMode::NonRecursive) {
            tracing::warn!(
                "cannot watch {}: {e}; the poll interval still covers it",
                dir.display()
            );
        }
    }
    Ok(debouncer)
}

/// Logging per the home and `[daemon] log_level` (see `cloacina_service::init`).
fn init_logging(
    home: &Home,
    config: &Config,
    args: &Args,
) -> anyhow::Result<cloacina_service::LogControl> {
    Ok(cloacina_service::init(&cloacina_service::LogSettings {
        file: &home.logs().join("cloacina.log"),
        level: &config.daemon.log_level,
        verbose: args.verbose,
        no_color: args.no_color,
    })?)
}

use cloacina::sync::lock;
