//! The overlay's side of the daemon link.
//!
//! An overlay mounted with `channel=NAME` connects to the daemon's control socket, subscribes to
//! NAME and then receives every notification for it. It acknowledges each one once handled
//! (caches invalidated, events replayed), which is what lets `vfnotify notify` return only when
//! the change is visible. The link reconnects on its own (daemon started late or restarted); after
//! every (re)connection the overlay does a full rescan, since it may have missed notifications.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use thiserror::Error;

use crate::control::reply::{HelloResult, SubscribeResult};
use crate::control::request::{
    HandledArgs, HelloArgs, NoArgs, OverlayStats, Reported, SubscribeArgs, Wire,
};
pub use crate::control::wire::{Change, Scope};
use crate::control::wire::{EventMsg, LinkEvent};
use crate::control::{Client, ClientError};
use crate::protocol::validate_relpath;

/// What the link asks of an overlay.
pub trait NotifyTarget: Send + Sync + 'static {
    /// Handle one (possibly coalesced) notification: the whole mount, or validated relative
    /// paths under it. Returns once caches are invalidated and events replayed.
    /// Returns the changes found, in order (`{"type", "path", "to"?}` objects), for watchers.
    /// A handling that takes long calls `progress` every [`PROGRESS_INTERVAL`] or so: the
    /// daemon's `notify` waits on while it hears of it.
    fn handle(&self, scope: &Scope, progress: &mut dyn FnMut()) -> Vec<serde_json::Value>;
    /// The link went up (`true`) or down (`false`). Called on every transition.
    fn set_linked(&self, linked: bool);
    /// The globs of the watch subscriptions that follow this overlay now (empty: none), so the
    /// overlay can find every change they match, in folders no client listed too.
    fn set_watch_globs(&self, _globs: Vec<String>) {}
    /// Whether a `vfnotify host` feeds the daemon (every host change is notified): told at
    /// subscribing when it does, and whenever it changes.
    fn set_feed_exact(&self, _exact: bool) {}
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
    /// How often fresh statistics are reported when no notification comes (only when they
    /// changed), so `vfnotify status` is not stale on a quiet channel.
    pub stats_interval: Duration,
}

/// The default [`LinkConfig::stats_interval`].
pub const STATS_INTERVAL: Duration = Duration::from_secs(5);

/// How often the link retries connecting while the daemon is away.
pub const RETRY: Duration = Duration::from_millis(100);

/// How long the link waits for the daemon's answers to `hello` and `subscribe`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why one link session ended.
#[derive(Debug, Error)]
pub enum LinkError {
    #[error(transparent)]
    Connect(ClientError),
    #[error("hello failed: {0}")]
    Hello(ClientError),
    #[error("subscribe failed: {0}")]
    Subscribe(ClientError),
    #[error("receiving events failed: {0}")]
    Receive(ClientError),
    #[error("acknowledging failed: {0}")]
    Ack(ClientError),
}

/// Start the link thread; it runs until the process exits.
pub fn spawn(config: LinkConfig, target: Arc<dyn NotifyTarget>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("vfnotify-link".into())
        .spawn(move || run(&config, &*target))?;
    Ok(())
}

fn run(config: &LinkConfig, target: &dyn NotifyTarget) {
    let mut was_linked = false;
    let mut reported_absent = false;
    loop {
        match session(config, target, &mut was_linked) {
            Err(LinkError::Connect(e)) => {
                if !reported_absent {
                    tracing::info!(channel = %config.channel, error = %e, "daemon not reachable; retrying every {} ms", RETRY.as_millis());
                    reported_absent = true;
                }
            }
            Err(e) => {
                tracing::info!(channel = %config.channel, error = %e, "link to the daemon lost; reconnecting");
                reported_absent = false;
            }
            Ok(()) => {}
        }
        if was_linked {
            target.set_linked(false);
            was_linked = false;
        }
        std::thread::sleep(RETRY);
    }
}

