//! The fanotify backend: one `FAN_MARK_FILESYSTEM` mark per filesystem holding a channel's
//! folder, events with folder handles and names (`FAN_REPORT_DFID_NAME`, plus the target's own
//! handle and `FAN_RENAME` where the kernel has them).
//!
//! A folder handle is resolved to a path with `open_by_handle_at` on a descriptor of a channel's
//! folder and cached (the cache is cleared when a folder is renamed, since the paths below it
//! change). A folder already deleted when its events are read cannot be opened any more: it is
//! found through the event that removed (or created) it, which carries its handle as the
//! target, its parent's handle and its name — that event is queued before the folder could go,
//! so it is in this read or in the queue right behind it (read before giving up). Only when no
//! such event exists (no target handles on this kernel, or a lost queue) does the event fall back
//! to the whole channel of every channel on that filesystem.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::{Emitter, WatchError, join};
use crate::host::state::{Counters, Hub};
use crate::sys::fanotify::{self as fan, Fanotify, Fsid, HandleRef, InfoKind};

/// Events asked for (plus `FAN_RENAME`, or `FAN_MOVED_FROM|FAN_MOVED_TO` where the kernel has no
/// `FAN_RENAME`).
const MASK: u64 = libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_MODIFY
    | libc::FAN_ATTRIB
    | libc::FAN_CLOSE_WRITE
    | libc::FAN_ONDIR;
/// Entries past which a cache is cleared (bounded memory on a filesystem of any size).
const MAX_CACHE: usize = 100_000;
/// Events read in one go before they are handled.
const MAX_DRAIN: usize = 16_384;
/// How many more reads an unresolved folder waits for its explaining event.
const MAX_ROUNDS: usize = 4;
/// Read buffer.
const BUF: usize = 256 * 1024;
/// Descriptors kept per filesystem to open handles with.
const MAX_MOUNT_FDS: usize = 16;

/// A handle with its filesystem: `fsid (8) | type (4) | bytes`.
type Key = Box<[u8]>;

fn key_of(fsid: Fsid, h: &HandleRef<'_>) -> Key {
    let mut k = Vec::with_capacity(12 + h.bytes.len());
    k.extend_from_slice(&fsid[0].to_ne_bytes());
    k.extend_from_slice(&fsid[1].to_ne_bytes());
    k.extend_from_slice(&h.kind.to_ne_bytes());
    k.extend_from_slice(h.bytes);
    k.into_boxed_slice()
}

fn key_fsid(k: &[u8]) -> Fsid {
    let i = |at: usize| {
        i32::from_ne_bytes(
            k.get(at..at + 4)
                .and_then(|s| s.try_into().ok())
                .unwrap_or_default(),
        )
    };
    [i(0), i(4)]
}

fn key_handle(k: &[u8]) -> HandleRef<'_> {
    HandleRef {
        kind: i32::from_ne_bytes(
            k.get(8..12)
                .and_then(|s| s.try_into().ok())
                .unwrap_or_default(),
        ),
        bytes: k.get(12..).unwrap_or_default(),
    }
}

/// One event, copied out of the read buffer.
#[derive(Debug, Clone)]
struct Ev {
    mask: u64,
    /// The folder and name (`.`: the folder itself); for a rename, the old ones.
    dir: Option<(Key, OsString)>,
    /// For a rename: the new folder and name.
    new: Option<(Key, OsString)>,
    /// The object itself (the target of a dirent event, or a file without a folder record).
    child: Option<Key>,
}

impl Ev {
    fn from(e: &fan::Event<'_>) -> Ev {
        let rec = |k: InfoKind| {
            e.info(k).map(|i| {
                (
                    key_of(i.fsid, &i.handle),
                    i.name.map(|n| n.to_os_string()).unwrap_or_default(),
                )
            })
        };
        let dir = rec(InfoKind::DfidName)
            .or_else(|| rec(InfoKind::OldDfidName))
            .or_else(|| rec(InfoKind::Dfid));
        Ev {
            mask: e.mask,
            dir,
            new: rec(InfoKind::NewDfidName),
            child: e.info(InfoKind::Fid).map(|i| key_of(i.fsid, &i.handle)),
        }
    }

    fn ondir(&self) -> bool {
        self.mask & libc::FAN_ONDIR != 0
    }

    fn dirent(&self) -> bool {
        self.mask
            & (libc::FAN_CREATE
                | libc::FAN_DELETE
                | libc::FAN_MOVED_FROM
                | libc::FAN_MOVED_TO
                | libc::FAN_RENAME)
            != 0
    }
}

