//! The host's control socket: the guest daemon's JSON conventions and envelope (one message per
//! line, `{"cmd", "args", "id"}` → `{"result"}` or `{"error": {"class", "desc"}}`, `id` echoed;
//! `control::request::parse_wire`), with its own commands ([`HostWire`]: `hello`, `status`,
//! `sync`). `vfnotify host status` and `vfnotify host sync` are its clients.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::watch;

use super::barrier::SyncArgs;
use super::state::{Counters, Hub};
use crate::control::reply::{Done, ErrorBody, ErrorClass, HelloResult, response};
use crate::control::request::{HelloArgs, NoArgs, parse_wire};
use crate::control::{ClientError, json_text, print_stdout, query};
use crate::control::{Read, read_request};
use crate::transport::UnixListener;

/// Most concurrent control connections.
const MAX_CONNECTIONS: usize = 64;

/// One host request as it travels (see `control::request::Wire`, the daemon's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", content = "args", rename_all = "lowercase")]
pub enum HostWire {
    Hello(HelloArgs),
    Status(NoArgs),
    /// `sync {channels?, timeout_ms?}` (see [`super::barrier`]).
    Sync(SyncArgs),
}

/// One host request, checked.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    Hello,
    Status,
    Sync(SyncArgs),
}

impl TryFrom<HostWire> for Request {
    type Error = ErrorBody;
    fn try_from(w: HostWire) -> Result<Request, ErrorBody> {
        Ok(match w {
            HostWire::Hello(a) => {
                a.check("host")?;
                Request::Hello
            }
            HostWire::Status(NoArgs {}) => Request::Status,
            HostWire::Sync(a) => Request::Sync(a),
        })
    }
}

/// Parse one request line: its `id` and the request or the error body to answer with.
pub fn parse(line: &[u8]) -> (Option<Value>, Result<Request, ErrorBody>) {
    let (id, wire) = parse_wire::<HostWire>(line, |_| ErrorClass::BadRequest);
    (id, wire.and_then(Request::try_from))
}

/// The result of the host's `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostStatus {
    pub program: String,
    pub pid: u32,
    /// Unix time the host started.
    pub since: u64,
    pub control: PathBuf,
    /// `fanotify`, `inotify`, or `none` before one is chosen.
    pub backend: String,
    pub window_ms: u64,
    pub folder_limit: u64,
    pub channel_limit: u64,
    pub queue: u64,
    pub channels: BTreeMap<String, ChannelStatus>,
    pub guests: Vec<GuestStatus>,
    /// The host's counters by name (its `Counters`; names come and go with it).
    pub counters: BTreeMap<String, u64>,
}

/// One channel in the host's `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelStatus {
    pub base: PathBuf,
    /// `watching`, `missing`, or `degraded: WHY`.
    pub state: String,
    /// The guests told about it (their addresses).
    pub guests: Vec<String>,
    pub changes: u64,
    /// The head of its change log.
    pub head: u64,
}

/// One guest in the host's `status`: its connection, and its counters by name beside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestStatus {
    pub addr: String,
    pub channels: Vec<String>,
    /// `connecting`, `connected` or `down`.
    pub state: String,
    /// Unix time of its last change of state.
    pub since: u64,
    pub last_error: Option<String>,
    pub queue_depth: u64,
    pub barrier: BarrierStatus,
    /// The guest's counters (`lines_sent`, ...; its `GuestStats`).
    #[serde(flatten)]
    pub stats: BTreeMap<String, u64>,
}

/// The `sync` side of one guest in the host's `status` (see [`super::barrier`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BarrierStatus {
    /// It answered the hello: it acknowledges syncs.
    pub acknowledges: bool,
    /// The last sync id it acknowledged on this connection.
    pub acked: u64,
    pub hellos: u64,
    pub syncs_sent: u64,
    pub acks: u64,
    pub bad_replies: u64,
    pub overlong_replies: u64,
}

/// Accept control clients until `stop`.
pub async fn accept_loop(hub: Arc<Hub>, listener: UnixListener, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            r = listener.inner().accept() => r,
            _ = stop.changed() => return,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "control accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(
                max = MAX_CONNECTIONS,
                "too many control connections; refused"
            );
            continue;
        };
        Counters::bump(&hub.counters.control_connections);
        let hub = Arc::clone(&hub);
        tokio::spawn(async move {
            serve(&hub, stream).await;
            drop(permit);
        });
    }
}

