//! `vfnotify notify`: ask the local daemon to act on a notification and wait until it is handled.

use std::path::PathBuf;

use thiserror::Error;

use super::reply::NotifyResult;
use super::request::{NotifyArgs, Wire};
use super::{Client, ClientError, NOTIFY_MAX, NOTIFY_TIMEOUT, print_stdout};
use crate::protocol::{ChannelError, RelpathError, validate_channel, validate_relpath};

/// A validated `notify` request.
#[derive(Debug, Clone)]
pub struct Config {
    pub control: PathBuf,
    pub channel: String,
    /// Relative paths the change is scoped to; none means the whole channel.
    pub relpaths: Vec<String>,
}

/// Errors of `notify`, named for the step that failed.
#[derive(Debug, Error)]
pub enum NotifyError {
    #[error("bad channel {channel:?}: {source}")]
    Channel {
        channel: String,
        source: ChannelError,
    },
    #[error("bad relative path {path:?}: {source}")]
    Relpath { path: String, source: RelpathError },
    #[error(transparent)]
    Request(#[from] ClientError),
    #[error("cannot write to stdout: {0}")]
    Stdout(std::io::Error),
    #[error("{0} overlays went away before handling it")]
    NotHandled(u64),
}

impl Config {
    /// Check the channel and the relative paths.
    pub fn new(
        control: PathBuf,
        channel: String,
        relpaths: Vec<String>,
    ) -> Result<Self, NotifyError> {
        validate_channel(&channel).map_err(|source| NotifyError::Channel {
            channel: channel.clone(),
            source,
        })?;
        for p in &relpaths {
            validate_relpath(p).map_err(|source| NotifyError::Relpath {
                path: p.clone(),
                source,
            })?;
        }
        Ok(Config {
            control,
            channel,
            relpaths,
        })
    }
}

/// `vfnotify notify`: send it, print the outcome; an overlay that did not handle it is an error.
pub fn run(config: Config) -> Result<(), NotifyError> {
    let (mut client, _) = Client::connect_hello(&config.control)?;
    // The daemon answers within 10 s of hearing nothing from the overlays, and at most after
    // NOTIFY_MAX (a large rescan reports progress); leave it some slack.
    client.set_timeout(Some(NOTIFY_MAX + NOTIFY_TIMEOUT))?;
    let r: NotifyResult = client.call(&Wire::Notify(NotifyArgs {
        channel: config.channel.clone(),
        paths: Some(config.relpaths),
    }))?;
    let NotifyResult {
        overlays,
        handled,
        triggers,
        ..
    } = r;
    let line = format!(
        "{}: {handled} of {overlays} overlays handled it, {triggers} trigger files toggled\n",
        config.channel
    );
    // A reader that went away (EPIPE) changes nothing: the outcome is the exit code.
    let printed = print_stdout(&line);
    if handled < overlays {
        return Err(NotifyError::NotHandled(overlays - handled));
    }
    printed.map_err(NotifyError::Stdout)
}
