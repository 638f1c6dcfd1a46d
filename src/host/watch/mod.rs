//! Watching the channels' folders: two backends behind one [`Watcher`] enum, run on a dedicated
//! thread, turning kernel events into changes relative to each channel's `basePath`.
//!
//! - [`fanotify`]: one filesystem mark (`FAN_MARK_FILESYSTEM`, `FAN_REPORT_DFID_NAME` with the
//!   target FID, `FAN_RENAME`) per filesystem; no per-folder watch, so any tree size. Needs
//!   CAP_SYS_ADMIN. Folder handles are resolved to paths (cached); events outside every
//!   `basePath` are dropped after one hash lookup.
//! - [`inotify`]: one watch per folder, added recursively (a new folder is scanned right after its
//!   watch is added); unprivileged. Hitting the watch limit degrades that channel to periodic
//!   whole-channel notifications, loudly.
//!
//! Both share the [`Emitter`] (absolute paths → per-channel changes, hostile names widened to
//! their folder) and the [`Bases`] check (a `basePath` removed, replaced or back).

pub mod drain;
pub mod fanotify;
pub mod inotify;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::batch::{Change, Sendable, sendable};
use super::state::{ChannelState, Counters, Hub};

/// Files held at most at once (see [`Emitter::modified`]).
const MAX_HELD: usize = 4096;
/// How often each `basePath` is checked (present, the same folder).
pub const BASE_CHECK: Duration = Duration::from_secs(1);
/// How long one wait for events lasts before the stop flag and the periodic work are looked at.
const TICK_MS: i32 = 100;
/// A file being written (modified, not yet closed) is told to the guests when its writer closes
/// it, or this long after the first write, whichever comes first: a guest then replays one write
/// with the final content, as a local watcher sees one `IN_CLOSE_WRITE` after the writes — not
/// an `IN_CLOSE_WRITE` for the empty file an `O_TRUNC` open left a moment before.
pub const WRITE_HOLD: Duration = Duration::from_millis(100);

/// Which backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    /// fanotify where it works (privileges, filesystem), else inotify; the choice is logged.
    Auto,
    Fanotify,
    Inotify,
}

impl std::str::FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(BackendChoice::Auto),
            "fanotify" => Ok(BackendChoice::Fanotify),
            "inotify" => Ok(BackendChoice::Inotify),
            other => Err(format!(
                "unknown backend {other:?}: expected auto, fanotify or inotify"
            )),
        }
    }
}

/// Why watching could not start.
#[derive(Debug, Error)]
pub enum WatchError {
    #[error("fanotify is not available: {0} (it needs CAP_SYS_ADMIN; use --backend inotify)")]
    FanotifyInit(io::Error),
    #[error("cannot place a fanotify filesystem mark on {}: {source} (it needs CAP_SYS_ADMIN, and a filesystem with file handles; use --backend inotify)", path.display())]
    FanotifyMark { path: PathBuf, source: io::Error },
    #[error("cannot open {}: {source}", path.display())]
    OpenBase { path: PathBuf, source: io::Error },
    #[error("inotify is not available: {0}")]
    InotifyInit(io::Error),
    #[error("cannot watch {}: {source}", path.display())]
    InotifyWatch { path: PathBuf, source: io::Error },
    #[error("cannot start the watcher thread: {0}")]
    Thread(io::Error),
}

/// A running backend.
pub enum Watcher {
    Fanotify(fanotify::FanWatcher),
    Inotify(inotify::InoWatcher),
}

impl Watcher {
    /// Open the backend `choice` names and watch every channel's folder (errors here are
    /// reported before readiness).
    pub fn open(choice: BackendChoice, hub: &Hub) -> Result<Watcher, WatchError> {
        match choice {
            BackendChoice::Fanotify => fanotify::FanWatcher::open(hub).map(Watcher::Fanotify),
            BackendChoice::Inotify => inotify::InoWatcher::open(hub).map(Watcher::Inotify),
            BackendChoice::Auto => match fanotify::FanWatcher::open(hub) {
                Ok(w) => Ok(Watcher::Fanotify(w)),
                Err(e) => {
                    tracing::info!(reason = %e, "fanotify unavailable; watching with inotify");
                    inotify::InoWatcher::open(hub).map(Watcher::Inotify)
                }
            },
        }
    }

