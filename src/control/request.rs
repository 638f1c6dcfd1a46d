//! Control requests, parsed and validated without touching the daemon: one JSON line in, a
//! [`Request`] (or the error body to answer with) out. The server acts on the result; the fuzzer
//! (`fuzz/fuzz_targets/control_json.rs`) drives this very code.

use std::path::PathBuf;

use serde_json::{Map, Value, json};

use super::PROTOCOL_VERSION;
use super::wire::{Change, Scope, Target};
use crate::glob::Glob;
use crate::protocol::{validate_channel, validate_relpath};

/// One request, its arguments checked.
#[derive(Debug)]
pub enum Request {
    /// `hello {protocol?}`: the protocol's major version matched.
    Hello,
    Status,
    /// `notify {channel, paths?}`: paths validated, normalised and deduplicated.
    Notify {
        channel: String,
        scope: Scope,
    },
    /// `subscribe {channel, mountpoint, pid?}` (overlays).
    Subscribe {
        channel: String,
        mountpoint: PathBuf,
        pid: u32,
    },
    /// `handled {seq?, seqs?, stats?, changes?}` (overlays): malformed change records are
    /// dropped (logged), the rest is kept.
    Handled {
        seqs: Vec<u64>,
        stats: Option<Value>,
        changes: Vec<Change>,
        /// Whether `changes` was given at all (an empty list still makes a report).
        has_changes: bool,
    },
    /// `watch {channel | mountpoint, glob?}`.
    Watch {
        target: Target,
        glob: Option<Glob>,
    },
    /// `unwatch {watch}`.
    Unwatch {
        watch: u64,
    },
}

/// An error response body.
pub fn error(class: &str, desc: impl Into<String>) -> Value {
    json!({"class": class, "desc": desc.into()})
}

/// One response line: `{"result": ...}` or `{"error": ...}`, with the request's `id` if any.
pub fn response(id: &Option<Value>, body: Result<Value, Value>) -> String {
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

/// The result of a successful `hello`.
pub fn hello_result() -> Value {
    json!({"protocol": PROTOCOL_VERSION, "program": crate::PROGRAM})
}

/// The envelope of one request line: its `id` (echoed in the response, even for a bad request)
/// and its `cmd` with its `args` (an empty object when absent), or the error body to answer with.
/// Shared by every control socket (the daemon's, the host watcher's).
pub fn envelope(line: &[u8]) -> (Option<Value>, Result<(String, Args), Value>) {
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
    let args = match req.get("args") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return (id, Err(error("bad-request", "`args` must be an object"))),
    };
    (id, Ok((cmd.to_string(), args)))
}

/// Parse one request line: its `id` (echoed in the response, even for a bad request) and the
/// request or the error body to answer with.
pub fn parse_request(line: &[u8]) -> (Option<Value>, Result<Request, Value>) {
    let (id, env) = envelope(line);
    let (cmd, args) = match env {
        Ok(x) => x,
        Err(e) => return (id, Err(e)),
    };
    let args = &args;
    let parsed = match cmd.as_str() {
        "hello" => hello(args),
        "status" => Ok(Request::Status),
        "notify" => notify(args),
        "subscribe" => subscribe(args),
        "handled" => handled(args),
        "watch" => watch(args),
        "unwatch" => args
            .get("watch")
            .and_then(Value::as_u64)
            .map(|watch| Request::Unwatch { watch })
            .ok_or_else(|| error("bad-request", "unwatch needs a numeric `watch`")),
        other => Err(error(
            "unknown-command",
            format!("unknown command {other:?}"),
        )),
    };
    (id, parsed)
}

/// A request's `args`.
pub type Args = Map<String, Value>;

fn channel_arg(args: &Args, cmd: &str) -> Result<String, Value> {
    let channel = args
        .get("channel")
        .and_then(Value::as_str)
        .ok_or_else(|| error("bad-request", format!("{cmd} needs a string `channel`")))?;
    validate_channel(channel).map_err(|e| error("bad-channel", format!("{channel:?}: {e}")))?;
    Ok(channel.to_string())
}

fn hello(args: &Args) -> Result<Request, Value> {
    check_protocol(args, "daemon")?;
    Ok(Request::Hello)
}

