//! Machine codes for the library's errors, for the edge: the HTTP error body
//! (`{"error": "<message>", "code": "<code>"}`) and `cloacinactl`'s exit codes.
//!
//! Every public error type implements [`ErrorCode`]: a stable `snake_case` [`code`] per
//! meaning (not per variant: several variants may share one) and a coarse [`ErrorKind`] that
//! decides the HTTP status and the CLI exit code. All codes, with their kind and meaning, are
//! listed once in [`CODES`]; `docs/errors.md` documents the same table and a test keeps the two
//! in step. Wrapper errors (a package error around a manifest error, an engine error around a
//! store error) answer their inner error's code.
//!
//! A code, once published, never changes meaning; a new meaning gets a new code.
//!
//! **Messages and causes.** One convention, everywhere: an error's `Display` is the whole
//! message a person needs (what failed, why, what to do), so `{e}`, `to_string()`, log lines
//! and the HTTP `error` field need nothing else. When a message includes its cause's text, the
//! cause is kept typed in the variant (a `cause` field, not a flattened string, where
//! practical) but is **not** also returned by `source()`: printing the chain (`{e:#}` in
//! anyhow) therefore never repeats a cause. Wrappers declared `#[error(transparent)]` add no
//! text of their own and forward both `Display` and `source()` to the error they wrap.
//! Database driver errors are wrapped in the opaque [`DbError`](crate::store::DbError), so no
//! driver type appears in the public API.
//!
//! [`code`]: ErrorCode::code

/// The coarse class of a failure: what the server answers (HTTP status) and what
/// `cloacinactl` exits with when the server answered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request or input is wrong: fix it and try again.
    Invalid,
    /// What was named does not exist (or belongs to another tenant).
    NotFound,
    /// The request is valid but clashes with the current state (a guard refusal, a duplicate).
    Conflict,
    /// No key, or a key that is not valid.
    Unauthorized,
    /// A valid key that may not do this.
    Forbidden,
    /// A dependency (the database, the runner) is not available now; retrying later may work.
    Unavailable,
    /// A failure of the service itself.
    Internal,
}

impl ErrorKind {
    /// The HTTP status the server answers with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::Invalid => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::Unavailable => 503,
            ErrorKind::Internal => 500,
        }
    }

    /// `cloacinactl`'s exit code when the server answered with this kind: 3 for not found, 4
    /// for authentication, 5 for any other rejection. (An error met locally, before any
    /// request, is a user error: 1; an unreachable server or daemon is 2.)
    pub fn cli_exit_code(self) -> i32 {
        match self.http_status() {
            404 => 3,
            401 | 403 => 4,
            _ => 5,
        }
    }

    /// The kind's name as `docs/errors.md` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Invalid => "invalid",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }
}

/// A stable machine code and its kind, implemented by every public error of the library.
pub trait ErrorCode {
    /// The stable `snake_case` code (see [`CODES`] and `docs/errors.md`).
    fn code(&self) -> &'static str;

    /// The code's kind, from [`CODES`].
    fn kind(&self) -> ErrorKind {
        kind_of(self.code())
    }
}

impl<T: ErrorCode + ?Sized> ErrorCode for Box<T> {
    fn code(&self) -> &'static str {
        (**self).code()
    }
}

/// The authoring crate's errors carry their codes as inherent methods (it does not depend on
/// this crate); these impls make them [`ErrorCode`]s too.
macro_rules! inherent_codes {
    ($($t:ty),*) => {$(
        impl ErrorCode for $t {
            fn code(&self) -> &'static str {
                <$t>::code(self)
            }
        }
    )*};
}

inherent_codes!(
    cloacina_workflow::WorkflowError,
    cloacina_workflow::ContextError,
    cloacina_workflow::RetryPolicyError,
    cloacina_workflow::GraphError,
    cloacina_workflow::TaskError
);

/// One documented code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeInfo {
    pub code: &'static str,
    pub kind: ErrorKind,
    pub meaning: &'static str,
}

const fn c(code: &'static str, kind: ErrorKind, meaning: &'static str) -> CodeInfo {
    CodeInfo {
        code,
        kind,
        meaning,
    }
}

use ErrorKind::{Conflict, Forbidden, Internal, Invalid, NotFound, Unauthorized, Unavailable};

