//! Global flags resolved once: output format, colour, progress, home directory.

use std::io::IsTerminal;
use std::path::PathBuf;

use cloacina::config::Home;

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

    /// The Cloacina home directory: `--home`, else `~/.cloacina`.
    pub fn home(&self) -> Result<PathBuf, CliError> {
        match &self.home_flag {
            Some(h) => Ok(h.clone()),
            None => Ok(Home::resolve(None).map_err(user)?.root().to_path_buf()),
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

fn user(e: cloacina::config::ConfigError) -> CliError {
    CliError::User(e.to_string())
}

#[cfg(test)]
mod tests {
    use cloacina::config::expand_tilde;
    use std::path::{Path, PathBuf};

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
