//! Reading SOURCE: folder views (baselines), the folders a notification's scope covers, the
//! rescan that diffs them with their last view, and the trees that are new or gone as a whole.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tracing::debug;

use super::diff::{Change, diff_entry};
use super::listing::{first_view, rescan_full, scan_fd, times_prove_names};
use super::{Worker, told_differs};
use crate::control::wire::Scope as NotifyScope;
use crate::overlay::fs::Stats;
use crate::overlay::inode::{EntrySnap, Ino, Key, ListedAt, Node, ROOT_INO, Snapshot};
use crate::sys;

/// Most entries a notification describes one by one inside folders that are new or removed as a
/// whole; past that the folder's own event stands for the rest (a watcher crawls it), counted as
/// `tree_collapsed`.
pub const TREE_BUDGET: usize = 100_000;

/// Where a notification applies.
#[derive(Debug)]
pub enum Scope {
    /// A folder and every folder below it that the kernel holds.
    Subtree(Ino),
    /// One name in a folder.
    Entry(Ino, OsString),
    /// One folder's whole listing, not what is below it (a replay's follow-up: see
    /// [`super::Worker::notify`]).
    Folder(Ino),
}

/// A folder's next view: complete, some names updated (`None`: gone), or the last view as it is.
pub enum View {
    /// With the folder's times where they prove its names (see [`ListedAt`]).
    Full(Snapshot, Option<ListedAt>),
    Names(Vec<(OsString, Option<EntrySnap>)>),
    /// SOURCE's listing equals the last view entry for entry: nothing to commit (a whole-mount
    /// rescan of an unchanged tree allocates no new view). It holds the names the kernel was told
    /// do not exist that the listing has (what [`View::has`] answers for), and the folder's
    /// times where they prove its names.
    Same(Vec<OsString>, Option<ListedAt>),
}

impl View {
    /// Whether the view has `name`.
    pub fn has(&self, name: &OsStr) -> bool {
        match self {
            View::Full(s, _) => s.contains_key(name),
            View::Names(v) => v.iter().any(|(n, e)| n == name && e.is_some()),
            View::Same(present, _) => present.iter().any(|n| n == name),
        }
    }

    /// Make this the folder's view (and its times, the proof of its names: a view of some
    /// names leaves them, since a change of names moves the folder's times).
    pub fn commit(self, slot: &mut Option<Box<Snapshot>>, listed: &mut Option<Box<ListedAt>>) {
        match self {
            View::Full(s, l) => {
                *slot = Some(Box::new(s));
                *listed = l.map(Box::new);
            }
            View::Names(v) => {
                let snap = slot.get_or_insert_with(Box::default);
                for (name, e) in v {
                    match e {
                        Some(e) => snap.insert(name, e),
                        None => snap.remove(&name),
                    };
                }
            }
            View::Same(_, l) => *listed = l.map(Box::new),
        }
    }
}

/// What a rescan found: the changes in diff order and each folder's next view.
#[derive(Default)]
pub struct Rescan {
    pub changes: Vec<Change>,
    pub views: Vec<(Arc<Node>, View)>,
    /// Names the scope named that SOURCE has under neither view (a name the kernel may hold from
    /// a lookup the overlay's view never recorded): expired anyway.
    pub unseen: Vec<(Ino, OsString)>,
}