/// Where a folder handle leads.
enum Resolved {
    Path(PathBuf),
    Gone,
}

pub struct FanWatcher {
    pub(super) fan: Fanotify,
    /// Descriptors on each filesystem to open handles with (one per channel folder there).
    mounts: HashMap<Fsid, Vec<OwnedFd>>,
    /// Folder handle → its path (live folders).
    cache: HashMap<Key, PathBuf>,
    /// Folder handle → its parent's handle and its name, from the dirent events that named it
    /// (how a folder gone before its handle is resolved is still found).
    parents: HashMap<Key, (Key, OsString)>,
    /// Moves without `FAN_RENAME`: the moved object's handle → where it was.
    moved_from: HashMap<Key, PathBuf>,
    /// Whether the group reports targets (`FAN_REPORT_TARGET_FID`) and renames (`FAN_RENAME`).
    pub target_fid: bool,
    pub rename: bool,
    pub base_hint: bool,
    /// The filesystem of each channel's folder.
    channel_fs: Vec<Option<Fsid>>,
    buf: Vec<u8>,
    /// Bytes of events read so far (the barrier's measure of the queue: see `drain.rs`).
    pub consumed: u64,
}

impl FanWatcher {
    /// A fanotify group with a filesystem mark on each channel's folder.
    pub fn open(hub: &Hub) -> Result<FanWatcher, WatchError> {
        let class = libc::FAN_CLASS_NOTIF;
        let (fan, target_fid) = match Fanotify::init(class | libc::FAN_REPORT_DFID_NAME_TARGET) {
            Ok(f) => (f, true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (
                Fanotify::init(class | libc::FAN_REPORT_DFID_NAME | libc::FAN_REPORT_FID)
                    .map_err(WatchError::FanotifyInit)?,
                false,
            ),
            Err(e) => return Err(WatchError::FanotifyInit(e)),
        };
        let mut w = FanWatcher {
            fan,
            mounts: HashMap::new(),
            cache: HashMap::new(),
            parents: HashMap::new(),
            moved_from: HashMap::new(),
            target_fid,
            rename: true,
            base_hint: false,
            channel_fs: Vec::new(),
            buf: vec![0u8; BUF],
            consumed: 0,
        };
        for c in &hub.channels {
            let fsid = w.mark(&c.base)?;
            w.channel_fs.push(Some(fsid));
        }
        if !w.target_fid {
            tracing::warn!(
                "this kernel reports no target handles (FAN_REPORT_TARGET_FID, 5.17): a folder removed before its events are read falls back to the whole channel"
            );
        }
        tracing::info!(
            rename = w.rename,
            target_fid = w.target_fid,
            "watching with fanotify filesystem marks"
        );
        Ok(w)
    }

    /// Mark the filesystem of `base` and keep a descriptor of it to open handles with.
    fn mark(&mut self, base: &Path) -> Result<Fsid, WatchError> {
        let open_err = |source| WatchError::OpenBase {
            path: base.to_path_buf(),
            source,
        };
        let c = crate::sys::cstr(base.as_os_str()).map_err(open_err)?;
        // open_by_handle_at refuses an O_PATH mount descriptor (EBADF).
        let fd = crate::sys::openat(crate::sys::cwd(), &c, libc::O_RDONLY | libc::O_DIRECTORY, 0)
            .map_err(open_err)?;
        let fsid = fan::fsid(fd.as_fd()).map_err(open_err)?;
        let mark_err = |source| WatchError::FanotifyMark {
            path: base.to_path_buf(),
            source,
        };
        let with_rename = if self.rename {
            MASK | libc::FAN_RENAME
        } else {
            MASK | libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO
        };
        match self.fan.mark_filesystem(with_rename, &c) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && self.rename => {
                self.rename = false;
                self.fan
                    .mark_filesystem(MASK | libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO, &c)
                    .map_err(mark_err)?;
            }
            Err(e) => return Err(mark_err(e)),
        }
        if !self.rename {
            // Earlier marks asked for FAN_RENAME: ask again without it.
            let _ = self
                .fan
                .mark_filesystem(MASK | libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO, &c);
        }
        let fds = self.mounts.entry(fsid).or_default();
        if fds.len() >= MAX_MOUNT_FDS {
            fds.remove(0);
        }
        fds.push(fd);
        Ok(fsid)
    }

