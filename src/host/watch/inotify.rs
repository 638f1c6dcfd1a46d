//! The recursive inotify backend (unprivileged): one watch per folder.
//!
//! Folders are walked by descriptor (`openat(parent, name, O_NOFOLLOW)`, watches added through
//! `/proc/self/fd`), never by a path another process could turn into a symlink; a new folder is
//! watched and then scanned for folders made inside it before its watch existed. Renames pair by
//! cookie (a `IN_MOVED_FROM` whose `IN_MOVED_TO` does not follow within a moment moved out of the
//! share: a delete). Hitting the watch limit (`fs.inotify.max_user_watches`, or `--max-watches`)
//! is a warning and degrades that channel: it is sent whole every few seconds (so nothing in an
//! unwatched folder goes unnoticed) while the walk is retried.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Emitter, WatchError};
use crate::host::state::{ChannelState, Counters, Hub};
use crate::sys::{self, Inotify, InotifyEvent};

const MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MODIFY
    | libc::IN_CLOSE_WRITE
    | libc::IN_ATTRIB
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR
    | libc::IN_EXCL_UNLINK;
/// How long an unpaired `IN_MOVED_FROM` waits for its `IN_MOVED_TO`.
const PAIR_WAIT_MS: i32 = 2;
/// How often a degraded channel is sent whole and its walk retried.
pub const DEGRADED_RETRY: Duration = Duration::from_secs(5);

/// What one walk found.
#[derive(Debug, Default)]
struct Walk {
    limit: bool,
    errors: u64,
}

pub struct InoWatcher {
    pub(super) ino: Inotify,
    /// Watch descriptor → folder path.
    wds: HashMap<i32, PathBuf>,
    /// Folder path → watch descriptor (ordered: a folder's subtree is one range).
    dirs: BTreeMap<PathBuf, i32>,
    limit: Option<usize>,
    bases: Vec<PathBuf>,
    degraded: Vec<bool>,
    last_retry: Instant,
    pub base_hint: bool,
    /// Bytes of events read so far (the barrier's measure of the queue: see `drain.rs`).
    pub consumed: u64,
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = sys::cstr(path.as_os_str())?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
    match sys::open_no_symlinks(&c, flags)? {
        Some(fd) => Ok(fd),
        None => sys::openat(sys::cwd(), &c, flags, 0),
    }
}

impl InoWatcher {
    /// Watch every channel's folder recursively.
    pub fn open(hub: &Hub) -> Result<InoWatcher, WatchError> {
        let ino = Inotify::new().map_err(WatchError::InotifyInit)?;
        let mut w = InoWatcher {
            ino,
            wds: HashMap::new(),
            dirs: BTreeMap::new(),
            limit: hub.config.max_watches,
            bases: hub.channels.iter().map(|c| c.base.clone()).collect(),
            degraded: vec![false; hub.channels.len()],
            last_retry: Instant::now(),
            base_hint: false,
            consumed: 0,
        };
        for (ch, c) in hub.channels.iter().enumerate() {
            // The folder itself must be watchable; what is below it degrades the channel.
            let fd = open_dir(&c.base).map_err(|source| WatchError::OpenBase {
                path: c.base.clone(),
                source,
            })?;
            w.ino
                .add_watch_fd(fd.as_fd(), MASK)
                .map_err(|source| WatchError::InotifyWatch {
                    path: c.base.clone(),
                    source,
                })?;
            drop(fd);
            let walk = w.watch_tree(&c.base, &hub.counters);
            if walk.limit || walk.errors > 0 {
                w.degrade(hub, None, ch, &walk);
            }
        }
        tracing::info!(watches = w.wds.len(), "watching with inotify");
        Ok(w)
    }

    /// Channels whose folder holds `p`.
    fn channels_of(&self, p: &Path) -> Vec<usize> {
        self.bases
            .iter()
            .enumerate()
            .filter(|(_, b)| p.starts_with(b))
            .map(|(i, _)| i)
            .collect()
    }

    fn degrade(&mut self, hub: &Hub, em: Option<&mut Emitter<'_>>, ch: usize, walk: &Walk) {
        let why = if walk.limit {
            match self.limit {
                Some(n) if self.wds.len() >= n => {
                    format!("the --max-watches limit ({n}) is reached")
                }
                _ => "the inotify watch limit (fs.inotify.max_user_watches) is reached".to_string(),
            }
        } else {
            format!("{} folders could not be watched", walk.errors)
        };
        if walk.limit {
            Counters::bump(&hub.counters.watch_limit);
        }
        if let Some(em) = em {
            em.whole(ch);
        }
        if !self.degraded[ch] {
            self.degraded[ch] = true;
            let name = &hub.channels[ch].name;
            tracing::warn!(channel = %name, reason = %why, "not every folder is watched: the channel is sent whole every {} s until they are", DEGRADED_RETRY.as_secs());
            hub.set_state(ch, ChannelState::Degraded(why));
        }
    }

