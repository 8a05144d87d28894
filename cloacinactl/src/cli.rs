//! The command line: global flags and the noun-verb tree (clap derive).
//!
//! Global flags are accepted before the noun and, except `-o/--output`, anywhere after it.
//! `-o/--output` is not propagated by clap because `package pack` uses `-o` for its output
//! file; instead the top level and every verb that prints a result declare their own
//! `-o/--output`, and `package pack` declares `-o/--out FILE` plus a long-only `--output`.
//! [`crate::settings::Settings::resolve`] merges them.

use std::path::PathBuf;

use clap::builder::NonEmptyStringValueParser;
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
    /// Run and probe the build service (compiles pending source packages).
    #[command(subcommand)]
    Compiler(CompilerCommand),
    /// The workflows of a tenant's loaded packages (server).
    #[command(subcommand)]
    Workflow(WorkflowCommand),
    /// A tenant's workflow executions (server).
    #[command(subcommand)]
    Execution(ExecutionCommand),
    /// Computation graphs, their reactors and accumulators (server).
    #[command(subcommand)]
    Graph(GraphCommand),
    /// Tenants (server; needs a global admin key).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// API keys (server; needs an admin key).
    #[command(subcommand)]
    Key(KeyCommand),
    /// A tenant's cron and custom-poll trigger schedules (server).
    #[command(subcommand)]
    Trigger(TriggerCommand),
    /// Probe the daemon, the server and the compiler, each independently.
    Status(OutputArg),
    /// Read and edit <home>/config.toml.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Maintenance on the database directly.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Print a shell-completion script on stdout.
    Completions(CompletionsArgs),
}

/// A resource named by its id or name.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// The resource's id (or name, where the verb says so).
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    pub target: String,

    #[command(flatten)]
    pub output: OutputArg,
}

/// A verb that takes nothing but an output format.
#[derive(Debug, Args)]
pub struct PlainArgs {
    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// List the tenant's workflows.
    List(WorkflowListArgs),
    /// A workflow's tasks, dependencies, trigger rules and schedules.
    Inspect(TargetArgs),
    /// Start an execution; prints its id.
    Run(WorkflowRunArgs),
    /// Stop starting new executions of a workflow (cron instants are skipped).
    Pause(TargetArgs),
    /// Start executions of a paused workflow again.
    Resume(TargetArgs),
}

#[derive(Debug, Args)]
pub struct WorkflowListArgs {
    /// Only workflows whose package name contains this text.
    #[arg(long, value_name = "FILTER")]
    pub package: Option<String>,

    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(Debug, Args)]
pub struct WorkflowRunArgs {
    /// The workflow's name.
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    pub name: String,

    /// The initial context: a JSON object in FILE, or '-' for standard input [default: {}].
    #[arg(long, value_name = "FILE|-")]
    pub context: Option<String>,

    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(Debug, Subcommand)]
pub enum ExecutionCommand {
    /// List executions, newest first.
    List(ExecutionListArgs),
    /// An execution's status: Pending, Running, Completed, Failed, Cancelled or Paused.
    Status(TargetArgs),
    /// An execution's tasks with their status, attempts, timings and last error.
    Tasks(TargetArgs),
    /// An execution's events.
    Events(ExecutionEventsArgs),
    /// Cancel an execution.
    Cancel(TargetArgs),
    /// Pause an execution (running tasks finish; no new ones start).
    Pause(TargetArgs),
    /// Resume a paused execution.
    Resume(TargetArgs),
}

#[derive(Debug, Args)]
pub struct ExecutionListArgs {
    /// Only executions of this workflow.
    #[arg(long, value_name = "NAME")]
    pub workflow: Option<String>,

    /// Only executions in this status (Pending, Running, Completed, Failed, Cancelled, Paused).
    #[arg(long, value_name = "STATUS")]
    pub status: Option<String>,

    /// At most this many executions (1-1000).
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub limit: u32,

    /// Skip this many executions first.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub offset: u64,

    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(Debug, Args)]
pub struct ExecutionEventsArgs {
    /// The execution's id.
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    pub id: String,

    /// Only events newer than this long ago (e.g. 90s, 10m, 1h30m).
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,

    /// Keep printing new events until the execution ends.
    #[arg(long)]
    pub follow: bool,

    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(Debug, Subcommand)]
pub enum GraphCommand {
    /// Loaded computation graphs with health and reactor pause state.
    List(PlainArgs),
    /// One graph (or reactor): health, accumulators, pause state and bound subscribers.
    Status(TargetArgs),
    /// Every accumulator of every graph.
    Accumulators(PlainArgs),
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant (a PostgreSQL schema, or a SQLite file of its own).
    Create(TenantCreateArgs),
    /// List the tenants.
    List(PlainArgs),
    /// Delete a tenant: revokes its keys, stops its runs and drops its data.
    Delete(ForceArgs),
}

