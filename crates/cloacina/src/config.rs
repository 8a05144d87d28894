//! `config.toml` and the Cloacina home directory, shared by `cloacinactl` and the daemon.
//!
//! The file is optional and every field has a default; unknown keys are an error that names
//! the key, so a typo never silently does nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why the configuration or home directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("invalid configuration in {path}: {message}")]
    Invalid { path: String, message: String },
    #[error("cannot find your home directory: $HOME is not set; pass --home PATH")]
    NoHome,
}

impl crate::error::ErrorCode for ConfigError {
    fn code(&self) -> &'static str {
        "config_invalid"
    }
}

/// The whole `config.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Database URL for commands that need one (admin, server start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// The profile used when `--profile` is not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_profile: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub profiles: BTreeMap<String, Profile>,
    #[serde(default)]
    pub daemon: DaemonConfig,
    #[serde(default)]
    pub compiler: CompilerConfig,
    #[serde(default)]
    pub watch: WatchConfig,
}

/// A server-targeting profile: `[profiles.<name>]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Raw key, `env:VAR`, `file:PATH` (`keyring:NAME` is reserved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

/// `[daemon]`: every key of the CLI reference, with its default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Reconciler fallback poll interval (the file watcher gives immediate detection).
    pub poll_interval_ms: u64,
    /// trace / debug / info / warn / error.
    pub log_level: String,
    /// Graceful drain timeout on SIGINT/SIGTERM.
    pub shutdown_timeout_s: u64,
    /// File-watcher debounce.
    pub watcher_debounce_ms: u64,
    /// Custom-poll trigger base interval.
    pub trigger_poll_interval_ms: u64,
    /// Most catch-up executions per cron schedule; absent means unlimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cron_max_catchup: Option<u32>,
    /// Cron recovery sweeper cadence.
    pub cron_recovery_interval_s: u64,
    /// How late a cron fire may be before the sweeper reclaims it.
    pub cron_lost_threshold_min: u64,
    /// Refuse archives without a valid signature by one of `trusted_keys`.
    pub require_signatures: bool,
    /// Public key files (`KEYFILE.pub` of `cloacinactl package keygen`) whose signatures are
    /// trusted; each must exist, or the daemon does not start.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trusted_keys: Vec<String>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            poll_interval_ms: 500,
            log_level: "info".to_string(),
            shutdown_timeout_s: 30,
            watcher_debounce_ms: 500,
            trigger_poll_interval_ms: 1000,
            cron_max_catchup: None,
            cron_recovery_interval_s: 300,
            cron_lost_threshold_min: 10,
            require_signatures: false,
            trusted_keys: Vec::new(),
        }
    }
}

/// A numeric setting's valid range, so a value that would panic, spin or overflow is refused
/// at start (and at reload) with the key, the value and the range named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The key as a user writes it (`daemon.poll_interval_ms`).
    pub key: &'static str,
    pub min: u64,
    pub max: u64,
    /// The range in words, e.g. `10 ms..1 h`.
    pub human: &'static str,
}

/// Why a setting (from `config.toml` or a flag) is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    #[error("{key} = {value} is out of range: it must be between {min} and {max} ({human})")]
    OutOfRange {
        key: String,
        value: u64,
        min: u64,
        max: u64,
        human: &'static str,
    },
    #[error("{key} '{value}' is not one of: {allowed}")]
    NotOneOf {
        key: String,
        value: String,
        allowed: String,
    },
}

impl crate::error::ErrorCode for SettingError {
    fn code(&self) -> &'static str {
        "config_invalid"
    }
}

impl Bounds {
    /// `value` if it lies in the range, else an error naming the key.
    pub fn check(&self, value: u64) -> Result<u64, SettingError> {
        self.check_as(self.key, value)
    }

    /// Like [`Bounds::check`], naming `name` instead (a flag: `--poll-interval`).
    pub fn check_as(&self, name: &str, value: u64) -> Result<u64, SettingError> {
        if (self.min..=self.max).contains(&value) {
            Ok(value)
        } else {
            Err(SettingError::OutOfRange {
                key: name.to_string(),
                value,
                min: self.min,
                max: self.max,
                human: self.human,
            })
        }
    }
}

/// The valid range of each numeric `[daemon]` key (documented in docs/daemon.md).
pub mod bounds {
    use super::Bounds;

