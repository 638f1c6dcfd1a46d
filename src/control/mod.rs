//! The local control socket: a JSON protocol, one message per line.
//!
//! Requests `{"cmd": ..., "args": {...}, "id": ...}`; responses `{"result": ..., "id": ...}` or
//! `{"error": {"class": ..., "desc": ...}, "id": ...}`; unsolicited `{"event": {...}}` messages
//! to subscribed overlays and watches. See README.md for the commands. The server runs inside the
//! daemon, beside the state it serves (`daemon::server`); this module is what both ends share,
//! one typed serde layer: [`request`] the requests ([`request::Wire`], one variant per command)
//! and their checking (pure, fuzzed), [`reply`] the responses (each command's result, the
//! error body and its [`reply::ErrorClass`]), [`wire`] the changes, scopes and pushed events;
//! [`lines`] reads request lines for every control server (the host's too); [`client`] is the
//! blocking client behind [`notify`], [`status`], [`watch`], the overlay's link and the host's
//! `status`/`sync` commands.

pub mod client;
pub mod lines;
pub mod notify;
pub mod reply;
pub mod request;
pub mod status;
pub mod watch;
pub mod wire;

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

pub use client::{Client, ClientError};
pub use lines::{Read, read_request};

/// Default control socket path of the guest daemon.
pub const DEFAULT_CONTROL: &str = "/run/vfnotify/control.sock";
/// The control protocol version (major.minor; a different major is incompatible).
pub const PROTOCOL_VERSION: &str = "1.0";
/// How long the daemon lets a `notify` request wait for overlays and triggers without hearing
/// from them (a handling overlay reports progress, see `link`).
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a `notify` waits in all, however long its overlays report progress for.
pub const NOTIFY_MAX: Duration = Duration::from_secs(600);
/// Longest request or message line, in bytes.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Write `text` to stdout and flush it. A reader that went away shows as `BrokenPipe` (as in
/// `vfnotify status --json | head -c1`), which the command line treats as a quiet success.
pub fn print_stdout(text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush())
}

/// One request to the control socket at `control` (after `hello`), with a 10 s timeout: what
/// `status` commands ask. Its result as JSON (printed as it came with `--json`).
pub fn query<Q: Serialize>(control: &std::path::Path, req: &Q) -> Result<Value, ClientError> {
    let (mut client, _) = Client::connect_hello(control)?;
    client.set_timeout(Some(Duration::from_secs(10)))?;
    client.call(req)
}

/// A JSON value as printed: pretty, one final newline.
pub fn json_text(v: &Value) -> String {
    let mut t = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    t.push('\n');
    t
}

/// The readable form of one watch event: `create reports/q1.pdf`, `rename a -> b`,
/// `OVERFLOW: rescan`.
pub fn render_event(ev: &wire::WatchEvent) -> String {
    match &ev.item {
        wire::WatchItem::Overflow => "OVERFLOW: rescan".to_string(),
        wire::WatchItem::Change { change, .. } => match &change.to {
            Some(to) if change.kind.has_target() => {
                format!("{} {} -> {to}", change.kind, change.path)
            }
            _ => format!("{} {}", change.kind, change.path),
        },
    }
}

/// The readable form of a `status` result.
pub fn render_status(s: &reply::DaemonStatus) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "{} (pid {})", s.program, s.pid);
    let _ = writeln!(out, "control: {}", s.control.display());
    let _ = writeln!(
        out,
        "trigger file: {}   allowed vsock CIDs: {}",
        s.trigger_name, s.allow_cid
    );
    let _ = writeln!(out, "listeners:");
    for l in &s.listeners {
        let _ = writeln!(out, "  {l}");
    }
    let _ = writeln!(out, "channels:");
    if s.channels.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for (c, paths) in &s.channels {
        let ps: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        let _ = writeln!(out, "  {c} -> {}", ps.join(", "));
    }
    let _ = writeln!(out, "overlays:");
    if s.overlays.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for o in &s.overlays {
        let _ = writeln!(
            out,
            "  {} on {} (pid {}, since {}): {} delivered, {} handled",
            o.channel,
            o.mountpoint.display(),
            o.pid,
            o.since,
            o.delivered,
            o.handled
        );
    }
    let _ = writeln!(out, "watches: {}", s.watches.len());
    for w in &s.watches {
        let on = match &w.target {
            wire::Target::Channel(c) => format!("channel {c}"),
            wire::Target::Mountpoint(m) => format!("overlay {}", m.display()),
        };
        let glob = w.glob.as_ref().map(|g| format!(" {g}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "  {} on {on}{glob}: {} sent, {} queued, {} dropped, {} overflows",
            w.watch, w.sent, w.queued, w.dropped, w.overflows
        );
    }
    let _ = writeln!(out, "counters:");
    for (k, v) in &s.counters.counts {
        let _ = writeln!(out, "  {k}: {v}");
    }
    let _ = writeln!(out, "  dropped:");
    for (k, v) in &s.counters.dropped {
        let _ = writeln!(out, "    {k}: {v}");
    }
    out
}
