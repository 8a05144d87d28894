//! The server's settings, as `cloacina-server`'s flags and environment give them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything [`crate::Server::start`] needs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    /// `postgres://…` or `sqlite://…`: the `public` tenant's (and the control plane's) database.
    pub database_url: String,
    /// The home directory: PID file, bootstrap key, logs, caches, SQLite tenant files.
    pub home: PathBuf,
    /// A pre-supplied bootstrap admin key (used only while the database has no keys).
    pub bootstrap_key: Option<String>,
    pub require_signatures: bool,
    /// Public key files whose signatures are trusted.
    pub trusted_keys: Vec<PathBuf>,
    /// The safety-net pass of the package reconciler; changes made through this replica apply
    /// at once, other replicas' within this interval.
    pub reconcile_interval: Duration,
    /// Largest package upload accepted.
    pub max_upload_bytes: usize,
    /// How long a stop waits for running tasks.
    pub shutdown_timeout: Duration,
    /// How long a stop keeps accepting and serving after `/ready` turns 503, so a load
    /// balancer polling `/ready` takes the replica out before its listener closes (else the
    /// connections it sends meanwhile are refused or cut). Zero: the listener closes at once.
    pub drain_grace: Duration,
    /// Connection limits and request read timeouts.
    pub limits: crate::serve::Limits,
    /// This server's instance name, set by a process that holds the home's `server.pid` lock
    /// (see [`cloacina::host::HostConfig::instance`]): tasks a killed predecessor on this home
    /// held are taken back at start instead of after their leases expire. `None`: no such
    /// proof (tests, embedders), leases expire as usual.
    pub instance: Option<String>,
}

impl ServerConfig {
    /// Defaults for everything but the database and home.
    pub fn new(database_url: impl Into<String>, home: impl Into<PathBuf>) -> Self {
        ServerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: database_url.into(),
            home: home.into(),
            bootstrap_key: None,
            require_signatures: false,
            trusted_keys: Vec::new(),
            reconcile_interval: Duration::from_secs(5),
            max_upload_bytes: 64 * 1024 * 1024,
            shutdown_timeout: Duration::from_secs(30),
            drain_grace: Duration::ZERO,
            limits: crate::serve::Limits::default(),
            instance: None,
        }
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.home.join("server-cache")
    }

    pub fn bootstrap_key_file(&self) -> PathBuf {
        self.home.join("bootstrap-key")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.home.join("server.pid")
    }
}