impl Worker {
    /// Take the first view of a folder the kernel just learned about. When the folder changed
    /// between the kernel learning it and this view, entries changed since then are left out (so
    /// the next notification reports them), and since a name removed in between cannot be
    /// represented at all, every name the kernel holds in it is expired.
    pub(super) fn baseline(&self, ino: Ino) {
        let Some(node) = self.s.table.get(ino) else {
            return;
        };
        if node.state().snapshot.is_some() {
            return;
        }
        let known = node.state().attr;
        let started = std::time::SystemTime::now();
        let read_from = std::time::Instant::now();
        let Ok((mut snap, all_read)) = first_view(&self.s, &node) else {
            return;
        };
        let kept_told = self.keep_told(ino, &mut snap);
        Stats::bump(&self.s.stats.baselines);
        let now = self
            .s
            .dir_fd(&node)
            .and_then(|fd| sys::fstatat_fresh(fd.as_fd(), c""))
            .ok();
        let mut uncertain = false;
        let mut listed = None;
        // Fresh for lookups without trust (see `fs/fresh_views.rs`): every entry read from
        // SOURCE now, and the folder's names the same before the listing and after it.
        let mut fresh = None;
        if let (Some(k), Some(now)) = (known, now) {
            let names_held = (now.st_mtime, now.st_mtime_nsec) == k.mtime;
            if all_read && !kept_told && names_held {
                fresh = Some(EntrySnap::from_stat(&now));
            }
            if !names_held {
                snap.retain(|_, e| e.ctime <= k.mtime);
                uncertain = true;
            } else if times_prove_names(&self.s, &node)
                && (now.st_ctime, now.st_ctime_nsec) == k.ctime
            {
                // The folder's times, read before the listing (at the lookup) and after it, are
                // the same: the listing has the names they stand for.
                listed = ListedAt::proving(&now, started).map(Box::new);
            }
        }
        {
            let mut st = node.state();
            if st.snapshot.is_some() {
                return;
            }
            st.snapshot = Some(Box::new(snap));
            st.listed = listed;
        }
        if let Some(folder) = fresh {
            self.s.fresh_views.note(ino, &folder, read_from);
        }
        if uncertain {
            Stats::bump(&self.s.stats.baselines_uncertain);
            self.expire_folder(&node);
        }
    }

    /// The attributes the kernel was told of the folder's files, where they differ from
    /// SOURCE's in this first view. A lookup racing the view told the kernel what SOURCE had
    /// then; a host change since is already in SOURCE's attributes here, and with them in the
    /// view its notification would find nothing to report, and the kernel would keep the old
    /// attributes and pages. Folders are left as read: what they were told is settled when a
    /// notification commits their views.
    /// Whether any entry was replaced.
    fn keep_told(&self, folder: Ino, snap: &mut Snapshot) -> bool {
        let mut kept = false;
        for (name, e) in snap.iter_mut() {
            if e.is_dir() {
                continue;
            }
            let Some(n) = self.s.table.get(self.s.table.ino_for(e.key)) else {
                continue;
            };
            if n.key != e.key {
                continue;
            }
            let st = n.state();
            let Some(told) = st.attr.filter(|t| t.key == e.key) else {
                continue;
            };
            if st.links.iter().any(|(p, m)| *p == folder && m == name) && told_differs(&told, e) {
                *e = EntrySnap {
                    btime: e.btime,
                    ..told
                };
                Stats::bump(&self.s.stats.baselines_told);
                kept = true;
            }
        }
        kept
    }