/// How often a notification still being handled is reported to the daemon (`progress`), so
/// that a `notify` waiting for it waits on ([`crate::control::NOTIFY_TIMEOUT`] without word).
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);

/// `target.handle(scope)`, with `progress` sending the daemon word that it goes on.
fn handle_reporting(
    client: &mut Client,
    target: &dyn NotifyTarget,
    scope: &Scope,
) -> Result<Vec<serde_json::Value>, LinkError> {
    let mut failed = None;
    let changes = target.handle(scope, &mut || {
        if failed.is_none() {
            failed = client.send_wire(&Wire::Progress(NoArgs {})).err();
        }
    });
    match failed {
        Some(e) => Err(LinkError::Ack(e)),
        None => Ok(changes),
    }
}

/// One connection: hello, subscribe, rescan, then events until the connection ends.
fn session(
    config: &LinkConfig,
    target: &dyn NotifyTarget,
    linked: &mut bool,
) -> Result<(), LinkError> {
    let mut client = Client::connect(&config.control).map_err(LinkError::Connect)?;
    // A daemon that accepts but never answers must not hang the link.
    client
        .set_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(LinkError::Hello)?;
    let _: HelloResult = client
        .call(&Wire::Hello(HelloArgs::ours()))
        .map_err(LinkError::Hello)?;
    let sub: SubscribeResult = client
        .call(&Wire::Subscribe(SubscribeArgs {
            channel: config.channel.clone(),
            mountpoint: config.mountpoint.clone(),
            pid: Some(std::process::id()),
        }))
        .map_err(LinkError::Subscribe)?;
    client.set_timeout(None).map_err(LinkError::Subscribe)?;
    tracing::info!(channel = %config.channel, control = %config.control.display(), subscription = sub.subscription, "linked to the daemon");
    target.set_linked(true);
    *linked = true;
    // Notifications may have been missed while unlinked: rescan, and report what that found
    // (and the fresh state) with an acknowledgement of nothing.
    let changes = handle_reporting(&mut client, target, &Scope::Whole)?;
    let mut reported = target.stats();
    client
        .report(report(Vec::new(), &reported, Some(changes)))
        .map_err(LinkError::Ack)?;
    // Waiting for events wakes up every `stats_interval` to report changed statistics (a read
    // timeout keeps what was partly received).
    client
        .set_timeout(Some(config.stats_interval))
        .map_err(LinkError::Receive)?;
    loop {
        let batch = match client.recv_batch() {
            Ok(b) => b,
            Err(ClientError::Receive(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                let stats = target.stats();
                if stats != reported {
                    client
                        .report(report(Vec::new(), &stats, None))
                        .map_err(LinkError::Ack)?;
                    reported = stats;
                }
                continue;
            }
            Err(e) => return Err(LinkError::Receive(e)),
        };
        if let Some(globs) = watch_globs(&batch) {
            target.set_watch_globs(globs);
        }
        if let Some(exact) = feed_exact(&batch) {
            target.set_feed_exact(exact);
        }
        let Some(merged) = merge_events(&batch) else {
            continue;
        };
        let changes = handle_reporting(&mut client, target, &merged.scope)?;
        reported = target.stats();
        client
            .report(report(merged.seqs, &reported, Some(changes)))
            .map_err(LinkError::Ack)?;
    }
}

/// A `handled` report: `seqs` acknowledged, the overlay's `stats` (an object; anything else is
/// reported as none), and the changes found (when it handled something).
fn report(seqs: Vec<u64>, stats: &Value, changes: Option<Vec<Value>>) -> HandledArgs {
    let stats: OverlayStats = match stats {
        Value::Object(m) => m.clone(),
        other => {
            tracing::debug!(stats = %other, "overlay stats not an object; reported empty");
            OverlayStats::new()
        }
    };
    let changes = changes.map(|cs| {
        cs.into_iter()
            .map(|c| match serde_json::from_value::<Change>(c.clone()) {
                Ok(c) => Reported::Change(c),
                Err(_) => Reported::Malformed(c),
            })
            .collect()
    });
    HandledArgs {
        seq: None,
        seqs: Some(seqs),
        stats: Some(Some(stats)),
        changes: changes.map(Some),
    }
}

/// The link events among `messages` (responses and events the link does not know are skipped).
fn events(messages: &[Value]) -> impl DoubleEndedIterator<Item = LinkEvent> + '_ {
    messages.iter().filter_map(|m| {
        m.get("event")?;
        <EventMsg<LinkEvent> as serde::Deserialize>::deserialize(m)
            .inspect_err(
                |e| tracing::debug!(message = %m, error = %e, "event not understood; skipped"),
            )
            .ok()
            .map(|m| m.event)
    })
}

