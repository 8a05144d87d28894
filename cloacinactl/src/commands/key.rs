//! `cloacinactl key`: placeholder until the verbs land (issue 15, in progress).

use crate::cli::KeyCommand;
use crate::error::CliError;
use crate::settings::Settings;

pub fn run(_settings: &Settings, _command: &KeyCommand) -> Result<(), CliError> {
    Err(CliError::User("'key' is not available yet".to_string()))
}