    /// 10 ms..1 h: below 10 ms the fallback pass would busy-loop; 0 panicked.
    pub const POLL_INTERVAL_MS: Bounds = Bounds {
        key: "daemon.poll_interval_ms",
        min: 10,
        max: 3_600_000,
        human: "10 ms..1 h",
    };
    /// 0..1 day: 0 releases running tasks at once; larger overflowed `daemon stop`'s deadline.
    pub const SHUTDOWN_TIMEOUT_S: Bounds = Bounds {
        key: "daemon.shutdown_timeout_s",
        min: 0,
        max: 86_400,
        human: "0 s..1 day",
    };
    /// 10 ms..1 min: 0 made the watcher spin a core.
    pub const WATCHER_DEBOUNCE_MS: Bounds = Bounds {
        key: "daemon.watcher_debounce_ms",
        min: 10,
        max: 60_000,
        human: "10 ms..1 min",
    };
    /// 10 ms..1 h.
    pub const TRIGGER_POLL_INTERVAL_MS: Bounds = Bounds {
        key: "daemon.trigger_poll_interval_ms",
        min: 10,
        max: 3_600_000,
        human: "10 ms..1 h",
    };
    /// 1..100000 runs (a schedule always keeps at least one catch-up run).
    pub const CRON_MAX_CATCHUP: Bounds = Bounds {
        key: "daemon.cron_max_catchup",
        min: 1,
        max: 100_000,
        human: "1..100000 runs",
    };
    /// 1 s..1 day.
    pub const CRON_RECOVERY_INTERVAL_S: Bounds = Bounds {
        key: "daemon.cron_recovery_interval_s",
        min: 1,
        max: 86_400,
        human: "1 s..1 day",
    };
    /// 1 min..1 week.
    pub const CRON_LOST_THRESHOLD_MIN: Bounds = Bounds {
        key: "daemon.cron_lost_threshold_min",
        min: 1,
        max: 10_080,
        human: "1 min..1 week",
    };
}

/// The accepted `daemon.log_level` values.
pub const LOG_LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];

impl DaemonConfig {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms.max(1))
    }
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_s)
    }
    pub fn watcher_debounce(&self) -> Duration {
        Duration::from_millis(self.watcher_debounce_ms.max(1))
    }
    pub fn trigger_poll_interval(&self) -> Duration {
        Duration::from_millis(self.trigger_poll_interval_ms.max(1))
    }
    pub fn cron_recovery_interval(&self) -> Duration {
        Duration::from_secs(self.cron_recovery_interval_s.max(1))
    }
    pub fn cron_lost_threshold(&self) -> Duration {
        Duration::from_secs(self.cron_lost_threshold_min.saturating_mul(60))
    }

    /// Every key checked against its documented range ([`bounds`]) and the log level against
    /// [`LOG_LEVELS`]; the first problem is returned.
    pub fn validate(&self) -> Result<(), SettingError> {
        if !LOG_LEVELS.contains(&self.log_level.to_ascii_lowercase().as_str()) {
            return Err(SettingError::NotOneOf {
                key: "daemon.log_level".to_string(),
                value: self.log_level.clone(),
                allowed: LOG_LEVELS.join(", "),
            });
        }
        bounds::POLL_INTERVAL_MS.check(self.poll_interval_ms)?;
        bounds::SHUTDOWN_TIMEOUT_S.check(self.shutdown_timeout_s)?;
        bounds::WATCHER_DEBOUNCE_MS.check(self.watcher_debounce_ms)?;
        bounds::TRIGGER_POLL_INTERVAL_MS.check(self.trigger_poll_interval_ms)?;
        if let Some(n) = self.cron_max_catchup {
            bounds::CRON_MAX_CATCHUP.check(u64::from(n))?;
        }
        bounds::CRON_RECOVERY_INTERVAL_S.check(self.cron_recovery_interval_s)?;
        bounds::CRON_LOST_THRESHOLD_MIN.check(self.cron_lost_threshold_min)?;
        Ok(())
    }

    /// `key: old -> new` for each setting that differs from `self` in `new`, for the reload
    /// log line.
    pub fn changes(&self, new: &DaemonConfig) -> Vec<String> {
        let mut out = Vec::new();
        let mut diff = |key: &str, old: String, new: String| {
            if old != new {
                out.push(format!("{key}: {old} -> {new}"));
            }
        };
        diff(
            "poll_interval_ms",
            self.poll_interval_ms.to_string(),
            new.poll_interval_ms.to_string(),
        );
        diff("log_level", self.log_level.clone(), new.log_level.clone());
        diff(
            "shutdown_timeout_s",
            self.shutdown_timeout_s.to_string(),
            new.shutdown_timeout_s.to_string(),
        );
        diff(
            "watcher_debounce_ms",
            self.watcher_debounce_ms.to_string(),
            new.watcher_debounce_ms.to_string(),
        );
        diff(
            "trigger_poll_interval_ms",
            self.trigger_poll_interval_ms.to_string(),
            new.trigger_poll_interval_ms.to_string(),
        );
        let catchup = |c: Option<u32>| c.map_or_else(|| "unlimited".to_string(), |n| n.to_string());
        diff(
            "cron_max_catchup",
            catchup(self.cron_max_catchup),
            catchup(new.cron_max_catchup),
        );
        diff(
            "cron_recovery_interval_s",
            self.cron_recovery_interval_s.to_string(),
            new.cron_recovery_interval_s.to_string(),
        );
        diff(
            "cron_lost_threshold_min",
            self.cron_lost_threshold_min.to_string(),
            new.cron_lost_threshold_min.to_string(),
        );
        diff(
            "require_signatures",
            self.require_signatures.to_string(),
            new.require_signatures.to_string(),
        );
        diff(
            "trusted_keys",
            format!("{:?}", self.trusted_keys),
            format!("{:?}", new.trusted_keys),
        );
        out
    }
}

