//! `cloacina-server`: parses flags, sets up logging and the PID file, starts the server and
//! turns SIGINT/SIGTERM into a graceful stop. Everything else is in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use cloacina::config::Home;
use cloacina::daemon::pidfile::{self, PidFile};
use cloacina_server::{Server, ServerConfig};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser, Debug)]
#[command(
    name = "cloacina-server",
    about = "Cloacina's multi-tenant HTTP server",
    version
)]
struct Args {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
    /// Database URL: postgres://USER@HOST/DB or sqlite:///ABSOLUTE/PATH.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Admin key to create on first start (else one is generated into <home>/bootstrap-key).
    #[arg(long, env = "CLOACINA_BOOTSTRAP_KEY", hide_env_values = true)]
    bootstrap_key: Option<String>,
    /// Refuse package uploads without a valid signature by a trusted key.
    #[arg(long, env = "CLOACINA_REQUIRE_SIGNATURES", num_args = 0..=1, default_missing_value = "true")]
    require_signatures: Option<bool>,
    /// A trusted public key file (repeatable); required with --require-signatures.
    #[arg(long = "trusted-key")]
    trusted_keys: Vec<PathBuf>,
    /// The Cloacina home directory (default ~/.cloacina).
    #[arg(long)]
    home: Option<PathBuf>,
    /// Seconds between safety-net reconciliation passes (changes through this replica apply
    /// at once, other replicas' within a second).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    reconcile_interval_s: u64,
    /// Largest package upload, in MiB.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=512))]
    max_upload_mb: u64,
    /// Most HTTP connections served at once; one more is answered 503 and closed.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=65536))]
    max_connections: u64,
    /// Seconds a request's headers may take to arrive (also how long an idle keep-alive
    /// connection stays open).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    header_read_timeout_s: u64,
    /// Seconds a request's body may take to arrive after its headers (raise it for large
    /// uploads over slow links).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
    body_read_timeout_s: u64,
    /// Seconds a client may take none of an answer's bytes (it stopped reading) before its
    /// connection is closed.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
    write_timeout_s: u64,
    /// Seconds a stop waits for running tasks before handing them back.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=86400))]
    shutdown_timeout_s: u64,
    /// Milliseconds a stop keeps serving after `/ready` turns 503, before the listener closes:
    /// behind a load balancer, longer than it takes to mark the replica down (its check
    /// interval times its fall count).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    drain_grace_ms: u64,
    /// Debug-level logging.
    #[arg(short, long)]
    verbose: bool,
    /// No ANSI colours on stderr.
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

async fn run(args: Args) -> anyhow::Result<()> {
    // Handlers first: a stop asked for while the tenants start is a graceful stop.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let database_url = args.database_url.clone().context(
        "no database URL: pass --database-url or set DATABASE_URL (sqlite:///ABSOLUTE/PATH or postgres://USER@HOST/DB)",
    )?;
    // OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_SERVICE_NAME: trace export, off when unset.
    let otel = cloacina_service::OtelSettings::from_env()?;
    let home = Home::resolve(args.home.as_deref())?;
    for dir in [home.root().to_path_buf(), home.logs()] {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut config = ServerConfig::new(database_url, home.root());
    config.bind = args.bind;
    config.bootstrap_key = args.bootstrap_key.clone().filter(|k| !k.trim().is_empty());
    config.require_signatures = args.require_signatures.unwrap_or(false);
    config.trusted_keys = args.trusted_keys.clone();
    config.reconcile_interval = Duration::from_secs(args.reconcile_interval_s);
    config.max_upload_bytes = (args.max_upload_mb * 1024 * 1024) as usize;
    config.shutdown_timeout = Duration::from_secs(args.shutdown_timeout_s);
    config.drain_grace = Duration::from_millis(args.drain_grace_ms);
    config.limits = cloacina_server::serve::Limits {
        max_connections: args.max_connections as usize,
        header_read_timeout: Duration::from_secs(args.header_read_timeout_s),
        body_read_timeout: Duration::from_secs(args.body_read_timeout_s),
        write_timeout: Duration::from_secs(args.write_timeout_s),
    };
    // Held (locked) until we exit: one server per home. Its address is added once bound.
    let pid = PidFile::acquire_as(pidfile::SERVER, &config.pid_file(), None)?;
    // The lock proves every earlier server of this home is gone: its leases can be taken back.
    config.instance = Some(format!(
        "server-{}",
        cloacina::host::instance_id(&config.home).with_context(|| format!(
            "writing {}",
            config.home.join(cloacina::host::INSTANCE_ID_FILE).display()
        ))?
    ));
    let (_log, otel_guard) = cloacina_service::init_with_otel(
        &cloacina_service::LogSettings {
            file: &home.logs().join("cloacina-server.log"),
            level: "info",
            verbose: args.verbose,
            no_color: args.no_color,
        },
        otel.as_ref(),
    )?;
    if let Some(otel) = &otel {
        tracing::info!(endpoint = %otel.endpoint, service = %otel.service_name, "exporting traces (OTLP/gRPC)");
    }

    let server = Server::start(config).await?;
    let addr = server.local_addr()?;
    pid.set_addr(&addr.to_string())?;
    match server.bootstrap {
        cloacina_server::bootstrap::Bootstrap::Generated => tracing::info!(
            file = %home.root().join("bootstrap-key").display(),
            "no API keys existed: a bootstrap admin key was generated; read it from the file (mode 0600)"
        ),
        cloacina_server::bootstrap::Bootstrap::Given => {
            tracing::info!("no API keys existed: the bootstrap key given was recorded")
        }
        cloacina_server::bootstrap::Bootstrap::KeysExist => {}
    }
    tracing::info!(%addr, pid = std::process::id(), backend = server.state().control.backend_name(), "server listening");
    let stop = async move {
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
        }
        tracing::info!(
            "stopping: /ready answers 503; after the drain grace no new connections; finishing requests and draining runs"
        );
        // A second SIGINT exits at once.
        tokio::spawn(async move {
            if sigint.recv().await.is_some() {
                eprintln!("second interrupt: exiting now");
                std::process::exit(1);
            }
        });
    };
    let served = server.serve(stop).await;
    // The last spans go out after the graceful stop; blocking, so off the runtime's workers.
    if otel.is_some() {
        let _ = tokio::task::spawn_blocking(move || otel_guard.shutdown()).await;
    }
    served?;
    tracing::info!("server stopped");
    Ok(())
}
