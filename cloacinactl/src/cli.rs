//! The command line: global flags and the noun-verb tree (clap derive).
//!
//! Global flags are accepted before the noun and, except `-o/--output`, anywhere after it.
//! `-o/--output` is not propagated by clap because `package pack` uses `-o` for its output
//! file; instead the top level and every verb that prints a result declare their own
//! `-o/--output`, and `package pack` declares `-o/--out FILE` plus a long-only `--output`.
//! [`crate::settings::Settings::resolve`] merges them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// cloacinactl: build, pack, sign and ship Cloacina workflow packages, and manage the
/// Cloacina services.
#[derive(Debug, Parser)]
#[command(name = "cloacinactl", version, propagate_version = true)]
#[command(about = "The Cloacina command-line interface")]
#[command(
    after_help = "Exit codes: 0 success, 1 user error, 2 network/transport failure, \
3 not found, 4 authentication failure, 5 server-side rejection."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    /// Output format: table, json, yaml or id.
    #[arg(short = 'o', long = "output", value_enum, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,

    #[command(subcommand)]
    pub command: Command,
}

/// Flags that apply to every subcommand.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Enable debug-level logging on stderr (overrides RUST_LOG).
    #[arg(short = 'v', long, global = true)]
    pub verbose: bool,

    /// Override the Cloacina home directory [default: ~/.cloacina].
    #[arg(long, global = true, value_name = "PATH")]
    pub home: Option<PathBuf>,

    /// Select a named profile from <home>/config.toml.
    #[arg(long, global = true, value_name = "NAME")]
    pub profile: Option<String>,

    /// Override the profile's server URL.
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,

    /// Override the profile's API key (raw, env:VAR or file:PATH).
    #[arg(long, global = true, value_name = "KEY")]
    pub api_key: Option<String>,

    /// Tenant name for tenant-scoped commands.
    #[arg(long, global = true, value_name = "NAME", default_value = "public")]
    pub tenant: String,

    /// Shorthand for -o json.
    #[arg(long, global = true)]
    pub json: bool,

    /// Disable ANSI colors (also honoured: the NO_COLOR environment variable).
    #[arg(long, global = true)]
    pub no_color: bool,
}

/// How results are printed on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable text.
    Table,
    /// Pretty-printed JSON.
    Json,
    /// YAML.
    Yaml,
    /// One identifier per line.
    Id,
}

impl OutputFormat {
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Table => "table",
            OutputFormat::Json => "json",
            OutputFormat::Yaml => "yaml",
            OutputFormat::Id => "id",
        }
    }
}

/// `-o/--output FORMAT` on a verb.
#[derive(Debug, Args)]
pub struct OutputArg {
    /// Output format: table, json, yaml or id.
    #[arg(short = 'o', long = "output", value_enum, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Author, build, pack, sign and verify workflow packages.
    #[command(subcommand)]
    Package(PackageCommand),
    /// Run and probe the workstation daemon.
    #[command(subcommand)]
    Daemon(DaemonCommand),
    /// Run and probe the HTTP API server.
    #[command(subcommand)]
    Server(ServerCommand),
}

#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Run the server in the foreground (execs cloacina-server).
    Start(ServerStartArgs),
    /// Stop the server recorded in <home>/server.pid (SIGTERM, or SIGKILL with --force).
    Stop(DaemonStopArgs),
    /// Print the server's status (GET /v1/health/status; needs an API key).
    Status(DaemonStatusArgs),
    /// Exit 0 if the server answers GET /health with 200, 2 otherwise; prints nothing.
    Health,
}

/// Secrets (the database URL, the bootstrap key) reach the server through its environment,
/// never its command line, where any local user could read them.
#[derive(Debug, Args)]
pub struct ServerStartArgs {
    /// Listen address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// Database connection URL (sqlite:///path/to/cloacina.db or postgres://...)
    /// [env: DATABASE_URL; else database_url in config.toml].
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Admin key for the first start; generated (and written to <home>/bootstrap-key) when
    /// absent and no key exists [env: CLOACINA_BOOTSTRAP_KEY].
    #[arg(long, value_name = "KEY")]
    pub bootstrap_key: Option<String>,
    /// Refuse package uploads without a valid signature by a trusted key
    /// [env: CLOACINA_REQUIRE_SIGNATURES].
    #[arg(long)]
    pub require_signatures: bool,
    /// A trusted public key file (KEYFILE.pub) for signature verification. Repeatable.
    #[arg(long = "trusted-key", value_name = "PUBFILE")]
    pub trusted_keys: Vec<PathBuf>,
    /// Reconciler pass interval in seconds [default: the server's].
    #[arg(long, value_name = "N")]
    pub reconcile_interval_s: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Run the daemon in the foreground (execs cloacina-daemon).
    Start(DaemonStartArgs),
    /// Stop the daemon recorded in <home>/daemon.pid (SIGTERM, or SIGKILL with --force).
    Stop(DaemonStopArgs),
    /// Print the daemon's status from its health socket.
    Status(DaemonStatusArgs),
    /// Exit 0 if the daemon answers on its health socket, 2 otherwise; prints nothing.
    Health,
}

