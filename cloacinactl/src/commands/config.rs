//! `cloacinactl config`: placeholder until the verbs land (issue 15, in progress).

use crate::cli::ConfigCommand;
use crate::error::CliError;
use crate::settings::Settings;

pub fn run(_settings: &Settings, _command: &ConfigCommand) -> Result<(), CliError> {
    Err(CliError::User("'config' is not available yet".to_string()))
}