    /// Turn validated relative paths into scopes, walking only folders the kernel holds and
    /// never following a symlink.
    pub(super) fn scopes(&self, scope: &NotifyScope) -> Vec<Scope> {
        let paths = match scope {
            NotifyScope::Whole => return vec![Scope::Subtree(ROOT_INO)],
            NotifyScope::Paths(paths) => paths,
        };
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

    /// The node id of a folder the kernel holds under `(parent, name)`.
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

    /// Known folders below (and including) `root`.
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

    /// Re-read what the scope covers and diff it with the last view. The folders of subtrees are
    /// read by up to [`MAX_SCANNERS`] threads at once (each `statx` is a round trip to the host
    /// over virtiofs); their changes keep the folders' order.
    pub(super) fn rescan(&self, scopes: Vec<Scope>) -> Rescan {
        let mut r = Rescan::default();
        let mut scanned: HashSet<Ino> = HashSet::new();
        let mut full: Vec<Arc<Node>> = Vec::new();
        let mut entries: Vec<(Ino, Vec<OsString>)> = Vec::new();
        for scope in scopes {
            match scope {
                Scope::Folder(dir) => {
                    if let Some(node) = self.s.table.get(dir).filter(|n| n.is_dir) {
                        if scanned.insert(node.ino) {
                            full.push(node);
                        }
                    }
                }
                Scope::Subtree(root) => {
                    for node in self.subtree(root) {
                        if scanned.insert(node.ino) {
                            full.push(node);
                        }
                    }
                }
                Scope::Entry(dir, name) => {
                    // Gathered per folder: one view per folder per notification.
                    // (Paths below one name name it once each: `x` for `x/y` and `x/z`.)
                    match entries.iter_mut().find(|(d, _)| *d == dir) {
                        Some((_, names)) if names.contains(&name) => {}
                        Some((_, names)) => names.push(name),
                        None => entries.push((dir, vec![name])),
                    }
                }
            }
        }
        let s = &*self.s;
        for (node, found) in full.iter().zip(par_map(&full, |n| rescan_full(s, n))) {
            match found {
                Ok((changes, view)) => {
                    r.changes.extend(changes.into_iter().flatten());
                    r.views.push((node.clone(), view));
                }
                Err(e) => debug!("rescan of {} failed: {e}", node.ino),
            }
        }
        for (dir, names) in entries {
            if scanned.contains(&dir) {
                continue;
            }
            if let Some(node) = self.s.table.get(dir) {
                self.rescan_dir(&node, Some(&names), &mut r);
            }
        }
        r
    }

    /// Diff one folder (or some names in it) against its last view, without copying the view:
    /// a scoped notification in a folder of 10,000 entries costs a few `fstatat`s.
    fn rescan_dir(&self, node: &Arc<Node>, only: Option<&[OsString]>, r: &mut Rescan) {
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
            let mark = r.changes.len();
            let mut vanished = false;
            {
                let st = node.state();
                let snap = st.snapshot.as_deref();
                for (name, new) in &found {
                    let old = snap.and_then(|s| s.get(name));
                    vanished |= old.is_some() && new.is_none();
                    if old.is_none() && new.is_none() {
                        r.unseen.push((node.ino, name.clone()));
                    }
                    diff_entry(node.ino, name, old, new.as_ref(), &mut r.changes);
                }
            }
            if !vanished {
                r.views.push((node.clone(), View::Names(found)));
                return;
            }
            // A name that vanished may have been renamed within the folder: look at it all.
            r.changes.truncate(mark);
        }
        let (changes, view) = match rescan_full(&self.s, node) {
            Ok(found) => found,
            Err(e) => {
                debug!("rescan of {} failed: {e}", node.ino);
                return;
            }
        };
        match changes {
            Some(changes) => r.changes.extend(changes),
            // Without a view yet this is the baseline, and the names the scope gave are all the
            // notification can say: expire them.
            None => {
                for name in only.into_iter().flatten() {
                    r.unseen.push((node.ino, name.clone()));
                }
            }
        }
        r.views.push((node.clone(), view));
    }

    /// Everything below a folder that is new in this notification (`dir`, the folder's node id;
    /// `fd` open on it), as creates in pre-order, with each folder's view. `budget` bounds the
    /// entries described; past it the folder's own event stands for the rest.
    pub(super) fn scan_new_tree(
        &self,
        fd: BorrowedFd<'_>,
        dir: Ino,
        moved: &HashSet<Key>,
        budget: &mut usize,
        changes: &mut Vec<Change>,
        views: &mut Vec<(Ino, Snapshot)>,
    ) {
        let Ok(snap) = scan_fd(&self.s, fd) else {
            Stats::bump(&self.s.stats.scan_errors);
            return;
        };
        if snap.len() > *budget {
            Stats::bump(&self.s.stats.tree_collapsed);
            return;
        }
        *budget -= snap.len();
        for (name, e) in &snap {
            changes.push(Change::Create {
                dir,
                name: name.clone(),
                new: *e,
            });
            // A folder that was elsewhere before keeps its own view: it pairs into a rename.
            if e.is_dir() && !moved.contains(&e.key) {
                let sub = sys::cstr(name).and_then(|n| {
                    sys::openat(
                        fd,
                        &n,
                        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                        0,
                    )
                });
                if let Ok(sub) = sub {
                    let child = self.s.table.ino_for(e.key);
                    self.scan_new_tree(sub.as_fd(), child, moved, budget, changes, views);
                }
            }
        }
        views.push((dir, snap));
    }

