//! `impl Filesystem`: what fuser calls. Each method calls an inherent operation of
//! [`OverlayFs`] or [`Shared`] (in the file of its concern) and sends its reply
//! ([`Answer::answer`]: the value, or the errno from [`errno`]).

use super::open_free::Access;
use super::*;

impl Filesystem for OverlayFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        self.s.negotiate(config);
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let res = self.do_lookup(req, parent, name).map(|found| match found {
            Some(attr) => (attr, self.s.entry_ttl(req, parent.0, name)),
            None => (negative(), self.s.ttl()),
        });
        reply.answer(&self.s, res);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.s.forget(ino.0, nlookup);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        Stats::bump(&self.s.stats.getattrs);
        let res = self.s.node(ino).and_then(|n| self.do_getattr(req, &n, fh));
        self.s.atime_refresh.answering(ino.0);
        reply.answer(&self.s, res);
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
        let res = self.do_setattr(req, ino, mode, uid, gid, size, atime, mtime, fh);
        reply.answer(&self.s, res);
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        reply.answer(&self.s, self.do_readlink(ino));
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
        let make = |pfd: BorrowedFd<'_>, n: &CStr, m| sys::mknodat(pfd, n, m, u64::from(rdev));
        let res = self.do_create_node(req, parent, name, "mknod", make, mode, umask);
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
        reply.answer(&self.s, self.do_symlink(req, parent, link_name, target));
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
        let res = self.do_rename(req, parent, name, newparent, newname, flags);
        reply.answer(&self.s, res);
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
        let res = self.do_open(req, ino, flags.0, |fd| reply.open_backing(fd));
        reply.answer(&self.s, res);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let res = self.do_read(ino, fh, offset, size);
        let read = res.is_ok();
        reply.answer(&self.s, res);
        if read {
            self.after_read_reply(ino);
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        wf: WriteFlags,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.answer(&self.s, self.do_write(req, ino, fh, offset, data, wf));
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Opens ask for no FLUSH (`NOFLUSH`); nothing to do if one comes. Without opens (see
        // `open_free`) every close would send one: ENOSYS makes the kernel stop.
        if self.s.open_free.load(Ordering::Relaxed) {
            reply.error(Errno::ENOSYS);
        } else {
            reply.ok();
        }
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
        self.do_release(fh);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.answer(&self.s, self.do_fsync(ino, fh, datasync));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.answer(&self.s, self.do_opendir(ino));
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let res = self.fill_readdir(ino, fh, offset, &mut reply);
        let read = res.is_ok();
        reply.answer(&self.s, res);
        if read {
            self.after_read_reply(ino);
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let res = self.fill_readdirplus(ino, fh, offset, &mut reply);
        let read = res.is_ok();
        reply.answer(&self.s, res);
        if read {
            self.after_read_reply(ino);
        }
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
        reply.answer(&self.s, self.do_fsyncdir(ino, datasync));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.answer(&self.s, self.s.statfs());
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
        reply.answer(&self.s, self.do_setxattr(req, ino, name, value, flags));
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        reply.answer(&self.s, self.do_getxattr(ino, name, size));
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        reply.answer(&self.s, self.do_listxattr(ino, size));
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply.answer(&self.s, self.do_removexattr(req, ino, name));
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
        let register = |fd: &OwnedFd| reply.open_backing(fd);
        let res = if self.s.replay.is_replay(req) {
            self.replay_create(parent, name, register)
        } else {
            self.do_create(req, parent, name, mode, umask, flags, register)
        };
        reply.answer(&self.s, res);
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.answer(
            &self.s,
            self.do_fallocate(req, ino, fh, offset, length, mode),
        );
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let res = match self.seek_in_dense(ino, offset, whence) {
            Some(res) => res,
            None => self.with_fd(ino, fh, Access::Read, |fd| sys::lseek(fd, offset, whence)),
        };
        reply.answer(&self.s, res);
    }

    fn copy_file_range(
        &self,
        req: &Request,
        ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let res = self.do_copy_file_range(
            req,
            (ino_in, fh_in, offset_in),
            (ino_out, fh_out, offset_out),
            len,
        );
        reply.answer(&self.s, res);
    }
}
