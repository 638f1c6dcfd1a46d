//! The host's shared state: the channels (each with its bounded change log), the guests, the
//! counters, and `status`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::Config;
use super::batch::{Change, Log};
use super::control::{ChannelStatus, HostStatus};
use super::guest::Guest;

pub(crate) use crate::util::lock;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// The host's counters (monotonic).
        #[derive(Debug, Default)]
        pub struct Counters { $($(#[$doc])* pub $name: AtomicU64,)* }
        impl Counters {
            /// Add one.
            pub fn bump(c: &AtomicU64) { c.fetch_add(1, Ordering::Relaxed); }
            /// Add `n`.
            pub fn add(c: &AtomicU64, n: u64) { c.fetch_add(n, Ordering::Relaxed); }
            /// Every counter by name.
            pub fn by_name(&self) -> BTreeMap<String, u64> {
                let mut m = BTreeMap::new();
                $(m.insert(stringify!($name).into(), self.$name.load(Ordering::Relaxed));)*
                m
            }
        }
    };
}

counters!(
    /// Kernel events read (fanotify or inotify).
    events,
    /// Changes appended to the channel logs.
    changes,
    /// Events outside every channel's basePath, dropped.
    outside,
    /// Changes of files named in `--ignore-name` (the guests' trigger file), not sent.
    ignored_names,
    /// Names that cannot travel in a line (`\n`, `\r`, `\t`, NUL, not UTF-8, too long, ending in
    /// white space): their folder's scope was sent instead.
    unsendable_names,
    /// Folders whose handle no longer resolved and was not explained by a later event: the whole
    /// channel was sent.
    unresolved,
    /// Events on files whose handle no longer resolved (the file is gone; its folder's events
    /// carry the change), dropped.
    unresolved_files,
    /// Kernel queue overflows (`FAN_Q_OVERFLOW`, `IN_Q_OVERFLOW`): every channel sent whole.
    kernel_overflows,
    /// Event buffers the parser refused (should never happen).
    parse_errors,
    /// Read or resolution errors of the watcher.
    watch_errors,
    /// Times the inotify watch limit was hit (`max_user_watches` or `--max-watches`).
    watch_limit,
    /// inotify watches added.
    watches_added,
    /// Times a channel's basePath disappeared or was replaced.
    base_changes,
    /// Changes dropped from a full channel log (a guest that had not read them gets the whole
    /// channel).
    log_dropped,
    /// Control connections and bad control requests.
    control_connections,
    control_errors,
);

/// A channel's watch state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelState {
    /// Every folder watched.
    Watching,
    /// The basePath is gone (or not a folder); the whole channel is sent when it comes back.
    Missing,
    /// Not every folder could be watched (inotify watch limit): the whole channel is sent
    /// periodically.
    Degraded(String),
}

impl ChannelState {
    /// As `status` shows it.
    fn shown(&self) -> String {
        match self {
            ChannelState::Watching => "watching".to_string(),
            ChannelState::Missing => "missing".to_string(),
            ChannelState::Degraded(why) => format!("degraded: {why}"),
        }
    }
}

/// One channel: its folder and the log its guests read.
#[derive(Debug)]
pub struct Channel {
    pub name: String,
    pub base: PathBuf,
    pub log: Mutex<Log>,
    /// Indices (in [`Hub::guests`]) of the guests told about it.
    pub guests: Vec<usize>,
    pub state: Mutex<ChannelState>,
    pub changes: AtomicU64,
}

/// Everything the watcher, the guest tasks and the control socket share.
#[derive(Debug)]
pub struct Hub {
    pub config: Config,
    pub channels: Vec<Channel>,
    pub guests: Vec<Arc<Guest>>,
    pub counters: Counters,
    /// The backend in use, once chosen.
    pub backend: Mutex<&'static str>,
    pub started: u64,
    /// Drain requests of `vfnotify host sync` to the watcher thread.
    pub drain: super::barrier::DrainQueue,
}

use crate::util::unix_now as now_secs;

impl Hub {
    /// Channels and guests from `config` (one guest per distinct address, with every channel
    /// that names it).
    pub fn new(config: Config) -> Hub {
        let mut addrs: Vec<crate::transport::ConnectAddr> = Vec::new();
        let mut chans = Vec::new();
        for c in &config.channels {
            let mut idx = Vec::new();
            for g in &c.guests {
                let i = match addrs.iter().position(|a| a == g) {
                    Some(i) => i,
                    None => {
                        addrs.push(g.clone());
                        addrs.len() - 1
                    }
                };
                if !idx.contains(&i) {
                    idx.push(i);
                }
            }
            chans.push(Channel {
                name: c.name.clone(),
                base: c.base.clone(),
                log: Mutex::new(Log::new(config.queue)),
                guests: idx,
                state: Mutex::new(ChannelState::Watching),
                changes: AtomicU64::new(0),
            });
        }
        let guests = addrs
            .into_iter()
            .enumerate()
            .map(|(gi, addr)| {
                let of: Vec<usize> = chans
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.guests.contains(&gi))
                    .map(|(ci, _)| ci)
                    .collect();
                Arc::new(Guest::new(addr, of))
            })
            .collect();
        Hub {
            config,
            channels: chans,
            guests,
            counters: Counters::default(),
            backend: Mutex::new("none"),
            started: now_secs(),
            drain: Default::default(),
        }
    }

    /// Append `changes` to channel `ch`'s log and wake its guests.
    pub fn publish(&self, ch: usize, changes: Vec<Change>) {
        let Some(c) = self.channels.get(ch) else {
            return;
        };
        if changes.is_empty() {
            return;
        }
        let n = changes.len() as u64;
        {
            let mut log = lock(&c.log);
            for change in changes {
                if log.push(Arc::new(change)) {
                    Counters::bump(&self.counters.log_dropped);
                }
            }
        }
        Counters::add(&self.counters.changes, n);
        c.changes.fetch_add(n, Ordering::Relaxed);
        for g in &c.guests {
            if let Some(guest) = self.guests.get(*g) {
                guest.wake.notify_one();
            }
        }
    }

    /// A channel's state.
    pub fn channel_state(&self, ch: usize) -> Option<ChannelState> {
        self.channels.get(ch).map(|c| lock(&c.state).clone())
    }

    /// Set a channel's state; returns the previous one.
    pub fn set_state(&self, ch: usize, state: ChannelState) -> Option<ChannelState> {
        let c = self.channels.get(ch)?;
        Some(std::mem::replace(&mut *lock(&c.state), state))
    }

    /// The `status` result.
    pub fn status(&self) -> HostStatus {
        let mut channels = BTreeMap::new();
        for c in &self.channels {
            let guests = (c.guests.iter())
                .filter_map(|g| self.guests.get(*g))
                .map(|g| g.name.clone())
                .collect();
            let status = ChannelStatus {
                base: c.base.clone(),
                state: lock(&c.state).shown(),
                guests,
                changes: c.changes.load(Ordering::Relaxed),
                head: lock(&c.log).head(),
            };
            channels.insert(c.name.clone(), status);
        }
        HostStatus {
            program: crate::daemon::PROGRAM.to_string(),
            pid: std::process::id(),
            since: self.started,
            control: self.config.control.clone(),
            backend: lock(&self.backend).to_string(),
            window_ms: self.config.window.as_millis() as u64,
            folder_limit: self.config.limits.folder as u64,
            channel_limit: self.config.limits.channel as u64,
            queue: self.config.queue as u64,
            channels,
            guests: self.guests.iter().map(|g| g.status(self)).collect(),
            counters: self.counters.by_name(),
        }
    }
}
