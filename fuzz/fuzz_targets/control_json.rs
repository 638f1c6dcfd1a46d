//! The JSON control protocol (local Unix socket, mode 0600).
//!
//! The server's request handling (`control::server::Conn::handle`) is private and interleaved
//! with async I/O and the daemon's shared state, so this target drives the most granular pure
//! pieces that exist, in the order the server and its clients use them:
//!
//! 1. framing: the input is split at `\n` like the server's `read_until` loop (lines over
//!    `MAX_MESSAGE` are refused, all-whitespace lines skipped);
//! 2. each line goes through `serde_json::from_slice::<Value>` and the same request checks the
//!    server makes (`cmd` a string, `args` an object or null, then per command: `notify`'s
//!    `channel` and `paths` through `validate_channel`/`validate_relpath`, `subscribe`'s channel,
//!    absolute mountpoint and `pid`, `handled`'s `seq`/`seqs`, `hello`'s protocol major);
//! 3. the response is built the way `server::response` builds it and must be one line of valid
//!    JSON that the client's `control::client::into_result` maps back to the same result/error;
//! 4. every parsed value is also given to the overlay side's parsers of daemon messages:
//!    `link::merge_events` (paths must come out validated and normalised; one seq per notify
//!    event) and `control::render_status` (no panic on any shape).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use vfnotify::control::client::{ClientError, into_result};
use vfnotify::control::{MAX_MESSAGE, PROTOCOL_VERSION, render_status};
use vfnotify::link::merge_events;
use vfnotify::protocol::{validate_channel, validate_relpath};

fn error(class: &str, desc: impl Into<String>) -> Value {
    json!({"class": class, "desc": desc.into()})
}

/// Mirror of `server::response`.
fn response(id: &Option<Value>, body: Result<Value, Value>) -> String {
    let mut m = Map::new();
    match body {
        Ok(r) => m.insert("result".into(), r),
        Err(e) => m.insert("error".into(), e),
    };
    if let Some(id) = id {
        m.insert("id".into(), id.clone());
    }
    let mut s = Value::Object(m).to_string();
    s.push('\n');
    s
}

/// Mirror of the validation parts of `Conn::handle` and its per-command handlers (the parts
/// that touch the daemon's state are replaced by fixed results).
fn handle(line: &[u8]) -> (Option<Value>, Result<Value, Value>) {
    let req: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => return (None, Err(error("parse", format!("malformed JSON: {e}")))),
    };
    let id = req.get("id").cloned();
    let Some(cmd) = req.get("cmd").and_then(Value::as_str) else {
        return (
            id,
            Err(error("bad-request", "a request needs a string `cmd`")),
        );
    };
    let empty = Map::new();
    let args = match req.get("args") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => return (id, Err(error("bad-request", "`args` must be an object"))),
    };
    let r = match cmd {
        "hello" => hello(args),
        "notify" => notify(args),
        "subscribe" => subscribe(args),
        "handled" => handled(args),
        "status" => Ok(json!({})),
        other => Err(error(
            "unknown-command",
            format!("unknown command {other:?}"),
        )),
    };
    (id, r)
}

fn hello(args: &Map<String, Value>) -> Result<Value, Value> {
    if let Some(v) = args.get("protocol") {
        let theirs = v
            .as_str()
            .ok_or_else(|| error("bad-request", "`protocol` must be a string"))?;
        let major = |s: &str| s.split('.').next().unwrap_or_default().trim().to_string();
        if major(theirs) != major(PROTOCOL_VERSION) {
            return Err(error("incompatible-version", theirs.to_string()));
        }
    }
    Ok(json!({"protocol": PROTOCOL_VERSION}))
}

fn notify(args: &Map<String, Value>) -> Result<Value, Value> {
    let channel = args
        .get("channel")
        .and_then(Value::as_str)
        .ok_or_else(|| error("bad-request", "notify needs a string `channel`"))?;
    validate_channel(channel).map_err(|e| error("bad-channel", format!("{channel:?}: {e}")))?;
    let mut paths: Vec<String> = Vec::new();
    match args.get("paths") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for item in items {
                let p = item
                    .as_str()
                    .ok_or_else(|| error("bad-path", "`paths` must hold strings"))?;
                let norm =
                    validate_relpath(p).map_err(|e| error("bad-path", format!("{p:?}: {e}")))?;
                assert_eq!(validate_relpath(&norm).as_ref(), Ok(&norm));
                assert!(!norm.starts_with('/') && !norm.contains('\0'));
                assert!(
                    !norm
                        .split('/')
                        .any(|c| c == ".." || c == "." || c.is_empty())
                );
                if !paths.contains(&norm) {
                    paths.push(norm);
                }
            }
        }
        Some(_) => return Err(error("bad-path", "`paths` must be an array of strings")),
    }
    // What dispatch would queue for an overlay: the wire form an overlay parses back.
    let ev = json!({"event": {"type": "notify", "channel": channel, "paths": paths, "seq": 1}});
    let m = merge_events(&[ev]).expect("a notify event merges");
    assert_eq!(m.seqs, vec![1]);
    assert_eq!(
        m.paths, paths,
        "overlay re-validation changed the daemon's paths"
    );
    Ok(json!({"channel": channel, "overlays": 0, "handled": 0, "triggers": 0}))
}