#[derive(Debug, Args)]
pub struct DaemonStartArgs {
    /// Another package folder to watch (repeatable); merged with <home>/packages and
    /// [watch] directories.
    #[arg(long = "watch-dir", value_name = "DIR")]
    pub watch_dirs: Vec<PathBuf>,
    /// Reconciler fallback poll interval in milliseconds, 10..3600000 [default: 500].
    #[arg(long, value_name = "MS")]
    pub poll_interval: Option<u64>,
}

#[derive(Debug, Args)]
pub struct DaemonStopArgs {
    /// Send SIGKILL instead of SIGTERM (no drain).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct DaemonStatusArgs {
    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(Debug, Subcommand)]
pub enum PackageCommand {
    /// Create a new package in ./NAME that builds as it is.
    New(NewArgs),
    /// Build a package directory with cargo (local only).
    Build(BuildArgs),
    /// Pack a built package directory into a .cloacina archive, optionally signed.
    Pack(PackArgs),
    /// Generate an Ed25519 signing key pair: KEYFILE (private, mode 0600) and KEYFILE.pub.
    Keygen(KeygenArgs),
    /// Verify a .cloacina archive's detached signature (FILE.sig) against public keys.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// Package name: 1-64 letters, digits, '-' or '_', starting with a letter.
    pub name: String,

    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The package directory (holding Cargo.toml and package.toml).
    pub dir: PathBuf,

    /// Build the release profile.
    #[arg(long)]
    pub release: bool,

    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Here -o is the archive file; choose the output format with --output \
FORMAT or --json, or with -o placed before the noun: 'cloacinactl -o json package pack DIR'."
)]
pub struct PackArgs {
    /// The package directory (holding Cargo.toml and package.toml), built with
    /// 'cloacinactl package build'.
    pub dir: PathBuf,

    /// Sign the archive with this private key and write FILE.sig beside it.
    #[arg(long, value_name = "KEYFILE")]
    pub sign: Option<PathBuf>,

    /// The archive to write [default: ./<name>-<version>.cloacina].
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// Output format: table, json, yaml or id.
    #[arg(long = "output", value_enum, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the private key; the public key goes to KEYFILE.pub. Neither may exist.
    pub keyfile: PathBuf,

    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The .cloacina archive; its signature is read from FILE.sig.
    pub file: PathBuf,

    /// A trusted public key file (KEYFILE.pub). Repeat to trust several keys.
    #[arg(long = "key", value_name = "PUBFILE", required = true)]
    pub keys: Vec<PathBuf>,

    #[command(flatten)]
    pub output: OutputArg,
}

impl PackageCommand {
    /// The `-o/--output` given after the verb, if any.
    pub fn output(&self) -> Option<OutputFormat> {
        match self {
            PackageCommand::New(a) => a.output.output,
            PackageCommand::Build(a) => a.output.output,
            PackageCommand::Pack(a) => a.output,
            PackageCommand::Keygen(a) => a.output.output,
            PackageCommand::Verify(a) => a.output.output,
        }
    }
}

impl Command {
    /// The `-o/--output` given after the verb, if any.
    pub fn output(&self) -> Option<OutputFormat> {
        match self {
            Command::Package(p) => p.output(),
            Command::Daemon(DaemonCommand::Status(a)) => a.output.output,
            Command::Daemon(_) => None,
            Command::Server(ServerCommand::Status(a)) => a.output.output,
            Command::Server(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn output_flags() {
        let cli = Cli::try_parse_from(["cloacinactl", "-o", "json", "package", "keygen", "k"])
            .expect("parses");
        assert_eq!(cli.output, Some(OutputFormat::Json));
        let cli = Cli::try_parse_from(["cloacinactl", "package", "keygen", "k", "-o", "yaml"])
            .expect("parses");
        assert_eq!(cli.command.output(), Some(OutputFormat::Yaml));
        let cli = Cli::try_parse_from([
            "cloacinactl",
            "package",
            "pack",
            "dir",
            "-o",
            "x.cloacina",
            "--output",
            "id",
            "--json",
        ])
        .expect("parses");
        let Command::Package(PackageCommand::Pack(pack)) = &cli.command else {
            panic!("pack expected");
        };
        assert_eq!(pack.out, Some(PathBuf::from("x.cloacina")));
        assert_eq!(pack.output, Some(OutputFormat::Id));
        assert!(cli.global.json);
    }

    #[test]
    fn global_flags_work_after_the_noun() {
        let cli = Cli::try_parse_from([
            "cloacinactl",
            "package",
            "--home",
            "/h",
            "verify",
            "f",
            "--key",
            "k.pub",
            "-v",
            "--tenant",
            "acme",
            "--no-color",
        ])
        .expect("parses");
        assert!(cli.global.verbose && cli.global.no_color);
        assert_eq!(cli.global.home, Some(PathBuf::from("/h")));
        assert_eq!(cli.global.tenant, "acme");
    }
}
