//! The sync worker: on each notification it re-reads the folders the kernel holds within the
//! scope, compares them with the last view, expires exactly what changed in the kernel's caches,
//! and replays each change through the mount so the kernel emits the real inotify event (precise
//! events). It sends the kernel notifications (never a request handler: that would hang the
//! kernel; the one other sender is the thread of [`atime`], which expires attributes it may
//! have had cached from before a client's change) and is the replay thread whose requests the
//! handlers answer from the previous view.
//!
//! - [`scan`]: folder views, scopes, the rescan, new and removed trees.
//! - [`listing`]: reading one folder of SOURCE (listed, or statted by the names of its last
//!   view when its times prove them).
//! - [`diff`]: the pure comparison of views into changes, and their pairing.
//! - [`arrange`]: new and removed trees expanded, renames into new trees and rename cycles
//!   ordered, before the changes are expired and replayed.
//! - [`invalidate`]: the FUSE invalidation messages.
//! - [`replay`]: the replays.
//! - [`pin`]: a burst's names made with the FUSE readers on the replay thread's CPU.
//! - [`atime`]: the thread that stats again what the kernel read (its atime dropped).
//!
//! The rule for events: for each change a rescan finds, watchers get the event sequence a local
//! change with the same end state would produce, whatever other guest clients looked at before
//! or during the handling (a listing or a lookup by one client tells no watcher anything). A
//! change is left out only when a guest client made it through the overlay itself (its watchers
//! saw it happen; the overlay's view was updated by the operation).

mod arrange;
pub mod atime;
mod diff;
mod invalidate;
mod listing;
pub mod open_expiry;
mod pin;
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
#[derive(Clone)]
pub enum ReplayRoot {
    /// The mountpoint itself.
    Path(PathBuf),
    /// A detached writable mount of the same filesystem (the `ro` case), held open until
    /// MOUNTPOINT is unmounted; reached through `/proc/self/fd/N`.
    Detached(super::ReplayHolder),
}

/// Most extra rounds one notification gets for folders SOURCE moved on in meanwhile (a host
/// changing a folder without pause must not hold the answer back for ever).
const FOLLOW_UPS: usize = 3;

pub struct Worker {
    s: Arc<Shared>,
    notifier: Notifier,
    raw: KernelNotifier,
    root: ReplayRoot,
    /// The path prefix replays use during one job (see [`Worker::with_root`]).
    prefix: std::cell::RefCell<Option<PathBuf>>,
    /// The views of the folders watch globs reach.
    reach: std::cell::RefCell<reach::Reach>,
    /// The paths of the folders of removed trees during one notification, taken before their
    /// names are expired: the kernel may forget a folder nobody holds once its entry goes, while
    /// watches on files inside still hold those (see [`Worker::path`]).
    removed_paths: std::cell::RefCell<std::collections::HashMap<Ino, PathBuf>>,
    /// During a run of new files, the folder they are made in, held open through the mount
    /// (see [`Worker::replay_all`]).
    run_dir: std::cell::RefCell<Option<(Ino, std::os::fd::OwnedFd)>>,
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
        removed_paths: Default::default(),
        run_dir: Default::default(),
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
            // Every job but a first view may replace folders' views or expire what the kernel
            // holds: `views_epoch` is odd while one runs (see `OverlayFs::lookup_in_view`).
            let epoch = &self.s.views_epoch;
            let moves_views = !matches!(job, Job::Baseline(_));
            if moves_views {
                epoch.fetch_add(1, Ordering::SeqCst);
            }
            let reply = match job {
                Job::Baseline(ino) => {
                    self.baseline(ino);
                    None
                }
                Job::Notify { scope, done } => Some((done, self.with_root(|| self.notify(&scope)))),
                Job::Degrade => {
                    self.degrade();
                    None
                }
                Job::Relinked => {
                    self.relinked();
                    None
                }
                Job::WatchGlobs(globs) => {
                    self.set_reach(&globs);
                    None
                }
            };
            if moves_views {
                epoch.fetch_add(1, Ordering::SeqCst);
            }
            if let Some((done, r)) = reply {
                let _ = done.send(r);
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

    /// Handle one notification: a round for its scope, then (rarely) rounds for the folders
    /// where SOURCE moved on while the first was replaying (see [`Shared::enter_replayed`]), so
    /// the answer comes when the kernel holds nothing stale and watchers saw what followed.
    fn notify(&self, scope: &NotifyScope) -> NotifyReport {
        let start = Instant::now();
        let s = &self.s;
        Stats::bump(&s.stats.notifications);
        Stats::bump(&s.stats.rescans);
        let before_dirs = s.stats.dirs_scanned.load(Ordering::Relaxed);
        let before_entries = s.stats.entries_scanned.load(Ordering::Relaxed);
        let events_before = s.stats.events_replayed.load(Ordering::Relaxed);
        // Folders an earlier notification left when it ran out of rounds are read with this
        // one's first follow-up.
        let (mut n_changes, mut records) = self.notify_round(self.scopes(scope));
        for _ in 0..FOLLOW_UPS {
            let dirs = s.replay.take_moved_on();
            if dirs.is_empty() {
                break;
            }
            Stats::bump(&s.stats.rescans);
            let (n, r) = self.notify_round(dirs.into_iter().map(scan::Scope::Folder).collect());
            n_changes += n;
            records.extend(r);
        }
        // A folder of a removed tree the kernel held and the watch's reach viewed too: its
        // entries' deletes are in `records` already.
        let told: HashSet<_> = records.iter().cloned().collect();
        records.extend(
            self.reach_records(scope)
                .into_iter()
                .filter(|r| !told.contains(r)),
        );
        let report = NotifyReport {
            dirs_scanned: s.stats.dirs_scanned.load(Ordering::Relaxed) - before_dirs,
            entries_scanned: s.stats.entries_scanned.load(Ordering::Relaxed) - before_entries,
            changes: n_changes,
            events: s.stats.events_replayed.load(Ordering::Relaxed) - events_before,
            micros: u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX),
            records,
        };
        debug!(?report, ?scope, "notification handled");
        report
    }

    /// Rescan, diff, expire and replay what `scopes` cover; the number of changes and their
    /// records.
    fn notify_round(&self, scopes: Vec<scan::Scope>) -> (u64, Vec<ChangeRecord>) {
        let start = Instant::now();
        let s = &self.s;
        let precise = s.cfg.events.precise();
        // Client operations from here on are theirs (see `local_ops`).
        let since = s.local.now();

        // 1. Re-read what is in scope and diff it with the last view.
        let Rescan {
            changes,
            mut views,
            unseen,
        } = self.rescan(scopes);
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
        if precise {
            self.note_removed_paths(&changes);
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
                st.set_attr(Some(now));
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
            let ns = &mut *st;
            view.commit(&mut ns.snapshot, &mut ns.listed);
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
                let mut st = n.state();
                st.snapshot = Some(Box::new(snap));
                st.listed = None;
            }
        }
        for c in &changes {
            if let Change::Delete { old, .. } = c {
                if old.is_dir() {
                    if let Some(n) = s.table.get(s.table.ino_for(old.key)) {
                        let mut st = n.state();
                        st.snapshot = Some(Box::default());
                        st.listed = None;
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
        self.removed_paths.borrow_mut().clear();
        s.local.forget_before(since);
        (n_changes, records)
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
                node.state().set_attr(Some(EntrySnap::from_stat(&st)));
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
