//! Errors → messages and exit codes, in one place: 2 for bad usage or configuration, 1 for a
//! runtime failure, 0 (quietly) when stdout's reader went away (`vfnotify status | head -c1`).

use std::fmt::Display;

use crate::control::{notify::NotifyError, status::StatusError, watch::WatchError};
use crate::daemon::{ConfigError as DaemonConfigError, DaemonError, send::SendError};
use crate::demo::DemoError;
use crate::host::{
    ConfigError as HostConfigError, HostError, control::StatusError as HostStatusError,
    sync::SyncError,
};
use crate::overlay::{MountError, options::OptionError};

/// Exit code for bad usage or configuration.
pub const EXIT_USAGE: u8 = 2;
/// Exit code for a runtime failure.
pub const EXIT_FAILURE: u8 = 1;

/// How a failure ends the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Print the message, exit 2.
    Usage,
    /// Print the message, exit 1.
    Runtime,
    /// Exit with this code, printing nothing (what had to be said was said).
    Silent(u8),
}

/// An error a subcommand ends with.
pub trait Failure: Display {
    fn exit(&self) -> Exit;
}

/// Validate (`config`), then run; print `PREFIX: message` for a failure and return its code.
pub fn run<C, E1: Failure, E2: Failure>(
    prefix: &str,
    config: Result<C, E1>,
    run: impl FnOnce(C) -> Result<(), E2>,
) -> u8 {
    match config {
        Err(e) => report(prefix, &e),
        Ok(c) => match run(c) {
            Ok(()) => 0,
            Err(e) => report(prefix, &e),
        },
    }
}

fn report(prefix: &str, e: &dyn Failure) -> u8 {
    match e.exit() {
        Exit::Silent(code) => code,
        exit => {
            eprintln!("{prefix}: {e}");
            if exit == Exit::Usage {
                EXIT_USAGE
            } else {
                EXIT_FAILURE
            }
        }
    }
}

/// A failed write to stdout: quiet success when its reader has gone away (EPIPE), else a
/// runtime failure (a full disk, say).
fn stdout(e: &std::io::Error) -> Exit {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Exit::Silent(0)
    } else {
        Exit::Runtime
    }
}

/// Never constructed: for subcommands whose configuration cannot fail.
#[derive(Debug)]
pub enum Infallible {}

impl Display for Infallible {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

impl Failure for Infallible {
    fn exit(&self) -> Exit {
        match *self {}
    }
}

impl Failure for DaemonConfigError {
    fn exit(&self) -> Exit {
        Exit::Usage
    }
}

impl Failure for DaemonError {
    fn exit(&self) -> Exit {
        Exit::Runtime
    }
}

impl Failure for SendError {
    fn exit(&self) -> Exit {
        match self {
            SendError::Channel { .. } | SendError::Relpath { .. } | SendError::Address(_) => {
                Exit::Usage
            }
            SendError::Runtime(_)
            | SendError::Connect(_)
            | SendError::Write { .. }
            | SendError::Timeout { .. } => Exit::Runtime,
        }
    }
}

impl Failure for NotifyError {
    fn exit(&self) -> Exit {
        match self {
            NotifyError::Channel { .. } | NotifyError::Relpath { .. } => Exit::Usage,
            NotifyError::Stdout(e) => stdout(e),
            NotifyError::Request(_) | NotifyError::NotHandled(_) => Exit::Runtime,
        }
    }
}

impl Failure for StatusError {
    fn exit(&self) -> Exit {
        match self {
            StatusError::Stdout(e) => stdout(e),
            StatusError::Query(_) => Exit::Runtime,
        }
    }
}

impl Failure for WatchError {
    fn exit(&self) -> Exit {
        match self {
            WatchError::Channel { .. } | WatchError::Glob { .. } => Exit::Usage,
            WatchError::Stdout(e) => stdout(e),
            WatchError::Start(_)
            | WatchError::Sigint(_)
            | WatchError::Connect(_)
            | WatchError::Request(_)
            | WatchError::Closed
            | WatchError::ReaderDied => Exit::Runtime,
        }
    }
}

impl Failure for OptionError {
    fn exit(&self) -> Exit {
        Exit::Usage
    }
}

impl Failure for MountError {
    fn exit(&self) -> Exit {
        use MountError::*;
        match self {
            SourceNotADirectory { .. }
            | CheckSource { .. }
            | Mountpoint(_)
            | Canonicalize(_)
            | RemountMountpoint { .. }
            | NotAnOverlay { .. } => Exit::Usage,
            OpenSource { .. }
            | OpenFuse(_)
            | Mount { .. }
            | Handshake(_)
            | Spawn(_)
            | Signals(_)
            | Session(_)
            | NotRoot
            | Pipe(_)
            | Fork(_)
            | Server(_)
            | RemountNotRoot
            | Remount { .. } => Exit::Runtime,
        }
    }
}

impl Failure for DemoError {
    fn exit(&self) -> Exit {
        match self {
            DemoError::Stdout(e) => stdout(e),
            // The summary has shown which step failed.
            DemoError::StepsFailed => Exit::Silent(EXIT_FAILURE),
            _ => Exit::Runtime,
        }
    }
}

impl Failure for HostConfigError {
    fn exit(&self) -> Exit {
        Exit::Usage
    }
}

impl Failure for HostError {
    fn exit(&self) -> Exit {
        Exit::Runtime
    }
}

impl Failure for HostStatusError {
    fn exit(&self) -> Exit {
        match self {
            HostStatusError::Stdout(e) => stdout(e),
            HostStatusError::NoHost { .. } | HostStatusError::Query(_) => Exit::Runtime,
        }
    }
}

impl Failure for SyncError {
    fn exit(&self) -> Exit {
        match self {
            SyncError::Channel { .. } | SyncError::UnknownChannel(_) => Exit::Usage,
            SyncError::Stdout(e) => stdout(e),
            // The report named every guest that did not acknowledge.
            SyncError::NotAcknowledged => Exit::Silent(EXIT_FAILURE),
            SyncError::NoHost { .. } | SyncError::Request(_) | SyncError::Answer(_) => {
                Exit::Runtime
            }
        }
    }
}