async fn serve(hub: &Hub, stream: tokio::net::UnixStream) {
    let (rd, mut wr) = stream.into_split();
    let mut reader = BufReader::new(rd);
    let mut line = Vec::new();
    loop {
        match read_request(&mut reader, &mut line).await {
            Read::End => return,
            Read::Overlong(body) => {
                Counters::bump(&hub.counters.control_errors);
                let _ = wr.write_all(body.as_bytes()).await;
                return;
            }
            Read::Blank => continue,
            Read::Line => {}
        }
        let (id, req) = parse(&line);
        let line = match req {
            Ok(Request::Hello) => response(&id, Ok::<_, ErrorBody>(HelloResult::ours())),
            Ok(Request::Status) => response(&id, Ok::<_, ErrorBody>(hub.status())),
            Ok(Request::Sync(args)) => response(&id, super::barrier::serve(hub, args).await),
            Err(e) => {
                Counters::bump(&hub.counters.control_errors);
                response::<Done>(&id, Err(e))
            }
        };
        if wr.write_all(line.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// What `vfnotify host status` asks and how it prints it.
#[derive(Debug, Clone)]
pub struct StatusConfig {
    pub control: PathBuf,
    /// The raw JSON status instead of the readable form.
    pub json: bool,
}

/// Errors of `vfnotify host status`, named for the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("no vfnotify host at {}: {source}", path.display())]
    NoHost {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Query(ClientError),
    #[error("cannot write to stdout: {0}")]
    Stdout(std::io::Error),
}

/// `vfnotify host status`.
pub fn status(config: StatusConfig) -> Result<(), StatusError> {
    let status = query(&config.control, &HostWire::Status(NoArgs {})).map_err(|e| match e {
        ClientError::Connect { path, source } => StatusError::NoHost { path, source },
        e => StatusError::Query(e),
    })?;
    // As it came with `--json`; read as ours to show it.
    let text = if config.json {
        json_text(&status)
    } else {
        let status = serde_json::from_value(status)
            .map_err(|e| StatusError::Query(ClientError::Answer(e)))?;
        render(&status)
    };
    print_stdout(&text).map_err(StatusError::Stdout)
}

/// The readable form of a host `status`.
pub fn render(s: &HostStatus) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} host (pid {}), backend {}",
        s.program, s.pid, s.backend
    );
    let _ = writeln!(
        out,
        "window {} ms, folder limit {}, channel limit {}, queue {}",
        s.window_ms, s.folder_limit, s.channel_limit, s.queue
    );
    let _ = writeln!(out, "channels:");
    for (name, c) in &s.channels {
        let _ = writeln!(
            out,
            "  {name} <- {} [{}]: {} changes -> {}",
            c.base.display(),
            c.state,
            c.changes,
            c.guests.join(", ")
        );
    }
    let _ = writeln!(out, "guests:");
    for g in &s.guests {
        let n = |k: &str| g.stats.get(k).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "  {} [{}]: {} lines, {} coalesced, {} folders collapsed, {} channel collapses, {} overflows, {} reconnects, queue {}{}",
            g.addr,
            g.state,
            n("lines_sent"),
            n("coalesced"),
            n("collapsed_folders"),
            n("collapsed_channel"),
            n("overflows"),
            n("reconnects"),
            g.queue_depth,
            g.last_error
                .as_ref()
                .map(|e| format!(" (last error: {e})"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(out, "counters:");
    for (k, v) in &s.counters {
        let _ = writeln!(out, "  {k}: {v}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests() {
        assert_eq!(
            parse(br#"{"cmd":"status","id":3}"#),
            (Some(json!(3)), Ok(Request::Status))
        );
        assert_eq!(
            parse(br#"{"cmd":"hello","args":{"protocol":"1.2"}}"#).1,
            Ok(Request::Hello)
        );
        let class = |line: &[u8]| parse(line).1.unwrap_err().class;
        assert_eq!(
            class(br#"{"cmd":"hello","args":{"protocol":"2.0"}}"#),
            ErrorClass::IncompatibleVersion
        );
        assert_eq!(class(br#"{"cmd":"notify"}"#), ErrorClass::UnknownCommand);
        assert_eq!(class(b"{nope"), ErrorClass::Parse);
        let (id, e) = parse(br#"{"id":"x","args":1}"#);
        assert_eq!(id, Some(json!("x")));
        assert_eq!(e.unwrap_err().class, ErrorClass::BadRequest);
        let (_, e) = parse(br#"{"cmd":"sync","args":{"channels":"a"}}"#);
        let e = e.unwrap_err();
        assert_eq!(e.class, ErrorClass::BadRequest);
        assert!(e.desc.contains("args.channels"), "{}", e.desc);
        assert_eq!(
            parse(br#"{"cmd":"sync","args":{"channels":["a"],"timeout_ms":5}}"#).1,
            Ok(Request::Sync(SyncArgs {
                channels: vec!["a".into()],
                timeout_ms: Some(5)
            }))
        );
        // What `vfnotify host sync` sends.
        let w = HostWire::Sync(SyncArgs {
            channels: vec!["a".into()],
            timeout_ms: Some(5),
        });
        assert_eq!(
            serde_json::to_value(&w).unwrap(),
            json!({"cmd": "sync", "args": {"channels": ["a"], "timeout_ms": 5}})
        );
    }
}
