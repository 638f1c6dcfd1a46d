//! Types carried on the control socket that both ends name: the changes an overlay reports in
//! `handled` and a watch relays as events, what a notification covers and a watch follows, and
//! every event the daemon pushes (`{"event": {...}}`: [`LinkEvent`] to subscribed overlays,
//! [`WatchEvent`] to watches). Requests are in [`super::request`], responses in
//! [`super::reply`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The kinds of change an overlay reports and a watch relays; on the wire, the lowercase name
/// (`"create"`, ...). Adding one here makes the compiler point at every `match` that must say
/// what it means: its wire name ([`ChangeKind::as_str`]), whether it carries a second path
/// ([`ChangeKind::has_target`]), how `vfnotify watch` shows it, and the overlay records that make it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Create,
    Delete,
    Modify,
    Attrib,
    Rename,
}

impl ChangeKind {
    /// The wire name (what serde writes).
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Create => "create",
            ChangeKind::Delete => "delete",
            ChangeKind::Modify => "modify",
            ChangeKind::Attrib => "attrib",
            ChangeKind::Rename => "rename",
        }
    }

    /// Whether a change of this kind names a second path (`to`).
    pub fn has_target(self) -> bool {
        match self {
            ChangeKind::Rename => true,
            ChangeKind::Create | ChangeKind::Delete | ChangeKind::Modify | ChangeKind::Attrib => {
                false
            }
        }
    }
}

impl std::fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change, as an overlay reports it (`handled.changes`) and a watch relays it: `type`,
/// `path` relative to the mount, and `to` for a rename.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawChange")]
pub struct Change {
    #[serde(rename = "type")]
    pub kind: ChangeKind,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// [`Change`] as it arrives, before the check that a rename names its target.
#[derive(Deserialize)]
struct RawChange {
    #[serde(rename = "type")]
    kind: ChangeKind,
    path: String,
    #[serde(default)]
    to: Option<String>,
}

impl TryFrom<RawChange> for Change {
    type Error = String;
    fn try_from(r: RawChange) -> Result<Change, String> {
        if r.kind.has_target() && r.to.is_none() {
            return Err(format!("a {} needs `to`", r.kind));
        }
        Ok(Change {
            kind: r.kind,
            path: r.path,
            to: r.to,
        })
    }
}

impl Change {
    /// Parse one `{"type", "path", "to"?}` object; `None` when malformed (an unknown type, a
    /// rename without `to`).
    pub fn from_json(v: &Value) -> Option<Change> {
        Change::deserialize(v).ok()
    }
}

/// What a notification covers. On the wire (a `notify` request's and event's `paths`) it is a
/// list of relative paths, the whole being the empty list; in the code it is this enum, so no
/// one has to remember what an empty list means.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Scope {
    /// The whole channel (or mount).
    #[default]
    Whole,
    /// These relative paths (validated; never empty).
    Paths(Vec<String>),
}

impl Scope {
    /// From the wire form: the empty list is the whole.
    pub fn from_paths(paths: Vec<String>) -> Scope {
        if paths.is_empty() {
            Scope::Whole
        } else {
            Scope::Paths(paths)
        }
    }

    /// The wire form: the whole is the empty list.
    pub fn paths(&self) -> &[String] {
        match self {
            Scope::Whole => &[],
            Scope::Paths(p) => p,
        }
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.paths().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<String>::deserialize(d).map(Scope::from_paths)
    }
}

/// What a watch follows; on the wire (in `status`) `{"channel": NAME}` or
/// `{"mountpoint": PATH}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Every overlay of a channel (following it, or mounted on one of its `--map` folders).
    Channel(String),
    /// The overlay mounted there (across its reconnections).
    Mountpoint(PathBuf),
}

/// Every message the daemon sends unasked: `{"event": E}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMsg<E> {
    pub event: E,
}

impl<E: Serialize> EventMsg<E> {
    /// The message as one line (with its final `\n`).
    pub fn line(event: E) -> String {
        let mut s = serde_json::to_string(&EventMsg { event }).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// The events of a subscription (to an overlay's link), tagged by `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum LinkEvent {
    /// Handle this notification, then acknowledge `seq` with `handled`.
    Notify {
        channel: String,
        paths: Scope,
        seq: u64,
    },
    /// The globs of the watches that follow the overlay now (empty: none).
    Watches { globs: Vec<String> },
    /// Whether a `vfnotify host` feeds the daemon now (`revalidate=auto` trusts notifications
    /// while it does; sent at subscribing when it does, and at every change).
    Feed { exact: bool },
}

/// One event of a watch: `{"watch": ID, "type": KIND, "path", "to"?, "seq"}`, or
/// `{"watch": ID, "type": "overflow"}` once its queue overflowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    pub watch: u64,
    #[serde(flatten)]
    pub item: WatchItem,
}

/// What a [`WatchEvent`] says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum WatchItem {
    /// Events were dropped from here on until the queue drained (`seq` gaps count them).
    Overflow,
    /// One change (its `type` is the change kind), numbered in the watch.
    #[serde(untagged)]
    Change {
        #[serde(flatten)]
        change: Change,
        seq: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The JSON on the wire is what it was when kinds were strings.
    #[test]
    fn wire_form_is_unchanged() {
        for (kind, name) in [
            (ChangeKind::Create, "create"),
            (ChangeKind::Delete, "delete"),
            (ChangeKind::Modify, "modify"),
            (ChangeKind::Attrib, "attrib"),
            (ChangeKind::Rename, "rename"),
        ] {
            assert_eq!(serde_json::to_value(kind).unwrap(), json!(name));
            assert_eq!(kind.as_str(), name);
        }
        let c = Change {
            kind: ChangeKind::Modify,
            path: "a/b".into(),
            to: None,
        };
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"type":"modify","path":"a/b"}"#
        );
        let r = Change::from_json(&json!({"type": "rename", "path": "a", "to": "b"})).unwrap();
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"type":"rename","path":"a","to":"b"}"#
        );
        assert!(Change::from_json(&json!({"type": "truncate", "path": "a"})).is_none());
        assert_eq!(serde_json::to_string(&Scope::Whole).unwrap(), "[]");
        let some = Scope::from_paths(vec!["a".into()]);
        assert_eq!(serde_json::to_string(&some).unwrap(), r#"["a"]"#);
        assert_eq!(serde_json::from_str::<Scope>("[]").unwrap(), Scope::Whole);
        assert_eq!(serde_json::from_str::<Scope>(r#"["a"]"#).unwrap(), some);
    }
}
