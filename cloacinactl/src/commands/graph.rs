//! `cloacinactl graph`: placeholder until the verbs land (issue 15, in progress).

use crate::cli::GraphCommand;
use crate::error::CliError;
use crate::settings::Settings;

pub fn run(_settings: &Settings, _command: &GraphCommand) -> Result<(), CliError> {
    Err(CliError::User("'graph' is not available yet".to_string()))
}
