//! The sync worker: on each notification it re-reads the directories the kernel holds within the
//! scope, compares them with the last view, and tells the kernel exactly what changed — either by
//! replaying each change through the mount so the kernel emits the real inotify event (precise
//! events), or with FUSE invalidation messages. It is the only thread that sends kernel
//! notifications (never a request handler: that would hang the kernel) and the replay thread
//! whose requests the handlers answer from the previous view.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender};
use std::time::Instant;

use fuser::{INodeNo, Notifier};
use tracing::{debug, info};

use super::fs::{Shared, Stats, ViewEntry};
use super::inode::{EntrySnap, Ino, Key, Node, ROOT_INO, Snapshot};
use super::kernel_notify::KernelNotifier;
use crate::sys;

/// Work for the sync worker.
pub enum Job {
    /// Take the first view of a directory the kernel just learned about.
    Baseline(Ino),
    /// Handle a notification; `paths` empty means the whole mount. `done` is signalled after.
    Notify {
        paths: Vec<String>,
        done: Sender<NotifyReport>,
    },
    /// The daemon link went down: expire everything the kernel caches for long.
    Degrade,
}

/// What handling one notification did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct NotifyReport {
    pub dirs_scanned: u64,
    pub entries_scanned: u64,
    pub changes: u64,
    pub events: u64,
    pub micros: u64,
    /// Each change found, in order, for watch subscribers.
    pub records: Vec<ChangeRecord>,
}

/// One change as reported to watch subscribers: `type` is create, delete, modify, attrib or
/// rename; paths are relative to the mount.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChangeRecord {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// Where a notification applies.
#[derive(Debug)]
enum Scope {
    /// A directory and every directory below it that the kernel holds.
    Subtree(Ino),
    /// One name in a directory.
    Entry(Ino, OsString),
}

/// One change found by the diff.
#[derive(Debug, Clone)]
enum Change {
    Create {
        dir: Ino,
        name: OsString,
        new: EntrySnap,
    },
    Delete {
        dir: Ino,
        name: OsString,
        old: EntrySnap,
    },
    Rename {
        from: Ino,
        name: OsString,
        to: Ino,
        newname: OsString,
        old: EntrySnap,
        replaced: Option<EntrySnap>,
    },
    Link {
        dir: Ino,
        name: OsString,
        new: EntrySnap,
    },
    Content {
        dir: Ino,
        name: OsString,
        new: EntrySnap,
    },
    Attr {
        dir: Ino,
        name: OsString,
        old: EntrySnap,
        new: EntrySnap,
    },
}

/// Where replays reach the overlay.
pub enum ReplayRoot {
    /// The mountpoint itself.
    Path(PathBuf),
    /// A detached writable mount of the same filesystem (the `ro` case), held open until
    /// MOUNTPOINT is unmounted; reached through `/proc/self/fd/N`.
    Detached(super::ReplayHolder),
}

pub struct Worker {
    s: Arc<Shared>,
    notifier: Notifier,
    raw: KernelNotifier,
    root: ReplayRoot,
    /// The path prefix replays use during one job (see [`Worker::with_root`]).
    prefix: std::cell::RefCell<Option<PathBuf>>,
}

/// Start the worker thread.
pub fn spawn(
    s: Arc<Shared>,
    notifier: Notifier,
    raw: KernelNotifier,
    root: ReplayRoot,
    rx: Receiver<Job>,
) -> io::Result<()> {
    let w = Worker {
        s,
        notifier,
        raw,
        root,
        prefix: std::cell::RefCell::new(None),
    };
    std::thread::Builder::new()
        .name("vfnotify-sync".into())
        .spawn(move || w.run(rx))?;
    Ok(())
}

impl Worker {
    fn run(self, rx: Receiver<Job>) {
        self.s.replay.claim();
        while let Ok(job) = rx.recv() {
            match job {
                Job::Baseline(ino) => self.baseline(ino),
                Job::Notify { paths, done } => {
                    let r = self.with_root(|| self.notify(&paths));
                    let _ = done.send(r);
                }
                Job::Degrade => self.degrade(),
            }
        }
    }

    fn baseline(&self, ino: Ino) {
        let Some(node) = self.s.table.get(ino) else {
            return;
        };
        if node.state().snapshot.is_some() {
            return;
        }
        // What the kernel was told of the folder when it learned it.
        let known = node.state().attr;
        if let Ok(mut snap) = self.scan_dir(&node) {
            Stats::bump(&self.s.stats.baselines);
            // The folder changed between the kernel learning it and this view: entries changed
            // since then are left out, so the next notification reports them.
            let now = self
                .s
                .dir_fd(&node)
                .and_then(|fd| sys::fstatat_fresh(fd.as_fd(), c""))
                .ok();
            if let (Some(k), Some(now)) = (known, now) {
                if (now.st_mtime, now.st_mtime_nsec) != k.mtime {
                    snap.retain(|_, e| e.ctime <= k.mtime);
                }
            }
            let mut st = node.state();
            if st.snapshot.is_none() {
                st.snapshot = Some(Box::new(snap));
            }
        }
    }

