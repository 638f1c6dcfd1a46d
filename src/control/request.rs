//! Control requests: their wire types, and their parsing and checking without touching the
//! daemon. One JSON line in, a checked [`Request`] (or the error body to answer with) out; the
//! server acts on the result; the fuzzer (`fuzz/fuzz_targets/control_json.rs`) drives this very
//! code.
//!
//! Two steps: serde reads the line into [`Wire`] (one variant per command, tagged by `cmd`, its
//! `args` a struct per command; a type error names the field, as `args.paths[1]: invalid type`),
//! then [`Request::try_from`] checks what types cannot say (channel names, relative paths
//! normalised and deduplicated, absolute mountpoints, globs compiled, the protocol's major
//! version). Clients send the same [`Wire`] values. Adding a command is a variant here; the
//! compiler then points at [`Request::try_from`], the server's `match` on [`Request`], and
//! whoever sends it.

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::PROTOCOL_VERSION;
use super::reply::{ErrorBody, ErrorClass, error};
use super::wire::{Change, Scope, Target};
use crate::glob::Glob;
use crate::protocol::{validate_channel, validate_relpath};

/// One request as it travels: `{"cmd": NAME, "args": {...}}` (the line's `id` beside them is
/// the envelope's, see [`parse_wire`]). An absent or `null` `args` reads as `{}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", content = "args", rename_all = "lowercase")]
pub enum Wire {
    Hello(HelloArgs),
    Status(NoArgs),
    Notify(NotifyArgs),
    /// Overlays only.
    Subscribe(SubscribeArgs),
    /// Overlays only.
    Handled(HandledArgs),
    /// Overlays only: a notification's handling is under way (a long rescan); the daemon's
    /// wait for it goes on.
    Progress(NoArgs),
    Watch(WatchArgs),
    Unwatch(UnwatchArgs),
}

/// The arguments of a command that takes none (any given are ignored, as they always were).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NoArgs {}

/// `hello {protocol?}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HelloArgs {
    /// The client's protocol version (`"1.0"`); absent: not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

impl HelloArgs {
    /// Ours.
    pub fn ours() -> HelloArgs {
        HelloArgs {
            protocol: Some(PROTOCOL_VERSION.to_string()),
        }
    }

    /// `hello`'s check: the major version, when given, is ours (`incompatible-version`
    /// otherwise). `who` names the server in the message. Shared by every control socket.
    pub fn check(&self, who: &str) -> Result<(), ErrorBody> {
        let Some(theirs) = &self.protocol else {
            return Ok(());
        };
        let major = |s: &str| s.split('.').next().unwrap_or_default().trim().to_string();
        if major(theirs) != major(PROTOCOL_VERSION) {
            return Err(error(
                ErrorClass::IncompatibleVersion,
                format!(
                    "client speaks control protocol {theirs}, this {who} speaks {PROTOCOL_VERSION}; major versions differ"
                ),
            ));
        }
        Ok(())
    }
}

/// `notify {channel, paths?}`: no paths (or none listed) is the whole channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyArgs {
    pub channel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
}

/// `subscribe {channel, mountpoint, pid?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeArgs {
    pub channel: String,
    /// Absolute.
    pub mountpoint: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

/// The statistics an overlay reports with `handled` and `status` shows under its entry.
///
/// Opaque on purpose: the daemon stores and relays them without reading any (their producer is
/// the overlay, `overlay::fs::Stats` plus the link's state, and their set of counters changes
/// with it); typing them here would make every new overlay counter a protocol change.
pub type OverlayStats = Map<String, Value>;

/// `handled {seq?, seqs?, stats?, changes?}`: acknowledges events, reports fresh statistics and
/// the changes found. An empty `seqs` with `stats` or `changes` is a report alone (after the
/// rescan that follows linking, or the first parts of a report split to fit the message limit).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HandledArgs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seqs: Option<Vec<u64>>,
    /// Present when given at all (a `null` too).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub stats: Option<Option<OverlayStats>>,
    /// Present when given at all (a `null` too: still a report of no change).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub changes: Option<Option<Vec<Reported>>>,
}

/// `Some` for any value given, `null` included (serde's `Option` reads `null` as absent).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// One entry of `handled.changes`: a well-formed change, or a malformed record (an unknown
/// type, a rename without `to`), which is dropped with a log line rather than failing the
/// acknowledgement that carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Reported {
    Change(Change),
    Malformed(Value),
}

