//! `vfnotify status`: print the local daemon's status.

use std::path::PathBuf;

use thiserror::Error;

use super::request::{NoArgs, Wire};
use super::{ClientError, json_text, print_stdout, query, render_status};

/// What `status` asks and how it prints it.
#[derive(Debug, Clone)]
pub struct Config {
    pub control: PathBuf,
    /// The raw JSON status instead of the readable form.
    pub json: bool,
}

/// Errors of `status`, named for the step that failed.
#[derive(Debug, Error)]
pub enum StatusError {
    #[error(transparent)]
    Query(#[from] ClientError),
    #[error("cannot write to stdout: {0}")]
    Stdout(std::io::Error),
}

/// `vfnotify status`.
pub fn run(config: Config) -> Result<(), StatusError> {
    // As it came with `--json` (a newer daemon's fields too); read as ours to show it.
    let status = query(&config.control, &Wire::Status(NoArgs {}))?;
    let text = if config.json {
        json_text(&status)
    } else {
        let status = serde_json::from_value(status).map_err(ClientError::Answer)?;
        render_status(&status)
    };
    print_stdout(&text).map_err(StatusError::Stdout)
}