    /// Read a directory of SOURCE completely.
    fn scan_dir(&self, node: &Node) -> io::Result<Snapshot> {
        let pathfd = self.s.dir_fd(node)?;
        let fd = sys::openat(pathfd.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        let mut snap = Snapshot::new();
        for e in sys::read_dir(fd.as_fd())? {
            if let Ok((st, btime)) =
                sys::cstr(&e.name).and_then(|n| sys::fstatat_fresh_btime(fd.as_fd(), &n))
            {
                snap.insert(e.name, EntrySnap::from_stat(&st).with_btime(btime));
            }
        }
        Stats::bump(&self.s.stats.dirs_scanned);
        self.s
            .stats
            .entries_scanned
            .fetch_add(snap.len() as u64, Ordering::Relaxed);
        Ok(snap)
    }

    /// Turn validated relative paths into scopes, walking only directories the kernel holds and
    /// never following a symlink.
    fn scopes(&self, paths: &[String]) -> Vec<Scope> {
        if paths.is_empty() {
            return vec![Scope::Subtree(ROOT_INO)];
        }
        let mut out = Vec::new();
        'paths: for p in paths {
            let mut cur = ROOT_INO;
            let comps: Vec<&str> = p
                .split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .collect();
            if comps.contains(&"..") {
                Stats::bump(&self.s.stats.scope_rejected);
                continue;
            }
            for (i, c) in comps.iter().enumerate() {
                let name = OsStr::new(c);
                // Each component is also checked in its parent: a folder named by the scope (or
                // above it) may itself be gone or replaced.
                out.push(Scope::Entry(cur, name.to_owned()));
                match self.known_child_dir(cur, name) {
                    Some(ino) if i + 1 < comps.len() => cur = ino,
                    Some(ino) => {
                        out.push(Scope::Subtree(ino));
                        continue 'paths;
                    }
                    None => continue 'paths,
                }
            }
            out.push(Scope::Subtree(cur));
        }
        out
    }