/// Every code the library's errors answer, with its kind and meaning. `docs/errors.md`
/// shows the same table.
pub const CODES: &[CodeInfo] = &[
    // storage
    c(
        "invalid_database_url",
        Invalid,
        "the database URL cannot be parsed or names an unsupported backend",
    ),
    c(
        "invalid_schema",
        Invalid,
        "the tenant schema name is not valid",
    ),
    c(
        "invalid_request",
        Invalid,
        "a storage request is malformed (an empty name, an out-of-range value)",
    ),
    c(
        "store_unavailable",
        Unavailable,
        "the database cannot be reached, is locked or busy, or its writer stopped; retry later",
    ),
    c("store_closed", Unavailable, "the store was closed"),
    c(
        "commit_failed",
        Unavailable,
        "committing to the database failed (full, read-only, locked)",
    ),
    c(
        "store_error",
        Internal,
        "the database refused a query for another reason",
    ),
    c(
        "migration_failed",
        Internal,
        "applying the database migrations failed",
    ),
    c(
        "store_corrupt",
        Internal,
        "stored data is not readable (the database was edited by hand)",
    ),
    c("execution_not_found", NotFound, "no execution has this id"),
    c(
        "execution_exists",
        Conflict,
        "an execution with this id already exists",
    ),
    c(
        "invalid_transition",
        Conflict,
        "the execution's status does not allow this action (pause a finished run, say)",
    ),
    c(
        "duplicate_execution",
        Conflict,
        "an unfinished execution already has this de-duplication key; nothing was started",
    ),
    c(
        "cron_instant_taken",
        Conflict,
        "this cron instant was already fired or skipped; nothing was started",
    ),
    // runner and workflows
    c(
        "workflow_not_found",
        NotFound,
        "no workflow of this name is registered",
    ),
    c(
        "workflow_paused",
        Conflict,
        "the workflow is paused: no new runs start until it is resumed",
    ),
    c(
        "invalid_duration",
        Invalid,
        "a duration is not days, hours, minutes and seconds (e.g. 7d12h) greater than zero",
    ),
    c(
        "workflow_invalid",
        Invalid,
        "a workflow's definition is not valid (no tasks, a cycle, a missing dependency, a bad name or retry policy)",
    ),
    c(
        "context_invalid",
        Invalid,
        "a context is not a JSON object, or a key is missing, taken or of the wrong type",
    ),
    c(
        "wait_timeout",
        Unavailable,
        "waiting for an execution timed out; it is still running",
    ),
    c(
        "shutting_down",
        Unavailable,
        "the runner, reconciler or reactor registry is shutting down and accepts no new work",
    ),
    c(
        "task_failed",
        Internal,
        "a task attempt failed (its own error, or a caught panic)",
    ),
    c(
        "task_timeout",
        Internal,
        "a task attempt ran past its timeout",
    ),
    c("task_cancelled", Conflict, "the run was cancelled"),
    c("graph_invalid", Invalid, "a computation graph is not valid"),
    c("graph_failed", Internal, "a computation graph run failed"),
    // packages
    c(
        "manifest_missing",
        Invalid,
        "a package directory has no package.toml",
    ),
    c(
        "manifest_invalid",
        Invalid,
        "package.toml cannot be read, is malformed or has an invalid field",
    ),
    c(
        "package_source_invalid",
        Invalid,
        "a package directory lacks a required file or holds a file that cannot be packed",
    ),
    c(
        "build_failed",
        Invalid,
        "cargo could not build the package or read its metadata (its output says why)",
    ),
    c(
        "package_not_built",
        Invalid,
        "the package has no built library to pack; build it first",
    ),
    c(
        "cargo_unavailable",
        Internal,
        "cargo cannot be run on this host",
    ),
    c(
        "archive_invalid",
        Invalid,
        "the bytes are not a valid .cloacina archive (corrupt, unsafe entry, no package.toml)",
    ),
    c(
        "archive_too_large",
        Invalid,
        "the archive exceeds an unpack limit (entries, entry size, total size, header size)",
    ),
    c(
        "destination_exists",
        Conflict,
        "the unpack destination already exists",
    ),
    c(
        "no_library_for_target",
        Invalid,
        "the archive has no library for this host's platform (or none at all)",
    ),
    c(
        "library_invalid",
        Invalid,
        "the package library is truncated, corrupt, for another platform, or refused by the dynamic loader",
    ),
    c(
        "library_quarantined",
        Conflict,
        "an earlier load of this library crashed a process, so it is not loaded again",
    ),
    c(
        "library_crashed",
        Invalid,
        "opening the library ended the test process that opened it first (an initializer aborts, exits or faults)",
    ),
    c(
        "not_a_package",
        Invalid,
        "the library does not export Cloacina's ABI version symbol",
    ),
    c(
        "abi_mismatch",
        Invalid,
        "the library speaks another plugin ABI version, or lacks ABI symbols",
    ),
    c(
        "package_invalid",
        Invalid,
        "the package could not describe itself, describes an invalid package, or disagrees with package.toml",
    ),
    c(
        "package_call_failed",
        Internal,
        "a call into a loaded package failed",
    ),
    c("io_failed", Internal, "reading or writing a file failed"),
    // keys and signatures
    c(
        "key_invalid",
        Invalid,
        "a key file is missing, malformed, a private key where a public one is wanted, or too open",
    ),
    c(
        "key_exists",
        Conflict,
        "a key file already exists and is not overwritten",
    ),
    c(
        "file_invalid",
        Invalid,
        "a path that must be a small regular file is missing, not a regular file, or too large",
    ),
    c(
        "signature_required",
        Invalid,
        "signatures are required and the archive has none",
    ),
    c(
        "signature_invalid",
        Invalid,
        "the signature is malformed, uses another algorithm, does not match the archive or is not valid",
    ),
    c(
        "signing_failed",
        Internal,
        "the archive's digest could not be signed",
    ),
    c(
        "signature_untrusted",
        Invalid,
        "the archive is signed by a key that is not trusted",
    ),
    // reactors, graphs, schedules
    c(
        "guard_refused",
        Conflict,
        "the bound-subscriber guard refused an unload; the message is the guard text verbatim",
    ),
    c(
        "reactor_conflict",
        Conflict,
        "a reactor or graph of this name belongs to another package",
    ),
    c(
        "reactor_invalid",
        Invalid,
        "a reactor declared by a package is not valid",
    ),
    c(
        "reactor_not_found",
        NotFound,
        "no reactor (or accumulator) of this name is loaded",
    ),
    c(
        "graph_not_found",
        NotFound,
        "no trigger-less graph of this name is loaded",
    ),
    c(
        "graph_not_trigger_less",
        Conflict,
        "the graph is bound to a reactor and runs only when it fires",
    ),
    c(
        "schedule_invalid",
        Invalid,
        "a cron schedule or trigger declaration is not valid (bad expression, duplicate name)",
    ),
    c(
        "trigger_not_found",
        NotFound,
        "the package does not declare (or has not registered) this trigger",
    ),
    // reconciler
    c(
        "package_not_loaded",
        NotFound,
        "no package with this id is loaded",
    ),
    c(
        "unload_step_failed",
        Internal,
        "an unload stopped part-way; rerunning it continues where it stopped",
    ),
    // keys, roles and tenants (the server's control plane)
    c(
        "missing_api_key",
        Unauthorized,
        "the request carries no API key (send 'Authorization: Bearer <key>')",
    ),
    c(
        "malformed_api_key",
        Unauthorized,
        "the Authorization header is not exactly 'Bearer <key>', or the key is not a well-formed clk_ key",
    ),
    c(
        "invalid_api_key",
        Unauthorized,
        "no stored API key matches the key sent",
    ),
    c("revoked_api_key", Unauthorized, "the API key was revoked"),
    c(
        "invalid_role",
        Invalid,
        "a role is not read, write or admin",
    ),
    c(
        "insufficient_role",
        Forbidden,
        "the API key's role does not allow this action",
    ),
    c(
        "tenant_forbidden",
        Forbidden,
        "the API key may not act in this tenant",
    ),
    c(
        "invalid_tenant_name",
        Invalid,
        "a tenant name is not 1-63 ASCII letters, digits and underscores starting with a letter or underscore",
    ),
    c(
        "reserved_tenant_name",
        Invalid,
        "the tenant name is reserved ('public', or starting with 'pg_')",
    ),
    c("tenant_not_found", NotFound, "no tenant has this name"),
    c(
        "tenant_exists",
        Conflict,
        "a tenant of this name (in any case) already exists",
    ),
    c(
        "package_exists",
        Conflict,
        "the tenant already has a package of this name and version",
    ),
    // configuration and the daemon
    c(
        "config_invalid",
        Invalid,
        "a configuration file or setting is not valid, or cannot be read",
    ),
    c(
        "daemon_running",
        Conflict,
        "the daemon is already running for this home",
    ),
    c(
        "daemon_unreachable",
        Unavailable,
        "the daemon cannot be reached (cloacinactl exits 2)",
    ),
];

/// The kind of `code`; [`ErrorKind::Internal`] for a code that is not in [`CODES`] (a test
/// keeps every code of the library in it).
pub fn kind_of(code: &str) -> ErrorKind {
    CODES
        .iter()
        .find(|c| c.code == code)
        .map_or(ErrorKind::Internal, |c| c.kind)
}

#[cfg(test)]
mod tests;
