//! The local control socket: a JSON protocol, one message per line.
//!
//! Requests `{"cmd": ..., "args": {...}, "id": ...}`; responses `{"result": ..., "id": ...}` or
//! `{"error": {"class": ..., "desc": ...}, "id": ...}`; unsolicited `{"event": {...}}` messages
//! to subscribed overlays. See README.md for the commands. [`server`] runs inside the daemon,
//! [`client`] is the blocking client behind `notify`, `status` and the overlay's link.

pub mod client;
pub mod server;

use std::time::Duration;

use serde_json::{Value, json};

use crate::cli::{EXIT_FAILURE, EXIT_USAGE, NotifyArgs, StatusArgs, WatchArgs};
pub use client::{Client, ClientError};

/// The control protocol version (major.minor; a different major is incompatible).
pub const PROTOCOL_VERSION: &str = "1.0";
/// Longest request or message line, in bytes.
pub const MAX_MESSAGE: usize = 64 * 1024;

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
            println!(
                "{}: {handled} of {overlays} overlays handled it, {triggers} trigger files toggled",
                args.channel
            );
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

/// `vfnotify status`.
pub fn status_main(args: StatusArgs) -> u8 {
    crate::logging::init(false);
    let run = || -> Result<Value, ClientError> {
        let (mut client, _) = Client::connect_hello(&args.control)?;
        client.set_timeout(Some(Duration::from_secs(10)))?;
        client.request("status", json!({}))
    };
    match run() {
        Ok(status) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).unwrap_or_else(|_| status.to_string())
                );
            } else {
                print!("{}", render_status(&status));
            }
            0
        }
        Err(e) => {
            eprintln!("vfnotify status: {e}");
            EXIT_FAILURE
        }
    }
}

/// `vfnotify watch` (not implemented yet).
pub fn watch_main(args: WatchArgs) -> u8 {
    let _ = args;
    eprintln!("vfnotify watch: not implemented yet");
    EXIT_FAILURE
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