    /// The node id of a directory the kernel holds under `(parent, name)`.
    fn known_child_dir(&self, parent: Ino, name: &OsStr) -> Option<Ino> {
        let pnode = self.s.table.get(parent)?;
        let key = pnode
            .state()
            .snapshot
            .as_ref()
            .and_then(|s| s.get(name))
            .filter(|e| e.is_dir())
            .map(|e| e.key);
        let key = match key {
            Some(k) => k,
            None => {
                let pfd = self.s.dir_fd(&pnode).ok()?;
                let st = sys::fstatat_fresh(pfd.as_fd(), &sys::cstr(name).ok()?).ok()?;
                if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                    return None;
                }
                Key {
                    dev: st.st_dev,
                    ino: st.st_ino,
                }
            }
        };
        let node = self.s.table.get(self.s.table.ino_for(key))?;
        (node.key == key && node.is_dir).then_some(node.ino)
    }

    /// Known directories below (and including) `root`.
    fn subtree(&self, root: Ino) -> Vec<Arc<Node>> {
        if root == ROOT_INO {
            let mut all = self.s.table.dirs();
            all.sort_by_key(|n| n.ino != ROOT_INO);
            return all;
        }
        let mut out = Vec::new();
        let mut queue = vec![root];
        let mut seen = HashSet::new();
        while let Some(ino) = queue.pop() {
            if !seen.insert(ino) {
                continue;
            }
            let Some(node) = self.s.table.get(ino) else {
                continue;
            };
            let children: Vec<Ino> = node
                .state()
                .snapshot
                .as_ref()
                .map(|s| {
                    s.values()
                        .filter(|e| e.is_dir())
                        .map(|e| self.s.table.ino_for(e.key))
                        .collect()
                })
                .unwrap_or_default();
            out.push(node);
            queue.extend(
                children
                    .into_iter()
                    .filter(|c| self.s.table.get(*c).is_some()),
            );
        }
        out
    }

    fn notify(&self, paths: &[String]) -> NotifyReport {
        let start = Instant::now();
        let s = &self.s;
        Stats::bump(&s.stats.notifications);
        Stats::bump(&s.stats.rescans);
        let before_dirs = s.stats.dirs_scanned.load(Ordering::Relaxed);
        let before_entries = s.stats.entries_scanned.load(Ordering::Relaxed);

        // 1. Re-read what is in scope and diff it with the last view.
        let mut changes = Vec::new();
        let mut new_views: Vec<(Arc<Node>, View)> = Vec::new();
        let mut scanned: HashSet<Ino> = HashSet::new();
        let mut entries: Vec<(Ino, Vec<OsString>)> = Vec::new();
        for scope in self.scopes(paths) {
            match scope {
                Scope::Subtree(root) => {
                    for node in self.subtree(root) {
                        if scanned.insert(node.ino) {
                            self.rescan_dir(&node, None, &mut changes, &mut new_views);
                        }
                    }
                }
                Scope::Entry(dir, name) => {
                    // Gathered per folder: one view per folder per notification.
                    match entries.iter_mut().find(|(d, _)| *d == dir) {
                        Some((_, names)) => names.push(name),
                        None => entries.push((dir, vec![name])),
                    }
                }
            }
        }
        for (dir, names) in entries {
            if scanned.contains(&dir) {
                continue;
            }
            if let Some(node) = s.table.get(dir) {
                self.rescan_dir(&node, Some(&names), &mut changes, &mut new_views);
            }
        }
        let changes = pair_renames(changes);
        // New content in a file a client has open for writing through the overlay is that
        // client's doing, not the host's: no event, no record (the view catches up at release).
        let (changes, local): (Vec<Change>, Vec<Change>) =
            changes.into_iter().partition(|c| match c {
                Change::Content { new, .. } => !s.has_writer(s.table.ino_for(new.key)),
                _ => true,
            });
        s.stats
            .local_writes
            .fetch_add(local.len() as u64, Ordering::Relaxed);
        let n_changes = changes.len() as u64;

        // 2. Tell the kernel, in diff order.
        let events_before = s.stats.events_replayed.load(Ordering::Relaxed);
        let mut changed_dirs: Vec<Ino> = Vec::new();
        for c in &changes {
            for d in change_dirs(c) {
                if !changed_dirs.contains(&d) {
                    changed_dirs.push(d);
                }
            }
        }
        // Views first for rename bookkeeping; snapshots are committed after the replays, which
        // need the previous view.
        let mut records: Vec<ChangeRecord> = changes.iter().map(|c| self.record(c)).collect();
        let mut new_dirs = Vec::new();
        for c in &changes {
            if s.cfg.events.precise() {
                self.replay(c, &mut new_dirs);
            } else {
                self.invalidate(c);
            }
        }
        for (node, view) in new_views {
            let dir_st = s
                .dir_fd(&node)
                .and_then(|fd| sys::fstatat_fresh(fd.as_fd(), c""))
                .ok();
            let mut st = node.state();
            // The kernel holds what it was last told of the folder, which a lookup may have
            // made newer than this view (issue 19): attributes other than SOURCE's now go.
            let mut stale = false;
            if let Some(d) = dir_st {
                let now = EntrySnap::from_stat(&d);
                stale = st.attr.is_some_and(|t| told_differs(&t, &now));
                st.attr = Some(now);
            }
            let negatives: Vec<OsString> = st
                .negatives
                .iter()
                .filter(|n| view.has(n))
                .cloned()
                .collect();
            for n in &negatives {
                st.negatives.remove(n);
            }
            view.commit(&mut st.snapshot);
            drop(st);
            if stale {
                self.inval_inode(node.ino, -1, 0);
            }
            for n in negatives {
                self.inval_entry(node.ino, &n);
            }
        }
        // Directories made by replays: everything inside is new too (recursive watchers).
        while let Some(ino) = new_dirs.pop() {
            let Some(node) = s.table.get(ino) else {
                continue;
            };
            {
                let mut st = node.state();
                if st.snapshot.is_none() {
                    st.snapshot = Some(Box::default());
                }
            }
            let mut sub = Vec::new();
            let mut views = Vec::new();
            self.rescan_dir(&node, None, &mut sub, &mut views);
            for c in &sub {
                records.push(self.record(c));
                self.replay(c, &mut new_dirs);
            }
            for (n, view) in views {
                view.commit(&mut n.state().snapshot);
            }
        }
        if s.cfg.events.toggle() {
            for d in &changed_dirs {
                self.toggle(*d);
            }
        }
        for d in &changed_dirs {
            self.inval_inode(*d, 0, 0);
        }
        let report = NotifyReport {
            dirs_scanned: s.stats.dirs_scanned.load(Ordering::Relaxed) - before_dirs,
            entries_scanned: s.stats.entries_scanned.load(Ordering::Relaxed) - before_entries,
            changes: n_changes,
            events: s.stats.events_replayed.load(Ordering::Relaxed) - events_before,
            micros: start.elapsed().as_micros() as u64,
            records,
        };
        debug!(?report, ?paths, "notification handled");
        report
    }

    /// Diff one folder (or some names in it) against its last view, without copying the view:
    /// a scoped notification in a folder of 10,000 entries costs a few `fstatat`s.
    fn rescan_dir(
        &self,
        node: &Arc<Node>,
        only: Option<&[OsString]>,
        changes: &mut Vec<Change>,
        views: &mut Vec<(Arc<Node>, View)>,
    ) {
        // On a FUSE SOURCE a lookup may be answered from its own cache: list the folder instead.
        let has_view = node.state().snapshot.is_some() && !self.s.source_is_fuse;
        if let (Some(names), true) = (only, has_view) {
            let Ok(pfd) = self.s.dir_fd(node) else {
                Stats::bump(&self.s.stats.scan_errors);
                return;
            };
            let mut found = Vec::with_capacity(names.len());
            for name in names {
                match sys::cstr(name).and_then(|n| sys::fstatat_fresh_btime(pfd.as_fd(), &n)) {
                    Ok((st, btime)) => found.push((
                        name.clone(),
                        Some(EntrySnap::from_stat(&st).with_btime(btime)),
                    )),
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                        found.push((name.clone(), None))
                    }
                    Err(_) => {
                        Stats::bump(&self.s.stats.scan_errors);
                        return;
                    }
                }
                Stats::bump(&self.s.stats.entries_scanned);
            }
            let mark = changes.len();
            let mut vanished = false;
            {
                let st = node.state();
                let snap = st.snapshot.as_deref();
                for (name, new) in &found {
                    let old = snap.and_then(|s| s.get(name));
                    vanished |= old.is_some() && new.is_none();
                    diff_entry(node.ino, name, old, new.as_ref(), changes);
                }
            }
            if !vanished {
                views.push((node.clone(), View::Names(found)));
                return;
            }
            // A name that vanished may have been renamed within the folder: look at it all.
            changes.truncate(mark);
        }
        let new = match self.scan_dir(node) {
            Ok(s) => s,
            Err(e) => {
                debug!("rescan of {} failed: {e}", node.ino);
                return;
            }
        };
        // Without a view yet, this is the baseline: only negative entries can be acted on.
        if let Some(old) = node.state().snapshot.as_deref() {
            diff(node.ino, old, &new, changes);
        }
        views.push((node.clone(), View::Full(new)));
    }

    /// The watch-stream record of a change.
    fn record(&self, c: &Change) -> ChangeRecord {
        let rel = |dir: Ino, name: &OsStr| {
            self.s
                .path_of(dir, Some(name))
                .to_string_lossy()
                .into_owned()
        };
        let (kind, path, to) = match c {
            Change::Create { dir, name, .. } | Change::Link { dir, name, .. } => {
                ("create", rel(*dir, name), None)
            }
            Change::Delete { dir, name, .. } => ("delete", rel(*dir, name), None),
            Change::Content { dir, name, .. } => ("modify", rel(*dir, name), None),
            Change::Attr { dir, name, .. } => ("attrib", rel(*dir, name), None),
            Change::Rename {
                from,
                name,
                to,
                newname,
                ..
            } => ("rename", rel(*from, name), Some(rel(*to, newname))),
        };
        ChangeRecord { kind, path, to }
    }

    /// The path through the mount of `name` in `dir`. `ESTALE` when a folder on the way is no
    /// longer known (the kernel forgot it since the change was found): a replay there would act
    /// on the wrong folder, so the change is invalidated instead.
    fn path(&self, dir: Ino, name: &OsStr) -> io::Result<PathBuf> {
        let rel = self
            .s
            .try_path_of(dir, Some(name))
            .map_err(|_| io::Error::from_raw_os_error(libc::ESTALE))?;
        Ok(match &*self.prefix.borrow() {
            Some(p) => p.join(rel),
            // No way in (the mount is going away): a path that fails, so the change is
            // invalidated instead.
            None => PathBuf::from("/proc/self/fd/-1").join(rel),
        })
    }

    /// Run `f` with the replay path prefix set; for a detached root the holder stays locked, so
    /// its fd (and number) cannot go away under a replay.
    fn with_root<T>(&self, f: impl FnOnce() -> T) -> T {
        match &self.root {
            ReplayRoot::Path(p) => {
                *self.prefix.borrow_mut() = Some(p.clone());
                f()
            }
            ReplayRoot::Detached(holder) => {
                let guard = holder.lock().unwrap_or_else(|p| p.into_inner());
                *self.prefix.borrow_mut() = guard.as_ref().map(|fd| {
                    PathBuf::from(format!(
                        "/proc/self/fd/{}",
                        std::os::fd::AsRawFd::as_raw_fd(fd)
                    ))
                });
                let r = f();
                *self.prefix.borrow_mut() = None;
                drop(guard);
                r
            }
        }
    }

    /// Perform one change through the mount so the kernel emits its real event.
    fn replay(&self, c: &Change, new_dirs: &mut Vec<Ino>) {
        let s = &self.s;
        // A name the guest kernel already holds (a client looked it up before the host's
        // notification) is not news to it: no event, and a folder keeps what was seen of it.
        if let Change::Create { dir, name, new } = c {
            let known = s.table.get(s.table.ino_for(new.key)).filter(|n| {
                n.key == new.key && n.state().links.iter().any(|(p, l)| p == dir && l == name)
            });
            if let Some(n) = known {
                Stats::bump(&s.stats.replay_known);
                if n.is_dir {
                    self.baseline(n.ino);
                }
                return;
            }
        }
        let res: io::Result<()> = (|| match c {
            Change::Create { dir, name, new } | Change::Link { dir, name, new } => {
                s.replay.set(*dir, name, ViewEntry::Absent);
                let path = self.path(*dir, name)?;
                let r = match (c, new.file_type()) {
                    (Change::Link { .. }, _) => self
                        .existing_path(new.key)
                        .and_then(|from| std::fs::hard_link(from, &path)),
                    (_, libc::S_IFDIR) => std::fs::create_dir(&path),
                    (_, libc::S_IFLNK) => self
                        .symlink_target(*dir, name)
                        .and_then(|t| std::os::unix::fs::symlink(t, &path)),
                    (_, t) => {
                        let ty = if t == libc::S_IFREG { libc::S_IFREG } else { t };
                        sys::cstr(path.as_os_str()).and_then(|p| {
                            sys::mknodat(sys::cwd(), &p, ty | (new.mode & 0o7777), new.rdev)
                        })
                    }
                };
                // A folder new to the kernel: everything inside is news too. One the kernel
                // already holds (a client looked first, EEXIST) was seen with its content: its
                // current listing becomes its view.
                let known = matches!(&r, Err(e) if e.raw_os_error() == Some(libc::EEXIST));
                if new.is_dir() {
                    if let Some(n) = s.table.get(s.table.ino_for(new.key)) {
                        if r.is_ok() {
                            new_dirs.push(n.ino);
                        } else if known {
                            self.baseline(n.ino);
                        }
                    }
                }
                if r.is_ok()
                    && new.file_type() == libc::S_IFREG
                    && matches!(c, Change::Create { .. })
                {
                    // A new file is also written and closed, as a local writer would do it:
                    // IN_OPEN, IN_MODIFY (when it has content) and IN_CLOSE_WRITE.
                    let _ = self.replay_write(&path, new.size);
                }
                r
            }
            Change::Delete { dir, name, old } => {
                if old.is_dir() {
                    self.replay_remove_tree(*dir, name, old);
                }
                s.replay.set(*dir, name, ViewEntry::Present(*old));
                let path = self.path(*dir, name)?;
                if old.is_dir() {
                    std::fs::remove_dir(&path)
                } else {
                    std::fs::remove_file(&path)
                }
            }
            Change::Rename {
                from,
                name,
                to,
                newname,
                old,
                replaced,
            } => {
                s.replay.set(*from, name, ViewEntry::Present(*old));
                s.replay.set(
                    *to,
                    newname,
                    replaced
                        .map(ViewEntry::Present)
                        .unwrap_or(ViewEntry::Absent),
                );
                let a = self.path(*from, name)?;
                let b = self.path(*to, newname)?;
                std::fs::rename(&a, &b)
            }
            Change::Content { dir, name, new } => {
                let path = self.path(*dir, name)?;
                let r = self.replay_write(&path, new.size);
                self.inval_inode(s.table.ino_for(new.key), 0, 0);
                r
            }
            Change::Attr {
                dir,
                name,
                old,
                new,
            } => {
                let path = self.path(*dir, name)?;
                let p = sys::cstr(path.as_os_str());
                p.and_then(|p| {
                    if old.mode != new.mode && new.file_type() != libc::S_IFLNK {
                        sys::fchmodat_nofollow(sys::cwd(), &p, new.mode & 0o7777)
                    } else if old.uid != new.uid || old.gid != new.gid {
                        sys::fchownat(sys::cwd(), &p, new.uid, new.gid)
                    } else {
                        sys::utimensat(
                            sys::cwd(),
                            &p,
                            sys::SetTime::At(new.atime.0, new.atime.1),
                            sys::SetTime::At(new.mtime.0, new.mtime.1),
                        )
                    }
                })
            }
        })();
        s.replay.clear();
        match res {
            Ok(()) => Stats::bump(&s.stats.events_replayed),
            Err(e) => {
                // The kernel already knows (a client looked first), or the name is busy: make sure
                // its caches are right at least.
                debug!(?c, "replay failed: {e}; invalidating instead");
                Stats::bump(&s.stats.replay_failed);
                self.invalidate(c);
            }
        }
    }

    /// Open for writing, truncate to the current size (IN_MODIFY, nothing changes) and close
    /// (IN_CLOSE_WRITE). Where the open is refused (a passthrough file on a read-only SOURCE), the
    /// truncate alone still gives IN_MODIFY.
    fn replay_write(&self, path: &std::path::Path, size: u64) -> io::Result<()> {
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path);
        match opened {
            Ok(f) if size == 0 => {
                drop(f);
                Ok(())
            }
            Ok(f) => f.set_len(size),
            Err(_) => sys::cstr(path.as_os_str()).and_then(|p| sys::truncate_nofollow(&p, size)),
        }
    }

    /// Before a removed directory goes, remove what the kernel knew inside it (post-order), so
    /// recursive watchers see each name go.
    fn replay_remove_tree(&self, dir: Ino, name: &OsStr, old: &EntrySnap) {
        let ino = self.s.table.ino_for(old.key);
        let Some(node) = self.s.table.get(ino) else {
            return;
        };
        if node.key != old.key || !node.is_dir {
            return;
        }
        let _ = (dir, name);
        let snap = node
            .state()
            .snapshot
            .as_deref()
            .cloned()
            .unwrap_or_default();
        for (child, e) in snap.iter() {
            if e.is_dir() {
                self.replay_remove_tree(ino, child, e);
            }
            self.s.replay.set(ino, child, ViewEntry::Present(*e));
            let Ok(path) = self.path(ino, child) else {
                continue;
            };
            let r = if e.is_dir() {
                std::fs::remove_dir(&path)
            } else {
                std::fs::remove_file(&path)
            };
            if r.is_ok() {
                Stats::bump(&self.s.stats.events_replayed);
            }
        }
        node.state().snapshot = Some(Box::default());
    }

    /// A live path (through the mount) to an object SOURCE already has, for hard-link replays.
    fn existing_path(&self, key: Key) -> io::Result<PathBuf> {
        let node = self
            .s
            .table
            .get(self.s.table.ino_for(key))
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        let (p, n) = node
            .state()
            .links
            .first()
            .cloned()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        self.path(p, &n)
    }

    fn symlink_target(&self, dir: Ino, name: &OsStr) -> io::Result<PathBuf> {
        let node = self
            .s
            .table
            .get(dir)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        let pfd = self.s.dir_fd(&node)?;
        let t = sys::readlinkat(pfd.as_fd(), &sys::cstr(name)?)?;
        Ok(PathBuf::from(OsStr::from_bytes(&t)))
    }

    /// Toggle mode: a virtual create and delete of the trigger name in `dir`.
    fn toggle(&self, dir: Ino) {
        let s = &self.s;
        let name = OsString::from(&s.cfg.trigger_name);
        s.replay.set(dir, &name, ViewEntry::Virtual);
        let made = self.path(dir, &name).and_then(|path| {
            sys::mknodat(
                sys::cwd(),
                &sys::cstr(path.as_os_str())?,
                libc::S_IFREG | 0o644,
                0,
            )?;
            let _ = std::fs::remove_file(&path);
            Ok(())
        });
        if made.is_ok() {
            Stats::bump(&s.stats.events_replayed);
        } else {
            Stats::bump(&s.stats.replay_failed);
        }
        s.replay.clear();
    }

    /// Tell the kernel what changed without an event.
    fn invalidate(&self, c: &Change) {
        let s = &self.s;
        match c {
            Change::Create { dir, name, .. } | Change::Link { dir, name, .. } => {
                self.inval_entry(*dir, name)
            }
            Change::Delete { dir, name, old } => self.delete_entry(*dir, name, old.key),
            Change::Rename {
                from,
                name,
                to,
                newname,
                old,
                replaced,
            } => {
                self.delete_entry(*from, name, old.key);
                if let Some(r) = replaced {
                    self.delete_entry(*to, newname, r.key);
                }
                self.inval_entry(*to, newname);
                if let Some(node) = s.table.get(s.table.ino_for(old.key)) {
                    let mut st = node.state();
                    st.links.retain(|(p, n)| !(*p == *from && n == name));
                    st.links.push((*to, newname.clone()));
                }
            }
            Change::Content { new, .. } => self.inval_inode(s.table.ino_for(new.key), 0, 0),
            Change::Attr { new, .. } => self.inval_inode(s.table.ino_for(new.key), -1, 0),
        }
    }

    fn inval_entry(&self, dir: Ino, name: &OsStr) {
        Stats::bump(&self.s.stats.inval_entry);
        if let Err(e) = self.notifier.inval_entry(INodeNo(dir), name) {
            Stats::bump(&self.s.stats.inval_failed);
            debug!("inval_entry({dir}, {name:?}): {e}");
        }
    }

    fn delete_entry(&self, dir: Ino, name: &OsStr, key: Key) {
        let child = self
            .s
            .table
            .get(self.s.table.ino_for(key))
            .filter(|n| n.key == key);
        match child {
            Some(c) => {
                Stats::bump(&self.s.stats.inval_delete);
                if let Err(e) = self.notifier.delete(INodeNo(dir), INodeNo(c.ino), name) {
                    debug!(
                        "delete({dir}, {}, {name:?}): {e}; falling back to inval_entry",
                        c.ino
                    );
                    self.inval_entry(dir, name);
                }
                c.state().links.retain(|(p, n)| !(*p == dir && n == name));
            }
            None => self.inval_entry(dir, name),
        }
    }

    fn inval_inode(&self, ino: Ino, off: i64, len: i64) {
        if self.s.table.get(ino).is_none() {
            return;
        }
        Stats::bump(&self.s.stats.inval_inode);
        if let Err(e) = self.notifier.inval_inode(INodeNo(ino), off, len) {
            Stats::bump(&self.s.stats.inval_failed);
            debug!("inval_inode({ino}): {e}");
        }
    }

    /// The link to the daemon is down: drop every long-lived name, attribute and negative entry,
    /// so that from now on the short (degraded) timeouts apply.
    fn degrade(&self) {
        let s = &self.s;
        let dirs = s.table.dirs();
        // One message expires every cached name, positive and negative (Linux 6.16+).
        match self.raw.inc_epoch() {
            Ok(()) => {
                Stats::bump(&s.stats.epoch_bumps);
                for d in &dirs {
                    d.state().negatives.clear();
                    self.inval_inode(d.ino, 0, 0);
                }
                info!(
                    dirs = dirs.len(),
                    "daemon link down: kernel caches expired (epoch), short timeouts until it is back"
                );
                return;
            }
            Err(e) => debug!("FUSE_NOTIFY_INC_EPOCH unavailable ({e}); expiring names one by one"),
        }
        let mut n = 0;
        for d in &dirs {
            let (names, negatives): (Vec<OsString>, Vec<OsString>) = {
                let st = d.state();
                (
                    st.snapshot
                        .as_ref()
                        .map(|s| s.keys().cloned().collect())
                        .unwrap_or_default(),
                    st.negatives.iter().cloned().collect(),
                )
            };
            d.state().negatives.clear();
            for name in names.iter().chain(negatives.iter()) {
                if let Err(e) = self.notifier.inval_entry(INodeNo(d.ino), name) {
                    debug!("degrade inval_entry: {e}");
                }
                n += 1;
            }
            self.inval_inode(d.ino, 0, 0);
        }
        info!(
            entries = n,
            "daemon link down: kernel caches expired, short timeouts until it is back"
        );
    }
}