/// `[compiler]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompilerConfig {
    /// Where `compiler status` / `compiler health` probe.
    pub local_addr: String,
}

impl Default for CompilerConfig {
    fn default() -> Self {
        Self {
            local_addr: "127.0.0.1:9000".to_string(),
        }
    }
}

/// `[watch]`: extra package folders for the daemon (`~` expanded).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchConfig {
    pub directories: Vec<String>,
}

impl Config {
    /// Parses config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Invalid {
            path: path.display().to_string(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        config.daemon.validate().map_err(|e| ConfigError::Invalid {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(config)
    }

    /// Loads `path`; a missing file is the default configuration.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(ConfigError::Read {
                path: path.display().to_string(),
                message: e.to_string(),
            }),
        }
    }
}

/// `~` or `~/...` expanded with `$HOME`; other paths unchanged.
pub fn expand_tilde(path: &Path) -> Result<PathBuf, ConfigError> {
    let Some(text) = path.to_str() else {
        return Ok(path.to_path_buf());
    };
    let rest = match text {
        "~" => "",
        t if t.starts_with("~/") => &t[2..],
        _ => return Ok(path.to_path_buf()),
    };
    let home = match std::env::var_os("HOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h),
        _ => return Err(ConfigError::NoHome),
    };
    Ok(if rest.is_empty() {
        home
    } else {
        home.join(rest)
    })
}

