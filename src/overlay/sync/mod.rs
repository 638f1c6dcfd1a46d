//! The sync worker: on each notification it re-reads the folders the kernel holds within the
//! scope, compares them with the last view, expires exactly what changed in the kernel's caches,
//! and replays each change through the mount so the kernel emits the real inotify event (precise
//! events). It is the only thread that sends kernel notifications (never a request handler: that
//! would hang the kernel) and the replay thread whose requests the handlers answer from the
//! previous view.
//!
//! - [`scan`]: folder views, scopes, the rescan, new and removed trees.
//! - [`diff`]: the pure comparison of views into changes, and their pairing.
//! - [`invalidate`]: the FUSE invalidation messages.
//! - [`replay`]: the replays.
//!
//! The rule for events: for each change a rescan finds, watchers get the event sequence a local
//! change with the same end state would produce, whatever other guest clients looked at before
//! or during the handling (a listing or a lookup by one client tells no watcher anything). A
//! change is left out only when a guest client made it through the overlay itself (its watchers
//! saw it happen; the overlay's view was updated by the operation).

mod diff;
mod invalidate;
mod reach;
mod records;
mod replay;
mod scan;

use std::collections::HashSet;
use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender};
use std::time::Instant;

use fuser::Notifier;
use tracing::debug;

use super::fs::{Shared, Stats, ViewEntry};
use super::inode::{EntrySnap, Ino, Key, Node, Snapshot};
use super::kernel_notify::KernelNotifier;
use crate::sys;
use diff::Change;
pub use reach::REACH_BUDGET;
use scan::{Rescan, TREE_BUDGET, View};