/// `watch {channel | mountpoint, glob?}`. Unknown keys are refused: a misspelt `globs` would
/// otherwise watch everything without a word.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchArgs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mountpoint: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub glob: Option<String>,
}

/// `unwatch {watch}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnwatchArgs {
    pub watch: u64,
}

/// One request, its arguments checked.
#[derive(Debug)]
pub enum Request {
    /// `hello`: the protocol's major version matched.
    Hello,
    Status,
    /// `notify`: paths validated, normalised and deduplicated.
    Notify {
        channel: String,
        scope: Scope,
    },
    /// `subscribe` (overlays): the mountpoint absolute; no pid reads as 0.
    Subscribe {
        channel: String,
        mountpoint: PathBuf,
        pid: u32,
    },
    /// `handled` (overlays): malformed change records are dropped (logged), the rest is kept.
    Handled {
        seqs: Vec<u64>,
        /// `Some` when the report carried `stats` (`Some(None)`: a `null`).
        stats: Option<Option<OverlayStats>>,
        changes: Vec<Change>,
        /// Whether `changes` was given at all (an empty list still makes a report).
        has_changes: bool,
    },
    /// `progress` (overlays): still handling.
    Progress,
    Watch {
        target: Target,
        glob: Option<Glob>,
    },
    /// `unwatch`: once answered, no further event of that watch follows.
    Unwatch {
        watch: u64,
    },
}

impl TryFrom<Wire> for Request {
    type Error = ErrorBody;

    fn try_from(w: Wire) -> Result<Request, ErrorBody> {
        Ok(match w {
            Wire::Hello(a) => {
                a.check("daemon")?;
                Request::Hello
            }
            Wire::Status(NoArgs {}) => Request::Status,
            Wire::Notify(a) => notify(a)?,
            Wire::Subscribe(a) => subscribe(a)?,
            Wire::Handled(a) => handled(a)?,
            Wire::Progress(NoArgs {}) => Request::Progress,
            Wire::Watch(a) => watch(a)?,
            Wire::Unwatch(UnwatchArgs { watch }) => Request::Unwatch { watch },
        })
    }
}

/// The envelope every control socket shares (the daemon's, the host watcher's): read the line
/// into `W` (an enum tagged by `cmd` with `args`), keeping its `id` to echo in the response,
/// even for a bad request. `class_of` names the class of a serde error at a given path
/// (`args.paths[0]`); the envelope's own errors are `parse` (not JSON), `bad-request` (no string
/// `cmd`, `args` not an object) and `unknown-command`.
pub fn parse_wire<W: DeserializeOwned>(
    line: &[u8],
    class_of: fn(&str) -> ErrorClass,
) -> (Option<Value>, Result<W, ErrorBody>) {
    #[derive(Deserialize)]
    struct Envelope {
        cmd: String,
        #[serde(default)]
        args: Option<Map<String, Value>>,
    }
    let req: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => {
            let body = error(ErrorClass::Parse, format!("malformed JSON: {e}"));
            return (None, Err(body));
        }
    };
    // Any JSON value, `null` included, as it came.
    let id = req.get("id").cloned();
    let env: Envelope = match serde_path_to_error::deserialize(req) {
        Ok(e) => e,
        Err(e) => {
            let desc = format!("a request is {{\"cmd\": NAME, \"args\": {{...}}}}: {e}");
            return (id, Err(error(ErrorClass::BadRequest, desc)));
        }
    };
    // The tag first, so that serde reads `args` straight into the command's struct and keeps
    // the path of an error inside it.
    let cmd = env.cmd;
    let pairs = [
        (Value::from("cmd"), Value::from(cmd.as_str())),
        (
            Value::from("args"),
            Value::Object(env.args.unwrap_or_default()),
        ),
    ];
    let d = serde::de::value::MapDeserializer::<_, serde_json::Error>::new(pairs.into_iter());
    let parsed = serde_path_to_error::deserialize(d).map_err(|e| {
        let path = e.path().to_string();
        if path == "cmd" {
            // The only error at the tag, a string, is an unknown variant.
            return error(
                ErrorClass::UnknownCommand,
                format!("unknown command {cmd:?} ({})", e.inner()),
            );
        }
        error(class_of(&path), format!("{cmd}: {e}"))
    });
    (id, parsed)
}

