//! `cloacinactl tenant`: placeholder until the verbs land (issue 15, in progress).

use crate::cli::TenantCommand;
use crate::error::CliError;
use crate::settings::Settings;

pub fn run(_settings: &Settings, _command: &TenantCommand) -> Result<(), CliError> {
    Err(CliError::User("'tenant' is not available yet".to_string()))
}
