//! Responses of the control socket: `{"result": R, "id"?}` or `{"error": {"class", "desc"},
//! "id"?}`, the `id` echoed from the request (even a bad one). Each command's result body is a
//! type here, so the server that builds it and the client that reads it name the same fields.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::PROTOCOL_VERSION;
use super::request::OverlayStats;
use super::wire::Target;

/// What went wrong, on the wire as the kebab-case name (`"bad-request"`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorClass {
    /// The line is not JSON.
    Parse,
    /// The request's shape or an argument is wrong.
    BadRequest,
    UnknownCommand,
    BadChannel,
    BadPath,
    BadGlob,
    /// `hello` with another major protocol version.
    IncompatibleVersion,
    /// A request line longer than [`super::MAX_MESSAGE`] (the connection is closed).
    Overlong,
    UnknownChannel,
    UnknownMountpoint,
    UnknownWatch,
    AlreadySubscribed,
    NotSubscribed,
    TooManyWatches,
    Timeout,
    /// The host watcher stopped while a `sync` waited.
    Stopped,
    /// The result could not be written (a path that is not UTF-8).
    Internal,
    /// A class this build does not know (a newer peer's), as it came: kept rather than refused.
    #[serde(untagged)]
    Other(String),
}

impl ErrorClass {
    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorClass::Parse => "parse",
            ErrorClass::BadRequest => "bad-request",
            ErrorClass::UnknownCommand => "unknown-command",
            ErrorClass::BadChannel => "bad-channel",
            ErrorClass::BadPath => "bad-path",
            ErrorClass::BadGlob => "bad-glob",
            ErrorClass::IncompatibleVersion => "incompatible-version",
            ErrorClass::Overlong => "overlong",
            ErrorClass::UnknownChannel => "unknown-channel",
            ErrorClass::UnknownMountpoint => "unknown-mountpoint",
            ErrorClass::UnknownWatch => "unknown-watch",
            ErrorClass::AlreadySubscribed => "already-subscribed",
            ErrorClass::NotSubscribed => "not-subscribed",
            ErrorClass::TooManyWatches => "too-many-watches",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Stopped => "stopped",
            ErrorClass::Internal => "internal",
            ErrorClass::Other(s) => s,
        }
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error body: `{"class", "desc"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub class: ErrorClass,
    pub desc: String,
}

/// An error body.
pub fn error(class: ErrorClass, desc: impl Into<String>) -> ErrorBody {
    ErrorBody {
        class,
        desc: desc.into(),
    }
}

/// One response as it travels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response<R> {
    #[serde(flatten)]
    pub body: Body<R>,
    /// The request's `id`, as it came (absent when it had none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
}

/// A response's body: exactly one of `result` and `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Body<R> {
    Result(R),
    Error(ErrorBody),
}

impl<R> From<Result<R, ErrorBody>> for Body<R> {
    fn from(r: Result<R, ErrorBody>) -> Self {
        match r {
            Ok(r) => Body::Result(r),
            Err(e) => Body::Error(e),
        }
    }
}

/// One response line (with its final `\n`): `{"result": ...}` or `{"error": ...}`, with the
/// request's `id` if any.
pub fn response<R: Serialize>(id: &Option<Value>, body: Result<R, ErrorBody>) -> String {
    let r = Response {
        body: body.into(),
        id: id.clone(),
    };
    let mut s = serde_json::to_string(&r).unwrap_or_else(|e| {
        // A path that is not UTF-8 (a mountpoint in `status`) has no JSON form.
        let r: Response<()> = Response {
            body: Body::Error(error(
                ErrorClass::Internal,
                format!("the result could not be written: {e}"),
            )),
            id: id.clone(),
        };
        serde_json::to_string(&r).unwrap_or_default()
    });
    s.push('\n');
    s
}

/// The result of `hello`: the server's protocol version and program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloResult {
    pub protocol: String,
    pub program: String,
}

impl HelloResult {
    /// This build's.
    pub fn ours() -> HelloResult {
        HelloResult {
            protocol: PROTOCOL_VERSION.to_string(),
            program: crate::PROGRAM.to_string(),
        }
    }
}

/// The result of `notify`: how many overlays got it, how many handled it in time, and how many
/// trigger files were toggled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyResult {
    pub channel: String,
    pub overlays: u64,
    pub handled: u64,
    pub triggers: u64,
}

/// The result of `subscribe`: the subscription's id (in `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeResult {
    pub subscription: u64,
}

/// The result of `watch`: its id (in its events and `unwatch`), and how many overlays follow
/// its target now (0: it waits for one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchResult {
    pub watch: u64,
    pub overlays: u64,
}