/// Whether attributes the kernel was told of a folder differ from SOURCE's now in what it shows
/// (atime aside: reading a folder moves it).
fn told_differs(told: &EntrySnap, now: &EntrySnap) -> bool {
    (
        told.mode, told.uid, told.gid, told.nlink, told.size, told.mtime, told.ctime,
    ) != (
        now.mode, now.uid, now.gid, now.nlink, now.size, now.mtime, now.ctime,
    )
}

/// A folder's next view: complete, or some names updated (`None`: gone).
enum View {
    Full(Snapshot),
    Names(Vec<(OsString, Option<EntrySnap>)>),
}

impl View {
    /// Whether the view has `name`.
    fn has(&self, name: &OsStr) -> bool {
        match self {
            View::Full(s) => s.contains_key(name),
            View::Names(v) => v.iter().any(|(n, e)| n == name && e.is_some()),
        }
    }

    /// Make this the folder's view.
    fn commit(self, slot: &mut Option<Box<Snapshot>>) {
        match self {
            View::Full(s) => *slot = Some(Box::new(s)),
            View::Names(v) => {
                let snap = slot.get_or_insert_with(Box::default);
                for (name, e) in v {
                    match e {
                        Some(e) => snap.insert(name, e),
                        None => snap.remove(&name),
                    };
                }
            }
        }
    }
}

