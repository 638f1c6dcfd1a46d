//! Backing fds of recently opened files, kept after their last close so that a warm open of
//! a file the overlay has a valid view of needs no lookup and no open on SOURCE (over virtiofs
//! each is a round trip to the host).
//!
//! Only read-only opens are served from here (a writer opens its own fd, as before), keyed by
//! the inode and the exact flags the backing file is opened with (atime flags, O_SYNC...), so a
//! cached fd is one `open_backing` would have made. A writer's release leaves an `O_PATH` fd of
//! its file here (key flags `O_PATH`), and so does a lookup over a FUSE SOURCE: the attribute and
//! xattr calls that usually follow a write act on it instead of resolving the name
//! ([`Shared::held_fd`]), and the file's next open opens it rather than walking the name again
//! (it is then replaced by the fd it gave, and checked as a kept fd is). Handles
//! share a cached fd (`Arc`): no dup, no close, and on a FUSE SOURCE no FLUSH at each release.
//! All I/O through it is positional, so the shared file offset is never used.
//!
//! How an entry could go stale, and what drops it:
//! - the host replaces the file (atomic save) or unlinks it: the cached fd is then of an inode
//!   with no name left (`st_nlink == 0`, seen by the fstat every open does anyway): the open
//!   drops it and opens by name, which gives the new file or ENOENT as before; the sync worker
//!   also drops the entries of an inode it deletes from the kernel or invalidates;
//! - the inode number is forgotten and reused for another object: dropped at forget, and an
//!   entry is used only for the key (device, inode) it was opened for;
//! - the host rewrites or truncates in place: same inode, the fd is still right.
//!
//! Bounded: at most `budget` fds (by default an eighth of RLIMIT_NOFILE, at most
//! [`FD_CACHE_MAX`]; `fdcache=N` sets it, 0 turns the cache off), least recently used first out.

use super::*;
use crate::overlay::inode::DIRFD_BUDGET;
use std::collections::BTreeMap;

/// The most backing fds kept by default.
pub const FD_CACHE_MAX: usize = 65536;

struct Entry {
    key: Key,
    fd: Arc<OwnedFd>,
    tick: u64,
}

#[derive(Default)]
struct Lru {
    by_file: BTreeMap<(Ino, i32), Entry>,
    by_age: BTreeMap<u64, (Ino, i32)>,
    tick: u64,
}

impl Lru {
    /// Keep `fd` for `(ino, flags)` as the most recently used, in place of what was kept for it.
    fn insert(&mut self, ino: Ino, key: Key, flags: i32, fd: Arc<OwnedFd>) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(old) = self.by_file.insert((ino, flags), Entry { key, fd, tick }) {
            self.by_age.remove(&old.tick);
        }
        self.by_age.insert(tick, (ino, flags));
    }
}

/// The cache (see the module docs).
pub struct FdCache {
    inner: Mutex<Lru>,
    budget: usize,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Entries dropped to stay within the budget.
    pub evicted: AtomicU64,
    /// Entries dropped because their file changed or went (forget, invalidation, no name left).
    pub dropped: AtomicU64,
}

