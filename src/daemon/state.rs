//! The daemon's shared state: configuration, counters, subscribed overlays, and dispatch of one
//! notification to its overlays and trigger files.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::DaemonConfig;
pub use super::subscriber::{Event, Popped, Subscriber};
use super::watch::{self, Change, Target, Watch};
use crate::control::reply::{DaemonCounters, DaemonStatus};
use crate::control::wire::Scope;
use crate::glob::Glob;
use crate::mountinfo::vfnotify_mounts;
use crate::trigger::{self, Coalescer};

/// Most queued events per subscribed overlay; on overflow the queue collapses into one
/// whole-mount notification.
pub const SUBSCRIBER_QUEUE: usize = 1024;

pub use super::connections::{ConnSlot, Connections};
pub(crate) use crate::util::lock;

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        /// Every counter of the daemon (monotonic).
        #[derive(Debug, Default)]
        pub struct Counters { $(pub $name: AtomicU64,)* }
        impl Counters {
            /// Add one.
            pub fn bump(c: &AtomicU64) { c.fetch_add(1, Ordering::Relaxed); }
            fn snapshot(&self) -> BTreeMap<&'static str, u64> {
                let mut m = BTreeMap::new();
                $(m.insert(stringify!($name), self.$name.load(Ordering::Relaxed));)*
                m
            }
        }
    };
}

counters!(
    received,
    unknown_channel,
    overlong,
    non_utf8,
    bad_relpath,
    bad_channel,
    partial_line,
    refused_cid,
    evicted,
    idle_timeout,
    slow_line,
    read_errors,
    accept_errors,
    triggers_ok,
    triggers_failed,
    own_trigger,
    coalesced,
    connections,
    overlay_unlinked,
    overlay_overflow,
    control_connections,
    control_refused,
    control_errors,
    watches_opened,
    watch_events,
    watch_overflow,
    watch_dropped,
    barrier_hellos,
    barrier_syncs,
    barrier_acks,
    barrier_coalesced,
    barrier_bad,
);

const DROPPED: &[&str] = &[
    "overlong",
    "non_utf8",
    "bad_relpath",
    "bad_channel",
    "partial_line",
    "refused_cid",
    "evicted",
    "idle_timeout",
    "slow_line",
    "read_errors",
    "overlay_unlinked",
    "overlay_overflow",
    "control_refused",
    "watch_overflow",
    "watch_dropped",
    "barrier_bad",
];

impl Counters {
    /// The `counters` object of `status`: dropped/ignored items are grouped under `dropped`.
    pub fn wire(&self) -> DaemonCounters {
        let mut out = DaemonCounters::default();
        for (k, v) in self.snapshot() {
            let to = if DROPPED.contains(&k) {
                &mut out.dropped
            } else {
                &mut out.counts
            };
            to.insert(k.to_string(), v);
        }
        out
    }
}

/// What a caller of [`Shared::dispatch`] can wait on.
#[derive(Debug, Default)]
pub struct DispatchWait {
    /// Whether the channel was known (mapped or followed by an overlay).
    pub known: bool,
    /// One receiver per overlay the notification was delivered to, and the overlays.
    pub overlays: Vec<oneshot::Receiver<()>>,
    pub subs: Vec<Arc<Subscriber>>,
    /// The trigger run covering this notification (when the channel has trigger folders).
    pub triggers: Option<oneshot::Receiver<u64>>,
}

/// The daemon's shared state.
pub struct Shared {
    pub config: DaemonConfig,
    pub counters: Counters,
    pub listeners: Mutex<Vec<String>>,
    /// Currently open peer connections (at most `--max-connections`).
    pub connections: Connections,
    /// Currently open control connections.
    pub control_active: AtomicUsize,
    subscribers: Mutex<BTreeMap<u64, Arc<Subscriber>>>,
    next_subscriber: AtomicU64,
    watches: Mutex<BTreeMap<u64, Arc<Watch>>>,
    next_watch: AtomicU64,
    coalescer: Arc<Coalescer>,
    /// Peer connections that negotiated syncs (see [`super::feed`]).
    pub(super) exact_peers: AtomicUsize,
    /// When the daemon started (overlays linked to a previous instance relink soon after).
    pub started: Instant,
}

impl Shared {
    /// New state; the coalescer's action toggles the channel's trigger files.
    pub fn new(config: DaemonConfig) -> Arc<Self> {
        let window = config.coalesce;
        Arc::new_cyclic(|weak: &Weak<Shared>| {
            let weak = weak.clone();
            let action: trigger::Action = Arc::new(move |channel: &str| match weak.upgrade() {
                Some(shared) => shared.run_triggers(channel),
                None => 0,
            });
            Shared {
                config,
                counters: Counters::default(),
                listeners: Mutex::new(Vec::new()),
                connections: Connections::default(),
                control_active: AtomicUsize::new(0),
                subscribers: Mutex::new(BTreeMap::new()),
                next_subscriber: AtomicU64::new(1),
                watches: Mutex::new(BTreeMap::new()),
                next_watch: AtomicU64::new(1),
                coalescer: Coalescer::new(window, action),
                exact_peers: AtomicUsize::new(0),
                started: Instant::now(),
            }
        })
    }

