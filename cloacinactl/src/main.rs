//! `cloacinactl`: parses arguments, runs the command, turns its error into an exit code.
//!
//! Everything else lives in modules: [`cli`] (the command line), [`api`] (what the
//! server-facing verbs share), [`settings`] (global flags
//! resolved), [`error`] (the exit-code table, in one place), [`http`] (the HTTP client),
//! [`output`] (formats),
//! [`progress`] (spinners), [`commands`] (the verbs).

mod api;
mod cli;
mod commands;
mod config_file;
mod error;
mod http;
mod output;
mod progress;
mod settings;

use clap::{CommandFactory, FromArgMatches};

use crate::cli::{Cli, Command};
use crate::error::CliError;
use crate::settings::Settings;

fn main() {
    let code = match parse() {
        Ok(cli) => match run(&cli) {
            Ok(()) => 0,
            Err(e) => {
                if !matches!(e, CliError::Silent(_)) {
                    eprintln!("Error: {e}");
                }
                e.exit_code()
            }
        },
        Err(code) => code,
    };
    std::process::exit(code);
}

/// Parses the command line. Help and version print and exit 0; usage errors print clap's
/// message and exit with the user-error code (1), not clap's default 2.
fn parse() -> Result<Cli, i32> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let no_color = settings::no_color_env() || args.iter().any(|a| a == "--no-color");
    let command = Cli::command().color(if no_color {
        clap::ColorChoice::Never
    } else {
        clap::ColorChoice::Auto
    });
    let usage = |e: clap::Error| {
        let _ = e.print();
        if e.use_stderr() {
            CliError::Usage(e.to_string()).exit_code()
        } else {
            0
        }
    };
    let matches = command.try_get_matches_from(args).map_err(usage)?;
    Cli::from_arg_matches(&matches).map_err(usage)
}

fn run(cli: &Cli) -> Result<(), CliError> {
    let settings = Settings::resolve(cli)?;
    init_logging(&settings);
    settings.log();
    match &cli.command {
        Command::Package(command) => commands::package::run(&settings, command),
        Command::Daemon(command) => commands::daemon::run(&settings, command),
        Command::Server(command) => commands::server::run(&settings, command),
        Command::Compiler(command) => commands::compiler::run(&settings, command),
        Command::Workflow(command) => commands::workflow::run(&settings, command),
        Command::Execution(command) => commands::execution::run(&settings, command),
        Command::Graph(command) => commands::graph::run(&settings, command),
        Command::Trigger(command) => commands::trigger::run(&settings, command),
        Command::Tenant(command) => commands::tenant::run(&settings, command),
        Command::Key(command) => commands::key::run(&settings, command),
        Command::Status(_) => commands::status::run(&settings),
        Command::Config(command) => commands::config::run(&settings, command),
        Command::Admin(command) => commands::admin::run(&settings, command),
        Command::Completions(args) => commands::completions::run(args),
    }
}

/// Logs go to stderr: `-v` means debug; otherwise RUST_LOG, else warnings only.
fn init_logging(settings: &Settings) {
    use tracing_subscriber::EnvFilter;
    let filter = if settings.verbose {
        EnvFilter::new("debug")
    } else {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"))
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(settings.color_stderr)
        .without_time()
        .with_target(false)
        .try_init();
}
