//! `cloacinactl status`: placeholder until the verb lands (issue 15, in progress).

use crate::error::CliError;
use crate::settings::Settings;

pub fn run(_settings: &Settings) -> Result<(), CliError> {
    Err(CliError::User("'status' is not available yet".to_string()))
}
