//! The local control socket: a JSON protocol, one message per line.
//!
//! Requests `{"cmd": ..., "args": {...}, "id": ...}`; responses `{"result": ..., "id": ...}` or
//! `{"error": {"class": ..., "desc": ...}, "id": ...}`; unsolicited `{"event": {...}}` messages
//! to subscribed overlays and watches. See README.md for the commands. [`server`] runs inside the
//! daemon, [`client`] is the blocking client behind `notify`, `status`, `watch` and the overlay's
//! link; [`glob`] is the path matcher of watches; [`request`] parses and validates requests
//! (pure, fuzzed).

pub mod client;
pub mod glob;
pub mod request;
pub mod server;

use std::time::Duration;

use serde_json::{Value, json};

use crate::cli::{EXIT_FAILURE, EXIT_USAGE, NotifyArgs, StatusArgs, WatchArgs};
pub use client::{Client, ClientError};

/// The control protocol version (major.minor; a different major is incompatible).
pub const PROTOCOL_VERSION: &str = "1.0";
/// Longest request or message line, in bytes.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Write `text` to stdout and flush it, for a subcommand named `cmd`. `Err(code)` means the
/// caller ends now with `code`: 0 when stdout's reader has gone away (EPIPE, as in
/// `vfnotify status --json | head -c1`: quietly, the reader got what it wanted), 1 with a message
/// on any other write error (a full disk, say).
pub fn print_stdout(cmd: &str, text: &str) -> Result<(), u8> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) => Err(stdout_failed(cmd, &e)),
    }
}

/// The exit code for a failed write to stdout (see [`print_stdout`]); prints the message.
pub fn stdout_failed(cmd: &str, e: &std::io::Error) -> u8 {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        0
    } else {
        eprintln!("vfnotify {cmd}: cannot write to stdout: {e}");
        EXIT_FAILURE
    }
}

/// `vfnotify notify`.
pub fn notify_main(args: NotifyArgs) -> u8 {
    crate::logging::init(false);
    if let Err(e) = crate::protocol::validate_channel(&args.channel) {
        eprintln!("vfnotify notify: bad channel {:?}: {e}", args.channel);
        return EXIT_USAGE;
    }
    for p in &args.relpaths {
        if let Err(e) = crate::protocol::validate_relpath(p) {
            eprintln!("vfnotify notify: bad relative path {p:?}: {e}");
            return EXIT_USAGE;
        }
    }
    let run = || -> Result<Value, ClientError> {
        let (mut client, _) = Client::connect_hello(&args.control)?;
        // The daemon answers within its own 10 s timeout; leave it some slack.
        client.set_timeout(Some(server::NOTIFY_TIMEOUT + Duration::from_secs(5)))?;
        client.request(
            "notify",
            json!({"channel": args.channel, "paths": args.relpaths}),
        )
    };
    match run() {
        Ok(r) => {
            let n = |k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0);
            let (overlays, handled, triggers) = (n("overlays"), n("handled"), n("triggers"));
            let line = format!(
                "{}: {handled} of {overlays} overlays handled it, {triggers} trigger files toggled\n",
                args.channel
            );
            // A reader that went away (EPIPE) changes nothing: the outcome is the exit code.
            if let Err(code @ 1..) = print_stdout("notify", &line) {
                return code;
            }
            if handled < overlays {
                eprintln!(
                    "vfnotify notify: {} overlays went away before handling it",
                    overlays - handled
                );
                return EXIT_FAILURE;
            }
            0
        }
        Err(e) => {
            eprintln!("vfnotify notify: {e}");
            EXIT_FAILURE
        }
    }
}

/// One request without arguments to the control socket at `control` (after `hello`), with a
/// 10 s timeout: what `status` commands ask.
pub fn query(control: &std::path::Path, cmd: &str) -> Result<Value, ClientError> {
    let (mut client, _) = Client::connect_hello(control)?;
    client.set_timeout(Some(Duration::from_secs(10)))?;
    client.request(cmd, json!({}))
}