    /// `fanotify` or `inotify`.
    pub fn name(&self) -> &'static str {
        match self {
            Watcher::Fanotify(_) => "fanotify",
            Watcher::Inotify(_) => "inotify",
        }
    }

    /// Wait up to `timeout_ms` for events and turn them into changes.
    fn step(&mut self, em: &mut Emitter<'_>, timeout_ms: i32) {
        match self {
            Watcher::Fanotify(w) => w.step(em, timeout_ms),
            Watcher::Inotify(w) => w.step(em, timeout_ms),
        }
    }

    /// A base came back or was replaced: watch it again.
    fn rearm(&mut self, em: &mut Emitter<'_>, ch: usize, base: &Path) {
        match self {
            Watcher::Fanotify(w) => w.rearm(em, ch, base),
            Watcher::Inotify(w) => w.rearm(em, ch, base),
        }
    }

    /// A base is gone: stop reporting from its old folder.
    fn disarm(&mut self, base: &Path) {
        match self {
            Watcher::Fanotify(_) => {}
            Watcher::Inotify(w) => w.disarm(base),
        }
    }

    /// Periodic work of the backend (degraded channels).
    fn tick(&mut self, em: &mut Emitter<'_>) {
        match self {
            Watcher::Fanotify(_) => {}
            Watcher::Inotify(w) => w.tick(em),
        }
    }

    /// Whether a base should be checked now (an event touched one).
    fn take_base_hint(&mut self) -> bool {
        match self {
            Watcher::Fanotify(w) => std::mem::take(&mut w.base_hint),
            Watcher::Inotify(w) => std::mem::take(&mut w.base_hint),
        }
    }

    /// Run on a thread of its own until `stop`.
    pub fn spawn(
        mut self,
        hub: Arc<Hub>,
        stop: Arc<AtomicBool>,
    ) -> Result<std::thread::JoinHandle<()>, WatchError> {
        std::thread::Builder::new()
            .name("vfnotify-host-watch".into())
            .spawn(move || {
                let mut bases = Bases::new(&hub);
                let mut last_check = Instant::now();
                let mut em = Emitter::new(&hub);
                while !stop.load(Ordering::Relaxed) {
                    let wait = em
                        .next_release()
                        .map(|t| t.saturating_duration_since(Instant::now()).as_millis() as i32 + 1)
                        .unwrap_or(TICK_MS)
                        .min(TICK_MS);
                    // Kernel events, or a barrier (`vfnotify host sync`) asking for a drain.
                    let drain = self.wait_events(&hub, wait);
                    self.step(&mut em, 0);
                    if self.take_base_hint() || last_check.elapsed() >= BASE_CHECK {
                        last_check = Instant::now();
                        bases.check(&hub, &mut em, &mut self);
                        self.tick(&mut em);
                    }
                    em.release_due(Instant::now());
                    em.flush();
                    if drain {
                        self.drain(&hub, &mut em, &mut bases);
                    }
                }
            })
            .map_err(WatchError::Thread)
    }
}

/// Turns absolute paths into changes of the channels whose folder holds them, and publishes
/// them per channel once a read has been handled.
pub struct Emitter<'h> {
    hub: &'h Hub,
    pending: Vec<Vec<Change>>,
    /// Files being written: told when closed, or at the deadline ([`WRITE_HOLD`]).
    held: HashMap<PathBuf, Instant>,
}

impl<'h> Emitter<'h> {
    pub fn new(hub: &'h Hub) -> Emitter<'h> {
        Emitter {
            hub,
            pending: vec![Vec::new(); hub.channels.len()],
            held: HashMap::new(),
        }
    }

    /// The file at `abs` was written to but is still open: tell the guests when it is closed
    /// (any other change to it), or after [`WRITE_HOLD`].
    pub fn modified(&mut self, abs: &Path) {
        if self.ignored(abs) {
            return;
        }
        if self.held.contains_key(abs) {
            return;
        }
        if self.held.len() >= MAX_HELD {
            // Too many open writers at once: no holding, just tell.
            self.path(abs);
            return;
        }
        self.held
            .insert(abs.to_path_buf(), Instant::now() + WRITE_HOLD);
    }

    /// A file was created at `abs`. An empty regular file is being written by whoever created
    /// it: held like a written one (the guest then sees it appear with its content, as a local
    /// watcher does, not empty and closed first). Anything else is told at once.
    pub fn created(&mut self, abs: &Path) {
        if self.ignored(abs) {
            return;
        }
        let empty_file = std::fs::symlink_metadata(abs).is_ok_and(|m| m.is_file() && m.len() == 0);
        if empty_file {
            self.modified(abs);
        } else {
            self.path(abs);
        }
    }

    /// When the next held file is due.
    pub fn next_release(&self) -> Option<Instant> {
        self.held.values().min().copied()
    }

    /// Tell the held files whose time has come.
    pub fn release_due(&mut self, now: Instant) {
        if self.held.is_empty() {
            return;
        }
        let due: Vec<PathBuf> = self
            .held
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(p, _)| p.clone())
            .collect();
        for p in due {
            self.path(&p);
        }
    }

    /// The hub's counters.
    pub fn counters(&self) -> &Counters {
        &self.hub.counters
    }