#[derive(Debug, Args)]
pub struct TenantCreateArgs {
    /// The tenant's name.
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    pub name: String,

    /// What the tenant is for.
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,

    #[command(flatten)]
    pub output: OutputArg,
}

/// A destructive verb on one resource: asks for confirmation on a terminal.
#[derive(Debug, Args)]
pub struct ForceArgs {
    /// The resource's id or name.
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    pub target: String,

    /// Do not ask for confirmation (required when there is no terminal to ask on).
    #[arg(long)]
    pub force: bool,

    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key; its plaintext is shown this once.
    Create(KeyCreateArgs),
    /// List keys (metadata only).
    List(PlainArgs),
    /// Revoke a key; it is refused on its next request, on every replica.
    Revoke(ForceArgs),
}

#[derive(Debug, Args)]
pub struct KeyCreateArgs {
    /// A name for the key (who or what uses it).
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    pub name: String,

    /// admin, write or read.
    #[arg(long, value_enum, default_value_t = Role::Read)]
    pub role: Role,

    #[command(flatten)]
    pub output: OutputArg,
}

/// An API key's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    Admin,
    Write,
    Read,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Write => "write",
            Role::Read => "read",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum TriggerCommand {
    /// Cron and custom-poll trigger schedules.
    List(PlainArgs),
    /// One schedule and its recent executions.
    Inspect(TargetArgs),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print one value by its dotted path (e.g. daemon.poll_interval_ms).
    Get(ConfigGetArgs),
    /// Set one value by its dotted path; integers, booleans and arrays keep their type.
    Set(ConfigSetArgs),
    /// Print every value (API keys masked).
    List(PlainArgs),
    /// Server-targeting profiles.
    #[command(subcommand)]
    Profile(ProfileCommand),
}

#[derive(Debug, Args)]
pub struct ConfigGetArgs {
    /// Dotted path, e.g. daemon.poll_interval_ms.
    pub key: String,

    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(Debug, Args)]
pub struct ConfigSetArgs {
    /// Dotted path, e.g. daemon.poll_interval_ms.
    pub key: String,
    /// The value; arrays as comma-separated values.
    pub value: String,
}

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Create or replace a profile.
    Set(ProfileSetArgs),
    /// List the profiles (API keys masked).
    List(PlainArgs),
    /// Make a profile the default.
    Use(ProfileNameArgs),
    /// Delete a profile.
    Delete(ProfileNameArgs),
}

/// The profile's server and API key are the global `--server URL` and `--api-key KEY` flags
/// (both required here; the key is stored as given, so `env:VAR` and `file:PATH` stay
/// references).
#[derive(Debug, Args)]
#[command(
    after_help = "Usage: cloacinactl config profile set NAME --server URL --api-key KEY [--default]"
)]
pub struct ProfileSetArgs {
    /// The profile's name.
    pub name: String,
    /// Also make it the default profile.
    #[arg(long)]
    pub default: bool,
}

#[derive(Debug, Args)]
pub struct ProfileNameArgs {
    /// The profile's name.
    pub name: String,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Delete execution events older than a threshold, in every tenant.
    CleanupEvents(CleanupEventsArgs),
}

#[derive(Debug, Args)]
pub struct CleanupEventsArgs {
    /// Age threshold: d/h/m/s combined, e.g. 90d, 7d12h, 1d2h30m45s.
    #[arg(long, value_name = "DURATION", default_value = "90d")]
    pub older_than: String,