/// The result of `unwatch`: what the watch sent, dropped, and how often it overflowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WatchTotals {
    pub sent: u64,
    pub dropped: u64,
    pub overflows: u64,
}

/// The result of `handled`: `{}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Done {}

/// The result of the daemon's `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub program: String,
    pub pid: u32,
    /// Each listener, as shown (`vsock:9999`, `unix:/run/...`).
    pub listeners: Vec<String>,
    pub control: PathBuf,
    pub trigger_name: String,
    /// The vsock peer-CID policy, as shown.
    pub allow_cid: String,
    /// Channel → its `--map` folders.
    pub channels: BTreeMap<String, Vec<PathBuf>>,
    pub counters: DaemonCounters,
    pub overlays: Vec<OverlayStatus>,
    pub watches: Vec<WatchStatus>,
}

/// The daemon's counters: a map by name (the daemon's `Counters`; names come and go with it,
/// so a reader takes what is there), those of dropped or ignored input under `dropped`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DaemonCounters {
    #[serde(flatten)]
    pub counts: BTreeMap<String, u64>,
    pub dropped: BTreeMap<String, u64>,
}

/// One subscribed overlay in `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverlayStatus {
    pub subscription: u64,
    pub channel: String,
    pub mountpoint: PathBuf,
    pub pid: u32,
    /// Unix time of the subscription.
    pub since: u64,
    pub delivered: u64,
    pub handled: u64,
    pub queued: u64,
    /// As the overlay last reported them (`null` before its first report).
    pub stats: Option<OverlayStats>,
}

/// One watch in `status`: its target as `channel` or `mountpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchStatus {
    pub watch: u64,
    #[serde(flatten)]
    pub target: Target,
    pub glob: Option<String>,
    pub queued: u64,
    pub sent: u64,
    pub dropped: u64,
    pub overflows: u64,
    /// In overflow now (events dropped until its queue drains).
    pub overflowed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The JSON on the wire is what `json!` built before these types.
    #[test]
    fn wire_form_is_unchanged() {
        let line = response(&Some(json!(5)), Ok(WatchTotals::default()));
        assert_eq!(
            line,
            "{\"result\":{\"sent\":0,\"dropped\":0,\"overflows\":0},\"id\":5}\n"
        );
        let line = response::<Done>(&None, Err(error(ErrorClass::BadRequest, "x")));
        assert_eq!(
            line,
            "{\"error\":{\"class\":\"bad-request\",\"desc\":\"x\"}}\n"
        );
        let line = response(&Some(Value::Null), Ok(Done {}));
        assert_eq!(line, "{\"result\":{},\"id\":null}\n");
        for (c, name) in [
            (ErrorClass::Parse, "parse"),
            (ErrorClass::BadRequest, "bad-request"),
            (ErrorClass::UnknownCommand, "unknown-command"),
            (ErrorClass::BadChannel, "bad-channel"),
            (ErrorClass::BadPath, "bad-path"),
            (ErrorClass::BadGlob, "bad-glob"),
            (ErrorClass::IncompatibleVersion, "incompatible-version"),
            (ErrorClass::Overlong, "overlong"),
            (ErrorClass::UnknownChannel, "unknown-channel"),
            (ErrorClass::UnknownMountpoint, "unknown-mountpoint"),
            (ErrorClass::UnknownWatch, "unknown-watch"),
            (ErrorClass::AlreadySubscribed, "already-subscribed"),
            (ErrorClass::NotSubscribed, "not-subscribed"),
            (ErrorClass::TooManyWatches, "too-many-watches"),
            (ErrorClass::Timeout, "timeout"),
            (ErrorClass::Stopped, "stopped"),
            (ErrorClass::Internal, "internal"),
        ] {
            assert_eq!(serde_json::to_value(&c).unwrap(), json!(name));
            assert_eq!(c.as_str(), name);
            assert_eq!(
                serde_json::from_value::<ErrorClass>(json!(name)).unwrap(),
                c
            );
        }
        // A result with no JSON form is an `internal` error, the id kept.
        use std::os::unix::ffi::OsStrExt as _;
        let bad = PathBuf::from(std::ffi::OsStr::from_bytes(b"/m\xff"));
        let line = response(&Some(json!(1)), Ok(bad));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            (v["error"]["class"].as_str(), &v["id"]),
            (Some("internal"), &json!(1))
        );
        let back: Response<Value> =
            serde_json::from_str(r#"{"error":{"class":"new-thing","desc":"d"},"id":1}"#).unwrap();
        assert_eq!(
            back.body,
            Body::Error(error(ErrorClass::Other("new-thing".into()), "d"))
        );
    }
}
