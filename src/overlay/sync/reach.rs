//! Watch reach: while `vfnotify watch` subscriptions follow this overlay, the overlay keeps its own
//! views of the folders their globs can reach — also those no guest client ever listed, which
//! the kernel does not hold and the rescans therefore never read — so a structured watch hears of
//! every change its glob matches (indexers and sync tools do not list everything first).
//!
//! The views are keyed by path, bounded by [`REACH_BUDGET`] entries in all (past it, deeper
//! folders are left out and `reach_truncated` counts them), taken when the set of globs changes
//! and rescanned with each notification's scope. They only produce watch records, and only for
//! folders the kernel does not hold with a view of its own (those are reported by the rescan).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::Ordering;

use tracing::{debug, info};

use super::diff::{self, Change};
use super::{ChangeRecord, Worker};
use crate::control::wire::{ChangeKind, Scope as NotifyScope};
use crate::glob::Glob;
use crate::overlay::fs::Stats;
use crate::overlay::inode::{Ino, Key, Snapshot};
use crate::sys;

/// Most entries the reach views hold in all, by default (mount option `reach=N`).
pub const REACH_BUDGET: usize = 100_000;

/// The views of the folders active globs can reach.
#[derive(Default)]
pub struct Reach {
    /// Folder (relative to the mount) and depth below it (`None`: any), one per distinct glob
    /// reach, none nested in another.
    roots: Vec<(PathBuf, Option<usize>)>,
    /// Each folder's identity and last view.
    folders: BTreeMap<PathBuf, (Key, Snapshot)>,
    entries: usize,
}

impl Reach {
    /// How deep below its root a folder may be viewed, if it is within reach at all.
    fn allows(&self, dir: &Path) -> bool {
        self.roots.iter().any(|(root, depth)| {
            dir.strip_prefix(root).is_ok_and(|rest| match depth {
                None => true,
                Some(d) => rest.components().count() <= *d,
            })
        })
    }
}

impl Worker {
    /// The set of watch globs following this overlay changed: take the views anew.
    pub(super) fn set_reach(&self, globs: &[String]) {
        let mut roots: Vec<(PathBuf, Option<usize>)> = Vec::new();
        for g in globs.iter().filter(|_| self.s.cfg.reach > 0) {
            let Ok(glob) = Glob::new(g) else {
                debug!(glob = %g, "unusable watch glob ignored");
                continue;
            };
            let (dir, depth) = glob.reach();
            let dir = PathBuf::from(dir);
            if !roots.contains(&(dir.clone(), depth)) {
                roots.push((dir, depth));
            }
        }
        let mut reach = Reach {
            roots,
            ..Default::default()
        };
        let mut todo: Vec<PathBuf> = reach.roots.iter().map(|(r, _)| r.clone()).collect();
        todo.sort();
        todo.dedup();
        let mut truncated = false;
        while let Some(dir) = todo.pop() {
            if reach.folders.contains_key(&dir) {
                continue;
            }
            let Some((fd, key)) = self.open_rel(&dir) else {
                continue;
            };
            let Ok(snap) = self.scan_fd_quiet(fd.as_fd()) else {
                continue;
            };
            if reach.entries + snap.len() > self.s.cfg.reach {
                truncated = true;
                continue;
            }
            reach.entries += snap.len();
            for (name, e) in &snap {
                let sub = dir.join(name);
                if e.is_dir() && reach.allows(&sub) {
                    todo.push(sub);
                }
            }
            reach.folders.insert(dir, (key, snap));
        }
        if truncated {
            Stats::bump(&self.s.stats.reach_truncated);
        }
        self.s
            .stats
            .reach_entries
            .store(reach.entries as u64, Ordering::Relaxed);
        info!(
            globs = globs.len(),
            folders = reach.folders.len(),
            entries = reach.entries,
            truncated,
            "watch reach taken"
        );
        *self.reach.borrow_mut() = reach;
    }

