//! Open files: opening (backing fds, passthrough, revalidation), reads and writes, release,
//! fsync, fallocate, copy_file_range, and the replay thread's creates.

use super::open_free::Access;
use super::*;

impl OverlayFs {
    /// Open the backing file for a client.
    pub(super) fn open_backing(&self, node: &Node, flags: i32) -> io::Result<OwnedFd> {
        let strip = libc::O_CREAT
            | libc::O_EXCL
            | libc::O_NOCTTY
            | libc::O_TRUNC
            | libc::O_APPEND
            | libc::O_DIRECT;
        let flags = (flags & !strip) | self.s.atime_flags(false);
        // The name is taken as an `O_PATH` fd, checked to be the file (its identity as the
        // kernel holds it: no `GETATTR`), and that object opened: over a FUSE SOURCE a check by
        // name and then an open by name walk the name twice (six round trips to the host
        // instead of three), and between the two the host could replace it.
        self.s.resolve_by(node, |pfd, name| {
            let cname = sys::cstr(name)?;
            let path = sys::openat(pfd.as_fd(), &cname, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
            check_key(&sys::fstatat_held(path.as_fd(), c"")?, node.key)?;
            match with_atime(flags, |f| sys::reopen(path.as_fd(), f)) {
                // No /proc to reopen through: by the name, checked again after.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let fd = openat_atime(pfd.as_fd(), &cname, flags | libc::O_NOFOLLOW, 0)?;
                    check_key(&sys::fstatat_held(fd.as_fd(), c"")?, node.key)?;
                    Ok(fd)
                }
                r => r,
            }
        })
    }

    /// OPEN: the backing file (none for virtual files and most replay opens), revalidated
    /// against what the kernel was told, served by kernel passthrough where it can be.
    /// `register`: the reply's backing registration (see [`Shared::attach_backing`]).
    pub(super) fn do_open(
        &self,
        req: &Request,
        ino: INodeNo,
        flags: i32,
        register: impl FnOnce(&OwnedFd) -> io::Result<fuser::BackingId>,
    ) -> io::Result<Opened> {
        let s = &self.s;
        let node = s.node(ino)?;
        if self.goes_open_free() {
            // The kernel takes this for success, and sends no more opens (see `open_free`).
            Stats::bump(&s.stats.opens_declined);
            return Err(err(libc::ENOSYS));
        }
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let replay = s.replay.is_replay(req);
        if writable && !replay {
            s.check_writable(req)?;
            s.audit(req, "open-write", ino.0, None);
        }
        Stats::bump(&s.stats.opens);
        let mut direct_replay = false;
        let mut fopen = s.fopen_flags(false);
        let fd = if node.is_virtual {
            None
        } else if replay {
            let (fd, direct) = self.replay_backing(&node);
            direct_replay = direct;
            fd.map(Arc::new)
        } else {
            let (fd, changed) = self.open_revalidated(req, &node, flags)?;
            if changed {
                // Changed on SOURCE: the kernel's pages of the file are stale too, and the
                // attributes it holds (its size bounds the reads it serves) go before the reply.
                fopen.remove(FopenFlags::FOPEN_KEEP_CACHE);
                self.expiry_before_open(&node);
            }
            Some(fd)
        };
        if !node.is_virtual && !direct_replay {
            if let Some(b) = s.attach_backing(&node, fd.as_deref(), register) {
                let fh = s.add_handle(Handle::File(OpenFile {
                    node: node.clone(),
                    fd,
                    backing: true,
                    writable: writable && !replay,
                }));
                return Ok(Opened::Passthrough(FileHandle(fh), b));
            }
        }
        if direct_replay {
            fopen = FopenFlags::FOPEN_DIRECT_IO | NOFLUSH;
        }
        let fh = s.add_handle(Handle::File(OpenFile {
            node,
            fd,
            backing: false,
            writable: writable && !replay,
        }));
        Ok(Opened::Cached(FileHandle(fh), fopen))
    }

    /// Before the reply to an open that found the file changed on SOURCE since the kernel was
    /// told its attributes: those attributes are expired (see [`open_expiry`]). A wait cut short
    /// or an expiry not queued is counted (`open_expiry_timeouts`).
    fn expiry_before_open(&self, node: &Node) {
        let s = &self.s;
        let sent = s.open_expiries.push(node.ino).is_some_and(|t| {
            s.open_expiries
                .wait_sent(t, open_expiry::MOST_OPEN_EXPIRY_WAIT)
        });
        if !sent {
            Stats::bump(&s.stats.open_expiry_timeouts);
        }
    }

