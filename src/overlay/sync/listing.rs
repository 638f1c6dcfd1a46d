//! Reading one folder of SOURCE: its listing with every entry statted, a folder's first view,
//! and the rescan of a folder against its last view — without listing it again when its times
//! prove its names unchanged ([`ListedAt`]).

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStringExt;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use super::diff::{Change, diff};
use super::scan::View;
use crate::overlay::fs::{Shared, Stats};
use crate::overlay::inode::{EntrySnap, Ino, Key, ListedAt, Node, NodeState, Snapshot};
use crate::sys;

/// A folder's first view (see [`Worker::baseline`]). Over a FUSE SOURCE, where each `statx` by
/// name is three round trips to the host, a file the kernel was already told of under its name
/// here (a lookup before the view or racing it, the same object by its inode number) is taken
/// as told, without a stat: that is what the view keeps of it anyway, since a host change after
/// the lookup must be found by its notification ([`Worker::keep_told`]). Every other entry is
/// read as the walk to its name leaves it ([`sys::fstatat_held_btime`]: the walk's `LOOKUP`
/// without the `GETATTR` after it), and a file as an `O_PATH` fd kept in the fd cache while it
/// has room: a client's first LOOKUP of the file is then answered from the view, and its first
/// open opens that fd, with no walk of the name at SOURCE (`OverlayFs::lookup_in_view`).
/// Also whether every entry was read from SOURCE (none taken as told).
pub(super) fn first_view(s: &Shared, node: &Node) -> io::Result<(Snapshot, bool)> {
    let told_in = s.source_is_fuse.then_some(node);
    let (list, told) = list_dir_with(s, node, told_in)?;
    Ok((Snapshot::from_iter(list), told == 0))
}