/// Compare one name's old and new entries (see [`diff`]).
fn diff_entry(
    dir: Ino,
    name: &OsStr,
    old: Option<&EntrySnap>,
    new: Option<&EntrySnap>,
    out: &mut Vec<Change>,
) {
    let name = name.to_owned();
    match (old, new) {
        (Some(o), Some(n)) if n.same_object(o) && n.file_type() == o.file_type() => {
            if o.is_dir() {
                if (o.mode, o.uid, o.gid) != (n.mode, n.uid, n.gid) {
                    out.push(Change::Attr {
                        dir,
                        name,
                        old: *o,
                        new: *n,
                    });
                }
            } else if o.size != n.size || o.mtime != n.mtime {
                out.push(Change::Content { dir, name, new: *n });
            } else if (o.mode, o.uid, o.gid, o.ctime) != (n.mode, n.uid, n.gid, n.ctime) {
                out.push(Change::Attr {
                    dir,
                    name,
                    old: *o,
                    new: *n,
                });
            }
        }
        (Some(o), Some(n)) => {
            out.push(Change::Delete {
                dir,
                name: name.clone(),
                old: *o,
            });
            out.push(Change::Create { dir, name, new: *n });
        }
        (Some(o), None) => out.push(Change::Delete { dir, name, old: *o }),
        (None, Some(n)) => out.push(Change::Create { dir, name, new: *n }),
        (None, None) => {}
    }
}

