//! `cloacinactl workflow`: placeholder until the verbs land (issue 15, in progress).

use crate::cli::WorkflowCommand;
use crate::error::CliError;
use crate::settings::Settings;

pub fn run(_settings: &Settings, _command: &WorkflowCommand) -> Result<(), CliError> {
    Err(CliError::User(
        "'workflow' is not available yet".to_string(),
    ))
}