    /// RELEASE: drop the handle, its share of the passthrough backing, and (after writes) note
    /// the file's attributes as the client's own change.
    pub(super) fn do_release(&self, fh: FileHandle) {
        let s = &self.s;
        let Some(h) = s.take_handle(fh) else {
            return;
        };
        let Handle::File(f) = &*h else {
            return;
        };
        if f.backing {
            let mut st = f.node.state();
            if let Some(u) = st.backing.as_mut() {
                u.1 -= 1;
                if u.1 == 0 {
                    st.backing = None;
                }
            }
        }
        if f.writable {
            if let Some(fd) = &f.fd {
                if let Ok(st) = sys::fstat(fd.as_fd()) {
                    s.note_local_node(&f.node, &st);
                }
            }
            // Only now, with the writes noted, may the attributes answer (`told_file_attr`).
            let mut st = f.node.state();
            st.writers = st.writers.saturating_sub(1);
            drop(st);
            if let Some(fd) = &f.fd {
                // What usually follows a writer's close is a change of attributes by name (tar,
                // cp -p, editors: times, owner, mode): keep the object at hand for them, as an
                // `O_PATH` fd (the writer's own would hold a write session open on SOURCE).
                if let Ok(p) = sys::reopen_path(fd.as_fd()) {
                    s.fd_cache
                        .put(f.node.ino, f.node.key, libc::O_PATH, &Arc::new(p));
                }
            }
        }
    }

