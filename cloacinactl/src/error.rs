//! The one place where failures become exit codes (spec: CLI reference, "Exit codes").
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | user error: bad flags (clap usage errors included), missing files, validation failure, local I/O failure |
//! | 2 | network/transport failure |
//! | 3 | resource not found (HTTP 404) |
//! | 4 | authentication failure (HTTP 401/403) |
//! | 5 | server-side rejection (other HTTP 4xx/5xx) |

use cloacina::package::PackageError;
use cloacina::package::archive::ArchiveError;
use cloacina::package::build::BuildError;
use cloacina::package::manifest::ManifestError;
use cloacina::package::signing::SignatureError;

/// Why a command failed. `main` prints `Error: <message>` and exits with [`CliError::exit_code`].
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line itself is wrong (clap reports most of these before we run).
    #[error("{0}")]
    Usage(String),
    /// Anything the user can fix locally: missing files, invalid input, local I/O failures.
    #[error("{0}")]
    User(String),
    /// A package, archive, manifest or signature failure (all user errors). Boxed: some
    /// package errors are large, and every command returns this type.
    #[error(transparent)]
    Package(Box<PackageError>),
    /// The daemon socket or the server could not be reached.
    #[error("{0}")]
    Network(String),
    /// The server answered 404.
    #[error("{0}")]
    NotFound(String),
    /// The server answered 401 or 403.
    #[error("{0}")]
    Auth(String),
    /// The server answered another 4xx or 5xx.
    #[error("{0}")]
    Rejected(String),
    /// Exit with this code and print nothing (probes such as `daemon health`).
    #[error("")]
    Silent(i32),
}

impl CliError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) | CliError::User(_) | CliError::Package(_) => 1,
            CliError::Network(_) => 2,
            CliError::NotFound(_) => 3,
            CliError::Auth(_) => 4,
            CliError::Rejected(_) => 5,
            CliError::Silent(code) => *code,
        }
    }

    /// The failure for an HTTP error status.
    pub fn from_status(status: u16, message: String) -> CliError {
        match status {
            404 => CliError::NotFound(message),
            401 | 403 => CliError::Auth(message),
            _ => CliError::Rejected(message),
        }
    }

    /// A local I/O failure on `path`.
    pub fn io(action: &str, path: &std::path::Path, e: &std::io::Error) -> CliError {
        CliError::User(format!("cannot {action} {}: {e}", path.display()))
    }
}

impl From<PackageError> for CliError {
    fn from(e: PackageError) -> Self {
        CliError::Package(Box::new(e))
    }
}

impl From<ArchiveError> for CliError {
    fn from(e: ArchiveError) -> Self {
        PackageError::from(e).into()
    }
}

impl From<SignatureError> for CliError {
    fn from(e: SignatureError) -> Self {
        PackageError::from(e).into()
    }
}

impl From<BuildError> for CliError {
    fn from(e: BuildError) -> Self {
        PackageError::from(e).into()
    }
}

impl From<ManifestError> for CliError {
    fn from(e: ManifestError) -> Self {
        PackageError::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_small() {
        assert!(std::mem::size_of::<CliError>() <= 32);
    }

    #[test]
    fn exit_codes_follow_the_spec() {
        let m = || "m".to_string();
        assert_eq!(CliError::Usage(m()).exit_code(), 1);
        assert_eq!(CliError::User(m()).exit_code(), 1);
        assert_eq!(
            CliError::from(ManifestError::Missing { path: m() }).exit_code(),
            1
        );
        assert_eq!(CliError::Network(m()).exit_code(), 2);
        assert_eq!(CliError::from_status(404, m()).exit_code(), 3);
        assert_eq!(CliError::from_status(401, m()).exit_code(), 4);
        assert_eq!(CliError::from_status(403, m()).exit_code(), 4);
        assert_eq!(CliError::from_status(409, m()).exit_code(), 5);
        assert_eq!(CliError::from_status(500, m()).exit_code(), 5);
    }
}
