//! `vfnotify host sync`: ask the running host for a barrier over its control socket and print
//! its per-guest report (the barrier itself: [`super::barrier`]).

use std::time::Duration;

use super::barrier::{MAX_TIMEOUT, Outcome, SyncArgs, SyncReport};
use super::control::HostWire;
use crate::control::reply::ErrorClass;
use crate::control::{Client, ClientError, json_text, print_stdout};

/// A `--timeout`: `10s`, `500ms`, `2m`, or a number of seconds (`1.5`).
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration such as 10s, 500ms or 2m"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" | "min" => v * 60.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s or m)")),
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("{s:?}: must be more than 0"));
    }
    let d = Duration::from_secs_f64(secs);
    if d > MAX_TIMEOUT {
        return Err(format!("{s:?}: at most {} s", MAX_TIMEOUT.as_secs()));
    }
    Ok(d)
}

/// The readable form of a report.
pub fn render(r: &SyncReport) -> String {
    use std::fmt::Write as _;
    let acked = r
        .guests
        .iter()
        .filter(|g| g.outcome == Outcome::Acknowledged)
        .count();
    let mut out = format!(
        "sync {}: {acked} of {} guests acknowledged ({:.1} ms)\n",
        r.channels.join(", "),
        r.guests.len(),
        r.elapsed_ms
    );
    for g in &r.guests {
        let when = g.ms.map(|m| format!(" in {m:.1} ms")).unwrap_or_default();
        let _ = writeln!(
            out,
            "  {} [{}]: {}{when}",
            g.guest,
            g.channels.join(", "),
            g.outcome.text()
        );
    }
    out
}

/// What `vfnotify host sync` needs.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Channels to sync (empty: every channel of the host).
    pub channels: Vec<String>,
    /// How long to wait for the guests.
    pub timeout: Duration,
    /// The report as JSON instead of the readable form.
    pub json: bool,
    /// The host's control socket.
    pub control: std::path::PathBuf,
}

/// Errors of `vfnotify host sync`, named for the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("bad channel {channel:?}: {source}")]
    Channel {
        channel: String,
        source: crate::protocol::ChannelError,
    },
    #[error("no vfnotify host at {}: {source}", path.display())]
    NoHost {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    UnknownChannel(String),
    #[error(transparent)]
    Request(ClientError),
    #[error("unexpected answer from the host: {0}")]
    Answer(serde_json::Error),
    #[error("cannot write to stdout: {0}")]
    Stdout(std::io::Error),
    /// Some guest did not acknowledge: the report said which.
    #[error("not every guest acknowledged")]
    NotAcknowledged,
}

/// `vfnotify host sync`: ask the running host for a barrier and print its per-guest report.
pub fn sync(config: SyncConfig) -> Result<(), SyncError> {
    let report = request(&config)?;
    let text = if config.json {
        serde_json::to_value(&report)
            .map(|v| json_text(&v))
            .unwrap_or_default()
    } else {
        render(&report)
    };
    print_stdout(&text).map_err(SyncError::Stdout)?;
    if report.ok {
        Ok(())
    } else {
        Err(SyncError::NotAcknowledged)
    }
}

/// Ask the running host for a barrier; its per-guest report.
pub fn request(config: &SyncConfig) -> Result<SyncReport, SyncError> {
    for c in &config.channels {
        crate::protocol::validate_channel(c).map_err(|source| SyncError::Channel {
            channel: c.clone(),
            source,
        })?;
    }
    let request = || -> Result<SyncReport, ClientError> {
        let (mut client, _) = Client::connect_hello(&config.control)?;
        client.set_timeout(Some(config.timeout + Duration::from_secs(10)))?;
        client.call(&HostWire::Sync(SyncArgs {
            channels: config.channels.clone(),
            timeout_ms: Some(config.timeout.as_millis() as u64),
        }))
    };
    request().map_err(|e| match e {
        ClientError::Connect { path, source } => SyncError::NoHost { path, source },
        ClientError::Remote { class, desc } if class == ErrorClass::UnknownChannel.as_str() => {
            SyncError::UnknownChannel(desc)
        }
        ClientError::Answer(e) => SyncError::Answer(e),
        e => SyncError::Request(e),
    })
}