    /// Register an overlay.
    pub fn subscribe(&self, channel: String, mountpoint: PathBuf, pid: u32) -> Arc<Subscriber> {
        let id = self.next_subscriber.fetch_add(1, Ordering::Relaxed);
        let feed = self.feed_exact().then_some(true);
        let sub = Arc::new(Subscriber::new(id, channel, mountpoint, pid, feed));
        lock(&self.subscribers).insert(id, Arc::clone(&sub));
        let globs = self.globs_following(&sub);
        if !globs.is_empty() {
            sub.set_globs(globs);
        }
        tracing::info!(id, channel = %sub.channel, mountpoint = %sub.mountpoint.display(), pid, "overlay subscribed");
        sub
    }

    /// Remove an overlay (its connection closed).
    pub fn unsubscribe(&self, id: u64) {
        if let Some(sub) = lock(&self.subscribers).remove(&id) {
            sub.close();
            tracing::info!(id, channel = %sub.channel, mountpoint = %sub.mountpoint.display(), "overlay unsubscribed");
        }
    }

    pub(super) fn subscribers(&self) -> Vec<Arc<Subscriber>> {
        lock(&self.subscribers).values().cloned().collect()
    }

    /// How many overlays a watch of `target` follows right now.
    pub fn overlays_of(&self, target: &Target) -> usize {
        self.subscribers()
            .iter()
            .filter(|s| self.follows(target, s))
            .count()
    }

    /// Whether a watch of `target` receives the changes `sub` reports: the overlay follows the
    /// channel or is mounted on one of its folders (as in [`Shared::dispatch`]), or is mounted at
    /// the mountpoint.
    fn follows(&self, target: &Target, sub: &Subscriber) -> bool {
        match target {
            Target::Channel(c) => {
                sub.channel == *c || self.config.channels.paths(c).contains(&sub.mountpoint)
            }
            Target::Mountpoint(m) => sub.mountpoint == *m,
        }
    }

    /// Open a watch.
    pub fn add_watch(&self, target: Target, glob: Option<Glob>) -> Arc<Watch> {
        let id = self.next_watch.fetch_add(1, Ordering::Relaxed);
        let w = Arc::new(Watch::new(id, target, glob));
        lock(&self.watches).insert(id, Arc::clone(&w));
        Counters::bump(&self.counters.watches_opened);
        tracing::debug!(id, target = ?w.target, glob = ?w.glob.as_ref().map(Glob::as_str), "watch opened");
        self.tell_globs(&w.target);
        w
    }

    /// Close and forget a watch.
    pub fn remove_watch(&self, id: u64) {
        let removed = lock(&self.watches).remove(&id);
        if let Some(w) = removed {
            w.close();
            tracing::debug!(id, "watch closed");
            self.tell_globs(&w.target);
        }
    }

    /// The globs of the watches following `sub` (`**` for a watch without one), sorted.
    fn globs_following(&self, sub: &Subscriber) -> Vec<String> {
        let mut globs: Vec<String> = lock(&self.watches)
            .values()
            .filter(|w| self.follows(&w.target, sub))
            .map(|w| w.glob.as_ref().map_or("**", Glob::as_str).to_string())
            .collect();
        globs.sort();
        globs.dedup();
        globs
    }

    /// The watches of `target` changed: tell the overlays it follows.
    fn tell_globs(&self, target: &Target) {
        for sub in self.subscribers() {
            if self.follows(target, &sub) {
                sub.set_globs(self.globs_following(&sub));
            }
        }
    }

    /// Hand the changes `sub` reported to the watches following it (see [`watch::publish`]).
    pub async fn publish_changes(&self, sub: &Subscriber, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        let watches: Vec<Arc<Watch>> = lock(&self.watches)
            .values()
            .filter(|w| self.follows(&w.target, sub))
            .cloned()
            .collect();
        let p = watch::publish(&watches, changes).await;
        self.counters
            .watch_events
            .fetch_add(p.queued, Ordering::Relaxed);
        self.counters
            .watch_dropped
            .fetch_add(p.dropped, Ordering::Relaxed);
        self.counters
            .watch_overflow
            .fetch_add(p.overflows, Ordering::Relaxed);
    }