fn subscribe(args: &Map<String, Value>) -> Result<Value, Value> {
    let channel = args
        .get("channel")
        .and_then(Value::as_str)
        .ok_or_else(|| error("bad-request", "subscribe needs a string `channel`"))?;
    validate_channel(channel).map_err(|e| error("bad-channel", format!("{channel:?}: {e}")))?;
    let mountpoint = args
        .get("mountpoint")
        .and_then(Value::as_str)
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_absolute())
        .ok_or_else(|| error("bad-request", "subscribe needs an absolute `mountpoint`"))?;
    let mountpoint = std::path::absolute(&mountpoint).unwrap_or(mountpoint);
    assert!(mountpoint.is_absolute());
    match args.get("pid") {
        None | Some(Value::Null) => {}
        Some(v) => {
            v.as_u64()
                .and_then(|p| u32::try_from(p).ok())
                .ok_or_else(|| error("bad-request", "`pid` must be a process id"))?;
        }
    }
    Ok(json!({"subscription": 1, "mountpoint": mountpoint}))
}

fn handled(args: &Map<String, Value>) -> Result<Value, Value> {
    let mut seqs = Vec::new();
    if let Some(v) = args.get("seq") {
        seqs.push(
            v.as_u64()
                .ok_or_else(|| error("bad-request", "`seq` must be a number"))?,
        );
    }
    if let Some(v) = args.get("seqs") {
        let items = v
            .as_array()
            .ok_or_else(|| error("bad-request", "`seqs` must be an array"))?;
        for i in items {
            seqs.push(
                i.as_u64()
                    .ok_or_else(|| error("bad-request", "`seqs` must hold numbers"))?,
            );
        }
    }
    if seqs.is_empty() && args.get("stats").is_none() {
        return Err(error(
            "bad-request",
            "`handled` needs `seq`, `seqs` or `stats`",
        ));
    }
    // Cumulative ack: `max + 1` must not overflow (the server uses saturating_add).
    let _ = seqs.iter().max().map(|m| m.saturating_add(1));
    Ok(json!({}))
}

fn check_response(id: &Option<Value>, body: &Result<Value, Value>) {
    let line = response(id, body.clone());
    assert!(line.ends_with('\n'));
    assert_eq!(
        line.matches('\n').count(),
        1,
        "a response must be exactly one line: {line:?}"
    );
    let back: Value = serde_json::from_str(&line).expect("response is valid JSON");
    assert_eq!(back.get("id"), id.as_ref());
    match (body, into_result(back)) {
        (Ok(r), Ok(got)) => assert_eq!(&got, r),
        (Err(e), Err(ClientError::Remote { class, .. })) => {
            assert_eq!(Some(class.as_str()), e["class"].as_str())
        }
        (b, got) => panic!("into_result({b:?}) gave {got:?}"),
    }
}

fn overlay_side(v: &Value) {
    let msgs: Vec<Value> = match v {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    };
    if let Some(m) = merge_events(&msgs) {
        assert!(!m.seqs.is_empty());
        for p in &m.paths {
            assert_eq!(validate_relpath(p).as_ref(), Ok(p));
        }
        assert!(
            m.paths
                .iter()
                .enumerate()
                .all(|(i, p)| !m.paths[..i].contains(p))
        );
    }
    let _ = render_status(v);
    let _ = into_result(v.clone());
}

fuzz_target!(|data: &[u8]| {
    // Framing as the server reads it: one request per `\n`, overlong refused.
    for line in data.split_inclusive(|&b| b == b'\n') {
        if line.len() > MAX_MESSAGE {
            let body = Err(error("overlong", "request too long; closing"));
            check_response(&None, &body);
            break;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let (id, body) = handle(line);
        check_response(&id, &body);
        if let Ok(v) = serde_json::from_slice::<Value>(line) {
            overlay_side(&v);
            // What the server writes must survive the client's framing: re-serialise and
            // check for a raw newline.
            let s = v.to_string();
            assert!(!s.contains('\n'));
        }
    }
});
