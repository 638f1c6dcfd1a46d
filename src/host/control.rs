//! The host's control socket: the guest daemon's JSON conventions (one message per line,
//! `{"cmd", "args", "id"}` → `{"result"}` or `{"error": {"class", "desc"}}`, `id` echoed), with
//! the commands `hello` and `status`. `vfnotify host status` is its client.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::watch;

use super::state::{Counters, Hub};
use crate::control::request::{check_protocol, envelope, error, hello_result, response};
use crate::control::{ClientError, json_text, print_stdout, query};
use crate::control::{Read, read_request};
use crate::transport::UnixListener;

/// Most concurrent control connections.
const MAX_CONNECTIONS: usize = 64;

/// One host request.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    Hello,
    Status,
    /// `sync {channels?, timeout_ms?}` (see [`super::barrier`]).
    Sync(serde_json::Map<String, Value>),
}

/// Parse one request line: its `id` and the request or the error body to answer with.
pub fn parse(line: &[u8]) -> (Option<Value>, Result<Request, Value>) {
    let (id, env) = envelope(line);
    let parsed = env.and_then(|(cmd, args)| match cmd.as_str() {
        "hello" => check_protocol(&args, "host").map(|()| Request::Hello),
        "status" => Ok(Request::Status),
        "sync" => Ok(Request::Sync(args)),
        other => Err(error(
            "unknown-command",
            format!("unknown command {other:?} (the host knows hello, status and sync)"),
        )),
    });
    (id, parsed)
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
        let body = match req {
            Ok(Request::Hello) => Ok(hello_result()),
            Ok(Request::Status) => Ok(hub.status()),
            Ok(Request::Sync(args)) => super::barrier::serve(hub, args).await,
            Err(e) => {
                Counters::bump(&hub.counters.control_errors);
                Err(e)
            }
        };
        if wr.write_all(response(&id, body).as_bytes()).await.is_err() {
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
    let status = query(&config.control, "status").map_err(|e| match e {
        ClientError::Connect { path, source } => StatusError::NoHost { path, source },
        e => StatusError::Query(e),
    })?;
    let text = if config.json {
        json_text(&status)
    } else {
        render(&status)
    };
    print_stdout(&text).map_err(StatusError::Stdout)
}

/// The readable form of a host `status`.
pub fn render(s: &Value) -> String {
    use std::fmt::Write as _;
    let text = |v: &Value| {
        v.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string())
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} host (pid {}), backend {}",
        text(&s["program"]),
        s["pid"],
        text(&s["backend"])
    );
    let _ = writeln!(
        out,
        "window {} ms, folder limit {}, channel limit {}, queue {}",
        s["window_ms"], s["folder_limit"], s["channel_limit"], s["queue"]
    );
    let _ = writeln!(out, "channels:");
    for (name, c) in s["channels"].as_object().into_iter().flatten() {
        let guests: Vec<String> = c["guests"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        let _ = writeln!(
            out,
            "  {name} <- {} [{}]: {} changes -> {}",
            text(&c["base"]),
            text(&c["state"]),
            c["changes"],
            guests.join(", ")
        );
    }
    let _ = writeln!(out, "guests:");
    for g in s["guests"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {} [{}]: {} lines, {} coalesced, {} folders collapsed, {} channel collapses, {} overflows, {} reconnects, queue {}{}",
            text(&g["addr"]),
            text(&g["state"]),
            g["lines_sent"],
            g["coalesced"],
            g["collapsed_folders"],
            g["collapsed_channel"],
            g["overflows"],
            g["reconnects"],
            g["queue_depth"],
            g["last_error"]
                .as_str()
                .map(|e| format!(" (last error: {e})"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(out, "counters:");
    for (k, v) in s["counters"].as_object().into_iter().flatten() {
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
        let (_, e) = parse(br#"{"cmd":"hello","args":{"protocol":"2.0"}}"#);
        assert_eq!(e.unwrap_err()["class"], "incompatible-version");
        let (_, e) = parse(br#"{"cmd":"notify"}"#);
        assert_eq!(e.unwrap_err()["class"], "unknown-command");
        let (_, e) = parse(b"{nope");
        assert_eq!(e.unwrap_err()["class"], "parse");
        let (id, e) = parse(br#"{"id":"x","args":1}"#);
        assert_eq!(id, Some(json!("x")));
        assert_eq!(e.unwrap_err()["class"], "bad-request");
    }
}
