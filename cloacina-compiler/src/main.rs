//! `cloacina-compiler`: parses flags, sets up logging and the PID file, starts the compiler and
//! turns SIGINT/SIGTERM into a clean stop (an in-flight build is released to pending).
//! Everything else is in the library (`cloacina::compiler`) and this crate's lib.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use cloacina::compiler::{self, CompilerOptions};
use cloacina::config::Home;
use cloacina::daemon::pidfile::PidFile;
use cloacina::package::signing;
use cloacina_compiler::{CompilerConfig, CompilerService};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser, Debug)]
#[command(
    name = "cloacina-compiler",
    about = "Cloacina's build service: compiles pending source packages into loadable, signed archives",
    version
)]
struct Args {
    /// Listen address of /health, /v1/status and /metrics.
    #[arg(long, default_value = "127.0.0.1:9000")]
    bind: SocketAddr,
    /// Database URL (the servers'): postgres://USER@HOST/DB or sqlite:///ABSOLUTE/PATH.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// The Cloacina home directory (default ~/.cloacina): compiler.pid, logs/, compiler/.
    #[arg(long)]
    home: Option<PathBuf>,
    /// How often an idle compiler looks for pending packages, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    poll_interval_ms: u64,
    /// How often a building compiler stamps its claim, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    heartbeat_interval_s: u64,
    /// Seconds without a heartbeat after which a build's claim is reclaimed by any compiler.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(2..=86400))]
    stale_threshold_s: u64,
    /// How often stale claims are swept, in seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    sweep_interval_s: u64,
    /// The longest one build may take, in seconds.
    #[arg(long, default_value_t = 1800, value_parser = clap::value_parser!(u64).range(1..=86400))]
    build_timeout_s: u64,
    /// Claims a package may have (builds whose compiler died) before it is marked failed.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    max_attempts: u32,
    /// Sign built archives with this private key (from 'cloacinactl package keygen'); servers
    /// started with --require-signatures must trust its public key (--trusted-key KEY.pub).
    #[arg(long, value_name = "KEYFILE")]
    signing_key: Option<PathBuf>,
    /// Cargo's shared target directory (dependencies compiled once for every build)
    /// [default: <home>/compiler/target].
    #[arg(long, value_name = "DIR")]
    target_dir: Option<PathBuf>,
    /// The cargo program [default: $CARGO, else cargo on PATH].
    #[arg(long, value_name = "PATH")]
    cargo: Option<PathBuf>,
    /// Pass this variable of the compiler's environment to cargo as well (repeatable; e.g. a
    /// proxy). Builds otherwise get only PATH, HOME, TMPDIR and Rust's own variables.
    #[arg(long = "pass-env", value_name = "NAME")]
    pass_env: Vec<String>,
    /// Debug-level logging.
    #[arg(short, long)]
    verbose: bool,
    /// No ANSI colours on stderr.
    #[arg(long)]
    no_color: bool,
}

fn main() {
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
            Ok(()) => 0,
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

fn options(args: &Args, home: &Home) -> anyhow::Result<CompilerOptions> {
    let mut o = CompilerOptions::new(home.root());
    o.poll_interval = Duration::from_millis(args.poll_interval_ms);
    o.heartbeat_interval = Duration::from_secs(args.heartbeat_interval_s);
    o.stale_threshold = Duration::from_secs(args.stale_threshold_s);
    o.sweep_interval = Duration::from_secs(args.sweep_interval_s);
    o.build_timeout = Duration::from_secs(args.build_timeout_s);
    o.max_attempts = args.max_attempts as i32;
    if let Some(dir) = &args.target_dir {
        o.target_dir =
            std::path::absolute(dir).with_context(|| format!("--target-dir {}", dir.display()))?;
    }
    if let Some(cargo) = &args.cargo {
        o.cargo = OsString::from(cargo);
    }
    o.cargo_env = compiler::cargo_environment(std::env::vars_os(), &args.pass_env)
        .map_err(anyhow::Error::msg)?;
    if let Some(path) = &args.signing_key {
        let key = signing::load_signing_key(path)?;
        o.signing_key = Some(Arc::new(key));
    }
    o.validate()?;
    Ok(o)
}

async fn run(args: Args) -> anyhow::Result<()> {
    // Handlers first: a stop asked for while the compiler starts is a clean stop.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let database_url = args.database_url.clone().filter(|u| !u.trim().is_empty()).context(
        "no database URL: pass --database-url or set DATABASE_URL (the servers' database: sqlite:///ABSOLUTE/PATH or postgres://USER@HOST/DB)",
    )?;
    let home = Home::resolve(args.home.as_deref())?;
    for dir in [home.root().to_path_buf(), home.logs()] {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let options = options(&args, &home)?;
    // Held (locked) until we exit: one compiler per home. Its address is added once bound.
    let pid = PidFile::acquire_as(compiler::SERVICE, &home.compiler_pid(), None)?;
    let _log = cloacina_service::init(&cloacina_service::LogSettings {
        file: &home.logs().join("cloacina-compiler.log"),
        level: "info",
        verbose: args.verbose,
        no_color: args.no_color,
    })?;
    let signing = options
        .signing_key
        .as_ref()
        .map(|k| k.public_key().to_hex());
    let service = CompilerService::start(CompilerConfig {
        database_url,
        bind: args.bind,
        options,
    })
    .await?;
    let addr = service.local_addr()?;
    pid.set_addr(&addr.to_string())?;
    tracing::info!(
        %addr, pid = std::process::id(),
        backend = service.compiler().store().backend_name(),
        worker = %service.compiler().options().worker_id,
        signing_key = signing.as_deref().unwrap_or("none"),
        "compiler listening"
    );
    let stop = async move {
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
        }
        // A second SIGINT exits at once (the in-flight build's claim is then swept later).
        tokio::spawn(async move {
            if sigint.recv().await.is_some() {
                eprintln!("second interrupt: exiting now");
                std::process::exit(1);
            }
        });
    };
    service.serve(stop).await?;
    tracing::info!("compiler stopped");
    Ok(())
}