/// A JSON value as printed: pretty, one final newline.
pub fn json_text(v: &Value) -> String {
    let mut t = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    t.push('\n');
    t
}

/// `vfnotify status`.
pub fn status_main(args: StatusArgs) -> u8 {
    crate::logging::init(false);
    match query(&args.control, "status") {
        Ok(status) => {
            let text = if args.json {
                json_text(&status)
            } else {
                render_status(&status)
            };
            match print_stdout("status", &text) {
                Ok(()) => 0,
                Err(code) => code,
            }
        }
        Err(e) => {
            eprintln!("vfnotify status: {e}");
            EXIT_FAILURE
        }
    }
}

/// `vfnotify watch`: print the changes of a channel (or of the overlay at a mountpoint) until
/// interrupted (exit 0) or the daemon goes away (exit 1).
pub fn watch_main(args: WatchArgs) -> u8 {
    crate::logging::init(false);
    // SIGINT is ours from the first moment (a Ctrl-C while connecting ends the watch like any
    // other, not by the default action).
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vfnotify watch: cannot start: {e}");
            return EXIT_FAILURE;
        }
    };
    let sigint = {
        let _ctx = rt.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
    };
    let mut sigint = match sigint {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vfnotify watch: cannot handle SIGINT: {e}");
            return EXIT_FAILURE;
        }
    };
    // A path (absolute, or starting with `./` or `../`) names an overlay's mountpoint.
    let target = if args.channel.starts_with('/')
        || args.channel.starts_with("./")
        || args.channel.starts_with("../")
    {
        let p = std::path::PathBuf::from(&args.channel);
        let p = std::fs::canonicalize(&p)
            .or_else(|_| std::path::absolute(&p))
            .unwrap_or(p);
        json!({"mountpoint": p})
    } else {
        if let Err(e) = crate::protocol::validate_channel(&args.channel) {
            eprintln!("vfnotify watch: bad channel {:?}: {e}", args.channel);
            return EXIT_USAGE;
        }
        json!({"channel": args.channel})
    };
    if let Some(g) = &args.glob {
        if let Err(e) = glob::Glob::new(g) {
            eprintln!("vfnotify watch: bad glob {g:?}: {e}");
            return EXIT_USAGE;
        }
    }
    let mut req = target;
    if let (Some(g), Value::Object(m)) = (&args.glob, &mut req) {
        m.insert("glob".into(), json!(g));
    }
    let control = args.control.clone();
    let channel = args.channel.clone();
    let connect = move || -> Result<(Client, u64), ClientError> {
        let (mut client, _) = Client::connect_hello(&control)?;
        client.set_timeout(Some(Duration::from_secs(10)))?;
        let r = client.request("watch", req)?;
        client.set_timeout(None)?;
        if r.get("overlays").and_then(Value::as_u64) == Some(0) {
            eprintln!("vfnotify watch: no overlay follows {channel:?} yet; waiting for one");
        }
        Ok((client, r.get("watch").and_then(Value::as_u64).unwrap_or(0)))
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
            return 0;
        }
        Some(Ok(Ok(x))) => x,
        Some(Ok(Err(e))) => {
            eprintln!("vfnotify watch: {e}");
            return EXIT_FAILURE;
        }
        Some(Err(e)) => {
            eprintln!("vfnotify watch: {e}");
            return EXIT_FAILURE;
        }
    };
    // Events are read and printed on a thread; this one waits for SIGINT or the end.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<u8>();
    let json_out = args.json;
    let reader = std::thread::Builder::new()
        .name("vfnotify-watch".into())
        .spawn(move || {
            use std::io::Write as _;
            let stdout = std::io::stdout();
            let code = loop {
                let msg = match client.recv() {
                    Ok(m) => m,
                    Err(ClientError::Closed) => {
                        eprintln!("vfnotify watch: the daemon closed the connection (stopped?)");
                        break EXIT_FAILURE;
                    }
                    Err(e) => {
                        eprintln!("vfnotify watch: {e}");
                        break EXIT_FAILURE;
                    }
                };
                let Some(ev) = msg.get("event") else { continue };
                if ev.get("watch").and_then(Value::as_u64) != Some(id) {
                    continue;
                }
                let line = if json_out {
                    ev.to_string()
                } else {
                    render_event(ev)
                };
                let mut out = stdout.lock();
                if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                    // stdout closed (`| head`): done, quietly; anything else: say so.
                    break stdout_failed("watch", &e);
                }
            };
            let _ = done_tx.send(code);
        });
    if let Err(e) = reader {
        eprintln!("vfnotify watch: cannot start: {e}");
        return EXIT_FAILURE;
    }
    rt.block_on(async move {
        tokio::select! {
            _ = sigint.recv() => 0,
            code = done_rx => code.unwrap_or(EXIT_FAILURE),
        }
    })
}

