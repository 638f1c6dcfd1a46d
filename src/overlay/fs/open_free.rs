//! Zero-message opens: while the overlay trusts its notifications (linked, `cache=always`, and
//! `revalidate=notify`, or the default `auto` while a `vfnotify host` feeds the daemon) and
//! serves files itself (no kernel passthrough, as over a FUSE or virtiofs SOURCE), it answers an OPEN with
//! ENOSYS. The kernel takes that as "this server needs no opens" (`FUSE_NO_OPEN_SUPPORT`): from
//! then on it sends no OPEN, FLUSH or RELEASE for any file of the mount, keeps each file's page
//! cache across opens (`FOPEN_KEEP_CACHE`) and sends reads and writes with handle 0. A warm open
//! and close then cost nothing at all, in the guest or on SOURCE.
//!
//! The kernel's choice is for the rest of the connection's life, so this module is what the
//! handlers do without handles:
//! - reads and writes with handle 0 use an fd per inode from the fd cache (read-only, or
//!   read-write for writes), opened on first use;
//! - a write notes the file's new attributes as the client's own at once (there is no release
//!   to do it at), inside a local operation, so a rescan never replays it as a host change;
//! - a file whose last name goes (a client's unlink or rename over it, a host delete or replace
//!   seen by a notification) keeps its cached fd for as long as the kernel holds the inode, so a
//!   client that has it open reads and writes on as with a local file. A file opened and
//!   unlinked before its first read or write has no fd to keep: its I/O then fails (counted:
//!   `orphans_lost`);
//! - a CREATE's reply carries handle 0 too (the kernel would not release it), and its fd goes to
//!   the cache.
//!
//! What is given up, and why it is only done under trust: an open no longer checks SOURCE's
//! attributes (`revalidate=open`), so a host chmod counts from its notification on; and the
//! overlay no longer sees opens, so `-o audit` (which records opens for writing) and read-only
//! overlays (which refuse them) keep opens. If the trust ends later (the link drops, or no
//! `vfnotify host` feeds the daemon any more), the kernel still sends no opens: the overlay then
//! expires what the kernel holds and answers with short timeouts (`Shared::policy`), attributes
//! from SOURCE, and the kernel drops a file's pages when they show a new mtime or size
//! (`FUSE_AUTO_INVAL_DATA`).

use super::*;

/// What a handle-less I/O request needs of the inode's fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    Read,
    Write,
}

impl OverlayFs {
    /// Whether this OPEN is the one to answer with ENOSYS (or the kernel has stopped sending
    /// them already): see the module docs.
    pub(super) fn goes_open_free(&self) -> bool {
        let s = &self.s;
        if s.open_free.load(Ordering::Relaxed) {
            return true;
        }
        let ok = s.trusts_notifications()
            && s.cfg.cache == CachePolicy::Always
            && !s.passthrough.load(Ordering::Relaxed)
            && !s.cfg.audit
            && s.fd_cache.budget() > 0
            && !s.flags.read_only.load(Ordering::Relaxed);
        if ok && !s.open_free.swap(true, Ordering::SeqCst) {
            s.stats.open_free.store(1, Ordering::Relaxed);
            info!("opens are no longer sent: the overlay trusts its notifications");
        }
        ok
    }

    /// Whether a LOOKUP keeps the `O_PATH` fd it took of a file for the file's next open
    /// ([`OverlayFs::open_backing_cached`]) or first handle-less read or write
    /// ([`OverlayFs::fd_of_inode`]): over a FUSE SOURCE, where each walk of a name is round
    /// trips to the host.
    pub(super) fn keeps_lookup_paths(&self) -> bool {
        self.s.source_is_fuse && self.s.fd_cache.budget() > 0
    }

