//! `cloacinactl package upload|publish|list|inspect|delete`: placeholder (issue 15, in progress).

use crate::cli::PackageCommand;
use crate::error::CliError;
use crate::settings::Settings;

pub fn run(_settings: &Settings, _command: &PackageCommand) -> Result<(), CliError> {
    Err(CliError::User(
        "this package verb is not available yet".to_string(),
    ))
}
