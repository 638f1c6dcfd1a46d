//! `vfnotify watch`: print the changes of a channel (or of the overlay at a mountpoint) until
//! interrupted or the daemon goes away.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use super::reply::WatchResult;
use super::request::{WatchArgs, Wire};
use super::wire::{EventMsg, WatchEvent};
use super::{Client, ClientError, render_event};
use crate::glob::{Glob, GlobError};
use crate::protocol::{ChannelError, validate_channel};

/// What a watch follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Channel(String),
    /// The mountpoint of an overlay linked to the daemon.
    Mountpoint(PathBuf),
}

/// A validated `watch`.
#[derive(Debug, Clone)]
pub struct Config {
    pub control: PathBuf,
    pub target: Target,
    pub glob: Option<String>,
    /// One JSON object per event instead of the readable form.
    pub json: bool,
}

/// Errors of `watch`, named for the step that failed.
#[derive(Debug, Error)]
pub enum WatchError {
    #[error("bad channel {channel:?}: {source}")]
    Channel {
        channel: String,
        source: ChannelError,
    },
    #[error("bad glob {glob:?}: {source}")]
    Glob { glob: String, source: GlobError },
    #[error("cannot start: {0}")]
    Start(std::io::Error),
    #[error("cannot handle SIGINT: {0}")]
    Sigint(std::io::Error),
    #[error("{0}")]
    Connect(tokio::task::JoinError),
    #[error(transparent)]
    Request(#[from] ClientError),
    #[error("the daemon closed the connection (stopped?)")]
    Closed,
    #[error("cannot write to stdout: {0}")]
    Stdout(std::io::Error),
    #[error("the event reader stopped unexpectedly")]
    ReaderDied,
}

impl Config {
    /// `channel` is a channel name, or a path (absolute, or starting with `./` or `../`) naming an
    /// overlay's mountpoint.
    pub fn new(
        control: PathBuf,
        channel: &str,
        glob: Option<String>,
        json: bool,
    ) -> Result<Self, WatchError> {
        let target = if channel.starts_with('/')
            || channel.starts_with("./")
            || channel.starts_with("../")
        {
            let p = PathBuf::from(channel);
            let p = std::fs::canonicalize(&p)
                .or_else(|_| std::path::absolute(&p))
                .unwrap_or(p);
            Target::Mountpoint(p)
        } else {
            validate_channel(channel).map_err(|source| WatchError::Channel {
                channel: channel.to_string(),
                source,
            })?;
            Target::Channel(channel.to_string())
        };
        if let Some(g) = &glob {
            Glob::new(g).map_err(|source| WatchError::Glob {
                glob: g.clone(),
                source,
            })?;
        }
        Ok(Config {
            control,
            target,
            glob,
            json,
        })
    }
}

/// `vfnotify watch`: runs until SIGINT (`Ok`) or the daemon goes away (an error).
pub fn run(config: Config) -> Result<(), WatchError> {
    // SIGINT is ours from the first moment (a Ctrl-C while connecting ends the watch like any
    // other, not by the default action).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(WatchError::Start)?;
    let mut sigint = {
        let _ctx = rt.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
    }
    .map_err(WatchError::Sigint)?;
    let mut args = WatchArgs {
        glob: config.glob.clone(),
        ..WatchArgs::default()
    };
    let shown = match &config.target {
        Target::Mountpoint(p) => {
            args.mountpoint = Some(p.clone());
            p.display().to_string()
        }
        Target::Channel(c) => {
            args.channel = Some(c.clone());
            c.clone()
        }
    };
    let req = Wire::Watch(args);
    let control = config.control.clone();
    let connect = move || -> Result<(Client, u64), ClientError> {
        let (mut client, _) = Client::connect_hello(&control)?;
        client.set_timeout(Some(Duration::from_secs(10)))?;
        let r: WatchResult = client.call(&req)?;
        client.set_timeout(None)?;
        if r.overlays == 0 {
            eprintln!("vfnotify watch: no overlay follows {shown:?} yet; waiting for one");
        }
        Ok((client, r.watch))
    };
    // Connecting may wait (up to 10 s on a stuck daemon): Ctrl-C ends that wait too.
    let connected = rt.block_on(async {
        tokio::select! {
            _ = sigint.recv() => None,
            r = tokio::task::spawn_blocking(connect) => Some(r),
        }
    });
    let (mut client, id) = match connected {
        None => {
            rt.shutdown_background();
            return Ok(());
        }
        Some(r) => r.map_err(WatchError::Connect)??,
    };
    // Events are read and printed on a thread; this one waits for SIGINT or the end.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Result<(), WatchError>>();
    let json_out = config.json;
    std::thread::Builder::new()
        .name("vfnotify-watch".into())
        .spawn(move || {
            use std::io::Write as _;
            let stdout = std::io::stdout();
            let end = loop {
                let msg = match client.recv() {
                    Ok(m) => m,
                    Err(ClientError::Closed) => break Err(WatchError::Closed),
                    Err(e) => break Err(WatchError::Request(e)),
                };
                // Responses, and events of other kinds (a newer daemon's), are not ours.
                let Ok(EventMsg { event }) = serde_json::from_value::<EventMsg<WatchEvent>>(msg)
                else {
                    continue;
                };
                if event.watch != id {
                    continue;
                }
                let line = if json_out {
                    serde_json::to_string(&event).unwrap_or_default()
                } else {
                    render_event(&event)
                };
                let mut out = stdout.lock();
                if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                    // stdout closed (`| head`): done, quietly; anything else: say so.
                    break Err(WatchError::Stdout(e));
                }
            };
            let _ = done_tx.send(end);
        })
        .map_err(WatchError::Start)?;
    rt.block_on(async move {
        tokio::select! {
            _ = sigint.recv() => Ok(()),
            end = done_rx => end.unwrap_or(Err(WatchError::ReaderDied)),
        }
    })
}