impl FdCache {
    pub fn new(budget: usize) -> Self {
        FdCache {
            inner: Mutex::default(),
            budget,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// The default budget for an open-files limit of `nofile`: half of what the folder fds
    /// leave, at least an eighth (clients' writable opens and folders need the rest; an open
    /// that still finds the limit reached empties half the cache and tries again).
    pub fn default_budget(nofile: u64) -> usize {
        let spare = (nofile.saturating_sub(DIRFD_BUDGET as u64) / 2).max(nofile / 8);
        usize::try_from(spare).map_or(FD_CACHE_MAX, |n| n.min(FD_CACHE_MAX))
    }

    pub fn budget(&self) -> usize {
        self.budget
    }

    pub fn len(&self) -> usize {
        lock(&self.inner).by_file.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The fd kept for `(ino, flags)` if it is of `key`.
    pub fn get(&self, ino: Ino, key: Key, flags: i32) -> Option<Arc<OwnedFd>> {
        if self.budget == 0 {
            return None;
        }
        let mut l = lock(&self.inner);
        let l = &mut *l;
        l.tick += 1;
        let tick = l.tick;
        let found = match l.by_file.get_mut(&(ino, flags)) {
            Some(e) if e.key == key => {
                l.by_age.remove(&e.tick);
                e.tick = tick;
                l.by_age.insert(tick, (ino, flags));
                Some(e.fd.clone())
            }
            Some(_) => {
                // Another object under a reused inode number.
                if let Some(e) = l.by_file.remove(&(ino, flags)) {
                    l.by_age.remove(&e.tick);
                }
                Stats::bump(&self.dropped);
                None
            }
            None => None,
        };
        Stats::bump(if found.is_some() {
            &self.hits
        } else {
            &self.misses
        });
        found
    }

    /// Keep `fd` for `(ino, flags)`, dropping the least recently used beyond the budget.
    pub fn put(&self, ino: Ino, key: Key, flags: i32, fd: &Arc<OwnedFd>) {
        if self.budget == 0 {
            return;
        }
        let mut l = lock(&self.inner);
        let l = &mut *l;
        l.insert(ino, key, flags, fd.clone());
        while l.by_file.len() > self.budget {
            let Some((_, oldest)) = l.by_age.pop_first() else {
                break;
            };
            l.by_file.remove(&oldest);
            Stats::bump(&self.evicted);
        }
    }

    /// Keep `fd` for `(ino, flags)` only while the cache has room and holds nothing for it
    /// (for fds taken ahead of any client: they never push out one a client used); whether it
    /// was kept.
    pub fn offer(&self, ino: Ino, key: Key, flags: i32, fd: OwnedFd) -> bool {
        let mut l = lock(&self.inner);
        let l = &mut *l;
        if l.by_file.len() >= self.budget || l.by_file.contains_key(&(ino, flags)) {
            return false;
        }
        l.insert(ino, key, flags, Arc::new(fd));
        true
    }

    /// Whether [`FdCache::offer`] would keep an fd now.
    pub fn has_room(&self) -> bool {
        lock(&self.inner).by_file.len() < self.budget
    }

    /// Drop the least recently used fds until at most `keep` are left.
    pub fn shrink(&self, keep: usize) {
        let mut l = lock(&self.inner);
        let l = &mut *l;
        while l.by_file.len() > keep {
            let Some((_, oldest)) = l.by_age.pop_first() else {
                break;
            };
            l.by_file.remove(&oldest);
            Stats::bump(&self.evicted);
        }
    }

    /// Take out the fd kept for `(ino, flags)` if it is of `key`.
    pub fn take(&self, ino: Ino, key: Key, flags: i32) -> Option<Arc<OwnedFd>> {
        let mut l = lock(&self.inner);
        let l = &mut *l;
        match l.by_file.get(&(ino, flags)) {
            Some(e) if e.key == key => {}
            _ => return None,
        }
        let e = l.by_file.remove(&(ino, flags))?;
        l.by_age.remove(&e.tick);
        Some(e.fd)
    }

    /// Take out one fd kept for `ino` of `key` (a read-write one first) with the flags it is
    /// kept under.
    pub fn take_any(&self, ino: Ino, key: Key) -> Option<(Arc<OwnedFd>, i32)> {
        let mut l = lock(&self.inner);
        let l = &mut *l;
        let mut kept: Vec<(Ino, i32)> = l
            .by_file
            .range((ino, i32::MIN)..=(ino, i32::MAX))
            .filter(|((_, flags), e)| e.key == key && flags & libc::O_PATH == 0)
            .map(|(k, _)| *k)
            .collect();
        kept.sort_by_key(|(_, flags)| flags & libc::O_ACCMODE != libc::O_RDWR);
        let first = *kept.first()?;
        let e = l.by_file.remove(&first)?;
        l.by_age.remove(&e.tick);
        Some((e.fd, first.1))
    }

    /// One fd kept for `ino` of `key` (a data fd, or the `O_PATH` one a writer's release
    /// leaves, see [`OverlayFs::do_release`]), left in the cache (its age unchanged).
    pub fn peek_any(&self, ino: Ino, key: Key) -> Option<Arc<OwnedFd>> {
        let l = lock(&self.inner);
        l.by_file
            .range((ino, i32::MIN)..=(ino, i32::MAX))
            .find(|(_, e)| e.key == key)
            .map(|(_, e)| e.fd.clone())
    }

    /// Drop every fd kept for `ino`.
    pub fn forget(&self, ino: Ino) {
        if self.budget == 0 {
            return;
        }
        let mut l = lock(&self.inner);
        let l = &mut *l;
        let keys: Vec<(Ino, i32)> = l
            .by_file
            .range((ino, i32::MIN)..=(ino, i32::MAX))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some(e) = l.by_file.remove(&k) {
                l.by_age.remove(&e.tick);
                Stats::bump(&self.dropped);
            }
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "cached_file_fds": self.len(),
            "fd_cache_budget": self.budget,
            "fd_cache_hits": self.hits.load(Ordering::Relaxed),
            "fd_cache_misses": self.misses.load(Ordering::Relaxed),
            "fd_cache_evicted": self.evicted.load(Ordering::Relaxed),
            "fd_cache_dropped": self.dropped.load(Ordering::Relaxed),
        })
    }
}

impl OverlayFs {
    /// The backing fd for a client's open: for a read-only open, the one kept for the file if
    /// any (checked by the caller's fstat, see [`OverlayFs::revalidate_cached`]), else a new
    /// one from [`OverlayFs::open_backing`], then kept. Returns whether it came from the cache.
    pub(super) fn open_backing_cached(
        &self,
        node: &Node,
        flags: i32,
    ) -> io::Result<(Arc<OwnedFd>, bool)> {
        let s = &self.s;
        let Some(kept) = self.cacheable_flags(flags) else {
            return Ok((Arc::new(self.open_backing_room(node, flags)?), false));
        };
        let key_flags = kept | s.atime_flags(false);
        if let Some(fd) = s.fd_cache.get(node.ino, node.key, key_flags) {
            return Ok((fd, true));
        }
        // The `O_PATH` fd a lookup (or a writer's close) left of the file: opened as it is,
        // without a second walk of the name, and checked as a kept fd is (a file with no name
        // left on SOURCE is opened by name again, see `open_revalidated`).
        if let Some(path) = s.fd_cache.take(node.ino, node.key, libc::O_PATH) {
            if let Ok(fd) = with_atime(key_flags, |f| sys::reopen(path.as_fd(), f)) {
                let fd = Arc::new(fd);
                s.fd_cache.put(node.ino, node.key, key_flags, &fd);
                return Ok((fd, true));
            }
        }
        let fd = Arc::new(self.open_backing_room(node, kept)?);
        s.fd_cache.put(node.ino, node.key, key_flags, &fd);
        Ok((fd, false))
    }

