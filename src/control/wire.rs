//! Types carried on the control socket that both ends name: the changes an overlay reports in
//! `handled` and a watch relays as events, and what a watch follows.

use std::path::PathBuf;

use serde_json::Value;

/// The kinds of change an overlay reports.
pub const CHANGE_TYPES: &[&str] = &["create", "delete", "modify", "attrib", "rename"];

/// One change reported by an overlay (`handled.changes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: &'static str,
    pub path: String,
    pub to: Option<String>,
}

impl Change {
    /// Parse one `{"type", "path", "to"?}` object; `None` when malformed.
    pub fn from_json(v: &Value) -> Option<Change> {
        let t = v.get("type")?.as_str()?;
        let kind = CHANGE_TYPES.iter().copied().find(|k| *k == t)?;
        let path = v.get("path")?.as_str()?.to_string();
        let to = match v.get("to") {
            None | Some(Value::Null) => None,
            Some(t) => Some(t.as_str()?.to_string()),
        };
        if kind == "rename" && to.is_none() {
            return None;
        }
        Some(Change { kind, path, to })
    }
}

/// What a watch follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every overlay of a channel (following it, or mounted on one of its `--map` folders).
    Channel(String),
    /// The overlay mounted there (across its reconnections).
    Mountpoint(PathBuf),
}