/// The listing, and how many entries were taken as told (see [`first_view`]).
fn list_dir_with(
    s: &Shared,
    node: &Node,
    told_in: Option<&Node>,
) -> io::Result<(Vec<(OsString, EntrySnap)>, usize)> {
    let pathfd = s.dir_fd(node)?;
    let fd = sys::openat(pathfd.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    list_fd(s, fd.as_fd(), told_in)
}

/// What the kernel was told of the file `e` of `folder`, if it was told of it under that name
/// (the same object: its device and inode number).
fn told_entry(s: &Shared, folder: &Node, e: &sys::RawDirent) -> Option<EntrySnap> {
    if e.kind == libc::DT_DIR {
        return None;
    }
    let key = Key {
        dev: folder.key.dev,
        ino: e.ino,
    };
    let n = s.table.get(s.table.ino_for(key))?;
    if n.key != key || n.is_dir {
        return None;
    }
    let st = n.state();
    let told = st.attr.filter(|t| t.key == key && !t.is_dir())?;
    let linked = st
        .links
        .iter()
        .any(|(p, m)| *p == folder.ino && *m == e.name);
    linked.then_some(told)
}

fn list_fd(
    s: &Shared,
    fd: BorrowedFd<'_>,
    told_in: Option<&Node>,
) -> io::Result<(Vec<(OsString, EntrySnap)>, usize)> {
    let dirents = sys::read_dir(fd)?;
    let mut out = Vec::with_capacity(dirents.len());
    let mut told_n = 0;
    for e in dirents {
        if let Some(told) = told_in.and_then(|f| told_entry(s, f, &e)) {
            Stats::bump(&s.stats.baselines_unstatted);
            told_n += 1;
            out.push((e.name, told));
            continue;
        }
        let read = sys::cstr(&e.name).and_then(|n| match told_in {
            Some(_) => first_read(s, fd, &n, e.kind),
            None => sys::fstatat_fresh_btime(fd, &n),
        });
        if let Ok((st, btime)) = read {
            out.push((e.name, EntrySnap::from_stat(&st).with_btime(btime)));
        }
    }
    Stats::bump(&s.stats.dirs_scanned);
    s.stats
        .entries_scanned
        .fetch_add(out.len() as u64, Ordering::Relaxed);
    Ok((out, told_n))
}

/// One entry's attributes for a first view over a FUSE SOURCE (see [`first_view`]): a file is
/// taken as an `O_PATH` fd while the fd cache has room, and kept there.
fn first_read(
    s: &Shared,
    dir: BorrowedFd<'_>,
    name: &std::ffi::CStr,
    kind: u8,
) -> io::Result<(libc::stat, Option<(i64, i64)>)> {
    if kind != libc::DT_REG || !s.fd_cache.has_room() {
        return sys::fstatat_held_btime(dir, name);
    }
    let path = sys::openat(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
    let (st, btime) = sys::fstat_held(path.as_fd())?;
    let key = Key::of(&st);
    if st.st_mode & libc::S_IFMT == libc::S_IFREG {
        if let Some(ino) = s.table.ino_if_known(key) {
            if s.fd_cache.offer(ino, key, libc::O_PATH, path) {
                Stats::bump(&s.stats.baseline_paths_kept);
            }
        }
    }
    Ok((st, btime))
}

/// A folder's entries as a view: built in one pass from the sorted list, so its tree nodes are
/// full (inserting one by one leaves them about two thirds full).
pub(super) fn scan_fd(s: &Shared, fd: BorrowedFd<'_>) -> io::Result<Snapshot> {
    list_fd(s, fd, None).map(|(list, _)| Snapshot::from_iter(list))
}

/// Re-read a whole folder and diff it with its last view. Every entry is `statx`ed: an entry's
/// attributes change (chmod, a write, utimes) without its folder changing, so nothing per entry
/// can be skipped on the folder's word. What its word proves is its names: on a local SOURCE a
/// folder whose times are those its view was listed under ([`ListedAt`]) has the view's names,
/// and its entries are statted by them without listing it ([`restat`]). What is saved after is
/// a listing equal to the view, entry for entry, giving [`View::Same`] (no new view built,
/// none committed). Without a view yet, the listing is the baseline ([`View::Full`], and `None`
/// for the changes).
pub(super) fn rescan_full(s: &Shared, node: &Node) -> io::Result<(Option<Vec<Change>>, View)> {
    let pathfd = s.dir_fd(node)?;
    let started = SystemTime::now();
    let dir_st = times_prove_names(s, node)
        .then(|| sys::fstat(pathfd.as_fd()).ok())
        .flatten();
    let proof = dir_st.and_then(|d| {
        node.state()
            .listed
            .as_deref()
            .copied()
            .filter(|l| l.holds(&d))
    });
    if let Some(done) = proof.and_then(|p| {
        restat(s, node, pathfd.as_fd()).and_then(|found| compare_restat(node, found, p))
    }) {
        return Ok(done);
    }
    let listed = dir_st.and_then(|d| ListedAt::proving(&d, started));
    let (list, _) = list_dir_with(s, node, None)?;
    let st = node.state();
    let Some(old) = st.snapshot.as_deref() else {
        drop(st);
        return Ok((None, View::Full(Snapshot::from_iter(list), listed)));
    };
    Ok(against(node.ino, &st, old, list, listed))
}

/// Whether the times of `node`, a folder, can prove its names (see [`ListedAt`]): SOURCE is a
/// local filesystem and the folder is on SOURCE's own.
pub(super) fn times_prove_names(s: &Shared, node: &Node) -> bool {
    s.times_prove_names && node.key.dev == s.source_dev
}

/// The rescan's result for a folder read as `list`, against its view `old`: the same entry for
/// entry ([`View::Same`], with the names the kernel was told do not exist that it has), or the
/// changes and the new view.
fn against(
    ino: Ino,
    st: &NodeState,
    old: &Snapshot,
    list: Vec<(OsString, EntrySnap)>,
    listed: Option<ListedAt>,
) -> (Option<Vec<Change>>, View) {
    // In the view's order (a restat, a listing in name order) a walk side by side tells; in
    // another, each entry is looked up.
    let same = list.len() == old.len()
        && (old.iter().zip(&list).all(|(o, l)| o == (&l.0, &l.1))
            || list.iter().all(|(n, e)| old.get(n) == Some(e)));
    if same {
        let present = st
            .negatives
            .iter()
            .filter(|n| old.contains_key(*n))
            .cloned()
            .collect();
        return (Some(Vec::new()), View::Same(present, listed));
    }
    let new = Snapshot::from_iter(list);
    let mut changes = Vec::new();
    diff(ino, old, &new, &mut changes);
    (Some(changes), View::Full(new, listed))
}

/// The entries of a folder's last view, each statted again by its name, in the view's order;
/// `None` when one is gone or cannot be statted (then the folder is listed).
fn restat(s: &Shared, node: &Node, dir: BorrowedFd<'_>) -> Option<Vec<(OsString, EntrySnap)>> {
    let names: Vec<CString> = node
        .state()
        .snapshot
        .as_deref()?
        .keys()
        .map(|n| sys::cstr(n))
        .collect::<io::Result<_>>()
        .ok()?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let (st, btime) = sys::fstatat_fresh_btime(dir, &name).ok()?;
        let name = OsString::from_vec(name.into_bytes());
        out.push((name, EntrySnap::from_stat(&st).with_btime(btime)));
    }
    Stats::bump(&s.stats.dirs_scanned);
    Stats::bump(&s.stats.dirs_unlisted);
    s.stats
        .entries_scanned
        .fetch_add(out.len() as u64, Ordering::Relaxed);
    Some(out)
}

/// A rescan's result from [`restat`]: `None` when the view's names changed meanwhile (a client's
/// operation through the overlay recorded one), and the folder is listed after all.
fn compare_restat(
    node: &Node,
    found: Vec<(OsString, EntrySnap)>,
    proof: ListedAt,
) -> Option<(Option<Vec<Change>>, View)> {
    let st = node.state();
    let old = st.snapshot.as_deref()?;
    let same_names = found.len() == old.len() && old.keys().zip(&found).all(|(k, (n, _))| k == n);
    same_names.then(|| against(node.ino, &st, old, found, Some(proof)))
}