    /// Rescan the reach views a notification's scope covers; the records of what changed in
    /// folders the kernel does not hold a view of.
    pub(super) fn reach_records(&self, scope: &NotifyScope) -> Vec<ChangeRecord> {
        let mut reach = self.reach.borrow_mut();
        if reach.folders.is_empty() {
            return Vec::new();
        }
        // The folders in scope: every viewed folder for a whole notification, else for each
        // path its deepest viewed folder and every viewed folder below the path.
        let dirs: Vec<PathBuf> = if let NotifyScope::Paths(paths) = scope {
            let mut set: HashSet<PathBuf> = HashSet::new();
            for p in paths {
                let p = Path::new(p);
                if let Some(d) = p.ancestors().find(|a| reach.folders.contains_key(*a)) {
                    set.insert(d.to_path_buf());
                }
                for d in reach.folders.keys().filter(|d| d.starts_with(p)) {
                    set.insert(d.clone());
                }
            }
            set.into_iter().collect()
        } else {
            reach.folders.keys().cloned().collect()
        };
        let mut changes = Vec::new();
        let mut ids: HashMap<Ino, PathBuf> = HashMap::new();
        let mut fresh: Vec<(PathBuf, Key, Snapshot)> = Vec::new();
        for dir in dirs {
            let Some((key, old)) = reach.folders.get(&dir) else {
                continue;
            };
            let id = self.s.table.ino_for(*key);
            ids.insert(id, dir.clone());
            let new = self
                .open_rel(&dir)
                .filter(|(_, k)| k == key)
                .and_then(|(fd, _)| self.scan_fd_quiet(fd.as_fd()).ok())
                .unwrap_or_default();
            let held = self
                .s
                .table
                .get(id)
                .is_some_and(|n| n.key == *key && n.is_dir && n.state().snapshot.is_some());
            if !held {
                diff::diff(id, old, &new, &mut changes);
            }
            fresh.push((dir, *key, new));
        }
        let changes = diff::pair(changes, |_| false);
        let mut out = Vec::new();
        let mut removed: Vec<PathBuf> = Vec::new();
        let mut moved: Vec<PathBuf> = Vec::new();
        for c in &changes {
            let path_of = |dir: Ino, name: &OsStr| ids.get(&dir).map(|d| d.join(name));
            match c {
                Change::Create { dir, name, new } => {
                    let Some(p) = path_of(*dir, name) else {
                        continue;
                    };
                    out.push(record(ChangeKind::Create, &p, None));
                    if new.is_dir() && reach.allows(&p) {
                        self.reach_new_tree(&mut reach, &p, &mut out);
                    }
                }
                Change::Delete { dir, name, old } => {
                    let Some(p) = path_of(*dir, name) else {
                        continue;
                    };
                    if old.is_dir() {
                        reach_removed_tree(&reach, &p, &mut out);
                        removed.push(p.clone());
                    }
                    out.push(record(ChangeKind::Delete, &p, None));
                }
                Change::Rename {
                    from,
                    name,
                    to,
                    newname,
                    ..
                } => {
                    if let (Some(a), Some(b)) = (path_of(*from, name), path_of(*to, newname)) {
                        out.push(record(ChangeKind::Rename, &a, Some(&b)));
                        if reach.folders.contains_key(&a) {
                            moved.push(b.clone());
                        }
                        removed.push(a);
                    }
                }
                Change::Replace { dir, name, .. } | Change::Content { dir, name, .. } => {
                    if let Some(p) = path_of(*dir, name) {
                        out.push(record(ChangeKind::Modify, &p, None));
                    }
                }
                Change::Link { dir, name, .. } => {
                    if let Some(p) = path_of(*dir, name) {
                        out.push(record(ChangeKind::Create, &p, None));
                    }
                }
                Change::Attr { dir, name, .. } => {
                    if let Some(p) = path_of(*dir, name) {
                        out.push(record(ChangeKind::Attrib, &p, None));
                    }
                }
            }
        }
        for (dir, key, snap) in fresh {
            let n = snap.len();
            if let Some(old) = reach.folders.insert(dir, (key, snap)) {
                reach.entries = reach.entries.saturating_sub(old.1.len()) + n;
            }
        }
        for gone in removed {
            let below: Vec<PathBuf> = reach
                .folders
                .keys()
                .filter(|d| d.starts_with(&gone))
                .cloned()
                .collect();
            for d in below {
                if let Some((_, s)) = reach.folders.remove(&d) {
                    reach.entries = reach.entries.saturating_sub(s.len());
                }
            }
        }
        // A folder moved within reach keeps being viewed at its new place (what it holds was
        // reported by the rename).
        for dir in moved {
            if reach.allows(&dir) {
                self.reach_new_tree(&mut reach, &dir, &mut Vec::new());
            }
        }
        self.s
            .stats
            .reach_entries
            .store(reach.entries as u64, Ordering::Relaxed);
        out
    }