/// The readable form of one watch event: `create reports/q1.pdf`, `rename a -> b`,
/// `OVERFLOW: rescan`.
pub fn render_event(ev: &Value) -> String {
    let s = |k: &str| ev.get(k).and_then(Value::as_str).unwrap_or_default();
    match s("type") {
        "overflow" => "OVERFLOW: rescan".to_string(),
        "rename" => format!("rename {} -> {}", s("path"), s("to")),
        t => format!("{t} {}", s("path")),
    }
}

/// The readable form of a `status` result.
pub fn render_status(s: &Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let text = |v: &Value| {
        v.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string())
    };
    let _ = writeln!(out, "{} (pid {})", text(&s["program"]), s["pid"]);
    let _ = writeln!(out, "control: {}", text(&s["control"]));
    let _ = writeln!(
        out,
        "trigger file: {}   allowed vsock CIDs: {}",
        text(&s["trigger_name"]),
        text(&s["allow_cid"])
    );
    let _ = writeln!(out, "listeners:");
    for l in s["listeners"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  {}", text(l));
    }
    let _ = writeln!(out, "channels:");
    match s["channels"].as_object() {
        Some(m) if !m.is_empty() => {
            for (c, paths) in m {
                let ps: Vec<String> = paths.as_array().into_iter().flatten().map(text).collect();
                let _ = writeln!(out, "  {c} -> {}", ps.join(", "));
            }
        }
        _ => {
            let _ = writeln!(out, "  (none)");
        }
    }
    let _ = writeln!(out, "overlays:");
    match s["overlays"].as_array() {
        Some(v) if !v.is_empty() => {
            for o in v {
                let _ = writeln!(
                    out,
                    "  {} on {} (pid {}, since {}): {} delivered, {} handled",
                    text(&o["channel"]),
                    text(&o["mountpoint"]),
                    o["pid"],
                    o["since"],
                    o["delivered"],
                    o["handled"]
                );
            }
        }
        _ => {
            let _ = writeln!(out, "  (none)");
        }
    }
    match s["watches"].as_array() {
        Some(v) if !v.is_empty() => {
            let _ = writeln!(out, "watches: {}", v.len());
            for w in v {
                let on = w
                    .get("channel")
                    .map(|c| format!("channel {}", text(c)))
                    .or_else(|| w.get("mountpoint").map(|m| format!("overlay {}", text(m))))
                    .unwrap_or_default();
                let glob = w["glob"]
                    .as_str()
                    .map(|g| format!(" {g}"))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  {} on {on}{glob}: {} sent, {} queued, {} dropped, {} overflows",
                    w["watch"], w["sent"], w["queued"], w["dropped"], w["overflows"]
                );
            }
        }
        _ => {
            let _ = writeln!(out, "watches: 0");
        }
    }
    let _ = writeln!(out, "counters:");
    if let Some(m) = s["counters"].as_object() {
        for (k, v) in m {
            if let Some(d) = v.as_object() {
                let _ = writeln!(out, "  {k}:");
                for (k2, v2) in d {
                    let _ = writeln!(out, "    {k2}: {v2}");
                }
            } else {
                let _ = writeln!(out, "  {k}: {v}");
            }
        }
    }
    out
}