/// `hello`'s check: an optional `protocol` whose major version is ours (`incompatible-version`
/// otherwise). `who` names the server in the message.
pub fn check_protocol(args: &Args, who: &str) -> Result<(), Value> {
    if let Some(v) = args.get("protocol") {
        let theirs = v
            .as_str()
            .ok_or_else(|| error("bad-request", "`protocol` must be a string like \"1.0\""))?;
        let major = |s: &str| s.split('.').next().unwrap_or_default().trim().to_string();
        if major(theirs) != major(PROTOCOL_VERSION) {
            return Err(error(
                "incompatible-version",
                format!(
                    "client speaks control protocol {theirs}, this {who} speaks {PROTOCOL_VERSION}; major versions differ"
                ),
            ));
        }
    }
    Ok(())
}

fn notify(args: &Args) -> Result<Request, Value> {
    let channel = channel_arg(args, "notify")?;
    let mut paths = Vec::new();
    match args.get("paths") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for item in items {
                let p = item
                    .as_str()
                    .ok_or_else(|| error("bad-path", "`paths` must hold strings"))?;
                let norm =
                    validate_relpath(p).map_err(|e| error("bad-path", format!("{p:?}: {e}")))?;
                if !paths.contains(&norm) {
                    paths.push(norm);
                }
            }
        }
        Some(_) => return Err(error("bad-path", "`paths` must be an array of strings")),
    }
    Ok(Request::Notify {
        channel,
        scope: Scope::from_paths(paths),
    })
}

fn subscribe(args: &Args) -> Result<Request, Value> {
    let channel = channel_arg(args, "subscribe")?;
    let mountpoint = args
        .get("mountpoint")
        .and_then(Value::as_str)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .ok_or_else(|| error("bad-request", "subscribe needs an absolute `mountpoint`"))?;
    let mountpoint = std::path::absolute(&mountpoint).unwrap_or(mountpoint);
    let pid = match args.get("pid") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .ok_or_else(|| error("bad-request", "`pid` must be a process id"))?,
    };
    Ok(Request::Subscribe {
        channel,
        mountpoint,
        pid,
    })
}

fn handled(args: &Args) -> Result<Request, Value> {
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
    let mut changes = Vec::new();
    match args.get("changes") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for item in items {
                match Change::from_json(item) {
                    Some(c) => changes.push(c),
                    None => tracing::debug!(change = %item, "malformed change record ignored"),
                }
            }
        }
        Some(_) => return Err(error("bad-request", "`changes` must be an array")),
    }
    let stats = args.get("stats").cloned();
    let has_changes = args.get("changes").is_some();
    // An empty `seqs` with `stats` or `changes` is a report (after the rescan that follows
    // linking, or the first parts of a report split to fit the message limit).
    if seqs.is_empty() && stats.is_none() && !has_changes {
        return Err(error(
            "bad-request",
            "`handled` needs `seq`, `seqs`, `stats` or `changes`",
        ));
    }
    Ok(Request::Handled {
        seqs,
        stats,
        changes,
        has_changes,
    })
}