    /// [`OverlayFs::open_backing`]; at the open-files limit, with half the cache let go first.
    fn open_backing_room(&self, node: &Node, flags: i32) -> io::Result<OwnedFd> {
        match self.open_backing(node, flags) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                let c = &self.s.fd_cache;
                if c.is_empty() {
                    return Err(e);
                }
                c.shrink(c.len() / 2);
                self.open_backing(node, flags)
            }
            r => r,
        }
    }

    /// The flags a read-only open's shared backing fd is opened with (and, with the mount's
    /// atime flags, kept under), or `None` for an open that is not served from the cache. Only
    /// what changes a read-only fd's reads counts: `O_NOATIME`, and `O_SYNC`/`O_DSYNC` to be
    /// safe; `O_NONBLOCK`, `O_NOCTTY`, `O_CLOEXEC`... do nothing to a regular file's positional
    /// reads (so `grep`'s and `cat`'s opens of a file share one fd). `open_backing` adds
    /// `O_NOFOLLOW` and the mount's atime flags.
    fn cacheable_flags(&self, flags: i32) -> Option<i32> {
        if self.s.fd_cache.budget() == 0 || flags & libc::O_ACCMODE != libc::O_RDONLY {
            return None;
        }
        Some(flags & (libc::O_NOATIME | libc::O_SYNC | libc::O_DSYNC))
    }

    /// A client's open of `node`'s backing file, revalidated ([`OverlayFs::revalidate_open`]):
    /// the fd, and whether SOURCE's attributes differed from those the kernel was told. A cached
    /// fd whose file has no name left on SOURCE (replaced or removed by the host, not notified
    /// yet) is dropped and the file opened by name, as without the cache: the new file, or
    /// ENOENT. The fstat that sees it is the one revalidation needs anyway.
    pub(super) fn open_revalidated(
        &self,
        req: &Request,
        node: &Node,
        flags: i32,
    ) -> io::Result<(Arc<OwnedFd>, bool)> {
        let (mut fd, cached) = self.open_backing_cached(node, flags)?;
        if cached && self.s.trusts_notifications() {
            return Ok((fd, false));
        }
        let mut st = sys::fstat(fd.as_fd())?;
        if cached && st.st_nlink == 0 {
            self.s.fd_cache.forget(node.ino);
            fd = self.open_backing_cached(node, flags)?.0;
            st = sys::fstat(fd.as_fd())?;
        }
        let changed = self.revalidate_open(req, node, &st, flags)?;
        Ok((fd, changed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd() -> Arc<OwnedFd> {
        Arc::new(
            sys::openat(sys::cwd(), c"/", libc::O_PATH | libc::O_DIRECTORY, 0).expect("open /"),
        )
    }

    const K: Key = Key { dev: 1, ino: 2 };

    #[test]
    fn bounded_lru() {
        let c = FdCache::new(2);
        c.put(1, K, 0, &fd());
        c.put(2, K, 0, &fd());
        assert!(c.get(1, K, 0).is_some());
        c.put(3, K, 0, &fd());
        assert_eq!(c.len(), 2);
        assert!(
            c.get(2, K, 0).is_none(),
            "the least recently used goes first"
        );
        assert!(c.get(1, K, 0).is_some() && c.get(3, K, 0).is_some());
        assert_eq!(c.evicted.load(Ordering::Relaxed), 1);
        c.shrink(1);
        assert!(c.get(1, K, 0).is_none() && c.get(3, K, 0).is_some());
    }

    #[test]
    fn keyed_by_object_and_flags() {
        let c = FdCache::new(8);
        c.put(1, K, 0, &fd());
        c.put(1, K, libc::O_NOATIME, &fd());
        assert!(c.get(1, K, libc::O_SYNC).is_none());
        let other = Key { dev: 1, ino: 3 };
        assert!(
            c.get(1, other, 0).is_none(),
            "a reused inode number is another object"
        );
        assert!(c.get(1, K, 0).is_none(), "and its stale entry is gone");
        assert!(c.get(1, K, libc::O_NOATIME).is_some());
        c.forget(1);
        assert!(c.is_empty());
    }

    #[test]
    fn zero_budget_keeps_nothing() {
        let c = FdCache::new(0);
        c.put(1, K, 0, &fd());
        assert!(c.is_empty() && c.get(1, K, 0).is_none());
        assert_eq!(FdCache::default_budget(1024), 128);
        assert_eq!(FdCache::default_budget(20000), 7952);
        assert_eq!(FdCache::default_budget(1 << 20), FD_CACHE_MAX);
    }
}