/// Parse one request line of the daemon's control socket: its `id` (echoed in the response,
/// even for a bad request) and the checked request or the error body to answer with.
pub fn parse_request(line: &[u8]) -> (Option<Value>, Result<Request, ErrorBody>) {
    let (id, wire) = parse_wire::<Wire>(line, class_of);
    (id, wire.and_then(Request::try_from))
}

/// The class of a serde error in the daemon's requests: in `notify`'s `paths`, `bad-path` (as
/// the checks of the paths themselves); anywhere else, `bad-request`.
fn class_of(path: &str) -> ErrorClass {
    if path == "args.paths" || path.starts_with("args.paths[") {
        ErrorClass::BadPath
    } else {
        ErrorClass::BadRequest
    }
}

fn channel(channel: String) -> Result<String, ErrorBody> {
    validate_channel(&channel)
        .map_err(|e| error(ErrorClass::BadChannel, format!("{channel:?}: {e}")))?;
    Ok(channel)
}

fn notify(a: NotifyArgs) -> Result<Request, ErrorBody> {
    let channel = channel(a.channel)?;
    let mut paths = Vec::new();
    for p in a.paths.unwrap_or_default() {
        let norm =
            validate_relpath(&p).map_err(|e| error(ErrorClass::BadPath, format!("{p:?}: {e}")))?;
        if !paths.contains(&norm) {
            paths.push(norm);
        }
    }
    Ok(Request::Notify {
        channel,
        scope: Scope::from_paths(paths),
    })
}

/// An absolute mountpoint, made lexically clean; `None` when relative.
fn absolute(p: PathBuf) -> Option<PathBuf> {
    p.is_absolute()
        .then(|| std::path::absolute(&p).unwrap_or(p))
}

fn subscribe(a: SubscribeArgs) -> Result<Request, ErrorBody> {
    let channel = channel(a.channel)?;
    let mountpoint = absolute(a.mountpoint).ok_or_else(|| {
        error(
            ErrorClass::BadRequest,
            "subscribe needs an absolute `mountpoint`",
        )
    })?;
    Ok(Request::Subscribe {
        channel,
        mountpoint,
        pid: a.pid.unwrap_or(0),
    })
}

fn handled(a: HandledArgs) -> Result<Request, ErrorBody> {
    let mut seqs: Vec<u64> = a.seq.into_iter().collect();
    seqs.extend(a.seqs.unwrap_or_default());
    let has_changes = a.changes.is_some();
    let mut changes = Vec::new();
    for r in a.changes.flatten().unwrap_or_default() {
        match r {
            Reported::Change(c) => changes.push(c),
            Reported::Malformed(v) => {
                tracing::debug!(change = %v, "malformed change record ignored")
            }
        }
    }
    if seqs.is_empty() && a.stats.is_none() && !has_changes {
        return Err(error(
            ErrorClass::BadRequest,
            "`handled` needs `seq`, `seqs`, `stats` or `changes`",
        ));
    }
    Ok(Request::Handled {
        seqs,
        stats: a.stats,
        changes,
        has_changes,
    })
}