    /// Report what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Database connection URL [env: DATABASE_URL; else database_url in config.toml].
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,

    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish or powershell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// The shells `completions` writes scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
    Powershell,
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
pub enum CompilerCommand {
    /// Run the compiler in the foreground (execs cloacina-compiler).
    Start(CompilerStartArgs),
    /// Stop the compiler recorded in <home>/compiler.pid (SIGTERM, or SIGKILL with --force).
    Stop(DaemonStopArgs),
    /// Print the compiler's status (GET /v1/status at [compiler].local_addr).
    Status(DaemonStatusArgs),
    /// Exit 0 if the compiler answers GET /health with 200, 2 otherwise; prints nothing.
    Health,
}

/// The database URL reaches the compiler through its environment, never its command line.
#[derive(Debug, Args)]
pub struct CompilerStartArgs {
    /// Listen address (/health, /v1/status, /metrics).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9000")]
    pub bind: String,
    /// Database connection URL, the servers' (sqlite:///path/to/cloacina.db or postgres://...)
    /// [env: DATABASE_URL; else database_url in config.toml].
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// How often to poll for pending builds, in milliseconds [default: the compiler's].
    #[arg(long, value_name = "N")]
    pub poll_interval_ms: Option<u64>,
    /// Heartbeat cadence of a build's claim, in seconds [default: the compiler's].
    #[arg(long, value_name = "N")]
    pub heartbeat_interval_s: Option<u64>,
    /// Seconds before an in-flight build is stale and reclaimable [default: the compiler's].
    #[arg(long, value_name = "N")]
    pub stale_threshold_s: Option<u64>,
    /// How often to sweep for stale claims, in seconds [default: the compiler's].
    #[arg(long, value_name = "N")]
    pub sweep_interval_s: Option<u64>,
    /// Sign built archives with this private key (KEYFILE from 'package keygen'), so servers
    /// requiring signatures accept them.
    #[arg(long, value_name = "KEYFILE")]
    pub signing_key: Option<PathBuf>,
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
    /// Upload a .cloacina archive (and FILE.sig beside it, if any) to the tenant.
    Upload(UploadArgs),
    /// Build, pack (optionally sign) and upload a package directory in one step.
    Publish(PublishArgs),
    /// List the packages the key can see.
    List(PackageListArgs),
    /// A package's state, per-step load state, last error and bound subscribers.
    Inspect(TargetArgs),
    /// Unload a package (the six-step unload) and remove it.
    Delete(PackageDeleteArgs),
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// The .cloacina archive.
    pub file: PathBuf,

    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The package directory (holding Cargo.toml and package.toml).
    pub dir: PathBuf,

    /// Build the release profile.
    #[arg(long)]
    pub release: bool,

    /// Sign the archive with this private key.
    #[arg(long, value_name = "KEYFILE")]
    pub sign: Option<PathBuf>,

    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(Debug, Args)]
pub struct PackageListArgs {
    /// Only packages whose name contains this text.
    #[arg(long, value_name = "TEXT")]
    pub filter: Option<String>,

    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(Debug, Args)]
pub struct PackageDeleteArgs {
    /// The package's id.
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    pub id: String,

    /// Do not ask for confirmation (required when there is no terminal to ask on).
    #[arg(long)]
    pub force: bool,

    /// Print the six-step unload plan and the guard's verdict; change nothing.
    #[arg(long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub output: OutputArg,
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
            PackageCommand::Upload(a) => a.output.output,
            PackageCommand::Publish(a) => a.output.output,
            PackageCommand::List(a) => a.output.output,
            PackageCommand::Inspect(a) => a.output.output,
            PackageCommand::Delete(a) => a.output.output,
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
            Command::Compiler(CompilerCommand::Status(a)) => a.output.output,
            Command::Compiler(_) => None,
            Command::Workflow(c) => match c {
                WorkflowCommand::List(a) => a.output.output,
                WorkflowCommand::Run(a) => a.output.output,
                WorkflowCommand::Inspect(a)
                | WorkflowCommand::Pause(a)
                | WorkflowCommand::Resume(a) => a.output.output,
            },
            Command::Execution(c) => match c {
                ExecutionCommand::List(a) => a.output.output,
                ExecutionCommand::Events(a) => a.output.output,
                ExecutionCommand::Status(a)
                | ExecutionCommand::Tasks(a)
                | ExecutionCommand::Cancel(a)
                | ExecutionCommand::Pause(a)
                | ExecutionCommand::Resume(a) => a.output.output,
            },
            Command::Graph(c) => match c {
                GraphCommand::List(a) | GraphCommand::Accumulators(a) => a.output.output,
                GraphCommand::Status(a) => a.output.output,
            },
            Command::Tenant(c) => match c {
                TenantCommand::Create(a) => a.output.output,
                TenantCommand::List(a) => a.output.output,
                TenantCommand::Delete(a) => a.output.output,
            },
            Command::Key(c) => match c {
                KeyCommand::Create(a) => a.output.output,
                KeyCommand::List(a) => a.output.output,
                KeyCommand::Revoke(a) => a.output.output,
            },
            Command::Trigger(c) => match c {
                TriggerCommand::List(a) => a.output.output,
                TriggerCommand::Inspect(a) => a.output.output,
            },
            Command::Status(a) => a.output,
            Command::Config(c) => match c {
                ConfigCommand::Get(a) => a.output.output,
                ConfigCommand::List(a) => a.output.output,
                ConfigCommand::Profile(ProfileCommand::List(a)) => a.output.output,
                ConfigCommand::Set(_) | ConfigCommand::Profile(_) => None,
            },
            Command::Admin(AdminCommand::CleanupEvents(a)) => a.output.output,
            Command::Completions(_) => None,
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
