//! Replays: each change is performed again through the overlay's own mount by the sync worker, so
//! the kernel emits exactly the event a local change would have produced. The request handlers
//! answer the worker's requests from the previous view (`ReplayView`) and never touch SOURCE.
//!
//! The kernel may hold any name a replay acts on — a client looked it up or listed the folder
//! before or during the notification. The names are expired first (see `invalidate.rs`; a new
//! name only where the kernel may hold it as a negative entry: a positive one is SOURCE's answer,
//! and the create revalidates it) and marked pending, so other clients' lookups of them are not cached while the replay runs; should
//! one still slip in between (a lookup answered just before the mark, installed just after the
//! expiry), the replay meets `EEXIST`, `ENOENT`, `EISDIR` or `ENOTDIR`, expires the names again and
//! retries, a few times.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::debug;

use super::Worker;
use super::diff::Change;
use crate::overlay::fs::{Shared, Stats, ViewEntry};
use crate::overlay::inode::{EntrySnap, Ino, Key};
use crate::sys;

/// How often a replay's name operation is tried in all.
const ATTEMPTS: usize = 4;

/// Temporary names for replacements are unique within the process.
static NEXT_TMP: AtomicU64 = AtomicU64::new(1);

/// Why a replay did not produce its event.
enum Failure {
    /// The name operation met what the kernel holds: expire and try again.
    Retry(io::Error),
    /// Give up: invalidate instead.
    Fail(io::Error),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Fail(e)
    }
}

/// The error a name operation gives when the kernel holds a name the previous view disagrees
/// with.
fn retryable(e: io::Error) -> Failure {
    match e.raw_os_error() {
        Some(libc::EEXIST | libc::ENOENT | libc::EISDIR | libc::ENOTDIR | libc::ENOTEMPTY) => {
            Failure::Retry(e)
        }
        _ => Failure::Fail(e),
    }
}

/// A run of at least this many new files in a row is replayed in two passes (see
/// [`Worker::replay_all`]).
const RUN: usize = 8;

/// Whether `c` is a new regular file with one name (its content events need no other change).
fn plain_file(c: &Change) -> bool {
    matches!(c, Change::Create { new, .. } if new.file_type() == libc::S_IFREG && new.nlink <= 1)
}

/// While it lives, the overlay knows which object the name a replay is making stands for, as the
/// rescan found it (see [`crate::overlay::fs::ReplayView::set_making`]).
struct Making<'a> {
    s: &'a Shared,
    dir: Ino,
    name: &'a OsStr,
}

impl<'a> Making<'a> {
    fn new(s: &'a Shared, dir: Ino, name: &'a OsStr, new: &EntrySnap) -> Making<'a> {
        s.replay.set_making(dir, name, Some(*new));
        Making { s, dir, name }
    }
}

impl Drop for Making<'_> {
    fn drop(&mut self) {
        self.s.replay.set_making(self.dir, self.name, None);
    }
}

impl Worker {
    /// Replay every change in order. A run of new files (a burst: an unpacked archive, a
    /// checkout) goes in two passes, so the last IN_CREATE comes as early as it can: first every
    /// name (IN_CREATE), then their content (IN_MODIFY, IN_CLOSE_WRITE), on helper threads beside
    /// this one — each file's own events stay in order. `after` runs after each change.
    ///
    /// The names are the burst's critical path: the kernel makes them one at a time (it holds the
    /// folder's lock for each create), three round trips to the overlay each. So each is one
    /// `mknodat` on the folder held open for the run ([`Worker::make_in_run`]), and the FUSE
    /// readers share the replay thread's CPU meanwhile ([`super::pin`]).
    pub(super) fn replay_all(&self, changes: &[Change], after: impl Fn(&Change)) {
        let mut i = 0;
        while i < changes.len() {
            let run = changes[i..].iter().take_while(|c| plain_file(c)).count();
            if run < RUN {
                self.replay(&changes[i], false);
                after(&changes[i]);
                i += 1;
                continue;
            }
            let mut made = Vec::with_capacity(run);
            let pinned = super::pin::Pinned::new(&self.s.stats);
            for c in &changes[i..i + run] {
                if self.replay(c, true) {
                    if let Change::Create { dir, name, new } = c {
                        made.push((*dir, name, new.size));
                    }
                }
                after(c);
            }
            // The folder's fd and the CPU go with the run's names.
            self.run_dir.take();
            drop(pinned);
            let content: Vec<(PathBuf, u64)> = made
                .into_iter()
                .filter_map(|(dir, name, size)| Some((self.path(dir, name).ok()?, size)))
                .collect();
            self.replay_contents(&content);
            i += run;
        }
    }