    /// A base came back (maybe on another filesystem): mark it again.
    pub fn rearm(&mut self, em: &mut Emitter<'_>, ch: usize, base: &Path) {
        self.cache.clear();
        match self.mark(base) {
            Ok(fsid) => {
                if let Some(f) = self.channel_fs.get_mut(ch) {
                    *f = Some(fsid);
                }
            }
            Err(e) => {
                Counters::bump(&em.counters().watch_errors);
                tracing::warn!(error = %e, "cannot watch the basePath again");
            }
        }
    }

    /// Read what is queued (up to [`MAX_DRAIN`] events) into `out`.
    fn drain(&mut self, em: &Emitter<'_>, out: &mut Vec<Ev>) {
        while out.len() < MAX_DRAIN {
            let n = match self.fan.read(&mut self.buf) {
                Ok(0) => return,
                Ok(n) => {
                    self.consumed += n as u64;
                    n
                }
                Err(e) => {
                    Counters::bump(&em.counters().watch_errors);
                    tracing::warn!(error = %e, "fanotify read failed");
                    return;
                }
            };
            let (evs, err) = fan::parse(self.buf.get(..n).unwrap_or_default());
            if let Some(e) = err {
                Counters::bump(&em.counters().parse_errors);
                tracing::warn!(error = %e, "malformed fanotify buffer; the rest of it is skipped");
            }
            Counters::add(&em.counters().events, evs.len() as u64);
            out.extend(evs.iter().map(Ev::from));
        }
    }