    /// Open the folder `name` in the folder node `dir` (for [`Worker::scan_new_tree`]), checking
    /// it is still the object `key`.
    pub(super) fn open_child_dir(
        &self,
        dir: Ino,
        name: &OsStr,
        key: Key,
    ) -> io::Result<std::os::fd::OwnedFd> {
        let node = self
            .s
            .table
            .get(dir)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ESTALE))?;
        let pfd = self.s.dir_fd(&node)?;
        let fd = sys::openat(
            pfd.as_fd(),
            &sys::cstr(name)?,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )?;
        let st = sys::fstat(fd.as_fd())?;
        if (Key {
            dev: st.st_dev,
            ino: st.st_ino,
        }) != key
        {
            return Err(io::Error::from_raw_os_error(libc::ESTALE));
        }
        Ok(fd)
    }

    /// What the overlay last saw inside a folder that is removed as a whole, as deletes in
    /// post-order (deepest first), within `budget`.
    /// `dirs` gets every folder visited.
    /// What was moved out (`moved`: a rename's object) is left out.
    pub(super) fn removed_tree(
        &self,
        old: &EntrySnap,
        moved: &HashSet<Key>,
        budget: &mut usize,
        out: &mut Vec<Change>,
        dirs: &mut Vec<Ino>,
    ) {
        let ino = self.s.table.ino_for(old.key);
        let Some(node) = self.s.table.get(ino) else {
            return;
        };
        if node.key != old.key || !node.is_dir {
            return;
        }
        dirs.push(ino);
        let snap = node
            .state()
            .snapshot
            .as_deref()
            .cloned()
            .unwrap_or_default();
        if snap.len() > *budget {
            Stats::bump(&self.s.stats.tree_collapsed);
            return;
        }
        *budget -= snap.len();
        for (name, e) in snap {
            if moved.contains(&e.key) {
                continue;
            }
            if e.is_dir() {
                self.removed_tree(&e, moved, budget, out, dirs);
            }
            out.push(Change::Delete {
                dir: ino,
                name,
                old: e,
            });
        }
    }
}

/// Most threads that read folders at once in one rescan (fewer on fewer CPUs).
pub const MAX_SCANNERS: usize = 8;
/// Fewest folders a scanner thread is started for.
const FOLDERS_PER_SCANNER: usize = 32;

/// `f` over every node, by up to [`MAX_SCANNERS`] threads (bounded by the CPUs), results in order.
fn par_map<T: Send>(nodes: &[Arc<Node>], f: impl Fn(&Node) -> T + Sync) -> Vec<T> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cpus
        .min(MAX_SCANNERS)
        .min(nodes.len() / FOLDERS_PER_SCANNER)
        .max(1);
    if threads == 1 {
        return nodes.iter().map(|n| f(n)).collect();
    }
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(n) = nodes.get(i) else {
                return done;
            };
            done.push((i, f(n)));
        }
    };
    let mut out: Vec<Option<T>> = std::iter::repeat_with(|| None).take(nodes.len()).collect();
    std::thread::scope(|sc| {
        let helpers: Vec<_> = (1..threads).map(|_| sc.spawn(work)).collect();
        let mine = work();
        for (i, t) in helpers
            .into_iter()
            .filter_map(|h| h.join().ok())
            .flatten()
            .chain(mine)
        {
            out[i] = Some(t);
        }
    });
    // A helper that panicked leaves its items undone: do them here.
    out.into_iter()
        .zip(nodes)
        .map(|(t, n)| t.unwrap_or_else(|| f(n)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::inode::Table;
    use std::os::fd::OwnedFd;

    /// The scanner threads' results come back in the folders' order, each folder once.
    #[test]
    fn par_map_keeps_the_order() {
        let fd = OwnedFd::from(std::fs::File::open("/").unwrap());
        let t = Table::new(
            Key {
                dev: 7,
                ino: 1 << 40,
            },
            Arc::new(fd),
        );
        let nodes: Vec<Arc<Node>> = (2..2000)
            .map(|i| t.node_for(Key { dev: 7, ino: i }, true).0)
            .collect();
        let calls = AtomicUsize::new(0);
        let out = par_map(&nodes, |n| {
            calls.fetch_add(1, Ordering::Relaxed);
            n.ino
        });
        assert_eq!(out, (2..2000).collect::<Vec<Ino>>());
        assert_eq!(calls.load(Ordering::Relaxed), nodes.len());
    }
}