    fn record(&mut self, wd: i32, path: PathBuf) {
        if let Some(old) = self.wds.insert(wd, path.clone()) {
            if old != path && self.dirs.get(&old) == Some(&wd) {
                self.dirs.remove(&old);
            }
        }
        self.dirs.insert(path, wd);
    }

    /// Watch `fd` (the folder at `path`) unless the budget is spent.
    fn watch_one(
        &mut self,
        fd: &OwnedFd,
        path: &Path,
        counters: &Counters,
        walk: &mut Walk,
    ) -> bool {
        let known = self.dirs.contains_key(path);
        if !known && self.limit.is_some_and(|n| self.wds.len() >= n) {
            walk.limit = true;
            return false;
        }
        match self.ino.add_watch_fd(fd.as_fd(), MASK) {
            Ok(wd) => {
                if !self.wds.contains_key(&wd) {
                    Counters::bump(&counters.watches_added);
                }
                self.record(wd, path.to_path_buf());
                true
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                walk.limit = true;
                false
            }
            Err(e) => {
                walk.errors += 1;
                Counters::bump(&counters.watch_errors);
                tracing::debug!(path = %path.display(), error = %e, "cannot watch a folder");
                false
            }
        }
    }

    /// Watch `root` and every folder below it, by descriptor. Stops at the watch limit.
    fn watch_tree(&mut self, root: &Path, counters: &Counters) -> Walk {
        struct Frame {
            path: PathBuf,
            fd: OwnedFd,
            subdirs: Vec<OsString>,
            next: usize,
        }
        let mut walk = Walk::default();
        let subdirs = |fd: &OwnedFd| -> Vec<OsString> {
            sys::read_dir(fd.as_fd())
                .unwrap_or_default()
                .into_iter()
                .filter(|e| match e.kind {
                    libc::DT_DIR => true,
                    libc::DT_UNKNOWN => sys::cstr(&e.name)
                        .and_then(|c| sys::fstatat(fd.as_fd(), &c))
                        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR),
                    _ => false,
                })
                .map(|e| e.name)
                .collect()
        };
        let Ok(fd) = open_dir(root) else {
            return walk;
        };
        if !self.watch_one(&fd, root, counters, &mut walk) {
            return walk;
        }
        let mut stack = vec![Frame {
            path: root.to_path_buf(),
            subdirs: subdirs(&fd),
            fd,
            next: 0,
        }];
        while let Some(top) = stack.last_mut() {
            let Some(name) = top.subdirs.get(top.next).cloned() else {
                stack.pop();
                continue;
            };
            top.next += 1;
            let path = top.path.join(&name);
            let Ok(cname) = sys::cstr(&name) else {
                continue;
            };
            let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
            let Ok(fd) = sys::openat(top.fd.as_fd(), &cname, flags, 0) else {
                continue; // gone, or no longer a folder
            };
            if !self.watch_one(&fd, &path, counters, &mut walk) {
                if walk.limit {
                    return walk;
                }
                continue;
            }
            let subs = subdirs(&fd);
            stack.push(Frame {
                path,
                fd,
                subdirs: subs,
                next: 0,
            });
        }
        walk
    }

    /// The watched folders at and below `p`, with their watches.
    fn subtree(&self, p: &Path) -> Vec<(PathBuf, i32)> {
        self.dirs
            .range(p.to_path_buf()..)
            .take_while(|(k, _)| k.starts_with(p))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Forget (and remove) the watches of `p` and everything below it.
    fn unwatch_tree(&mut self, p: &Path) {
        for (k, wd) in self.subtree(p) {
            self.dirs.remove(&k);
            self.wds.remove(&wd);
            let _ = self.ino.rm_watch(wd);
        }
    }

    /// A watched folder moved from `from` to `to` within the shares: rename its subtree.
    fn move_tree(&mut self, from: &Path, to: &Path) {
        for (k, wd) in self.subtree(from) {
            self.dirs.remove(&k);
            let rel = k.strip_prefix(from).unwrap_or(Path::new(""));
            let new = if rel.as_os_str().is_empty() {
                to.to_path_buf()
            } else {
                to.join(rel)
            };
            self.wds.insert(wd, new.clone());
            self.dirs.insert(new, wd);
        }
    }

    /// A new folder at `p`: watch it and what is already inside.
    fn new_tree(&mut self, em: &mut Emitter<'_>, hub: &Hub, p: &Path) {
        let walk = self.watch_tree(p, &hub.counters);
        if walk.limit || walk.errors > 0 {
            for ch in self.channels_of(p) {
                self.degrade(hub, Some(em), ch, &walk);
            }
        }
    }

    pub fn rearm(&mut self, em: &mut Emitter<'_>, ch: usize, base: &Path) {
        let hub = em.hub;
        self.unwatch_tree(base);
        let walk = self.watch_tree(base, &hub.counters);
        if walk.limit || walk.errors > 0 {
            self.degrade(hub, Some(em), ch, &walk);
        }
    }

    /// A base is gone: its old watches (maybe on a folder moved elsewhere) must not report.
    pub fn disarm(&mut self, base: &Path) {
        self.unwatch_tree(base);
    }

    /// Degraded channels: sent whole, and their walk retried.
    pub fn tick(&mut self, em: &mut Emitter<'_>) {
        if self.last_retry.elapsed() < DEGRADED_RETRY || !self.degraded.contains(&true) {
            return;
        }
        self.last_retry = Instant::now();
        let hub = em.hub;
        for ch in 0..self.degraded.len() {
            if !self.degraded[ch] {
                continue;
            }
            em.whole(ch);
            let base = self.bases[ch].clone();
            let walk = self.watch_tree(&base, &hub.counters);
            if !walk.limit && walk.errors == 0 {
                self.degraded[ch] = false;
                hub.set_state(ch, ChannelState::Watching);
                tracing::info!(channel = %hub.channels[ch].name, "every folder is watched again");
            }
        }
    }

    pub fn step(&mut self, em: &mut Emitter<'_>, timeout_ms: i32) {
        match self.ino.wait(timeout_ms) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                Counters::bump(&em.counters().watch_errors);
                tracing::warn!(error = %e, "inotify poll failed");
                std::thread::sleep(Duration::from_millis(timeout_ms.max(1) as u64));
                return;
            }
        }
        let mut from: HashMap<u32, (PathBuf, bool)> = HashMap::new();
        let evs = self.read(em);
        self.handle_all(em, evs, &mut from);
        if !from.is_empty() {
            // The other half of a rename may be just behind.
            if self.ino.wait(PAIR_WAIT_MS).unwrap_or(false) {
                let evs = self.read(em);
                self.handle_all(em, evs, &mut from);
            }
        }
        for (_, (p, isdir)) in from.drain() {
            em.path(&p);
            if isdir {
                self.unwatch_tree(&p);
            }
        }
    }

    fn read(&mut self, em: &Emitter<'_>) -> Vec<InotifyEvent> {
        match self.ino.read(0) {
            Ok(v) => {
                Counters::add(&em.counters().events, v.len() as u64);
                self.consumed += v.iter().map(super::drain::inotify_record_len).sum::<u64>();
                v
            }
            Err(e) => {
                Counters::bump(&em.counters().watch_errors);
                tracing::warn!(error = %e, "inotify read failed");
                Vec::new()
            }
        }
    }

    fn handle_all(
        &mut self,
        em: &mut Emitter<'_>,
        evs: Vec<InotifyEvent>,
        from: &mut HashMap<u32, (PathBuf, bool)>,
    ) {
        let hub = em.hub;
        for e in evs {
            if e.mask & libc::IN_Q_OVERFLOW != 0 {
                Counters::bump(&hub.counters.kernel_overflows);
                tracing::warn!(
                    "inotify queue overflowed: every channel is sent whole and rewalked"
                );
                em.whole_all();
                for base in self.bases.clone() {
                    let walk = self.watch_tree(&base, &hub.counters);
                    if walk.limit || walk.errors > 0 {
                        for ch in self.channels_of(&base) {
                            self.degrade(hub, Some(em), ch, &walk);
                        }
                    }
                }
                continue;
            }
            let Some(dir) = self.wds.get(&e.wd).cloned() else {
                continue; // a watch already forgotten
            };
            if e.mask & libc::IN_IGNORED != 0 {
                if self.dirs.get(&dir) == Some(&e.wd) {
                    self.dirs.remove(&dir);
                }
                self.wds.remove(&e.wd);
                continue;
            }
            if e.mask & (libc::IN_DELETE_SELF | libc::IN_MOVE_SELF) != 0 {
                if self.bases.contains(&dir) {
                    self.base_hint = true;
                }
                continue;
            }
            if e.name.is_empty() {
                // An event on a watched folder itself: its parent's watch reports it with its
                // name, except for a channel's folder.
                if self.bases.contains(&dir) {
                    em.path(&dir);
                }
                continue;
            }
            let p = dir.join(&e.name);
            let isdir = e.mask & libc::IN_ISDIR != 0;
            if e.mask & libc::IN_MOVED_FROM != 0 {
                from.insert(e.cookie, (p, isdir));
                continue;
            }
            if e.mask & libc::IN_MOVED_TO != 0 {
                match from.remove(&e.cookie) {
                    Some((old, _)) => {
                        em.rename(&old, &p);
                        if isdir {
                            self.move_tree(&old, &p);
                        }
                    }
                    None => {
                        em.path(&p);
                        if isdir {
                            self.new_tree(em, hub, &p);
                        }
                    }
                }
                continue;
            }
            if isdir && e.mask & libc::IN_CREATE != 0 {
                self.new_tree(em, hub, &p);
            }
            if !isdir && e.mask & libc::IN_MODIFY != 0 {
                // Written to and still open: told at the close (or after a moment).
                em.modified(&p);
            } else if !isdir && e.mask & libc::IN_CREATE != 0 {
                em.created(&p);
            } else {
                em.path(&p);
            }
        }
    }
}
