//! `impl Filesystem`: what fuser calls, answered from the inherent operations of
//! [`OverlayFs`] and [`Shared`].

use super::*;

impl Filesystem for OverlayFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let caps = config.capabilities();
        self.s
            .kernel_minor
            .store(config.kernel_abi().1, Ordering::SeqCst);
        let mut want = InitFlags::FUSE_ASYNC_READ
            | InitFlags::FUSE_BIG_WRITES
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_AUTO_INVAL_DATA
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_MAX_PAGES
            | InitFlags::FUSE_EXPORT_SUPPORT
            // Creates carry the client's umask unapplied: a default ACL on the parent overrides
            // it (`Shared::as_client`).
            | InitFlags::FUSE_DONT_MASK
            // The kernel checks ACLs too (as for a local filesystem), and after setting one drops
            // the attributes it holds: the mode may have changed with it.
            | InitFlags::FUSE_POSIX_ACL
            // The kernel then marks inodes S_NOSEC and stops asking for security.capability
            // (a GETXATTR round trip) before every write: passthrough writes never reach us
            // otherwise. In exchange set-user/group-ID clearing is ours (`do_setattr`, `write`).
            | InitFlags::FUSE_HANDLE_KILLPRIV_V2;
        if self.s.cfg.passthrough
            && caps.contains(InitFlags::FUSE_PASSTHROUGH)
            && sys::geteuid() == 0
        {
            want |= InitFlags::FUSE_PASSTHROUGH;
        }
        let want = want & caps;
        if let Err(missing) = config.add_capabilities(want) {
            warn!("kernel lacks FUSE capabilities {missing:?}");
        }
        self.s
            .dont_mask
            .store(want.contains(InitFlags::FUSE_DONT_MASK), Ordering::SeqCst);
        if want.contains(InitFlags::FUSE_PASSTHROUGH) && config.set_max_stack_depth(1).is_ok() {
            self.s.passthrough.store(true, Ordering::SeqCst);
        }
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_background(64);
        info!(
            passthrough = self.s.passthrough.load(Ordering::SeqCst),
            abi = %format!("{:?}", config.kernel_abi()),
            "FUSE session initialised"
        );
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.do_lookup(req, parent, name) {
            Ok(Some(attr)) => reply.entry(&self.s.entry_ttl(req, parent.0, name), &attr, GEN),
            Ok(None) => reply.entry(&self.s.ttl(), &negative(), GEN),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let s = &self.s;
        // The last reference: keep what finds the object again by a handle (see `Export`).
        let last = s.table.get(ino.0).filter(|n| n.state().nlookup <= nlookup);
        let kept = last.as_deref().and_then(|n| s.keep_for_export(n));
        s.table.forget(ino.0, nlookup);
        if let Some(n) = last {
            if s.table.get(ino.0).is_none_or(|m| !Arc::ptr_eq(&m, &n)) {
                s.forgotten(ino.0, kept);
            }
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let res = self
            .s
            .node(ino)
            .and_then(|node| self.do_getattr(req, &node, fh));
        match res {
            Ok((attr, ttl)) => reply.attr(&ttl, &attr),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.answer(
            &self.s,
            self.do_setattr(req, ino, mode, uid, gid, size, atime, mtime, fh),
        );
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let res = self.s.node(ino).and_then(|node| {
            let (pfd, name, _) = self.s.resolve(&node)?;
            sys::readlinkat(pfd.as_fd(), &sys::cstr(&name)?)
        });
        reply.answer(&self.s, res);
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let res = self.do_create_node(
            req,
            parent,
            name,
            "mknod",
            |pfd, n, m| sys::mknodat(pfd, n, m, rdev as u64),
            mode,
            umask,
        );
        reply.answer(&self.s, res);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let res = self.do_create_node(req, parent, name, "mkdir", sys::mkdirat, mode, umask);
        reply.answer(&self.s, res);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply.answer(&self.s, self.do_remove(req, parent, name, false));
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply.answer(&self.s, self.do_remove(req, parent, name, true));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let res = sys::cstr(target.as_os_str()).and_then(|t| {
            self.do_create_node(
                req,
                parent,
                link_name,
                "symlink",
                |pfd, n, _| sys::symlinkat(&t, pfd, n),
                0,
                0,
            )
        });
        reply.answer(&self.s, res);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.answer(
            &self.s,
            self.do_rename(req, parent, name, newparent, newname, flags),
        );
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.answer(&self.s, self.do_link(req, ino, newparent, newname));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let s = &self.s;
        let node = match s.node(ino) {
            Ok(n) => n,
            Err(e) => return reply.error(errno(&e)),
        };
        let acc = flags.0 & libc::O_ACCMODE;
        let writable = acc != libc::O_RDONLY;
        let replay = s.replay.is_replay(req);
        if writable && !replay {
            if let Err(e) = s.check_writable(req) {
                return reply.error(errno(&e));
            }
            s.audit(req, "open-write", ino.0, None);
        }
        Stats::bump(&s.stats.opens);
        let mut direct_replay = false;
        let fd = if node.is_virtual {
            None
        } else if replay {
            let (fd, direct) = self.replay_backing(&node);
            direct_replay = direct;
            fd
        } else {
            match self.open_backing(&node, flags.0) {
                Ok(fd) => Some(fd),
                Err(e) => return reply.error(errno(&e)),
            }
        };
        let mut fopen = s.fopen_flags(false);
        if let (Some(fd), false) = (&fd, replay) {
            match self.revalidate_open(req, &node, fd, flags.0) {
                // Changed on SOURCE: the kernel's pages of the file are stale too.
                Ok(true) => fopen.remove(FopenFlags::FOPEN_KEEP_CACHE),
                Ok(false) => {}
                Err(e) => return reply.error(errno(&e)),
            }
        }
        if !node.is_virtual && !direct_replay {
            if let Some(b) = s.attach_backing(&node, fd.as_ref(), |fd| reply.open_backing(fd)) {
                let fh = s.add_handle(Handle::File(OpenFile {
                    node: node.clone(),
                    fd,
                    backing: true,
                    writable: writable && !replay,
                }));
                // The kernel refuses page-cache flags on passthrough opens (FOPEN_PASSTHROUGH_MASK).
                return reply.opened_passthrough(FileHandle(fh), NOFLUSH, &b);
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
        reply.opened(FileHandle(fh), fopen);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        reply.answer(&self.s, self.do_read(fh, offset, size));
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        wf: WriteFlags,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let res = self.with_fd(fh, |fd| {
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
        });
        reply.answer(&self.s, res);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let s = &self.s;
        if let Some(h) = s.take_handle(fh) {
            if let Handle::File(f) = &*h {
                if f.backing {
                    let mut st = f.node.state();
                    if let Some((_, n)) = st.backing.as_mut() {
                        *n -= 1;
                        if *n == 0 {
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
                }
            }
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.with_fd(fh, |fd| sys::fsync(fd, datasync)) {
            Ok(()) => reply.ok(),
            Err(e) if e.raw_os_error() == Some(libc::EBADF) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if let Err(e) = self.s.node(ino) {
            return reply.error(errno(&e));
        }
        // With long caching, the kernel need not ask at all: ENOSYS makes it stop sending
        // OPENDIR/RELEASEDIR and open folders itself with FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR, so
        // a warm listing costs no request. Listings then arrive with fh 0 (`dir_entries`).
        if self.s.cfg.cache == CachePolicy::Always {
            return reply.error(Errno::ENOSYS);
        }
        let fh = self.s.add_handle(Handle::Dir(OpenDir {
            entries: Mutex::new(None),
        }));
        reply.opened(FileHandle(fh), self.s.fopen_flags(true));
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let (node, entries) = match self.dir_entries(ino, fh, offset) {
            Ok(x) => x,
            Err(e) => return reply.error(errno(&e)),
        };
        let dots = self.dot_entries(&node);
        let total = entries.len() as u64 + 2;
        let mut i = offset;
        while i < total {
            let full = if i < 2 {
                let (dino, n) = dots[i as usize];
                reply.add(INodeNo(dino), i + 1, FileType::Directory, n)
            } else {
                let e = &entries[(i - 2) as usize];
                let dino = self.s.table.ino_for(Key {
                    dev: node.key.dev,
                    ino: e.ino,
                });
                reply.add(INodeNo(dino), i + 1, dtype_kind(e.kind), &e.name)
            };
            if full {
                break;
            }
            i += 1;
        }
        self.listing_done(&node, fh, offset >= total);
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let s = &self.s;
        let (node, entries) = match self.dir_entries(ino, fh, offset) {
            Ok(x) => x,
            Err(e) => return reply.error(errno(&e)),
        };
        let pfd = match s.dir_fd(&node) {
            Ok(fd) => fd,
            Err(e) => return reply.error(errno(&e)),
        };
        let ttl = s.ttl();
        let dots = self.dot_entries(&node);
        let total = entries.len() as u64 + 2;
        let mut i = offset;
        while i < total {
            if i < 2 {
                let (dino, n) = dots[i as usize];
                let st = match s.table.get(dino).map(|d| s.stat_node(&d)) {
                    Some(Ok(st)) => st,
                    _ => match sys::fstat(pfd.as_fd()) {
                        Ok(st) => st,
                        Err(e) => return reply.error(errno(&e)),
                    },
                };
                // The kernel takes no lookup reference for "." and "..".
                if reply.add(
                    INodeNo(dino),
                    i + 1,
                    n,
                    &Duration::ZERO,
                    &s.attr(dino, &st),
                    GEN,
                ) {
                    break;
                }
                i += 1;
                continue;
            }
            let e = &entries[(i - 2) as usize];
            let st = match sys::cstr(&e.name).and_then(|n| sys::fstatat(pfd.as_fd(), &n)) {
                Ok(st) => st,
                Err(_) => {
                    // Gone since the listing was read: skip it.
                    i += 1;
                    continue;
                }
            };
            let key = Key {
                dev: st.st_dev,
                ino: st.st_ino,
            };
            let dino = s.table.ino_for(key);
            let ttl = if s.replay.is_pending(node.ino, &e.name) {
                Duration::ZERO
            } else {
                ttl
            };
            if reply.add(INodeNo(dino), i + 1, &e.name, &ttl, &s.attr(dino, &st), GEN) {
                break;
            }
            s.enter(node.ino, &e.name, &st);
            i += 1;
        }
        self.listing_done(&node, fh, offset >= total);
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.s.take_handle(fh);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let res = self
            .s
            .node(ino)
            .and_then(|n| self.s.dir_fd(&n))
            .and_then(|pfd| {
                let fd = sys::openat(pfd.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
                sys::fsync(fd.as_fd(), datasync)
            });
        reply.answer(&self.s, res);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match sys::fstatvfs(self.s.root_fd.as_fd()) {
            Ok(v) => reply.statfs(
                v.f_blocks,
                v.f_bfree,
                v.f_bavail,
                v.f_files,
                v.f_ffree,
                v.f_bsize as u32,
                v.f_namemax as u32,
                v.f_frsize as u32,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let s = &self.s;
        let res = s
            .check_writable(req)
            .and_then(|_| s.node(ino))
            .and_then(|node| {
                s.audit(req, "setxattr", ino.0, None);
                let _local = s.local_node(&node);
                let (fd, n) = self.xattr_target(&node)?;
                sys::setxattr(fd.as_fd(), &sys::cstr(&n)?, &sys::cstr(name)?, value, flags)?;
                if let Ok(st) = s.stat_node(&node) {
                    s.note_local_node(&node, &st);
                }
                Ok(())
            });
        reply.answer(&self.s, res);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let res = self.s.node(ino).and_then(|node| {
            let (fd, n) = self.xattr_target(&node)?;
            sys::getxattr(
                fd.as_fd(),
                &sys::cstr(&n)?,
                &sys::cstr(name)?,
                size as usize,
            )
        });
        reply.answer(
            &self.s,
            res.map(|(n, data)| {
                if size == 0 {
                    Xattr::Size(n)
                } else {
                    Xattr::Data(data)
                }
            }),
        );
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let res = self.s.node(ino).and_then(|node| {
            let (fd, n) = self.xattr_target(&node)?;
            sys::listxattr(fd.as_fd(), &sys::cstr(&n)?, size as usize)
        });
        reply.answer(
            &self.s,
            res.map(|(n, data)| {
                if size == 0 {
                    Xattr::Size(n)
                } else {
                    Xattr::Data(data)
                }
            }),
        );
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let s = &self.s;
        let res = s
            .check_writable(req)
            .and_then(|_| s.node(ino))
            .and_then(|node| {
                let _local = s.local_node(&node);
                let (fd, n) = self.xattr_target(&node)?;
                sys::removexattr(fd.as_fd(), &sys::cstr(&n)?, &sys::cstr(name)?)?;
                if let Ok(st) = s.stat_node(&node) {
                    s.note_local_node(&node, &st);
                }
                Ok(())
            });
        reply.answer(&self.s, res);
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Permission checks are the kernel's (default_permissions); this only confirms existence.
        reply.answer(&self.s, self.s.node(ino).map(drop));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        if self.s.replay.is_replay(req) {
            return self.replay_create(parent, name, reply);
        }
        let s = &self.s;
        let res = (|| -> io::Result<(Arc<Node>, FileAttr, OwnedFd)> {
            s.check_writable(req)?;
            s.audit(req, "create", parent.0, Some(name));
            let _local = s.local.begin(&[(parent.0, name)]);
            let pnode = s.node(parent)?;
            let pfd = s.dir_fd(&pnode)?;
            let cname = sys::cstr(name)?;
            let strip = libc::O_NOCTTY | libc::O_APPEND | libc::O_DIRECT | libc::O_TRUNC;
            let base = (flags & !strip) | libc::O_NOFOLLOW | s.atime_flags(false);
            // Create exclusively: only a file made here gets the requester's ownership. The name
            // may exist on SOURCE although the kernel was told it does not (a host change not
            // notified yet): then open it as an open(2) without O_EXCL would, truncating if asked.
            let made = s.as_client(umask, mode, |m| {
                openat_atime(pfd.as_fd(), &cname, base | libc::O_CREAT | libc::O_EXCL, m)
            });
            let (fd, created) = match made {
                Ok(fd) => (fd, true),
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) && flags & libc::O_EXCL == 0 => (
                    self.open_existing(req, pfd.as_fd(), &cname, base, flags)?,
                    false,
                ),
                Err(e) => return Err(e),
            };
            let st = if created {
                let pst = sys::fstat(pfd.as_fd())?;
                s.own(req, pfd.as_fd(), &cname, &pst, mode)?
            } else {
                sys::fstat(fd.as_fd())?
            };
            s.note_local(parent.0, name, Some(&st));
            let (node, attr) = s.enter(parent.0, name, &st);
            Ok((node, attr, fd))
        })();
        let (node, attr, fd) = match res {
            Ok(x) => x,
            Err(e) => return reply.error(errno(&e)),
        };
        Stats::bump(&s.stats.opens);
        let ttl = s.ttl();
        let fopen = s.fopen_flags(false);
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        {
            if let Some(b) = s.attach_backing(&node, Some(&fd), |fd| reply.open_backing(fd)) {
                let fh = s.add_handle(Handle::File(OpenFile {
                    node,
                    fd: Some(fd),
                    backing: true,
                    writable,
                }));
                return reply.created_passthrough(&ttl, &attr, GEN, FileHandle(fh), NOFLUSH, &b);
            }
        }
        let fh = s.add_handle(Handle::File(OpenFile {
            node,
            fd: Some(fd),
            backing: false,
            writable,
        }));
        reply.created(&ttl, &attr, GEN, FileHandle(fh), fopen);
    }

    fn fallocate(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let res = self
            .s
            .check_writable(req)
            .and_then(|_| self.with_fd(fh, |fd| sys::fallocate(fd, mode, offset, length)));
        reply.answer(&self.s, res);
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        reply.answer(
            &self.s,
            self.with_fd(fh, |fd| sys::lseek(fd, offset, whence)),
        );
    }

    fn copy_file_range(
        &self,
        req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let res = self.s.check_writable(req).and_then(|_| {
            self.with_fd(fh_in, |fin| {
                self.with_fd(fh_out, |fout| {
                    sys::copy_file_range(
                        fin,
                        offset_in,
                        fout,
                        offset_out,
                        len.min(u32::MAX as u64) as usize,
                    )
                })
            })
        });
        reply.answer(&self.s, res);
    }
}