    /// A folder new within reach: its content as creates (pre-order), and views of it.
    fn reach_new_tree(&self, reach: &mut Reach, dir: &Path, out: &mut Vec<ChangeRecord>) {
        let Some((fd, key)) = self.open_rel(dir) else {
            return;
        };
        let Ok(snap) = self.scan_fd_quiet(fd.as_fd()) else {
            return;
        };
        if reach.entries + snap.len() > self.s.cfg.reach {
            Stats::bump(&self.s.stats.reach_truncated);
            return;
        }
        reach.entries += snap.len();
        let subdirs: Vec<PathBuf> = snap
            .iter()
            .map(|(name, e)| {
                let p = dir.join(name);
                out.push(record(ChangeKind::Create, &p, None));
                (p, e.is_dir())
            })
            .filter(|(p, is_dir)| *is_dir && reach.allows(p))
            .map(|(p, _)| p)
            .collect();
        reach.folders.insert(dir.to_path_buf(), (key, snap));
        for d in subdirs {
            self.reach_new_tree(reach, &d, out);
        }
    }

    /// Open a folder of SOURCE by its path relative to the mount, following no symlink.
    fn open_rel(&self, rel: &Path) -> Option<(OwnedFd, Key)> {
        let mut fd: OwnedFd = sys::dup(self.s.root_fd.as_fd()).ok()?;
        for c in rel.components() {
            let Component::Normal(name) = c else {
                return None;
            };
            fd = open_dir_at(fd.as_fd(), name)?;
        }
        // An O_PATH root duplicate cannot be listed: open "." for reading.
        let fd = sys::openat(fd.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0).ok()?;
        let st = sys::fstat(fd.as_fd()).ok()?;
        Some((
            fd,
            Key {
                dev: st.st_dev,
                ino: st.st_ino,
            },
        ))
    }

    /// A folder's entries, without counting them as rescans.
    fn scan_fd_quiet(&self, fd: BorrowedFd<'_>) -> std::io::Result<Snapshot> {
        let mut snap = Snapshot::new();
        for e in sys::read_dir(fd)? {
            if let Ok((st, btime)) =
                sys::cstr(&e.name).and_then(|n| sys::fstatat_fresh_btime(fd, &n))
            {
                snap.insert(
                    e.name,
                    crate::overlay::inode::EntrySnap::from_stat(&st).with_btime(btime),
                );
            }
        }
        Ok(snap)
    }
}

fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> Option<OwnedFd> {
    let c = sys::cstr(name).ok()?;
    sys::openat(
        dir,
        &c,
        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
    .ok()
}

/// A removed folder's content within reach, as deletes, deepest first.
fn reach_removed_tree(reach: &Reach, dir: &Path, out: &mut Vec<ChangeRecord>) {
    let Some((_, snap)) = reach.folders.get(dir) else {
        return;
    };
    for (name, e) in snap {
        let p = dir.join(name);
        if e.is_dir() {
            reach_removed_tree(reach, &p, out);
        }
        out.push(record(ChangeKind::Delete, &p, None));
    }
}

fn record(kind: ChangeKind, path: &Path, to: Option<&Path>) -> ChangeRecord {
    let s = |p: &Path| String::from_utf8_lossy(p.as_os_str().as_bytes()).into_owned();
    ChangeRecord {
        kind,
        path: s(path),
        to: to.map(s),
    }
}