    pub(super) fn do_read(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
    ) -> io::Result<Vec<u8>> {
        let fd = if fh.0 == 0 {
            self.note_read(ino);
            self.fd_of_inode(ino, Access::Read)?
        } else {
            let h = self.s.handle(fh)?;
            let Handle::File(f) = &*h else {
                return Err(err(libc::EISDIR));
            };
            f.fd.clone().ok_or_else(|| err(libc::EBADF))?
        };
        // One read: a regular file's read is short only at its end (the kernel's own FUSE
        // client stops at a short reply too), and reading on to hear 0 would be one more round
        // trip to the host over a FUSE SOURCE for every file read to its end.
        let mut buf = vec![0u8; size as usize];
        let n = sys::pread(fd.as_fd(), &mut buf, offset)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// WRITE, whole (a short write is continued), clearing set-user/group-ID bits as asked
    /// (`FUSE_HANDLE_KILLPRIV_V2`).
    pub(super) fn do_write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        wf: WriteFlags,
    ) -> io::Result<usize> {
        if fh.0 == 0 {
            self.s.check_writable(req)?;
        }
        // A writeback's WRITE: the kernel does not move the file's attribute version for it.
        let unversioned = wf.contains(WriteFlags::FUSE_WRITE_CACHE);
        self.data_change(ino, fh, unversioned, |fd| {
            let mut done = 0;
            while done < data.len() {
                let n = sys::pwrite(fd, &data[done..], offset + done as u64)?;
                if n == 0 {
                    return Err(err(libc::EIO));
                }
                done += n;
            }
            // FUSE_HANDLE_KILLPRIV_V2: the writer lacks CAP_FSETID (our own write, as root,
            // keeps the bits).
            if wf.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
                let st = sys::fstat(fd)?;
                if let Some(m) = without_suid_sgid(st.st_mode, || in_group(req, st.st_gid)) {
                    sys::fchmod(fd, m)?;
                }
            }
            Ok(done)
        })
    }

    /// `change` of `ino`'s data through handle `fh`'s fd. Without opens there is no release to
    /// record the client's change at (not even for a handle from before the kernel stopped
    /// sending them): it is recorded at once, inside a local operation (see `open_free`).
    /// `unversioned`: the kernel does not move the file's attribute version for this change, so
    /// its attributes are expired once it is recorded ([`Shared::data_changed_unversioned`]).
    fn data_change<T>(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        unversioned: bool,
        change: impl FnOnce(BorrowedFd<'_>) -> io::Result<T>,
    ) -> io::Result<T> {
        let noting = self.s.open_free.load(Ordering::Relaxed);
        let node = if noting {
            Some(self.s.node(ino)?)
        } else {
            None
        };
        let local = node.as_deref().map(|n| self.s.local_node(n));
        let out = self.with_fd(ino, fh, Access::Write, |fd| {
            let out = change(fd)?;
            if noting {
                self.note_handleless_write(ino, fd);
            }
            Ok(out)
        })?;
        drop(local);
        if unversioned {
            self.s.data_changed_unversioned(ino.0);
        }
        Ok(out)
    }

    /// FSYNC; a handle without a backing file (a replay's) has nothing to sync. The kernel
    /// sends it once the file's writeback is done: what that writeback left is what a stat
    /// after it shows ([`Shared::expiries_before_fsync`]).
    pub(super) fn do_fsync(&self, ino: INodeNo, fh: FileHandle, datasync: bool) -> io::Result<()> {
        let res = match self.with_fd(ino, fh, Access::Read, |fd| sys::fsync(fd, datasync)) {
            Err(e) if e.raw_os_error() == Some(libc::EBADF) => Ok(()),
            res => res,
        };
        self.s.expiries_before_fsync();
        res
    }

    pub(super) fn do_fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> io::Result<()> {
        self.s.check_writable(req)?;
        // The kernel moves the attribute version only for a fallocate that grows the file.
        self.data_change(ino, fh, true, |fd| sys::fallocate(fd, mode, offset, length))
    }

    /// COPY_FILE_RANGE, at most `u32::MAX` bytes (the reply's count is a `u32`).
    pub(super) fn do_copy_file_range(
        &self,
        req: &Request,
        (ino_in, fh_in, offset_in): (INodeNo, FileHandle, u64),
        (ino_out, fh_out, offset_out): (INodeNo, FileHandle, u64),
        len: u64,
    ) -> io::Result<usize> {
        self.s.check_writable(req)?;
        let len = usize::try_from(clamp_u32(len)).unwrap_or(usize::MAX);
        self.with_fd(ino_in, fh_in, Access::Read, |fin| {
            self.data_change(ino_out, fh_out, false, |fout| {
                sys::copy_file_range(fin, offset_in, fout, offset_out, len)
            })
        })
    }

    /// Revalidate an open (see [`crate::overlay::access`]): compare the attributes of the
    /// backing file just opened (`st`) with those the kernel was told, and checked permissions against.
    /// When they differ (a host change not notified yet), refuse the open with EACCES if the
    /// fresh ones deny the caller, and ask the sync worker to rescan the file, which tells the
    /// kernel (and replays the event). Returns whether they differed.
    pub(super) fn revalidate_open(
        &self,
        req: &Request,
        node: &Node,
        st: &libc::stat,
        flags: i32,
    ) -> io::Result<bool> {
        let s = &self.s;
        let fresh = EntrySnap::from_stat(st);
        if fresh.key != node.key {
            // Replaced on SOURCE between the name's lookup and the open.
            return Err(err(libc::ESTALE));
        }
        let told = node.state().attr;
        if !crate::overlay::access::attrs_differ(told.as_ref(), &fresh) {
            return Ok(false);
        }
        Stats::bump(&s.stats.open_revalidated);
        self.queue_revalidation(node, &fresh);
        let groups = crate::overlay::access::caller_groups(req.pid());
        let caller = crate::overlay::access::Caller {
            uid: req.uid(),
            gid: req.gid(),
            groups: groups.as_deref().unwrap_or_default(),
        };
        let want = crate::overlay::access::Want::of_open(flags);
        if !crate::overlay::access::permits(fresh.mode, fresh.uid, fresh.gid, &caller, want) {
            Stats::bump(&s.stats.open_refused);
            debug!(
                ino = node.ino,
                uid = req.uid(),
                mode = format!("{:o}", fresh.mode),
                "open refused: SOURCE's attributes changed and deny the caller"
            );
            return Err(err(libc::EACCES));
        }
        Ok(true)
    }

    /// Ask the sync worker to rescan `node`'s name (once per change): the rescan finds the
    /// change in the folder's view, invalidates it and replays its event. Only with `channel=`:
    /// without one there are no views to compare with, and the kernel's attribute timeout
    /// (1 s with the default `cache=auto`) refreshes it.
    pub(super) fn queue_revalidation(&self, node: &Node, fresh: &EntrySnap) {
        let s = &self.s;
        if s.cfg.channel.is_none() || !s.revalidating.first(node.ino, fresh) {
            return;
        }
        let path = s.try_path_of(node.ino, None).ok();
        let Some(path) = path.as_ref().and_then(|p| p.to_str()) else {
            Stats::bump(&s.stats.revalidate_unqueued);
            return;
        };
        let tx = lock(&s.baseline_tx);
        if let Some(tx) = tx.as_ref() {
            // Nobody waits for this one; its changes go to watch subscribers later.
            let (done, report) = std::sync::mpsc::channel();
            let job = crate::overlay::sync::Job::Notify {
                scope: crate::control::wire::Scope::Paths(vec![path.to_string()]),
                done,
            };
            let mut q = lock(&s.revalidation_reports);
            if tx.send(job).is_ok() {
                if q.len() >= REVALIDATION_REPORTS {
                    q.pop_front();
                    Stats::bump(&s.stats.revalidate_unreported);
                }
                q.push_back(report);
            }
        }
    }

    /// How a replay's open reaches SOURCE. It does no I/O through it. With kernel passthrough
    /// the kernel accepts only passthrough opens of an inode that clients have open that way (a
    /// cached one next to them fails with EIO), so the replay's open is one too, with the backing
    /// file registered from a read-only fd — but the kernel opens the backing file itself with
    /// the replay's flags, which a read-only SOURCE refuses: there the replay's open is direct
    /// I/O (no backing; `true`), which takes no part in the inode's I/O mode and gives
    /// IN_CLOSE_WRITE too, unless a client holds the file open meanwhile.
    pub(super) fn replay_backing(&self, node: &Node) -> (Option<OwnedFd>, bool) {
        let s = &self.s;
        let source_ro =
            sys::fstatvfs(s.root_fd.as_fd()).is_ok_and(|v| v.f_flag & libc::ST_RDONLY != 0);
        if s.passthrough.load(Ordering::Relaxed) && !source_ro {
            (self.open_backing(node, libc::O_RDONLY).ok(), false)
        } else {
            (None, true)
        }
    }

    /// A replay's create-and-open (`open(O_CREAT|O_EXCL)` of a name SOURCE already has, or the
    /// temporary name standing for it): IN_CREATE, then IN_OPEN, and IN_CLOSE_WRITE at the close,
    /// in one request fewer than mknod and open. SOURCE is not touched. `register`: the reply's
    /// backing registration (see [`Shared::attach_backing`]).
    pub(super) fn replay_create(
        &self,
        parent: INodeNo,
        name: &OsStr,
        register: impl FnOnce(&OwnedFd) -> io::Result<fuser::BackingId>,
    ) -> io::Result<(FileAttr, Opened)> {
        let s = &self.s;
        let pnode = s.node(parent)?;
        let (node, attr) = s.enter_replayed(&pnode, parent.0, name)?;
        Stats::bump(&s.stats.opens);
        let flags = FopenFlags::FOPEN_DIRECT_IO | NOFLUSH;
        if s.open_free.load(Ordering::Relaxed) {
            // No release will come (see `open_free`); the replay does no I/O.
            return Ok((attr, Opened::Cached(FileHandle(0), flags)));
        }
        let (fd, direct) = self.replay_backing(&node);
        if !direct {
            if let Some(b) = s.attach_backing(&node, fd.as_ref(), register) {
                let fh = s.add_handle(Handle::File(OpenFile {
                    node,
                    fd: fd.map(Arc::new),
                    backing: true,
                    writable: false,
                }));
                return Ok((attr, Opened::Passthrough(FileHandle(fh), b)));
            }
        }
        let fh = s.add_handle(Handle::File(OpenFile {
            node,
            fd: fd.map(Arc::new),
            backing: false,
            writable: false,
        }));
        Ok((attr, Opened::Cached(FileHandle(fh), flags)))
    }

    /// `do_create` found the name on SOURCE although the kernel was told it does not exist (a host
    /// change not notified yet): open it as open(2) without O_EXCL would, but the kernel checked
    /// only the folder, so check the caller against the file's own attributes first (EACCES),
    /// and truncate only then if asked.
    pub(super) fn open_existing(
        &self,
        req: &Request,
        pfd: BorrowedFd<'_>,
        name: &CStr,
        base: i32,
        flags: i32,
    ) -> io::Result<OwnedFd> {
        let fd = sys::openat(pfd, name, base, 0)?;
        let st = sys::fstat(fd.as_fd())?;
        let groups = crate::overlay::access::caller_groups(req.pid());
        let caller = crate::overlay::access::Caller {
            uid: req.uid(),
            gid: req.gid(),
            groups: groups.as_deref().unwrap_or_default(),
        };
        let want = crate::overlay::access::Want::of_open(flags);
        if !crate::overlay::access::permits(st.st_mode, st.st_uid, st.st_gid, &caller, want) {
            Stats::bump(&self.s.stats.open_refused);
            return Err(err(libc::EACCES));
        }
        if flags & libc::O_TRUNC == 0 {
            return Ok(fd);
        }
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            sys::ftruncate(fd.as_fd(), 0)?;
            return Ok(fd);
        }
        sys::openat(pfd, name, base | libc::O_TRUNC, 0)
    }

    pub(super) fn file_fd(&self, fh: FileHandle) -> io::Result<(Arc<Handle>, ())> {
        let h = self.s.handle(fh)?;
        match &*h {
            Handle::File(f) if f.fd.is_some() => Ok((h.clone(), ())),
            _ => Err(err(libc::EBADF)),
        }
    }

    /// Run `f` on the backing fd of handle `fh` of `ino`; handle 0 (zero-message opens) is the
    /// inode's own fd for `access` (see `open_free`).
    pub(super) fn with_fd<T>(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        access: Access,
        f: impl FnOnce(BorrowedFd<'_>) -> io::Result<T>,
    ) -> io::Result<T> {
        if fh.0 == 0 {
            return f(self.fd_of_inode(ino, access)?.as_fd());
        }
        let (h, ()) = self.file_fd(fh)?;
        match &*h {
            Handle::File(OpenFile { fd: Some(fd), .. }) => f(fd.as_fd()),
            _ => Err(err(libc::EBADF)),
        }
    }
}
