//! Global flags resolved once: output format, colour, progress, home directory; and the
//! server-targeting flags (`--server`, `--api-key`, `--profile`) resolved against
//! `config.toml`'s profiles (spec: CLI reference, "Profile resolution", "API key schemes").

use std::io::IsTerminal;
use std::path::PathBuf;

use cloacina::config::{Config, Home, Profile};

use crate::cli::{Cli, OutputFormat};
use crate::error::CliError;

/// What every command needs to know about how it was invoked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub verbose: bool,
    /// `--home` as given (`~` expanded), if given; see [`Settings::home`].
    home_flag: Option<PathBuf>,
    pub profile: Option<String>,
    pub server: Option<String>,
    pub api_key: Option<String>,
    pub tenant: String,
    pub output: OutputFormat,
    /// `--no-color` given or NO_COLOR set: passed on to the daemon `daemon start` runs.
    pub no_color: bool,
    /// ANSI colours on stdout (table output).
    pub color: bool,
    /// ANSI colours on stderr (logs, cargo's output).
    pub color_stderr: bool,
    /// Spinners on stderr: only when stderr is a terminal.
    pub progress: bool,
}

/// Whether the NO_COLOR convention (<https://no-color.org>) asks for no colour.
pub fn no_color_env() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

impl Settings {
    pub fn resolve(cli: &Cli) -> Result<Settings, CliError> {
        let g = &cli.global;
        let given = cli.command.output().or(cli.output);
        let output = match (g.json, given) {
            (true, Some(f)) if f != OutputFormat::Json => {
                return Err(CliError::Usage(format!(
                    "--json conflicts with --output {}; use one of them",
                    f.name()
                )));
            }
            (true, _) => OutputFormat::Json,
            (false, Some(f)) => f,
            (false, None) => OutputFormat::Table,
        };
        let no_color = g.no_color || no_color_env();
        let home_flag = match &g.home {
            Some(h) => Some(Home::resolve(Some(h)).map_err(user)?.root().to_path_buf()),
            None => None,
        };
        Ok(Settings {
            verbose: g.verbose,
            home_flag,
            profile: g.profile.clone(),
            server: g.server.clone(),
            api_key: g.api_key.clone(),
            tenant: g.tenant.clone(),
            output,
            no_color,
            color: !no_color && std::io::stdout().is_terminal(),
            color_stderr: !no_color && std::io::stderr().is_terminal(),
            progress: std::io::stderr().is_terminal(),
        })
    }

    /// Plain settings for unit tests: table output, no colour, no progress.
    #[cfg(test)]
    pub fn for_tests() -> Settings {
        Settings {
            verbose: false,
            home_flag: None,
            profile: None,
            server: None,
            api_key: None,
            tenant: "public".to_string(),
            output: OutputFormat::Table,
            no_color: true,
            color: false,
            color_stderr: false,
            progress: false,
        }
    }

    /// The Cloacina home directory: `--home`, else `~/.cloacina`.
    pub fn home(&self) -> Result<PathBuf, CliError> {
        match &self.home_flag {
            Some(h) => Ok(h.clone()),
            None => Ok(Home::resolve(None).map_err(user)?.root().to_path_buf()),
        }
    }

    /// `<home>/config.toml` (the defaults when it does not exist).
    pub fn config(&self) -> Result<Config, CliError> {
        Config::load(&Home::at(self.home()?).config()).map_err(user)
    }

    /// The profile that applies: `--profile NAME`, else the config's `default_profile`, else
    /// none. A name that is not in the config is an error, so a typo never silently targets
    /// nothing.
    pub fn profile(&self, config: &Config) -> Result<Option<(String, Profile)>, CliError> {
        let (name, from) = match (&self.profile, &config.default_profile) {
            (Some(name), _) => (name, "--profile"),
            (None, Some(name)) => (name, "default_profile"),
            (None, None) => return Ok(None),
        };
        match config.profiles.get(name) {
            Some(p) => Ok(Some((name.clone(), p.clone()))),
            None => {
                let known: Vec<&str> = config.profiles.keys().map(String::as_str).collect();
                let existing = if known.is_empty() {
                    "no profiles exist".to_string()
                } else {
                    format!("the profiles are: {}", known.join(", "))
                };
                Err(CliError::User(format!(
                    "profile '{name}' ({from}) is not defined in {} ({existing}); create it with 'cloacinactl config profile set {name} --server URL --api-key KEY' or choose another",
                    Home::at(self.home()?).config().display()
                )))
            }
        }
    }

    /// The server URL: `--server`, else the profile's `server`; `None` when neither is set.
    pub fn server_url(&self, config: &Config) -> Result<Option<String>, CliError> {
        if let Some(url) = &self.server {
            return Ok(Some(url.clone()));
        }
        Ok(self.profile(config)?.and_then(|(_, p)| p.server))
    }