    /// Channels whose folder holds `abs`, with the path relative to it.
    fn locate<'p>(&self, abs: &'p Path) -> impl Iterator<Item = (usize, &'p OsStr)> + use<'p, 'h> {
        self.hub
            .channels
            .iter()
            .enumerate()
            .filter_map(move |(i, c)| abs.strip_prefix(&c.base).ok().map(|r| (i, r.as_os_str())))
    }

    fn change(&self, ch: usize, rel: &OsStr) -> Sendable {
        let name = &self.hub.channels[ch].name;
        let s = sendable(name, rel);
        if s.widened() && !rel.is_empty() {
            Counters::bump(&self.hub.counters.unsendable_names);
            tracing::debug!(channel = %name, path = ?rel, sent = ?s, "name cannot travel in a line; sending its folder");
        }
        s
    }

    /// Whether `abs` is named in `--ignore-name` (counted).
    fn ignored(&self, abs: &Path) -> bool {
        let names = &self.hub.config.ignore_names;
        let hit = !names.is_empty()
            && abs
                .file_name()
                .is_some_and(|n| names.iter().any(|i| i == n));
        if hit {
            Counters::bump(&self.hub.counters.ignored_names);
        }
        hit
    }

    /// Something at `abs` changed. Returns whether any channel holds it.
    pub fn path(&mut self, abs: &Path) -> bool {
        self.held.remove(abs);
        if self.ignored(abs) {
            return true;
        }
        let found: Vec<(usize, Sendable)> = self
            .locate(abs)
            .map(|(ch, rel)| (ch, self.change(ch, rel)))
            .collect();
        if found.is_empty() {
            Counters::bump(&self.hub.counters.outside);
            return false;
        }
        for (ch, s) in found {
            self.pending[ch].push(s.into_change());
        }
        true
    }

    /// `from` was renamed to `to`: one rename where a channel holds both, a delete or a create
    /// where it holds one.
    pub fn rename(&mut self, from: &Path, to: &Path) {
        self.held.remove(from);
        self.held.remove(to);
        // An ignored name on one side: the other side alone is news (a create or a delete).
        match (self.ignored(from), self.ignored(to)) {
            (true, true) => return,
            (true, false) => {
                self.path(to);
                return;
            }
            (false, true) => {
                self.path(from);
                return;
            }
            (false, false) => {}
        }
        let mut any = false;
        for ch in 0..self.hub.channels.len() {
            let base = &self.hub.channels[ch].base;
            let a = from
                .strip_prefix(base)
                .ok()
                .map(|r| self.change(ch, r.as_os_str()));
            let b = to
                .strip_prefix(base)
                .ok()
                .map(|r| self.change(ch, r.as_os_str()));
            let change = |s: Sendable| s.into_change();
            match (a, b) {
                (Some(Sendable::Path(a)), Some(Sendable::Path(b))) => {
                    self.pending[ch].push(Change::Move(a.into(), b.into()));
                }
                (a, b) => {
                    for s in [a, b].into_iter().flatten() {
                        self.pending[ch].push(change(s));
                    }
                }
            }
            any |= from.starts_with(base) || to.starts_with(base);
        }
        if !any {
            Counters::bump(&self.hub.counters.outside);
        }
    }

    /// The whole channel `ch`.
    pub fn whole(&mut self, ch: usize) {
        if let Some(p) = self.pending.get_mut(ch) {
            p.push(Change::Channel);
        }
    }

    /// Every channel.
    pub fn whole_all(&mut self) {
        self.held.clear();
        for p in &mut self.pending {
            p.push(Change::Channel);
        }
    }

    /// Publish what was gathered.
    pub fn flush(&mut self) {
        for (ch, changes) in self.pending.iter_mut().enumerate() {
            if !changes.is_empty() {
                self.hub.publish(ch, std::mem::take(changes));
            }
        }
    }
}

/// The identity of a folder: device and inode.
type Id = (u64, u64);

fn folder_id(p: &Path) -> Option<Id> {
    std::fs::symlink_metadata(p)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| (m.dev(), m.ino()))
}

/// Each channel's `basePath` as last seen.
struct Bases {
    ids: Vec<Option<Id>>,
}

impl Bases {
    fn new(hub: &Hub) -> Bases {
        Bases {
            ids: hub.channels.iter().map(|c| folder_id(&c.base)).collect(),
        }
    }

    /// Notice a base removed, replaced or back: the whole channel, and the backend re-armed.
    fn check(&mut self, hub: &Hub, em: &mut Emitter<'_>, w: &mut Watcher) {
        for (ch, c) in hub.channels.iter().enumerate() {
            let now = folder_id(&c.base);
            let was = self.ids[ch];
            if now == was {
                continue;
            }
            self.ids[ch] = now;
            Counters::bump(&hub.counters.base_changes);
            em.whole(ch);
            match now {
                None => {
                    tracing::warn!(channel = %c.name, base = %c.base.display(), "basePath is gone; the whole channel is sent when it is back");
                    hub.set_state(ch, ChannelState::Missing);
                    w.disarm(&c.base);
                }
                Some(_) => {
                    tracing::info!(channel = %c.name, base = %c.base.display(), replaced = was.is_some(), "basePath is back; watching it again");
                    w.rearm(em, ch, &c.base);
                    if !matches!(hub.channel_state(ch), Some(ChannelState::Degraded(_))) {
                        hub.set_state(ch, ChannelState::Watching);
                    }
                }
            }
        }
    }
}

/// `a/b` joined with `name` (which may be `.`, the folder itself).
pub fn join(dir: &Path, name: &OsStr) -> PathBuf {
    if name.as_bytes() == b"." || name.is_empty() {
        dir.to_path_buf()
    } else {
        dir.join(name)
    }
}