    /// The fd for a handle-less read or write of `ino` (see the module docs).
    pub(super) fn fd_of_inode(&self, ino: INodeNo, access: Access) -> io::Result<Arc<OwnedFd>> {
        let s = &self.s;
        let node = s.node(ino)?;
        if node.is_virtual {
            return Err(err(libc::EBADF));
        }
        let at = s.atime_flags(false);
        let (keys, refused) = match access {
            Access::Read => ([at, libc::O_RDWR | at], libc::O_WRONLY),
            Access::Write => ([libc::O_RDWR | at, libc::O_WRONLY | at], libc::O_RDONLY),
        };
        for flags in keys {
            if let Some(fd) = s.fd_cache.get(node.ino, node.key, flags) {
                return Ok(fd);
            }
        }
        if let Some((fd, flags)) = s.orphan_fd(node.ino) {
            if flags & libc::O_ACCMODE != refused {
                return Ok(fd);
            }
        }
        // The lookup's `O_PATH` fd of the file, where it kept one: opened as it is, without a
        // walk of the name (trusted, as the fds kept here are).
        let path = s
            .trusts_notifications()
            .then(|| s.fd_cache.take(node.ino, node.key, libc::O_PATH))
            .flatten();
        let open = |flags: i32| match &path {
            Some(p) => match with_atime(flags | at, |f| sys::reopen(p.as_fd(), f)) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => self.open_backing(&node, flags),
                r => r,
            },
            None => self.open_backing(&node, flags),
        };
        let opened = match access {
            Access::Read => open(libc::O_RDONLY).map(|fd| (fd, 0)),
            Access::Write => match open(libc::O_RDWR) {
                Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
                    open(libc::O_WRONLY).map(|fd| (fd, libc::O_WRONLY))
                }
                r => r.map(|fd| (fd, libc::O_RDWR)),
            },
        };
        let (fd, mode) = match opened {
            Ok(o) => o,
            Err(e) => {
                if node.state().links.is_empty() {
                    Stats::bump(&s.stats.orphans_lost);
                }
                return Err(e);
            }
        };
        let fd = Arc::new(fd);
        s.fd_cache.put(node.ino, node.key, mode | at, &fd);
        Ok(fd)
    }

    /// A file's attributes as the kernel was last told them, when they are the answer to its
    /// GETATTR: under zero-message opens while linked every change made here is noted at once
    /// (writes too), and a host change or a name gone drops them ([`Shared::file_attr_changed`],
    /// [`Shared::lost_a_name`]). The kernel asks again after every read from SOURCE (the atime
    /// may have moved): [`OverlayFs::note_read`] moves it as SOURCE does. Not while a handle
    /// open for writing is held (opened before the kernel stopped sending opens, or a CREATE's
    /// from then): its writes from before the switch are noted only at its release, which the
    /// kernel sends without waiting for it (told a create's size 0 after such writes, the kernel
    /// cuts its page cache to it, and a mapping of the file faults SIGBUS).
    pub(super) fn told_file_attr(&self, node: &Node) -> Option<EntrySnap> {
        let s = &self.s;
        // (Trusted without opens, the policy is the mount's own: see `Shared::policy`.)
        if node.is_dir
            || !s.open_free.load(Ordering::Relaxed)
            || s.cfg.cache != CachePolicy::Always
            || !s.trusts_notifications()
        {
            return None;
        }
        let st = node.state();
        if st.writers > 0 {
            return None;
        }
        st.attr
    }

    /// SEEK_DATA or SEEK_HOLE in a file whose told attributes leave no room for a hole (as
    /// many blocks allocated as its size needs): all of it is data, answered here (what any
    /// filesystem may answer, and what one without holes does). Every other seek is SOURCE's.
    /// Over a FUSE SOURCE each is a round trip to the host, and grep asks it of every file
    /// larger than its buffer.
    pub(super) fn seek_in_dense(
        &self,
        ino: INodeNo,
        offset: i64,
        whence: i32,
    ) -> Option<io::Result<i64>> {
        if whence != libc::SEEK_DATA && whence != libc::SEEK_HOLE {
            return None;
        }
        let node = self.s.node(ino).ok()?;
        let a = self.told_file_attr(&node)?;
        if a.mode & libc::S_IFMT != libc::S_IFREG || a.blocks.saturating_mul(512) < a.size {
            return None;
        }
        let size = i64::try_from(a.size).ok()?;
        Some(if offset < 0 || offset >= size {
            Err(err(libc::ENXIO))
        } else if whence == libc::SEEK_DATA {
            Ok(offset)
        } else {
            Ok(size)
        })
    }

    /// A read from SOURCE under zero-message opens: the atime the told attributes carry moves as
    /// SOURCE's own does under `relatime` (once the access is newer than the last change, or a
    /// day old), `strictatime` (always) or `noatime` (never).
    pub(super) fn note_read(&self, ino: INodeNo) {
        let s = &self.s;
        if !s.open_free.load(Ordering::Relaxed) || s.atime_flags(false) != 0 {
            return;
        }
        let Ok(node) = s.node(ino) else {
            return;
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let now = (
            i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
            i64::from(now.subsec_nanos()),
        );
        let mut st = node.state();
        if let Some(a) = st.attr.as_mut() {
            let day_old = now.0.saturating_sub(a.atime.0) >= 24 * 3600;
            if s.cfg.strictatime || a.atime <= a.mtime || a.atime <= a.ctime || day_old {
                a.atime = now;
            }
        }
    }

    /// A handle-less write's aftermath: the file's attributes as the client left them, so that
    /// neither the kernel (answered from them under trust) nor a rescan (which would take the
    /// new mtime for a host change) is misled.
    pub(super) fn note_handleless_write(&self, ino: INodeNo, fd: BorrowedFd<'_>) {
        let s = &self.s;
        if let (Ok(node), Ok(st)) = (s.node(ino), sys::fstat(fd)) {
            s.note_local_node(&node, &st);
        }
    }
}

impl Shared {
    /// `node` just lost a name. Under zero-message opens its link count and ctime are read from
    /// SOURCE again, and if that was its last name a cached fd of it is kept in the node (until
    /// the kernel forgets it) for the clients that hold it open.
    pub fn lost_a_name(&self, node: &Node) {
        if !self.open_free.load(Ordering::Relaxed) || node.is_dir || node.is_virtual {
            return;
        }
        let gone = {
            let mut st = node.state();
            st.set_attr(None);
            st.links.is_empty()
        };
        let mut orphans = lock(&self.orphans);
        if !gone || orphans.contains_key(&node.ino) {
            return;
        }
        if let Some(kept) = self.fd_cache.take_any(node.ino, node.key) {
            orphans.insert(node.ino, kept);
            Stats::bump(&self.stats.orphans_kept);
        }
    }

    /// The fd kept for `ino` since its last name went, and the flags it was opened with.
    pub(super) fn orphan_fd(&self, ino: Ino) -> Option<(Arc<OwnedFd>, i32)> {
        lock(&self.orphans).get(&ino).cloned()
    }

    /// The kernel forgot `ino`: its kept fd goes.
    pub(super) fn forget_orphan(&self, ino: Ino) {
        lock(&self.orphans).remove(&ino);
    }

    /// Under zero-message opens a file's attributes are answered from what the kernel was last
    /// told ([`OverlayFs::told_file_attr`]): when they may have changed otherwise than through a
    /// write or setattr noted here (a host change, a name gone), they are read from SOURCE again.
    pub fn file_attr_changed(&self, node: &Node) {
        if self.open_free.load(Ordering::Relaxed) && !node.is_dir {
            node.state().set_attr(None);
        }
    }
}