fn watch(a: WatchArgs) -> Result<Request, ErrorBody> {
    let target = match (a.channel, a.mountpoint) {
        (Some(c), None) => Target::Channel(channel(c)?),
        (None, Some(mp)) => Target::Mountpoint(
            absolute(mp)
                .ok_or_else(|| error(ErrorClass::BadRequest, "`mountpoint` must be absolute"))?,
        ),
        _ => {
            return Err(error(
                ErrorClass::BadRequest,
                "watch needs a string `channel` or an absolute `mountpoint` (one of them)",
            ));
        }
    };
    let glob = a
        .glob
        .as_deref()
        .map(Glob::new)
        .transpose()
        .map_err(|e| error(ErrorClass::BadGlob, e.to_string()))?;
    Ok(Request::Watch { target, glob })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::control::reply::response;
    use serde_json::json;

    fn parse(line: &str) -> (Option<Value>, Result<Request, ErrorBody>) {
        parse_request(line.as_bytes())
    }

    fn class(r: &Result<Request, ErrorBody>) -> &str {
        r.as_ref().err().map(|e| e.class.as_str()).unwrap_or("ok")
    }

    fn desc(r: &Result<Request, ErrorBody>) -> String {
        r.as_ref().err().map(|e| e.desc.clone()).unwrap_or_default()
    }

    #[test]
    fn envelope_errors_keep_the_id() {
        assert_eq!(class(&parse("{").1), "parse");
        let (id, r) = parse(r#"{"id": 7, "cmd": 3}"#);
        assert_eq!((id, class(&r)), (Some(json!(7)), "bad-request"));
        let (id, r) = parse(r#"{"id": "x", "cmd": "status", "args": []}"#);
        assert_eq!((id, class(&r)), (Some(json!("x")), "bad-request"));
        assert_eq!(class(&parse(r#"{"cmd": "nope"}"#).1), "unknown-command");
        let (id, r) = parse(r#"{"id": null, "cmd": "status", "args": null}"#);
        assert_eq!((id, class(&r)), (Some(Value::Null), "ok"));
        assert_eq!(class(&parse("[1]").1), "bad-request");
    }

    /// A serde error says where: the command and the field.
    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                r#"{"cmd": "notify", "args": {"channel": "c", "paths": ["a", 3]}}"#,
                "bad-path",
                "args.paths[1]",
            ),
            (
                r#"{"cmd": "notify", "args": {"channel": 3}}"#,
                "bad-request",
                "args.channel",
            ),
            (
                r#"{"cmd": "notify", "args": {}}"#,
                "bad-request",
                "`channel`",
            ),
            (
                r#"{"cmd": "hello", "args": {"protocol": 2}}"#,
                "bad-request",
                "args.protocol",
            ),
            (
                r#"{"cmd": "watch", "args": {"channel": "c", "globs": "*"}}"#,
                "bad-request",
                "`globs`",
            ),
            (
                r#"{"cmd": "handled", "args": {"seqs": [1, "2"]}}"#,
                "bad-request",
                "args.seqs[1]",
            ),
            (r#"{"cmd": 3}"#, "bad-request", "cmd"),
            (r#"{"cmd": "status", "args": []}"#, "bad-request", "args"),
        ];
        for (line, want, field) in cases {
            let r = parse(line).1;
            assert_eq!(class(&r), want, "{line}");
            assert!(desc(&r).contains(field), "{line}: {}", desc(&r));
        }
    }

    /// What a client sends is what clients sent before these types.
    #[test]
    fn clients_send_the_same_json() {
        let w = Wire::Notify(NotifyArgs {
            channel: "docs".into(),
            paths: Some(vec!["a".into()]),
        });
        assert_eq!(
            serde_json::to_value(&w).unwrap(),
            json!({"cmd": "notify", "args": {"channel": "docs", "paths": ["a"]}})
        );
        assert_eq!(
            serde_json::to_value(Wire::Hello(HelloArgs::ours())).unwrap(),
            json!({"cmd": "hello", "args": {"protocol": PROTOCOL_VERSION}})
        );
        assert_eq!(
            serde_json::to_value(Wire::Status(NoArgs {})).unwrap(),
            json!({"cmd": "status", "args": {}})
        );
        let h = Wire::Handled(HandledArgs {
            seqs: Some(vec![]),
            stats: Some(Some(OverlayStats::new())),
            changes: Some(Some(vec![])),
            ..Default::default()
        });
        assert_eq!(
            serde_json::to_value(&h).unwrap(),
            json!({"cmd": "handled", "args": {"seqs": [], "stats": {}, "changes": []}})
        );
        // And it reads back the same.
        let back: Wire = serde_json::from_value(serde_json::to_value(&h).unwrap()).unwrap();
        assert_eq!(back, h);
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
            parse(r#"{"cmd": "handled", "args": {"changes": null}}"#).1,
            Ok(Request::Handled {
                has_changes: true,
                ..
            })
        ));
        match parse(r#"{"cmd": "handled", "args": {"seq": 2, "changes": [{"type": "bogus", "path": "x"}, {"type": "create", "path": "a"}]}}"#).1 {
            Ok(Request::Handled { seqs, changes, .. }) => {
                assert_eq!((seqs, changes.len()), (vec![2], 1));
            }
            other => panic!("{other:?}"),
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
        let line = response::<Value>(&Some(json!(5)), Ok(json!({"x": 1})));
        assert!(line.ends_with('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["id"], 5);
        assert_eq!(v["result"]["x"], 1);
    }
}