    /// Act on one notification: deliver it to every overlay following `channel` or mounted at
    /// one of its folders, and toggle the trigger files of its other folders (coalesced). With
    /// `wait`, returns receivers completed once each overlay acknowledged and the triggers ran.
    pub fn dispatch(&self, channel: &str, scope: Scope, wait: bool) -> DispatchWait {
        Counters::bump(&self.counters.received);
        let folders = self.config.channels.paths(channel);
        let targets: Vec<Arc<Subscriber>> = self
            .subscribers()
            .into_iter()
            .filter(|s| s.channel == channel || folders.contains(&s.mountpoint))
            .collect();
        let mut out = DispatchWait {
            known: !folders.is_empty() || !targets.is_empty(),
            ..Default::default()
        };
        if !out.known {
            Counters::bump(&self.counters.unknown_channel);
            tracing::debug!(channel, "unknown channel, ignored");
            return out;
        }
        for sub in targets {
            let waiter = if wait {
                let (tx, rx) = oneshot::channel();
                out.overlays.push(rx);
                Some(tx)
            } else {
                None
            };
            if sub.deliver(channel, scope.clone(), waiter) {
                Counters::bump(&self.counters.overlay_overflow);
                tracing::warn!(id = sub.id, mountpoint = %sub.mountpoint.display(), "overlay queue full; collapsed into a whole-mount notification");
            }
            if wait {
                out.subs.push(sub);
            }
        }
        // A change of the trigger file itself is our own toggle coming back (a host watching
        // the shared folder saw it): toggling again would loop forever.
        let own = !scope.paths().is_empty()
            && scope
                .paths()
                .iter()
                .all(|p| p.rsplit('/').next() == Some(self.config.trigger_name.as_str()));
        if own && !folders.is_empty() {
            Counters::bump(&self.counters.own_trigger);
            tracing::debug!(
                channel,
                "notification of the trigger file itself; not toggling"
            );
        } else if !folders.is_empty() {
            let waiter = if wait {
                let (tx, rx) = oneshot::channel();
                out.triggers = Some(rx);
                Some(tx)
            } else {
                None
            };
            if self.coalescer.submit(channel, waiter) {
                Counters::bump(&self.counters.coalesced);
            }
        }
        out
    }

    /// What to wait for so that every notification already dispatched for `channel` is handled:
    /// each overlay's acknowledgement of what it was delivered (and its first rescan), and the
    /// trigger run covering what was submitted (see [`super::ack`]).
    pub fn settled(&self, channel: &str) -> DispatchWait {
        let folders = self.config.channels.paths(channel);
        let (overlays, subs) = self
            .subscribers()
            .into_iter()
            .filter(|s| s.channel == channel || folders.contains(&s.mountpoint))
            .filter_map(|s| s.barrier().map(|b| (b, s)))
            .unzip();
        DispatchWait {
            known: true,
            overlays,
            subs,
            triggers: self.coalescer.barrier(channel),
        }
    }

    /// Mounted `fuse.vfnotify` overlays no subscriber reports (not linked to this daemon, or
    /// not yet).
    pub fn unlinked_mounts(&self) -> usize {
        let linked: Vec<PathBuf> = self
            .subscribers()
            .iter()
            .map(|s| s.mountpoint.clone())
            .collect();
        vfnotify_mounts()
            .iter()
            .filter(|m| !linked.contains(m))
            .count()
    }

    /// Blocking: toggle the trigger file of every folder of `channel` that is not an overlay.
    /// Returns how many toggles succeeded.
    fn run_triggers(&self, channel: &str) -> u64 {
        let folders = self.config.channels.paths(channel);
        if folders.is_empty() {
            return 0;
        }
        let subscribed: Vec<PathBuf> = self
            .subscribers()
            .iter()
            .map(|s| s.mountpoint.clone())
            .collect();
        let overlay_mounts = crate::mountinfo::vfnotify_mounts();
        let mut ok = 0;
        for folder in folders {
            if subscribed.contains(folder) {
                continue; // delivered to the overlay at dispatch
            }
            if overlay_mounts.iter().any(|m| m == folder) {
                Counters::bump(&self.counters.overlay_unlinked);
                tracing::warn!(channel, folder = %folder.display(), "folder is a vfnotify overlay that is not linked to this daemon; not writing a trigger file there");
                continue;
            }
            match trigger::toggle(folder, &self.config.trigger_name) {
                Ok(t) => {
                    ok += 1;
                    Counters::bump(&self.counters.triggers_ok);
                    tracing::debug!(channel, folder = %folder.display(), ?t, "trigger toggled");
                }
                Err(e) => {
                    Counters::bump(&self.counters.triggers_failed);
                    tracing::warn!(channel, error = %e, "trigger failed");
                }
            }
        }
        ok
    }

    /// The `status` result.
    pub fn status(&self) -> DaemonStatus {
        let channels = (self.config.channels.iter())
            .map(|(c, p)| (c.clone(), p.clone()))
            .collect();
        let mut counters = self.counters.wire();
        counters
            .counts
            .insert("active_connections".into(), self.connections.len() as u64);
        DaemonStatus {
            program: super::PROGRAM.to_string(),
            pid: std::process::id(),
            listeners: lock(&self.listeners).clone(),
            control: self.config.control.clone(),
            trigger_name: self.config.trigger_name.clone(),
            allow_cid: self.config.cid_policy.to_string(),
            channels,
            counters,
            overlays: self.subscribers().iter().map(|s| s.wire()).collect(),
            watches: lock(&self.watches).values().map(|w| w.wire()).collect(),
        }
    }

    /// Idle timeout for peers.
    pub fn idle_timeout(&self) -> Duration {
        self.config.idle_timeout
    }
}
