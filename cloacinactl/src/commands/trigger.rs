//! `cloacinactl trigger`: placeholder until the verbs land (issue 15, in progress).

use crate::cli::TriggerCommand;
use crate::error::CliError;
use crate::settings::Settings;

pub fn run(_settings: &Settings, _command: &TriggerCommand) -> Result<(), CliError> {
    Err(CliError::User("'trigger' is not available yet".to_string()))
}