/// The Cloacina home directory (`~/.cloacina` or `--home`) and every path under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// `explicit` (from `--home`, `~` expanded) or `~/.cloacina`.
    pub fn resolve(explicit: Option<&Path>) -> Result<Home, ConfigError> {
        let root = match explicit {
            Some(p) => expand_tilde(p)?,
            None => expand_tilde(Path::new("~/.cloacina"))?,
        };
        Ok(Home { root })
    }

    pub fn at(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    pub fn database(&self) -> PathBuf {
        self.root.join("cloacina.db")
    }
    pub fn packages(&self) -> PathBuf {
        self.root.join("packages")
    }
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn daemon_socket(&self) -> PathBuf {
        self.root.join("daemon.sock")
    }
    pub fn daemon_pid(&self) -> PathBuf {
        self.root.join("daemon.pid")
    }
    pub fn server_pid(&self) -> PathBuf {
        self.root.join("server.pid")
    }
    pub fn compiler_pid(&self) -> PathBuf {
        self.root.join("compiler.pid")
    }
    pub fn bootstrap_key(&self) -> PathBuf {
        self.root.join("bootstrap-key")
    }
    /// Content-addressed copies of package libraries.
    pub fn library_cache(&self) -> PathBuf {
        self.root.join("cache").join("libraries")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_cli_reference() {
        let c = Config::parse("", Path::new("config.toml")).expect("empty is fine");
        assert_eq!(c.daemon, DaemonConfig::default());
        assert_eq!(c.daemon.poll_interval_ms, 500);
        assert_eq!(c.daemon.shutdown_timeout_s, 30);
        assert_eq!(c.daemon.watcher_debounce_ms, 500);
        assert_eq!(c.daemon.trigger_poll_interval_ms, 1000);
        assert_eq!(c.daemon.cron_max_catchup, None);
        assert_eq!(c.daemon.cron_recovery_interval_s, 300);
        assert_eq!(c.daemon.cron_lost_threshold_min, 10);
        assert_eq!(c.compiler.local_addr, "127.0.0.1:9000");
    }

    #[test]
    fn the_reference_example_parses() {
        let text = r#"
database_url = "sqlite:///path/to/cloacina.db"
default_profile = "prod"
[profiles.prod]
server = "https://api.example.com"
api_key = "env:CLOACINA_API_KEY"
[profiles.staging]
server = "https://staging.example.com"
api_key = "file:/etc/cloacina/staging-key"
[daemon]
poll_interval_ms = 500
log_level = "info"
shutdown_timeout_s = 30
watcher_debounce_ms = 500
trigger_poll_interval_ms = 1000
cron_max_catchup = 100
cron_recovery_interval_s = 300
cron_lost_threshold_min = 10
[compiler]
local_addr = "127.0.0.1:9000"
[watch]
directories = ["~/my-workflows", "/opt/cloacina/packages"]
"#;
        let c = Config::parse(text, Path::new("config.toml")).expect("valid");
        assert_eq!(c.default_profile.as_deref(), Some("prod"));
        assert_eq!(c.profiles.len(), 2);
        assert_eq!(c.daemon.cron_max_catchup, Some(100));
        assert_eq!(c.watch.directories.len(), 2);
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = Config::parse(
            "[daemon]\npoll_intervall_ms = 5\n",
            Path::new("/h/config.toml"),
        )
        .expect_err("typo");
        let text = e.to_string();
        assert!(
            text.starts_with("invalid configuration in /h/config.toml:"),
            "{text}"
        );
        assert!(text.contains("poll_intervall_ms"), "{text}");
        let e =
            Config::parse("colour = true\n", Path::new("c.toml")).expect_err("unknown top-level");
        assert!(e.to_string().contains("colour"), "{e}");
        let e = Config::parse("[daemon]\nlog_level = \"loud\"\n", Path::new("c.toml"))
            .expect_err("bad level");
        assert!(
            e.to_string()
                .contains("daemon.log_level 'loud' is not one of"),
            "{e}"
        );
    }

    /// Each numeric key refuses the values outside its documented range (0 used to panic or
    /// spin; a huge shutdown timeout overflowed `daemon stop`), naming key, value and range.
    #[test]
    fn numeric_keys_are_checked_against_their_ranges() {
        let cases = [
            ("poll_interval_ms", 0u64, 10u64, 3_600_000u64),
            ("shutdown_timeout_s", u64::MAX, 0, 86_400),
            ("watcher_debounce_ms", 0, 10, 60_000),
            ("trigger_poll_interval_ms", 0, 10, 3_600_000),
            ("cron_max_catchup", 0, 1, 100_000),
            ("cron_recovery_interval_s", 0, 1, 86_400),
            ("cron_lost_threshold_min", 0, 1, 10_080),
        ];
        for (key, bad, min, max) in cases {
            let parse =
                |v: u64| Config::parse(&format!("[daemon]\n{key} = {v}\n"), Path::new("c.toml"));
            for ok in [min, max] {
                parse(ok).unwrap_or_else(|e| panic!("{key} = {ok} is in range: {e}"));
            }
            for out in [bad.min(i64::MAX as u64), max + 1] {
                if out >= min && out <= max {
                    continue;
                }
                let e = parse(out).expect_err("out of range");
                let text = e.to_string();
                assert!(
                    text.contains(&format!("daemon.{key} = {out} is out of range"))
                        && text.contains(&format!("between {min} and {max}")),
                    "{text}"
                );
            }
        }
        let flag = bounds::POLL_INTERVAL_MS
            .check_as("--poll-interval", 0)
            .expect_err("0");
        assert_eq!(
            flag.to_string(),
            "--poll-interval = 0 is out of range: it must be between 10 and 3600000 (10 ms..1 h)"
        );
    }

    #[test]
    fn changes_name_each_key_that_differs() {
        let old = DaemonConfig::default();
        let new = DaemonConfig {
            log_level: "debug".to_string(),
            shutdown_timeout_s: 1,
            cron_max_catchup: Some(3),
            ..DaemonConfig::default()
        };
        assert_eq!(
            old.changes(&new),
            vec![
                "log_level: info -> debug",
                "shutdown_timeout_s: 30 -> 1",
                "cron_max_catchup: unlimited -> 3"
            ]
        );
        assert!(old.changes(&old).is_empty());
    }

    #[test]
    fn home_layout() {
        let h = Home::at("/x");
        assert_eq!(h.config(), PathBuf::from("/x/config.toml"));
        assert_eq!(h.database(), PathBuf::from("/x/cloacina.db"));
        assert_eq!(h.daemon_socket(), PathBuf::from("/x/daemon.sock"));
        assert_eq!(h.daemon_pid(), PathBuf::from("/x/daemon.pid"));
        assert_eq!(h.packages(), PathBuf::from("/x/packages"));
        assert_eq!(h.logs(), PathBuf::from("/x/logs"));
        assert_eq!(
            expand_tilde(Path::new("/abs")).expect("abs"),
            PathBuf::from("/abs")
        );
    }
}