    /// Open, truncate (when there is content) and close each new file, on helper threads too.
    fn replay_contents(&self, files: &[(PathBuf, u64)]) {
        let s = &*self.s;
        let next = std::sync::atomic::AtomicUsize::new(0);
        let work = || {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((path, size)) = files.get(i) else {
                    return;
                };
                let _ = write_and_close(s, path, *size);
            }
        };
        let helpers = crate::overlay::fs::REPLAY_HELPERS.min(files.len() / (2 * RUN));
        std::thread::scope(|scope| {
            for h in 0..helpers {
                let work = &work;
                let spawned = std::thread::Builder::new()
                    .name("vfnotify-replay".into())
                    .spawn_scoped(scope, move || {
                        let _slot = s.replay.claim_helper(h);
                        work();
                    });
                if spawned.is_err() {
                    break;
                }
            }
            work();
        });
    }

    /// Perform one change through the mount so the kernel emits its real event; on failure make
    /// sure the kernel's caches are right at least. `name_only`: a new file's name without its
    /// content (see [`Worker::replay_all`]). Returns whether the event was produced.
    pub(super) fn replay(&self, c: &Change, name_only: bool) -> bool {
        let s = &self.s;
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                Stats::bump(&s.stats.replay_retries);
                self.expire_names(c);
                self.run_dir.take();
            }
            match self.replay_once(c, name_only) {
                Ok(()) => {
                    Stats::bump(&s.stats.events_replayed);
                    return true;
                }
                Err(Failure::Retry(e)) => last = Some(e),
                // The kernel forgot the folder (since the change was found): it holds nothing
                // of it, so no watch can be on it either — nothing to show, nothing to expire.
                Err(Failure::Fail(e))
                    if e.raw_os_error() == Some(libc::ESTALE)
                        && c.dirs().iter().all(|d| s.table.get(*d).is_none()) =>
                {
                    Stats::bump(&s.stats.replay_unheld);
                    return false;
                }
                Err(Failure::Fail(e)) => {
                    last = Some(e);
                    break;
                }
            }
        }
        debug!(?c, error = ?last, "replay failed; invalidating instead");
        Stats::bump(&s.stats.replay_failed);
        self.invalidate(c);
        false
    }

    fn replay_once(&self, c: &Change, name_only: bool) -> Result<(), Failure> {
        let s = &self.s;
        match c {
            Change::Create { dir, name, new } | Change::Link { dir, name, new } => {
                s.replay.set(*dir, name, ViewEntry::Absent);
                let _making = Making::new(s, *dir, name, new);
                if name_only {
                    self.make_in_run(*dir, name, new).map_err(retryable)?;
                    s.replay.set(*dir, name, ViewEntry::Present(*new));
                    return Ok(());
                }
                let path = self.path(*dir, name)?;
                let link = matches!(c, Change::Link { .. });
                // A new file is created, written and closed, as a local writer does it:
                // IN_CREATE, IN_MODIFY (when it has content) and IN_CLOSE_WRITE. A new name of
                // an object that has others (a hard link) is only the name.
                if !link && !name_only && new.file_type() == libc::S_IFREG && new.nlink <= 1 {
                    let f = self.create_open(&path).map_err(retryable)?;
                    s.replay.set(*dir, name, ViewEntry::Present(*new));
                    if new.size > 0 {
                        let _ = f.set_len(new.size);
                    }
                    return Ok(());
                }
                self.make(&path, *dir, name, new, link).map_err(retryable)?;
                // The name exists for the kernel now (other clients' listings may expire its
                // entry meanwhile: the next lookup must find it).
                s.replay.set(*dir, name, ViewEntry::Present(*new));
                Ok(())
            }
            Change::Delete { dir, name, old } => {
                s.replay.set(*dir, name, ViewEntry::Present(*old));
                let path = self.path(*dir, name)?;
                let r = if old.is_dir() {
                    std::fs::remove_dir(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                r.map_err(retryable)
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
                std::fs::rename(&a, &b).map_err(retryable)
            }
            Change::Replace {
                dir,
                name,
                old,
                new,
            } => self.replay_replace(*dir, name, old, new),
            Change::Content { dir, name, new } => {
                let path = self.path(*dir, name)?;
                Ok(self.replay_write(&path, new.size)?)
            }
            Change::Attr {
                dir,
                name,
                old,
                new,
            } => {
                // Only the link count (and so ctime) moved: a hard link made or removed under
                // another name, whose own create or delete is the event; locally, the other
                // name's folder hears nothing either. The attributes were expired.
                let visible = (old.mode, old.uid, old.gid, old.mtime)
                    != (new.mode, new.uid, new.gid, new.mtime);
                if !visible && old.nlink != new.nlink {
                    return Ok(());
                }
                let path = self.path(*dir, name)?;
                let p = sys::cstr(path.as_os_str())?;
                let r = if old.mode != new.mode && new.file_type() != libc::S_IFLNK {
                    sys::fchmodat_nofollow(sys::cwd(), &p, new.mode & 0o7777)
                } else if old.uid != new.uid || old.gid != new.gid {
                    sys::fchownat(sys::cwd(), &p, new.uid, new.gid)
                } else {
                    // Only the times that moved, as the host set them: the kernel tells
                    // watchers IN_ATTRIB for both, IN_MODIFY for mtime alone (`touch -m`).
                    let time = |moved: bool, t: (i64, i64)| {
                        if moved {
                            sys::SetTime::At(t.0, t.1)
                        } else {
                            sys::SetTime::Omit
                        }
                    };
                    // An atime that moved with an explicit mtime is utimes' doing (tar, cp -p,
                    // touch -d) — unless it looks like a read between the last look and this
                    // change (relatime updates an atime not newer than mtime or ctime): a "now"
                    // inside that window, not the mtime. A read after the change moves it too;
                    // that is taken as utimes (the commoner), so `touch -m` then a read before
                    // the notification is IN_ATTRIB rather than IN_MODIFY (README).
                    let m = old.mtime != new.mtime;
                    let read_since =
                        new.atime != new.mtime && old.ctime <= new.atime && new.atime <= new.ctime;
                    let a = m && old.atime != new.atime && !read_since;
                    if !m {
                        // ctime alone (an xattr; an atime moved with it is a read since): any
                        // time set with both gives IN_ATTRIB.
                        sys::utimensat(
                            sys::cwd(),
                            &p,
                            sys::SetTime::At(new.atime.0, new.atime.1),
                            sys::SetTime::At(new.mtime.0, new.mtime.1),
                        )
                    } else {
                        sys::utimensat(sys::cwd(), &p, time(a, new.atime), time(m, new.mtime))
                    }
                };
                Ok(r?)
            }
        }
    }

    /// Make the new name `name` in `dir` at `path` for the object `new`: a hard link to one of
    /// its other names, or mknod/mkdir/symlink.
    fn make(
        &self,
        path: &Path,
        dir: Ino,
        name: &OsStr,
        new: &EntrySnap,
        link: bool,
    ) -> io::Result<()> {
        if link {
            if let Ok(from) = self.existing_path(new.key, (dir, name)) {
                return std::fs::hard_link(&from, path);
            }
        }
        match new.file_type() {
            libc::S_IFDIR => std::fs::create_dir(path),
            // The target only travels to the overlay, which makes nothing of it for a replay;
            // SOURCE's name may be gone or another object by now (see `Shared::enter_replayed`).
            libc::S_IFLNK => {
                let target = self
                    .symlink_target(dir, name)
                    .unwrap_or_else(|_| PathBuf::from("."));
                std::os::unix::fs::symlink(target, path)
            }
            t => sys::cstr(path.as_os_str())
                .and_then(|p| sys::mknodat(sys::cwd(), &p, t | (new.mode & 0o7777), new.rdev)),
        }
    }

    /// A new file's name in a run (see [`Worker::replay_all`]): `mknodat` on the folder, held
    /// open through the mount (`O_PATH`) for the run, so each name is one call with no path to
    /// build or walk — the kernel's work per name is then only the create itself (the folder's
    /// permission check, the lookup of the name, the `MKNOD`), which it serialises per folder.
    fn make_in_run(&self, dir: Ino, name: &OsStr, new: &EntrySnap) -> io::Result<()> {
        let mut held = self.run_dir.borrow_mut();
        if held.as_ref().is_none_or(|(d, _)| *d != dir) {
            *held = None;
            let path = self.path(dir, name)?;
            let folder = path
                .parent()
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
            let flags = libc::O_PATH | libc::O_DIRECTORY;
            let fd = sys::openat(sys::cwd(), &sys::cstr(folder.as_os_str())?, flags, 0)?;
            *held = Some((dir, fd));
        }
        let Some((_, fd)) = held.as_ref() else {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        };
        let mode = libc::S_IFREG | (new.mode & 0o7777);
        sys::mknodat(fd.as_fd(), &sys::cstr(name)?, mode, new.rdev)
    }

    /// A name now holding another object of the same kind, replayed as a local replacement is
    /// made: the new object under a hidden temporary name that SOURCE does not have (created,
    /// written and closed, or linked), renamed over the name. Watchers see `IN_CREATE` of the
    /// temporary name, its content events, then `IN_MOVED_FROM` it and `IN_MOVED_TO` the name —
    /// what an editor's atomic save gives.
    fn replay_replace(
        &self,
        dir: Ino,
        name: &OsStr,
        old: &EntrySnap,
        new: &EntrySnap,
    ) -> Result<(), Failure> {
        let s = &self.s;
        let tmp = self.temporary_name(dir, name)?;
        s.replay.set_standin(dir, &tmp, name);
        s.replay.set(dir, &tmp, ViewEntry::Absent);
        let tmp_path = self.path(dir, &tmp)?;
        let making = Making::new(s, dir, &tmp, new);
        let linked = new.nlink > 1 && new.file_type() == libc::S_IFREG;
        let made = match self.existing_path(new.key, (dir, name)) {
            Ok(from) if linked => std::fs::hard_link(from, &tmp_path),
            _ => self.make(&tmp_path, dir, name, new, false),
        };
        drop(making);
        made.map_err(retryable)?;
        s.replay.set(dir, &tmp, ViewEntry::Present(*new));
        if !linked && new.file_type() == libc::S_IFREG {
            let _ = self.replay_write(&tmp_path, new.size);
        }
        s.replay.set(dir, name, ViewEntry::Present(*old));
        let path = self.path(dir, name)?;
        if let Err(e) = std::fs::rename(&tmp_path, &path) {
            // Never leave the temporary name behind in the kernel.
            s.replay.set(dir, &tmp, ViewEntry::Present(*new));
            let _ = std::fs::remove_file(&tmp_path);
            return Err(retryable(e));
        }
        Ok(())
    }

    /// A hidden name that SOURCE does not have in `dir`, for a replacement's temporary object or a
    /// rename cycle's step.
    pub(super) fn temporary_name(&self, dir: Ino, name: &OsStr) -> io::Result<OsString> {
        let node = self
            .s
            .table
            .get(dir)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ESTALE))?;
        let pfd = self.s.dir_fd(&node)?;
        loop {
            let n = NEXT_TMP.fetch_add(1, Ordering::Relaxed);
            let mut t = OsString::from(".");
            // Short enough for any name SOURCE allows: the name's head, and a number.
            let head: Vec<u8> = name.as_bytes().iter().copied().take(200).collect();
            t.push(OsStr::from_bytes(&head));
            t.push(format!(".vfnotify-{n}"));
            match sys::fstatat(pfd.as_fd(), &sys::cstr(&t)?) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(t),
                _ => continue,
            }
        }
    }

    /// `open(O_CREAT | O_EXCL | O_WRONLY)` through the mount (one FUSE CREATE).
    fn create_open(&self, path: &Path) -> io::Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
    }

    /// See [`write_and_close`].
    pub(super) fn replay_write(&self, path: &Path, size: u64) -> io::Result<()> {
        write_and_close(&self.s, path, size)
    }

    /// A live path (through the mount) to an object SOURCE already has under another name than
    /// `not`, for hard-link replays.
    fn existing_path(&self, key: Key, not: (Ino, &OsStr)) -> io::Result<PathBuf> {
        let node = self
            .s
            .table
            .get(self.s.table.ino_for(key))
            .filter(|n| n.key == key)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        let links = node.state().links.clone();
        let (p, n) = links
            .into_iter()
            .find(|(p, n)| !(*p == not.0 && n == not.1))
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
    pub(super) fn toggle(&self, dir: Ino) {
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
    }

    /// The path through the mount of `name` in `dir`. `ESTALE` when a folder on the way is no
    /// longer known (the kernel forgot it since the change was found): a replay there would act
    /// on the wrong folder, so the change is invalidated instead.
    ///
    /// Within a removed tree, the path noted before its names were expired: the kernel forgets
    /// the folders of it that nobody holds, but a watch on a file inside still holds that file,
    /// and its watcher must get `IN_DELETE_SELF` as a local `rm -rf` gives it; the replay's
    /// lookups on the way are answered from the replay view.
    pub(super) fn path(&self, dir: Ino, name: &OsStr) -> io::Result<PathBuf> {
        let rel = match self.s.try_path_of(dir, Some(name)) {
            Ok(rel) => rel,
            Err(partial) => match self.removed_paths.borrow().get(&dir) {
                Some(d) => d.join(name),
                None => {
                    debug!(
                        dir,
                        ?name,
                        ?partial,
                        "no path: a folder on the way is not known"
                    );
                    return Err(io::Error::from_raw_os_error(libc::ESTALE));
                }
            },
        };
        Ok(match &*self.prefix.borrow() {
            Some(p) => p.join(rel),
            // No way in (the mount is going away): a path that fails, so the change is
            // invalidated instead.
            None => PathBuf::from("/proc/self/fd/-1").join(rel),
        })
    }
}

/// Open for writing, truncate to the current size (IN_MODIFY, nothing changes) and close
/// (IN_CLOSE_WRITE). Where the open is refused (a passthrough file on a read-only SOURCE that a
/// client holds open), the truncate alone still gives IN_MODIFY (counted: `replay_no_close`).
fn write_and_close(s: &crate::overlay::fs::Shared, path: &Path, size: u64) -> io::Result<()> {
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
        Err(e) => {
            debug!(
                ?path,
                "replay open for writing failed: {e}; truncating only"
            );
            Stats::bump(&s.stats.replay_no_close);
            sys::cstr(path.as_os_str()).and_then(|p| sys::truncate_nofollow(&p, size))
        }
    }
}