    /// The API key, decoded by scheme ([`decode_api_key`]): `--api-key`, else the profile's
    /// `api_key`; `None` when neither is set.
    pub fn api_key(&self, config: &Config) -> Result<Option<String>, CliError> {
        if let Some(spec) = &self.api_key {
            return decode_api_key(spec, "--api-key").map(Some);
        }
        match self.profile(config)? {
            Some((
                name,
                Profile {
                    api_key: Some(spec),
                    ..
                },
            )) => decode_api_key(&spec, &format!("profile '{name}' api_key")).map(Some),
            _ => Ok(None),
        }
    }

    /// Logs the resolved settings at debug level (never the API key itself).
    pub fn log(&self) {
        tracing::debug!(
            home = ?self.home().ok(),
            profile = ?self.profile,
            server = ?self.server,
            api_key = if self.api_key.is_some() { "(given)" } else { "(none)" },
            tenant = %self.tenant,
            output = self.output.name(),
            color = self.color,
            progress = self.progress,
            verbose = self.verbose,
            "settings"
        );
    }
}

/// `~` expansion (the library's), with its error as a user error.
pub fn expand_tilde(path: &std::path::Path) -> Result<PathBuf, CliError> {
    cloacina::config::expand_tilde(path).map_err(user)
}

/// An API key given as `raw`, `env:VAR`, `file:PATH` or `keyring:NAME` (reserved, refused).
/// `origin` names where the value came from in messages; the key itself is never printed.
pub fn decode_api_key(spec: &str, origin: &str) -> Result<String, CliError> {
    let key = if let Some(var) = spec.strip_prefix("env:") {
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
            Ok(_) => {
                return Err(CliError::User(format!(
                    "{origin}: the environment variable {var} is empty"
                )));
            }
            Err(std::env::VarError::NotPresent) => {
                return Err(CliError::User(format!(
                    "{origin}: the environment variable {var} is not set"
                )));
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(CliError::User(format!(
                    "{origin}: the environment variable {var} is not valid UTF-8"
                )));
            }
        }
    } else if let Some(path) = spec.strip_prefix("file:") {
        let path = expand_tilde(std::path::Path::new(path))?;
        let text = std::fs::read_to_string(&path).map_err(|e| {
            CliError::User(format!("{origin}: cannot read {}: {e}", path.display()))
        })?;
        match text.lines().map(str::trim).find(|l| !l.is_empty()) {
            Some(line) => line.to_string(),
            None => {
                return Err(CliError::User(format!(
                    "{origin}: {} holds no key (it is empty)",
                    path.display()
                )));
            }
        }
    } else if spec.starts_with("keyring:") {
        return Err(CliError::User(format!(
            "{origin}: the keyring: scheme is reserved and not supported yet; use a raw key, env:VAR or file:PATH"
        )));
    } else {
        spec.trim().to_string()
    };
    if key.is_empty() {
        return Err(CliError::User(format!("{origin}: the API key is empty")));
    }
    Ok(key)
}

fn user(e: cloacina::config::ConfigError) -> CliError {
    CliError::User(e.to_string())
}

#[cfg(test)]
mod tests {
    use cloacina::config::expand_tilde;
    use std::path::{Path, PathBuf};

    use super::decode_api_key;

    #[test]
    fn api_key_schemes() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("key");
        std::fs::write(&file, "\n  clk_from_file  \nsecond\n").expect("write");
        let spec = format!("file:{}", file.display());
        assert_eq!(decode_api_key(&spec, "t").expect("file"), "clk_from_file");
        assert_eq!(decode_api_key("clk_raw", "t").expect("raw"), "clk_raw");
        // PATH is always set in tests; an unset variable is named in the error.
        let path = std::env::var("PATH").expect("PATH");
        assert_eq!(decode_api_key("env:PATH", "t").expect("env"), path.trim());
        let err =
            decode_api_key("env:CLOACINA_TEST_SURELY_UNSET_VAR", "--api-key").expect_err("unset");
        assert!(
            err.to_string()
                .contains("CLOACINA_TEST_SURELY_UNSET_VAR is not set"),
            "{err}"
        );
        let err = decode_api_key("keyring:prod", "t").expect_err("reserved");
        assert!(err.to_string().contains("not supported yet"), "{err}");
        std::fs::write(&file, "\n \n").expect("write");
        let err = decode_api_key(&spec, "t").expect_err("empty file");
        assert!(err.to_string().contains("holds no key"), "{err}");
        assert!(decode_api_key("file:/nonexistent/k", "t").is_err());
    }

    #[test]
    fn tilde_expansion() {
        let home = PathBuf::from(std::env::var_os("HOME").expect("HOME is set in tests"));
        assert_eq!(expand_tilde(Path::new("~")).expect("ok"), home);
        assert_eq!(
            expand_tilde(Path::new("~/x/y")).expect("ok"),
            home.join("x/y")
        );
        assert_eq!(
            expand_tilde(Path::new("/abs/~")).expect("ok"),
            PathBuf::from("/abs/~")
        );
        assert_eq!(
            expand_tilde(Path::new("~user/x")).expect("ok"),
            PathBuf::from("~user/x")
        );
    }
}