/// Directories whose listing a change alters.
fn change_dirs(c: &Change) -> Vec<Ino> {
    match c {
        Change::Create { dir, .. } | Change::Delete { dir, .. } | Change::Link { dir, .. } => {
            vec![*dir]
        }
        Change::Rename { from, to, .. } => vec![*from, *to],
        Change::Content { .. } | Change::Attr { .. } => vec![],
    }
}

/// Compare a directory's old and new views. Directories' own size, times and link count change
/// with their content, which their own diff reports, so only their mode and owner count here.
fn diff(dir: Ino, old: &Snapshot, new: &Snapshot, out: &mut Vec<Change>) {
    for (name, o) in old {
        diff_entry(dir, name, Some(o), new.get(name), out);
    }
    for (name, n) in new {
        if !old.contains_key(name) {
            diff_entry(dir, name, None, Some(n), out);
        }
    }
}

/// Match deletes and creates of the same inode into renames (within and across directories),
/// and creates of an inode that is still present elsewhere into hard links. Order: renames,
/// deletes, creates and links, then content and attribute changes — each in diff order.
fn pair_renames(changes: Vec<Change>) -> Vec<Change> {
    let mut deleted: HashMap<Key, usize> = HashMap::new();
    let mut present_keys: HashSet<Key> = HashSet::new();
    for (i, c) in changes.iter().enumerate() {
        match c {
            Change::Delete { old, .. } => {
                deleted.entry(old.key).or_insert(i);
            }
            Change::Content { new, .. } | Change::Attr { new, .. } => {
                present_keys.insert(new.key);
            }
            _ => {}
        }
    }
    let mut used = vec![false; changes.len()];
    let mut renames = Vec::new();
    let mut creates = Vec::new();
    // Deleted names replaced by a rename's destination: no separate delete event.
    let mut replaced_at: HashMap<(Ino, OsString), EntrySnap> = HashMap::new();
    for c in &changes {
        if let Change::Delete { dir, name, old } = c {
            replaced_at.insert((*dir, name.clone()), *old);
        }
    }
    for (i, c) in changes.iter().enumerate() {
        if let Change::Create { dir, name, new } = c {
            if let Some(&j) = deleted.get(&new.key) {
                // Not when the number was freed and reused by another object: a delete and a
                // create.
                let same =
                    matches!(&changes[j], Change::Delete { old, .. } if old.same_object(new));
                if !used[j] && same {
                    if let Change::Delete {
                        dir: from,
                        name: oldname,
                        old,
                    } = &changes[j]
                    {
                        used[j] = true;
                        used[i] = true;
                        let replaced = replaced_at
                            .get(&(*dir, name.clone()))
                            .copied()
                            .filter(|r| !r.same_object(new));
                        if replaced.is_some() {
                            // The destination's old entry goes with the rename.
                            if let Some(k) = changes.iter().position(|c| matches!(c, Change::Delete { dir: d, name: n, .. } if d == dir && n == name)) {
                                used[k] = true;
                            }
                        }
                        renames.push(Change::Rename {
                            from: *from,
                            name: oldname.clone(),
                            to: *dir,
                            newname: name.clone(),
                            old: *old,
                            replaced,
                        });
                        continue;
                    }
                }
            }
            if new.nlink > 1 && (present_keys.contains(&new.key)) {
                used[i] = true;
                creates.push(Change::Link {
                    dir: *dir,
                    name: name.clone(),
                    new: *new,
                });
            }
        }
    }
    let mut out = renames;
    let rest: Vec<(usize, &Change)> = changes
        .iter()
        .enumerate()
        .filter(|(i, _)| !used[*i])
        .collect();
    out.extend(
        rest.iter()
            .filter(|(_, c)| matches!(c, Change::Delete { .. }))
            .map(|(_, c)| (*c).clone()),
    );
    out.extend(
        rest.iter()
            .filter(|(_, c)| matches!(c, Change::Create { .. }))
            .map(|(_, c)| (*c).clone()),
    );
    out.extend(creates);
    // A link count or rename changes only the ctime of the inode: the create, delete or move
    // event already says it, as on a local filesystem.
    let involved: HashSet<Key> = out
        .iter()
        .filter_map(|c| match c {
            Change::Rename { old, .. } | Change::Delete { old, .. } => Some(old.key),
            Change::Create { new, .. } | Change::Link { new, .. } => Some(new.key),
            _ => None,
        })
        .collect();
    out.extend(
        rest.iter()
            .filter(|(_, c)| match c {
                Change::Content { .. } => true,
                Change::Attr { old, new, .. } => {
                    !involved.contains(&new.key)
                        || (old.mode, old.uid, old.gid) != (new.mode, new.uid, new.gid)
                }
                _ => false,
            })
            .map(|(_, c)| (*c).clone()),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(ino: u64, btime: (i64, i64)) -> EntrySnap {
        let mut st = sys::zeroed_stat();
        st.st_dev = 7;
        st.st_ino = ino;
        st.st_mode = libc::S_IFREG | 0o644;
        st.st_nlink = 1;
        EntrySnap::from_stat(&st).with_btime(Some(btime))
    }

    fn kinds(changes: &[Change]) -> Vec<&'static str> {
        changes
            .iter()
            .map(|c| match c {
                Change::Create { .. } => "create",
                Change::Delete { .. } => "delete",
                Change::Rename { .. } => "rename",
                Change::Link { .. } => "link",
                Change::Content { .. } => "content",
                Change::Attr { .. } => "attr",
            })
            .collect()
    }

    fn changes(old: EntrySnap, new: EntrySnap) -> Vec<Change> {
        let (a, b): (Snapshot, Snapshot) = (
            [(OsString::from("A"), old)].into(),
            [(OsString::from("B"), new)].into(),
        );
        let mut out = Vec::new();
        diff(ROOT_INO, &a, &b, &mut out);
        pair_renames(out)
    }

    /// A name gone and another with the same inode number is a rename only when it is the same
    /// object: a number freed and reused (another birth time) is a delete and a create.
    #[test]
    fn a_reused_number_is_not_a_rename() {
        assert_eq!(
            kinds(&changes(file(12, (5, 1)), file(12, (5, 1)))),
            ["rename"]
        );
        assert_eq!(
            kinds(&changes(file(12, (5, 1)), file(12, (9, 0)))),
            ["delete", "create"]
        );
        // Birth time unknown on either side: the number decides.
        assert_eq!(
            kinds(&changes(file(12, (0, 0)), file(12, (9, 0)))),
            ["rename"]
        );
    }

    /// The same name, the same number, another birth time: replaced, not rewritten.
    #[test]
    fn a_reused_number_under_the_same_name_is_a_new_file() {
        let mut out = Vec::new();
        diff_entry(
            ROOT_INO,
            OsStr::new("A"),
            Some(&file(12, (5, 1))),
            Some(&file(12, (9, 0))),
            &mut out,
        );
        assert_eq!(kinds(&out), ["delete", "create"]);
        out.clear();
        let mut grown = file(12, (5, 1));
        grown.size = 10;
        diff_entry(
            ROOT_INO,
            OsStr::new("A"),
            Some(&file(12, (5, 1))),
            Some(&grown),
            &mut out,
        );
        assert_eq!(kinds(&out), ["content"]);
    }
}