/// The last `watches` event of a batch: the watch globs following the overlay now.
pub fn watch_globs(messages: &[Value]) -> Option<Vec<String>> {
    events(messages).rev().find_map(|ev| match ev {
        LinkEvent::Watches { globs } => Some(globs),
        LinkEvent::Notify { .. } | LinkEvent::Feed { .. } => None,
    })
}

/// The last `feed` event of a batch: whether a `vfnotify host` feeds the daemon now.
pub fn feed_exact(messages: &[Value]) -> Option<bool> {
    events(messages).rev().find_map(|ev| match ev {
        LinkEvent::Feed { exact } => Some(exact),
        LinkEvent::Notify { .. } | LinkEvent::Watches { .. } => None,
    })
}

/// Notify events of one batch, merged.
#[derive(Debug, PartialEq, Eq)]
pub struct Merged {
    /// The union of their paths (deduplicated, in order), or the whole mount.
    pub scope: Scope,
    /// Their sequence numbers.
    pub seqs: Vec<u64>,
}

/// Merge the notify events among `messages` (others are ignored); `None` when there is none.
/// Any whole-mount event (empty paths) makes the merge whole-mount. Paths are validated again.
pub fn merge_events(messages: &[Value]) -> Option<Merged> {
    let mut paths: Vec<String> = Vec::new();
    let mut seqs = Vec::new();
    let mut whole = false;
    for ev in events(messages) {
        let LinkEvent::Notify {
            paths: scope, seq, ..
        } = ev
        else {
            continue;
        };
        seqs.push(seq);
        match scope {
            Scope::Paths(list) => {
                for p in list {
                    match validate_relpath(&p) {
                        Ok(p) => {
                            if !paths.contains(&p) {
                                paths.push(p);
                            }
                        }
                        Err(_) => whole = true, // cannot scope it: be safe
                    }
                }
            }
            Scope::Whole => whole = true,
        }
    }
    if seqs.is_empty() {
        return None;
    }
    let scope = if whole {
        Scope::Whole
    } else {
        Scope::from_paths(paths)
    };
    Some(Merged { scope, seqs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(seq: u64, paths: &[&str]) -> Value {
        json!({"event": {"type": "notify", "channel": "c", "paths": paths, "seq": seq}})
    }

    #[test]
    fn merging() {
        assert_eq!(merge_events(&[json!({"result": {}})]), None);
        let m = merge_events(&[
            ev(1, &["a", "b"]),
            json!({"result": {}}),
            ev(2, &["b", "c/./d"]),
        ])
        .unwrap();
        assert_eq!(
            m,
            Merged {
                scope: Scope::Paths(vec!["a".into(), "b".into(), "c/d".into()]),
                seqs: vec![1, 2]
            }
        );
        let m = merge_events(&[ev(3, &["a"]), ev(4, &[])]).unwrap();
        assert_eq!(
            m,
            Merged {
                scope: Scope::Whole,
                seqs: vec![3, 4]
            }
        );
        let m = merge_events(&[ev(5, &["../x"])]).unwrap();
        assert_eq!(m.scope, Scope::Whole);
    }
}