/// Work for the sync worker.
pub enum Job {
    /// Take the first view of a folder the kernel just learned about.
    Baseline(Ino),
    /// Handle a notification. `done` is signalled after.
    Notify {
        scope: NotifyScope,
        done: Sender<NotifyReport>,
    },
    /// The daemon link went down: expire everything the kernel caches for long.
    Degrade,
    /// The daemon link is (back) up: expire what was cached while degraded, before the rescan.
    Relinked,
    /// The globs of the watch subscriptions that follow this overlay (see [`reach`]).
    WatchGlobs(Vec<String>),
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

/// One change as reported to watch subscribers (the control socket's wire type).
pub use crate::control::wire::Change as ChangeRecord;
use crate::control::wire::ChangeKind;
use crate::control::wire::Scope as NotifyScope;

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
    /// The views of the folders watch globs reach.
    reach: std::cell::RefCell<reach::Reach>,
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
        reach: Default::default(),
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
                Job::Notify { scope, done } => {
                    let r = self.with_root(|| self.notify(&scope));
                    let _ = done.send(r);
                }
                Job::Degrade => self.degrade(),
                Job::Relinked => self.relinked(),
                Job::WatchGlobs(globs) => self.set_reach(&globs),
            }
        }
    }

    /// Whether the kernel knows the object `key` under some name (for hard links).
    fn known_elsewhere(&self, key: &Key) -> bool {
        self.s
            .table
            .get(self.s.table.ino_for(*key))
            .is_some_and(|n| n.key == *key && !n.state().links.is_empty())
    }

    fn notify(&self, scope: &NotifyScope) -> NotifyReport {
        let start = Instant::now();
        let s = &self.s;
        Stats::bump(&s.stats.notifications);
        Stats::bump(&s.stats.rescans);
        let before_dirs = s.stats.dirs_scanned.load(Ordering::Relaxed);
        let before_entries = s.stats.entries_scanned.load(Ordering::Relaxed);
        let events_before = s.stats.events_replayed.load(Ordering::Relaxed);
        let precise = s.cfg.events.precise();
        // Client operations from here on are theirs (see `local_ops`).
        let since = s.local.now();

        // 1. Re-read what is in scope and diff it with the last view.
        let Rescan {
            changes,
            mut views,
            unseen,
        } = self.rescan(scope);
        // 2. Folders new as a whole, entry by entry (before pairing: a folder moved into one is
        //    a rename).
        let (changes, tree_views, inside) = self.expand_new_trees(changes, &mut views);
        let changes = diff::pair(changes, |k| self.known_elsewhere(k));
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
        // A client changing these names right now made what the rescan may have read: not the
        // host's change (its view is the client's operation to record).
        let (changes, raced): (Vec<Change>, Vec<Change>) = changes
            .into_iter()
            .partition(|c| !c.names().iter().any(|(d, n)| s.local.touched(*d, n, since)));
        s.stats
            .local_raced
            .fetch_add(raced.len() as u64, Ordering::Relaxed);
        // 2. Folders new or removed as a whole, entry by entry.
        let changes = self.expand_removed_trees(changes, &mut views);
        let changes = self.renames_into_new_trees(changes, &inside);
        let n_changes = changes.len() as u64;
        let records = self.records(&changes);
        let changes = self.break_rename_cycles(changes);
        // Folders whose listing changed, but not those removed here: a removed folder's
        // attributes (link count 0, through the fd the overlay holds) must not reach the kernel
        // before its content's replays, or the end of its cached entry would tell its watchers
        // IN_DELETE_SELF (and drop their watches) before the events for what was inside.
        let removed: HashSet<Ino> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Delete { old, .. } if old.is_dir() => Some(s.table.ino_for(old.key)),
                _ => None,
            })
            .collect();
        let mut changed_dirs: Vec<Ino> = Vec::new();
        for c in &changes {
            for d in c.dirs() {
                if !changed_dirs.contains(&d) && !removed.contains(&d) {
                    changed_dirs.push(d);
                }
            }
        }

        // 3. The kernel's view first: from here on readers get SOURCE's answers, and the names
        //    being replayed are never cached for long until their replay is done.
        if precise {
            s.replay.mark(
                changes
                    .iter()
                    .flat_map(|c| c.names())
                    .chain(unseen.iter().map(|(d, n)| (*d, n.as_os_str()))),
            );
            for c in &changes {
                self.preset(c);
            }
        }
        for (dir, name) in &unseen {
            self.inval_entry(*dir, name);
        }
        for d in &changed_dirs {
            self.refresh_dir(*d);
        }
        for c in &changes {
            if precise {
                self.expire(c);
            } else {
                self.invalidate(c);
            }
        }
        let t_expired = start.elapsed();
        // 4. The events.
        if precise {
            self.replay_all(&changes, |c| self.after_replay(c));
        }
        let t_replayed = start.elapsed();
        debug!(
            ?t_expired,
            ?t_replayed,
            changes = n_changes,
            "notification phases"
        );
        // 5. The new views.
        for (node, view) in views {
            let dir_st = s
                .dir_fd(&node)
                .and_then(|fd| sys::fstatat_fresh(fd.as_fd(), c""))
                .ok();
            let mut st = node.state();
            // The kernel holds what it was last told of the folder, which a lookup may have made
            // newer than this view: attributes other than SOURCE's now go.
            let mut stale = false;
            if let Some(d) = dir_st {
                let now = EntrySnap::from_stat(&d);
                stale = st.attr.is_some_and(|t| told_differs(&t, &now));
                st.attr = Some(now);
            }
            let negatives: Vec<std::ffi::OsString> = st
                .negatives
                .iter()
                .filter(|n| view.has(n))
                .cloned()
                .collect();
            for n in &negatives {
                st.negatives.remove(n);
            }
            // What client operations recorded meanwhile stays.
            let keep: Vec<(std::ffi::OsString, Option<EntrySnap>)> = s
                .local
                .touched_in(node.ino, since)
                .into_iter()
                .map(|n| {
                    let e = st.snapshot.as_ref().and_then(|v| v.get(&n).copied());
                    (n, e)
                })
                .collect();
            view.commit(&mut st.snapshot);
            if let Some(snap) = st.snapshot.as_mut() {
                for (n, e) in keep {
                    match e {
                        Some(e) => snap.insert(n, e),
                        None => snap.remove(&n),
                    };
                }
            }
            drop(st);
            if stale {
                self.inval_inode(node.ino, -1, 0);
            }
            for n in negatives {
                self.inval_entry(node.ino, &n);
            }
        }
        for (ino, snap) in tree_views {
            if let Some(n) = s.table.get(ino).filter(|n| n.is_dir) {
                n.state().snapshot = Some(Box::new(snap));
            }
        }
        for c in &changes {
            if let Change::Delete { old, .. } = c {
                if old.is_dir() {
                    if let Some(n) = s.table.get(s.table.ino_for(old.key)) {
                        n.state().snapshot = Some(Box::default());
                    }
                }
            }
        }
        if s.cfg.events.toggle() {
            for d in &changed_dirs {
                self.toggle(*d);
            }
            for d in &changed_dirs {
                self.inval_inode(*d, 0, 0);
            }
        }
        s.replay.clear();
        s.replay.unmark_all();
        s.local.forget_before(since);
        let mut records = records;
        records.extend(self.reach_records(scope));
        let report = NotifyReport {
            dirs_scanned: s.stats.dirs_scanned.load(Ordering::Relaxed) - before_dirs,
            entries_scanned: s.stats.entries_scanned.load(Ordering::Relaxed) - before_entries,
            changes: n_changes,
            events: s.stats.events_replayed.load(Ordering::Relaxed) - events_before,
            micros: start.elapsed().as_micros() as u64,
            records,
        };
        debug!(?report, ?scope, "notification handled");
        report
    }

    /// A folder that is new in this notification is described whole, from SOURCE, as creates
    /// after its own (what a rescan of it as a known folder found is dropped: a client's
    /// listing told no watcher anything) — except the folders in it that were elsewhere before
    /// (their deletes are in `changes`: moved in, they pair into renames). Run before pairing.
    /// Returns the changes, the new folders' views and their node ids.
    fn expand_new_trees(
        &self,
        changes: Vec<Change>,
        views: &mut Vec<(Arc<Node>, View)>,
    ) -> (Vec<Change>, Vec<(Ino, Snapshot)>, HashSet<Ino>) {
        let s = &self.s;
        let moved: HashSet<Key> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Delete { old, .. } => Some(old.key),
                _ => None,
            })
            .collect();
        let created: HashSet<Ino> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Create { new, .. } if new.is_dir() => Some(s.table.ino_for(new.key)),
                _ => None,
            })
            .collect();
        let mut budget = TREE_BUDGET;
        let mut tree_views = Vec::new();
        let mut expanded: Vec<(usize, Vec<Change>)> = Vec::new();
        for (i, c) in changes.iter().enumerate() {
            // A folder inside another new one is described by that one.
            if let Change::Create { dir, name, new } = c {
                if new.is_dir() && !created.contains(dir) && !moved.contains(&new.key) {
                    let mut nested = Vec::new();
                    if let Ok(fd) = self.open_child_dir(*dir, name, new.key) {
                        let ino = s.table.ino_for(new.key);
                        self.scan_new_tree(
                            fd.as_fd(),
                            ino,
                            &moved,
                            &mut budget,
                            &mut nested,
                            &mut tree_views,
                        );
                    }
                    expanded.push((i, nested));
                }
            }
        }
        let inside: HashSet<Ino> = tree_views.iter().map(|(ino, _)| *ino).collect();
        if expanded.is_empty() {
            return (changes, tree_views, inside);
        }
        views.retain(|(n, _)| !inside.contains(&n.ino));
        let mut out = Vec::with_capacity(changes.len());
        let mut next = expanded.into_iter().peekable();
        for (i, c) in changes.into_iter().enumerate() {
            let nested = match next.peek() {
                Some((j, _)) if *j == i => next.next().map(|(_, n)| n).unwrap_or_default(),
                _ => Vec::new(),
            };
            // (A name the kernel may hold that is gone stays a delete: it must be expired.)
            if c.names().iter().any(|(d, _)| inside.contains(d))
                && !matches!(c, Change::Delete { .. })
            {
                continue;
            }
            out.push(c);
            out.extend(nested);
        }
        (out, tree_views, inside)
    }

    /// A removed folder's known content goes before it, as deletes, deepest first — but for
    /// what was moved out of it (a rename). Run after pairing.
    fn expand_removed_trees(
        &self,
        changes: Vec<Change>,
        views: &mut Vec<(Arc<Node>, View)>,
    ) -> Vec<Change> {
        let moved: HashSet<Key> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Rename { old, .. } => Some(old.key),
                _ => None,
            })
            .collect();
        let mut budget = TREE_BUDGET;
        let mut removed_dirs = Vec::new();
        let mut expanded: Vec<(usize, Vec<Change>)> = Vec::new();
        for (i, c) in changes.iter().enumerate() {
            if let Change::Delete { old, .. } = c {
                if old.is_dir() {
                    let mut nested = Vec::new();
                    self.removed_tree(old, &moved, &mut budget, &mut nested, &mut removed_dirs);
                    expanded.push((i, nested));
                }
            }
        }
        if expanded.is_empty() {
            return changes;
        }
        // A removed folder is still readable through the fd the overlay holds: its own rescan
        // found it empty. Its content's deletes are the expansion's, in post-order.
        let removed: HashSet<Ino> = removed_dirs.into_iter().collect();
        views.retain(|(n, _)| !removed.contains(&n.ino));
        let mut out = Vec::with_capacity(changes.len());
        let mut next = expanded.into_iter().peekable();
        for (i, c) in changes.into_iter().enumerate() {
            let nested = match next.peek() {
                Some((j, _)) if *j == i => next.next().map(|(_, n)| n).unwrap_or_default(),
                _ => Vec::new(),
            };
            if !matches!(c, Change::Rename { .. })
                && c.names().iter().any(|(d, _)| removed.contains(d))
            {
                continue;
            }
            out.extend(nested);
            out.push(c);
        }
        out
    }

    /// Renames in a cycle (`a` and `b` swapped) cannot be replayed one by one: the first of
    /// each goes through a hidden temporary name instead (`a` → tmp, …, tmp → `b`), as a local
    /// swap is made.
    fn break_rename_cycles(&self, changes: Vec<Change>) -> Vec<Change> {
        let rename_at = |c: &Change| match c {
            Change::Rename { from, name, .. } => Some((*from, name.clone())),
            _ => None,
        };
        let Some(last) = changes.iter().rposition(|c| rename_at(c).is_some()) else {
            return changes;
        };
        let mut out = Vec::with_capacity(changes.len() + 1);
        let mut tail = Vec::new();
        for (i, c) in changes.iter().enumerate() {
            if let Change::Rename {
                from,
                name,
                to,
                newname,
                old,
                replaced,
            } = c
            {
                let blocked = changes[i + 1..]
                    .iter()
                    .filter_map(rename_at)
                    .any(|(f, n)| f == *to && n == *newname);
                if blocked {
                    if let Ok(tmp) = self.temporary_name(*from, name) {
                        out.push(Change::Rename {
                            from: *from,
                            name: name.clone(),
                            to: *from,
                            newname: tmp.clone(),
                            old: *old,
                            replaced: None,
                        });
                        tail.push(Change::Rename {
                            from: *from,
                            name: tmp,
                            to: *to,
                            newname: newname.clone(),
                            old: *old,
                            replaced: *replaced,
                        });
                    } else {
                        out.push(c.clone());
                    }
                    if i == last {
                        out.append(&mut tail);
                    }
                    continue;
                }
            }
            out.push(c.clone());
            if i == last {
                out.append(&mut tail);
            }
        }
        out
    }

    /// A rename into a folder this notification creates (`mkdir e; mv b e/b`) comes right after
    /// that folder's create, and stands for what the folder's expansion found at its
    /// destination (the name, and for a folder everything below it).
    fn renames_into_new_trees(&self, mut out: Vec<Change>, inside: &HashSet<Ino>) -> Vec<Change> {
        let s = &self.s;
        let into = |c: &Change| matches!(c, Change::Rename { to, .. } if inside.contains(to));
        if !out.iter().any(into) {
            return out;
        }
        let (renames, rest): (Vec<Change>, Vec<Change>) = out.drain(..).partition(into);
        let mut dropped: HashSet<Ino> = HashSet::new();
        let targets: HashSet<(Ino, std::ffi::OsString)> = renames
            .iter()
            .filter_map(|r| match r {
                Change::Rename {
                    to, newname, old, ..
                } => {
                    if old.is_dir() {
                        dropped.insert(s.table.ino_for(old.key));
                    }
                    Some((*to, newname.clone()))
                }
                _ => None,
            })
            .collect();
        for c in rest {
            if let Change::Create { dir, name, new } = &c {
                if targets.contains(&(*dir, name.clone())) || dropped.contains(dir) {
                    if new.is_dir() {
                        dropped.insert(s.table.ino_for(new.key));
                    }
                    continue;
                }
            }
            out.push(c);
        }
        for r in renames {
            let Change::Rename { to, .. } = &r else {
                continue;
            };
            let at = out
                .iter()
                .position(|c| {
                    matches!(c, Change::Create { new, .. }
                        if new.is_dir() && s.table.ino_for(new.key) == *to)
                })
                .map_or(out.len(), |i| i + 1);
            out.insert(at, r);
        }
        out
    }

    /// Before any replay, the previous view of every name that existed: the replays of a
    /// removed tree walk through folders whose entries are already expired.
    fn preset(&self, c: &Change) {
        let v = &self.s.replay;
        match c {
            Change::Delete { dir, name, old } | Change::Replace { dir, name, old, .. } => {
                v.set(*dir, name, ViewEntry::Present(*old))
            }
            Change::Rename {
                from, name, old, ..
            } => v.set(*from, name, ViewEntry::Present(*old)),
            Change::Create { .. }
            | Change::Link { .. }
            | Change::Content { .. }
            | Change::Attr { .. } => {}
        }
    }

    /// After a replay, the kernel's view of its names is the new one.
    fn after_replay(&self, c: &Change) {
        let v = &self.s.replay;
        match c {
            Change::Create { dir, name, new }
            | Change::Link { dir, name, new }
            | Change::Replace { dir, name, new, .. } => v.set(*dir, name, ViewEntry::Present(*new)),
            Change::Delete { dir, name, .. } => v.set(*dir, name, ViewEntry::Absent),
            Change::Rename {
                from,
                name,
                to,
                newname,
                old,
                ..
            } => {
                v.set(*from, name, ViewEntry::Absent);
                v.set(*to, newname, ViewEntry::Present(*old));
            }
            Change::Content { .. } | Change::Attr { .. } => {}
        }
    }

    /// A folder whose listing changed: its attributes (served from the overlay's view under
    /// `cache=always`) and listing are refreshed now.
    fn refresh_dir(&self, dir: Ino) {
        let s = &self.s;
        if let Some(node) = s.table.get(dir) {
            if let Ok(st) = s
                .dir_fd(&node)
                .and_then(|fd| sys::fstatat_fresh(fd.as_fd(), c""))
            {
                node.state().attr = Some(EntrySnap::from_stat(&st));
            }
        }
        self.inval_inode(dir, 0, 0);
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
                let guard = crate::util::lock(holder);
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
