//! `cloacinactl execution`: placeholder until the verbs land (issue 15, in progress).

use crate::cli::ExecutionCommand;
use crate::error::CliError;
use crate::settings::Settings;

pub fn run(_settings: &Settings, _command: &ExecutionCommand) -> Result<(), CliError> {
    Err(CliError::User(
        "'execution' is not available yet".to_string(),
    ))
}
