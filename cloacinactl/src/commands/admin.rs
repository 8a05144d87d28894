//! `cloacinactl admin`: placeholder until the verbs land (issue 15, in progress).

use crate::cli::AdminCommand;
use crate::error::CliError;
use crate::settings::Settings;

pub fn run(_settings: &Settings, _command: &AdminCommand) -> Result<(), CliError> {
    Err(CliError::User("'admin' is not available yet".to_string()))
}