    pub fn step(&mut self, em: &mut Emitter<'_>, timeout_ms: i32) {
        match self.fan.wait(timeout_ms) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                Counters::bump(&em.counters().watch_errors);
                tracing::warn!(error = %e, "fanotify poll failed");
                std::thread::sleep(std::time::Duration::from_millis(timeout_ms.max(1) as u64));
                return;
            }
        }
        let mut evs = Vec::new();
        self.drain(em, &mut evs);
        let mut deferred: Vec<Ev> = Vec::new();
        for round in 0..=MAX_ROUNDS {
            for e in &evs {
                self.learn(e);
            }
            for e in evs.drain(..) {
                if let Err(e) = self.handle(e, em) {
                    deferred.push(e);
                }
            }
            // Older events whose folder a newer one may now explain.
            for e in std::mem::take(&mut deferred) {
                if let Err(e) = self.handle(e, em) {
                    deferred.push(e);
                }
            }
            if deferred.is_empty() || round == MAX_ROUNDS {
                break;
            }
            self.drain(em, &mut evs);
            if evs.is_empty() {
                break;
            }
        }
        for e in deferred {
            self.fallback(&e, em);
        }
        // Moves whose other half never came: the old name is gone from the share.
        for (_, from) in self.moved_from.drain() {
            em.path(&from);
        }
        if self.cache.len() > MAX_CACHE {
            self.cache.clear();
        }
        if self.parents.len() > MAX_CACHE {
            self.parents.clear();
        }
    }

    /// Record what a dirent event says about a folder (its parent and name), before any event
    /// is handled: a later event may explain an earlier one.
    fn learn(&mut self, e: &Ev) {
        if !e.ondir() || !e.dirent() {
            return;
        }
        let Some(child) = &e.child else { return };
        let at = e.new.as_ref().or(e.dir.as_ref());
        if let Some((pk, name)) = at {
            self.parents
                .insert(child.clone(), (pk.clone(), name.clone()));
        }
    }

    /// Where the folder `key` is, following the recorded parents of folders already gone.
    fn resolve(&mut self, key: &[u8], depth: usize) -> Resolved {
        if let Some(p) = self.cache.get(key) {
            return Resolved::Path(p.clone());
        }
        if let Some(p) = self.open_path(key, libc::O_DIRECTORY) {
            self.cache.insert(key.into(), p.clone());
            return Resolved::Path(p);
        }
        if depth < 64 {
            if let Some((pk, name)) = self.parents.get(key).cloned() {
                if let Resolved::Path(p) = self.resolve(&pk, depth + 1) {
                    return Resolved::Path(p.join(name));
                }
            }
        }
        Resolved::Gone
    }

    /// Open `key` and read its path; `None` when it no longer exists.
    fn open_path(&self, key: &[u8], flags: libc::c_int) -> Option<PathBuf> {
        let fds = self.mounts.get(&key_fsid(key))?;
        let handle = key_handle(key);
        for m in fds {
            match fan::open_by_handle(m.as_fd(), &handle, libc::O_PATH | flags) {
                Ok(fd) => {
                    // Deleted (but still held somewhere): not a path any more.
                    if crate::sys::fstat(fd.as_fd()).is_ok_and(|st| st.st_nlink == 0) {
                        return None;
                    }
                    return fan::fd_path(fd.as_fd()).ok().filter(|p| p.is_absolute());
                }
                Err(e) if is_gone(&e) => continue,
                Err(_) => continue,
            }
        }
        None
    }

    /// The path `(dir, name)` names, or the event back when `dir` cannot be found yet.
    fn place(&mut self, rec: &(Key, OsString)) -> Option<PathBuf> {
        match self.resolve(&rec.0, 0) {
            Resolved::Path(p) => Some(join(&p, &rec.1)),
            Resolved::Gone => None,
        }
    }

    fn handle(&mut self, e: Ev, em: &mut Emitter<'_>) -> Result<(), Ev> {
        if e.mask & libc::FAN_Q_OVERFLOW != 0 {
            Counters::bump(&em.counters().kernel_overflows);
            tracing::warn!("fanotify queue overflowed: every channel is sent whole");
            em.whole_all();
            self.cache.clear();
            return Ok(());
        }
        if e.ondir() && e.dirent() {
            self.base_hint = true;
        }
        if e.mask & libc::FAN_RENAME != 0 {
            let (Some(old), Some(new)) = (&e.dir, &e.new) else {
                // Only one side reported (should not happen with a filesystem mark).
                let side = e.dir.as_ref().or(e.new.as_ref()).cloned();
                if let Some(rec) = side {
                    let Some(p) = self.place(&rec) else {
                        return Err(e);
                    };
                    em.path(&p);
                }
                return Ok(());
            };
            let (Some(from), Some(to)) = (self.place(old), self.place(new)) else {
                return Err(e);
            };
            em.rename(&from, &to);
            if e.ondir() {
                self.cache.clear();
            }
            return Ok(());
        }
        if let Some(rec) = &e.dir {
            let Some(p) = self.place(rec) else {
                return Err(e);
            };
            if e.ondir() && e.mask & (libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO) != 0 {
                self.cache.clear();
            }
            if e.ondir() && e.mask & libc::FAN_DELETE != 0 {
                if let Some(c) = &e.child {
                    self.cache.remove(c);
                }
            }
            if e.mask & libc::FAN_MOVED_FROM != 0 {
                if let Some(c) = &e.child {
                    self.moved_from.insert(c.clone(), p);
                    return Ok(());
                }
            }
            if e.mask & libc::FAN_MOVED_TO != 0 {
                if let Some(from) = e.child.as_ref().and_then(|c| self.moved_from.remove(c)) {
                    em.rename(&from, &p);
                    return Ok(());
                }
            }
            // A file being written (modified or just created, not closed yet): told at the close
            // (or after a moment).
            let other = libc::FAN_CLOSE_WRITE
                | libc::FAN_ATTRIB
                | libc::FAN_DELETE
                | libc::FAN_MOVED_FROM
                | libc::FAN_MOVED_TO;
            if e.ondir() || e.mask & other != 0 {
                em.path(&p);
            } else if e.mask & libc::FAN_MODIFY != 0 {
                em.modified(&p);
            } else if e.mask & libc::FAN_CREATE != 0 {
                em.created(&p);
            } else {
                em.path(&p);
            }
            return Ok(());
        }
        if let Some(c) = &e.child {
            // A file event with no folder to report (a link count change): its current path.
            match self.open_path(c, 0) {
                Some(p) => {
                    em.path(&p);
                }
                None => Counters::bump(&em.counters().unresolved_files),
            }
        }
        Ok(())
    }

    /// An event whose folder is gone and unexplained: the whole channel of every channel on its
    /// filesystem.
    fn fallback(&mut self, e: &Ev, em: &mut Emitter<'_>) {
        let Some(fsid) = e.dir.as_ref().or(e.new.as_ref()).map(|(k, _)| key_fsid(k)) else {
            return;
        };
        Counters::bump(&em.counters().unresolved);
        tracing::debug!(
            mask = e.mask,
            "folder handle no longer resolves and no event explains it; sending the whole channel"
        );
        for (ch, f) in self.channel_fs.iter().enumerate() {
            if *f == Some(fsid) {
                em.whole(ch);
            }
        }
    }
}

fn is_gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ESTALE) | Some(libc::ENOENT))
}