fn watch(args: &Args) -> Result<Request, Value> {
    // A misspelt key (`globs`) would otherwise watch everything without a word.
    if let Some(k) = args
        .keys()
        .find(|k| !matches!(k.as_str(), "channel" | "mountpoint" | "glob"))
    {
        return Err(error(
            "bad-request",
            format!("watch takes `channel` or `mountpoint`, and `glob`; not `{k}`"),
        ));
    }
    let text = |k: &str| -> Result<Option<&str>, Value> {
        match args.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(error("bad-request", format!("`{k}` must be a string"))),
        }
    };
    let target = match (text("channel")?, text("mountpoint")?) {
        (Some(_), None) => Target::Channel(channel_arg(args, "watch")?),
        (None, Some(mp)) => {
            let p = PathBuf::from(mp);
            if !p.is_absolute() {
                return Err(error("bad-request", "`mountpoint` must be absolute"));
            }
            Target::Mountpoint(std::path::absolute(&p).unwrap_or(p))
        }
        _ => {
            return Err(error(
                "bad-request",
                "watch needs a string `channel` or an absolute `mountpoint` (one of them)",
            ));
        }
    };
    let glob = text("glob")?
        .map(Glob::new)
        .transpose()
        .map_err(|e| error("bad-glob", e.to_string()))?;
    Ok(Request::Watch { target, glob })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> (Option<Value>, Result<Request, Value>) {
        parse_request(line.as_bytes())
    }

    fn class(r: &Result<Request, Value>) -> &str {
        r.as_ref()
            .err()
            .and_then(|e| e["class"].as_str())
            .unwrap_or("ok")
    }

    #[test]
    fn envelope_errors_keep_the_id() {
        assert_eq!(class(&parse("{").1), "parse");
        let (id, r) = parse(r#"{"id": 7, "cmd": 3}"#);
        assert_eq!((id, class(&r)), (Some(json!(7)), "bad-request"));
        let (id, r) = parse(r#"{"id": "x", "cmd": "status", "args": []}"#);
        assert_eq!((id, class(&r)), (Some(json!("x")), "bad-request"));
        assert_eq!(class(&parse(r#"{"cmd": "nope"}"#).1), "unknown-command");
    }

    #[test]
    fn notify_paths_are_normalised_and_deduplicated() {
        let (_, r) =
            parse(r#"{"cmd": "notify", "args": {"channel": "docs", "paths": ["a//b", "a/b/"]}}"#);
        match r {
            Ok(Request::Notify { channel, scope }) => {
                assert_eq!(
                    (channel.as_str(), scope.paths()),
                    ("docs", &["a/b".to_string()][..])
                );
            }
            other => panic!("{other:?}"),
        }
        let (_, r) = parse(r#"{"cmd": "notify", "args": {"channel": "docs", "paths": ["../x"]}}"#);
        assert_eq!(class(&r), "bad-path");
        let (_, r) = parse(r#"{"cmd": "notify", "args": {"channel": "a\u0007b"}}"#);
        assert_eq!(class(&r), "bad-channel");
    }

    #[test]
    fn hello_versions() {
        assert_eq!(class(&parse(r#"{"cmd": "hello"}"#).1), "ok");
        assert_eq!(
            class(&parse(r#"{"cmd": "hello", "args": {"protocol": "1.9"}}"#).1),
            "ok"
        );
        assert_eq!(
            class(&parse(r#"{"cmd": "hello", "args": {"protocol": "2.0"}}"#).1),
            "incompatible-version"
        );
    }

    #[test]
    fn subscribe_watch_handled_unwatch_arguments() {
        let bad = [
            r#"{"cmd": "subscribe", "args": {"channel": "c", "mountpoint": "rel"}}"#,
            r#"{"cmd": "subscribe", "args": {"channel": "c", "mountpoint": "/m", "pid": -1}}"#,
            r#"{"cmd": "watch", "args": {"channel": "c", "mountpoint": "/m"}}"#,
            r#"{"cmd": "watch", "args": {"mountpoint": "rel"}}"#,
            r#"{"cmd": "watch", "args": {"channel": "c", "globs": ["*.txt"]}}"#,
            r#"{"cmd": "handled", "args": {}}"#,
            r#"{"cmd": "handled", "args": {"seqs": [1, "2"]}}"#,
            r#"{"cmd": "unwatch", "args": {"watch": "1"}}"#,
        ];
        for line in bad {
            assert_eq!(class(&parse(line).1), "bad-request", "{line}");
        }
        assert!(matches!(
            parse(r#"{"cmd": "handled", "args": {"changes": []}}"#).1,
            Ok(Request::Handled {
                has_changes: true,
                ..
            })
        ));
        assert!(matches!(
            parse(r#"{"cmd": "watch", "args": {"channel": "c", "glob": "*.txt"}}"#).1,
            Ok(Request::Watch {
                target: Target::Channel(_),
                glob: Some(_)
            })
        ));
    }

    #[test]
    fn responses_carry_the_id() {
        let line = response(&Some(json!(5)), Ok(json!({"x": 1})));
        assert!(line.ends_with('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["id"], 5);
        assert_eq!(v["result"]["x"], 1);
    }
}
