//! A stand-in for a guest's virtiofs mount served by `virtiofsd --cache=never`, with a count of
//! every request that reaches it (`bench/deployed.sh`; how faithful: bench/NOTES-virtiofs.md).
//!
//! A FUSE file system over a local folder that answers like virtiofsd does in that mode: entry
//! and attribute timeouts 0 (every path walk is a `LOOKUP` per component, every `stat` a
//! `GETATTR`), negative lookups not cached, `FOPEN_DIRECT_IO` on every file (no page cache: every
//! read and write is a `READ`/`WRITE` request), folders opened without `FOPEN_CACHE_DIR` (every
//! listing is `OPENDIR`/`READDIR`/`RELEASEDIR`), no `READDIRPLUS` (virtiofsd turns it off under
//! cache=never), xattrs off (`ENOSYS`, virtiofsd's default without `--xattr`), mounted with
//! `default_permissions,allow_other` as the guest's virtiofs driver does, no kernel passthrough
//! of its own, several worker threads (virtiofsd's thread pool). Nodes are keyed by the backing
//! inode number, with one path per node (hard links: the last name looked up).
//!
//! Not counted: what fuser answers itself (`INIT`, `INTERRUPT`, and `ENOSYS` for `SETXATTR`,
//! `REMOVEXATTR`, `FSYNCDIR`, locks, `BMAP`, `IOCTL`, `POLL`, `FALLOCATE`, `LSEEK`,
//! `COPY_FILE_RANGE`, each of which the kernel then stops sending: one request at most per mount;
//! `ACCESS` is never sent under `default_permissions`). fuser hands a `BATCH_FORGET` over as one `FORGET` per
//! node, so `FORGET` counts nodes forgotten.
//!
//! ```text
//! virtiofs_standin serve SOURCE MOUNTPOINT [--stats SOCK] [--threads N]   (as root; foreground,
//!                                                until unmounted or SIGTERM/SIGINT; 2 threads)
//! virtiofs_standin stats SOCK [--reset]      print the counts as one JSON object per opcode
//!                                            (plus "total"); --reset zeroes them as it reads
//! ```
//!
//! The stats socket answers one JSON line per connection: send `get\n` or `reset\n`.

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, DirEntryExt, FileExt, MetadataExt, OpenOptionsExt};
use std::os::unix::fs::{PermissionsExt, lchown, symlink};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    BsdFileFlags, Config, Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, Session, SessionACL, TimeOrNow, WriteFlags,
};
use vfnotify::sys::{self, SetTime};
use vfnotify::util::lock;

/// virtiofsd --cache=never: entry and attribute timeouts 0.
const TTL: Duration = Duration::ZERO;
const GEN: Generation = Generation(0);

macro_rules! ops {
    ($($name:ident),* $(,)?) => {
        /// The requests counted, one counter each (named as the FUSE opcodes).
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        #[derive(Clone, Copy)]
        enum Op { $($name),* }
        const NAMES: &[&str] = &[$(stringify!($name)),*];
    };
}
ops! {
    LOOKUP, FORGET, GETATTR, SETATTR, READLINK, SYMLINK, MKNOD, MKDIR, UNLINK, RMDIR, RENAME, LINK,
    OPEN, READ, WRITE, STATFS, RELEASE, FSYNC, GETXATTR, LISTXATTR, FLUSH,
    OPENDIR, READDIR, RELEASEDIR, CREATE,
}

struct Counts(Vec<AtomicU64>);

impl Counts {
    /// One JSON object of every count and their total; `reset` zeroes each as it is read.
    fn json(&self, reset: bool) -> String {
        let mut map = serde_json::Map::new();
        let mut total = 0;
        for (name, c) in NAMES.iter().zip(&self.0) {
            let v = if reset {
                c.swap(0, Ordering::Relaxed)
            } else {
                c.load(Ordering::Relaxed)
            };
            total += v;
            map.insert((*name).to_string(), v.into());
        }
        map.insert("total".into(), total.into());
        serde_json::Value::Object(map).to_string()
    }
}

struct Node {
    path: PathBuf,
    lookups: u64,
}

/// One listing, taken at `OPENDIR` (inode numbers, types and names).
type Listing = Vec<(u64, FileType, OsString)>;

struct Standin {
    counts: Arc<Counts>,
    root_ino: u64,
    nodes: Mutex<HashMap<u64, Node>>,
    files: Mutex<HashMap<u64, Arc<File>>>,
    dirs: Mutex<HashMap<u64, Arc<Listing>>>,
    next_fh: AtomicU64,
}

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

fn enosys() -> Errno {
    Errno::from_i32(libc::ENOSYS)
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    let ns = i128::from(secs) * 1_000_000_000 + i128::from(nsecs);
    let d = Duration::from_nanos(ns.unsigned_abs() as u64);
    if ns >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

fn set_time(t: Option<TimeOrNow>) -> SetTime {
    let t = match t {
        None => return SetTime::Omit,
        Some(TimeOrNow::Now) => return SetTime::Now,
        Some(TimeOrNow::SpecificTime(t)) => t,
    };
    let ns = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    };
    const NS: i128 = 1_000_000_000;
    SetTime::At(ns.div_euclid(NS) as i64, ns.rem_euclid(NS) as i64)
}

fn cpath(p: &Path) -> io::Result<CString> {
    sys::cstr(p.as_os_str())
}

/// `base` with `rest` under it (`rest` empty: `base` itself, with no trailing slash).
fn rebase(base: &Path, rest: &Path) -> PathBuf {
    if rest.as_os_str().is_empty() {
        base.to_path_buf()
    } else {
        base.join(rest)
    }
}

/// Options for an `OPEN`/`CREATE` with the kernel's open flags.
fn open_options(flags: i32) -> OpenOptions {
    let acc = flags & libc::O_ACCMODE;
    let mut o = OpenOptions::new();
    o.read(acc != libc::O_WRONLY)
        .write(acc != libc::O_RDONLY)
        .custom_flags(flags & !(libc::O_ACCMODE | libc::O_CREAT | libc::O_EXCL));
    o
}

fn kind(ft: fs::FileType) -> FileType {
    FileType::from_std(ft).unwrap_or(FileType::RegularFile)
}

impl Standin {
    fn hit(&self, op: Op) {
        self.counts.0[op as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The FUSE node id of a backing inode: 1 for SOURCE's root, the inode number + 1 otherwise.
    fn nodeid(&self, ino: u64) -> u64 {
        if ino == self.root_ino { 1 } else { ino + 1 }
    }

    fn path(&self, ino: INodeNo) -> io::Result<PathBuf> {
        let nodes = lock(&self.nodes);
        nodes
            .get(&ino.0)
            .map(|n| n.path.clone())
            .ok_or_else(|| errno(libc::ESTALE))
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> io::Result<PathBuf> {
        Ok(self.path(parent)?.join(name))
    }

    fn attr(&self, md: &fs::Metadata) -> FileAttr {
        FileAttr {
            ino: INodeNo(self.nodeid(md.ino())),
            size: md.size(),
            blocks: md.blocks(),
            atime: time(md.atime(), md.atime_nsec()),
            mtime: time(md.mtime(), md.mtime_nsec()),
            ctime: time(md.ctime(), md.ctime_nsec()),
            crtime: UNIX_EPOCH,
            kind: kind(md.file_type()),
            perm: (md.mode() & 0o7777) as u16,
            nlink: md.nlink() as u32,
            uid: md.uid(),
            gid: md.gid(),
            rdev: md.rdev() as u32,
            blksize: md.blksize() as u32,
            flags: 0,
        }
    }

    /// Stat `path`, remember it as its inode's path and count one lookup of the node.
    fn entry(&self, path: PathBuf) -> io::Result<FileAttr> {
        let attr = self.attr(&fs::symlink_metadata(&path)?);
        let mut nodes = lock(&self.nodes);
        let node = nodes.entry(attr.ino.0).or_insert(Node {
            path: PathBuf::new(),
            lookups: 0,
        });
        node.path = path;
        node.lookups += 1;
        Ok(attr)
    }

    /// A new entry of `path`, owned by the caller (virtiofsd takes the caller's fsuid/fsgid).
    fn made(&self, req: &Request, path: PathBuf) -> io::Result<FileAttr> {
        if (req.uid(), req.gid()) != (sys::geteuid(), 0) {
            lchown(&path, Some(req.uid()), Some(req.gid()))?;
        }
        self.entry(path)
    }

    fn forget_one(&self, ino: u64, n: u64) {
        let mut nodes = lock(&self.nodes);
        if let Some(node) = nodes.get_mut(&ino).filter(|_| ino != 1) {
            node.lookups = node.lookups.saturating_sub(n);
            if node.lookups == 0 {
                nodes.remove(&ino);
            }
        }
    }

    fn file(&self, fh: FileHandle) -> io::Result<Arc<File>> {
        lock(&self.files)
            .get(&fh.0)
            .cloned()
            .ok_or_else(|| errno(libc::EBADF))
    }

    fn keep_file(&self, f: File) -> FileHandle {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.files).insert(fh, Arc::new(f));
        FileHandle(fh)
    }

    fn do_setattr(
        &self,
        ino: INodeNo,
        mode: Option<u32>,
        owner: (Option<u32>, Option<u32>),
        size: Option<u64>,
        times: (Option<TimeOrNow>, Option<TimeOrNow>),
        fh: Option<FileHandle>,
    ) -> io::Result<FileAttr> {
        let path = self.path(ino)?;
        if let Some(mode) = mode {
            fs::set_permissions(&path, Permissions::from_mode(mode & 0o7777))?;
        }
        if owner.0.is_some() || owner.1.is_some() {
            lchown(&path, owner.0, owner.1)?;
        }
        if let Some(size) = size {
            match fh {
                Some(fh) => self.file(fh)?.set_len(size)?,
                None => OpenOptions::new().write(true).open(&path)?.set_len(size)?,
            }
        }
        if times.0.is_some() || times.1.is_some() {
            let (a, m) = (set_time(times.0), set_time(times.1));
            sys::utimensat(sys::cwd(), &cpath(&path)?, a, m)?;
        }
        Ok(self.attr(&fs::symlink_metadata(&path)?))
    }

    fn do_rename(&self, old: &Path, new: &Path, flags: RenameFlags) -> io::Result<()> {
        if flags.is_empty() {
            fs::rename(old, new)?;
        } else {
            let cwd = sys::cwd();
            sys::renameat2(cwd, &cpath(old)?, cwd, &cpath(new)?, flags.bits())?;
        }
        let exchange = flags.contains(RenameFlags::RENAME_EXCHANGE);
        for node in lock(&self.nodes).values_mut() {
            if let Ok(rest) = node.path.strip_prefix(old) {
                node.path = rebase(new, rest);
            } else if let Some(rest) = node.path.strip_prefix(new).ok().filter(|_| exchange) {
                node.path = rebase(old, rest);
            }
        }
        Ok(())
    }

    fn listing(&self, path: &Path, ino: INodeNo) -> io::Result<Listing> {
        let dir = FileType::Directory;
        let mut out: Listing = vec![(ino.0, dir, ".".into()), (1, dir, "..".into())];
        for e in fs::read_dir(path)? {
            let e = e?;
            out.push((self.nodeid(e.ino()), kind(e.file_type()?), e.file_name()));
        }
        Ok(out)
    }

    fn read_at(&self, fh: FileHandle, offset: u64, size: u32) -> io::Result<Vec<u8>> {
        let f = self.file(fh)?;
        let mut buf = vec![0u8; size as usize];
        let mut n = 0;
        while n < buf.len() {
            match f.read_at(&mut buf[n..], offset + n as u64)? {
                0 => break,
                k => n += k,
            }
        }
        buf.truncate(n);
        Ok(buf)
    }
}

fn reply_entry(reply: ReplyEntry, r: io::Result<FileAttr>) {
    match r {
        Ok(attr) => reply.entry(&TTL, &attr, GEN),
        Err(e) => reply.error(e.into()),
    }
}

fn reply_empty(reply: ReplyEmpty, r: io::Result<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e.into()),
    }
}

fn reply_attr(reply: ReplyAttr, r: io::Result<FileAttr>) {
    match r {
        Ok(attr) => reply.attr(&TTL, &attr),
        Err(e) => reply.error(e.into()),
    }
}

impl fuser::Filesystem for Standin {
    fn init(&mut self, _: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // libfuse and virtiofsd ask for parallel lookups and readdirs in one folder.
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        Ok(())
    }

    fn lookup(&self, _: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.hit(Op::LOOKUP);
        reply_entry(reply, self.child(parent, name).and_then(|p| self.entry(p)));
    }

    fn forget(&self, _: &Request, ino: INodeNo, nlookup: u64) {
        self.hit(Op::FORGET);
        self.forget_one(ino.0, nlookup);
    }

    fn getattr(&self, _: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        self.hit(Op::GETATTR);
        let md = match fh {
            Some(fh) => self.file(fh).and_then(|f| f.metadata()),
            None => self.path(ino).and_then(fs::symlink_metadata),
        };
        match md.map(|md| self.attr(&md)) {
            // A path whose inode changed under it (renamed over, removed and reused).
            Ok(a) if a.ino != ino => reply.error(Errno::from_i32(libc::ESTALE)),
            r => reply_attr(reply, r),
        }
    }

    fn setattr(
        &self,
        _: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _: Option<SystemTime>,
        fh: Option<FileHandle>,
        _: Option<SystemTime>,
        _: Option<SystemTime>,
        _: Option<SystemTime>,
        _: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.hit(Op::SETATTR);
        reply_attr(
            reply,
            self.do_setattr(ino, mode, (uid, gid), size, (atime, mtime), fh),
        );
    }

    fn readlink(&self, _: &Request, ino: INodeNo, reply: ReplyData) {
        self.hit(Op::READLINK);
        match self.path(ino).and_then(fs::read_link) {
            Ok(t) => reply.data(t.as_os_str().as_encoded_bytes()),
            Err(e) => reply.error(e.into()),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        p: INodeNo,
        n: &OsStr,
        mode: u32,
        _: u32,
        rdev: u32,
        r: ReplyEntry,
    ) {
        self.hit(Op::MKNOD);
        let res = self.child(p, n).and_then(|path| {
            sys::mknodat(sys::cwd(), &cpath(&path)?, mode, u64::from(rdev))?;
            self.made(req, path)
        });
        reply_entry(r, res);
    }

    fn mkdir(&self, req: &Request, p: INodeNo, n: &OsStr, mode: u32, _: u32, r: ReplyEntry) {
        self.hit(Op::MKDIR);
        let res = self.child(p, n).and_then(|path| {
            fs::DirBuilder::new().mode(mode & 0o7777).create(&path)?;
            self.made(req, path)
        });
        reply_entry(r, res);
    }

    fn unlink(&self, _: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.hit(Op::UNLINK);
        reply_empty(reply, self.child(parent, name).and_then(fs::remove_file));
    }

    fn rmdir(&self, _: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.hit(Op::RMDIR);
        reply_empty(reply, self.child(parent, name).and_then(fs::remove_dir));
    }

    fn symlink(&self, req: &Request, p: INodeNo, n: &OsStr, target: &Path, r: ReplyEntry) {
        self.hit(Op::SYMLINK);
        let res = self.child(p, n).and_then(|path| {
            symlink(target, &path)?;
            self.made(req, path)
        });
        reply_entry(r, res);
    }

    fn rename(
        &self,
        _: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.hit(Op::RENAME);
        let r = self
            .child(parent, name)
            .and_then(|old| self.do_rename(&old, &self.child(newparent, newname)?, flags));
        reply_empty(reply, r);
    }

    fn link(&self, _: &Request, ino: INodeNo, p: INodeNo, n: &OsStr, reply: ReplyEntry) {
        self.hit(Op::LINK);
        let r = self.path(ino).and_then(|old| {
            let new = self.child(p, n)?;
            fs::hard_link(old, &new)?;
            self.entry(new)
        });
        reply_entry(reply, r);
    }

    fn open(&self, _: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.hit(Op::OPEN);
        match self.path(ino).and_then(|p| open_options(flags.0).open(p)) {
            Ok(f) => reply.opened(self.keep_file(f), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e.into()),
        }
    }

    fn create(
        &self,
        req: &Request,
        p: INodeNo,
        n: &OsStr,
        mode: u32,
        _: u32,
        flags: i32,
        r: ReplyCreate,
    ) {
        self.hit(Op::CREATE);
        let res = self.child(p, n).and_then(|path| {
            let mut o = open_options(flags);
            o.create(true)
                .create_new(flags & libc::O_EXCL != 0)
                .mode(mode & 0o7777);
            let f = o.open(&path)?;
            Ok((self.made(req, path)?, self.keep_file(f)))
        });
        match res {
            Ok((attr, fh)) => r.created(&TTL, &attr, GEN, fh, FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => r.error(e.into()),
        }
    }

    fn read(
        &self,
        _: &Request,
        _: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _: OpenFlags,
        _: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.hit(Op::READ);
        match self.read_at(fh, offset, size) {
            Ok(buf) => reply.data(&buf),
            Err(e) => reply.error(e.into()),
        }
    }

    fn write(
        &self,
        _: &Request,
        _: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _: WriteFlags,
        _: OpenFlags,
        _: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.hit(Op::WRITE);
        match self.file(fh).and_then(|f| f.write_all_at(data, offset)) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e.into()),
        }
    }

    fn flush(&self, _: &Request, _: INodeNo, _: FileHandle, _: LockOwner, reply: ReplyEmpty) {
        self.hit(Op::FLUSH);
        reply.ok();
    }

    fn release(
        &self,
        _: &Request,
        _: INodeNo,
        fh: FileHandle,
        _: OpenFlags,
        _: Option<LockOwner>,
        _: bool,
        reply: ReplyEmpty,
    ) {
        self.hit(Op::RELEASE);
        lock(&self.files).remove(&fh.0);
        reply.ok();
    }

    fn fsync(&self, _: &Request, _: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        self.hit(Op::FSYNC);
        let r = self.file(fh).and_then(|f| {
            if datasync {
                f.sync_data()
            } else {
                f.sync_all()
            }
        });
        reply_empty(reply, r);
    }

    fn opendir(&self, _: &Request, ino: INodeNo, _: OpenFlags, reply: ReplyOpen) {
        self.hit(Op::OPENDIR);
        match self.path(ino).and_then(|p| self.listing(&p, ino)) {
            Ok(list) => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                lock(&self.dirs).insert(fh, Arc::new(list));
                // No FOPEN_CACHE_DIR / FOPEN_KEEP_CACHE: every listing reaches the server.
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(e.into()),
        }
    }

    fn readdir(&self, _: &Request, _: INodeNo, fh: FileHandle, offset: u64, mut r: ReplyDirectory) {
        self.hit(Op::READDIR);
        let Some(list) = lock(&self.dirs).get(&fh.0).cloned() else {
            return r.error(Errno::EBADF);
        };
        for (i, (ino, kind, name)) in list.iter().enumerate().skip(offset as usize) {
            if r.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                break;
            }
        }
        r.ok();
    }

    fn releasedir(&self, _: &Request, _: INodeNo, fh: FileHandle, _: OpenFlags, reply: ReplyEmpty) {
        self.hit(Op::RELEASEDIR);
        lock(&self.dirs).remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _: &Request, ino: INodeNo, reply: ReplyStatfs) {
        self.hit(Op::STATFS);
        match self.path(ino).and_then(|p| sys::statvfs(&cpath(&p)?)) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(e.into()),
        }
    }

    // xattrs off, as virtiofsd without `--xattr`: ENOSYS, after which the kernel stops asking.
    fn getxattr(&self, _: &Request, _: INodeNo, _: &OsStr, _: u32, reply: ReplyXattr) {
        self.hit(Op::GETXATTR);
        reply.error(enosys());
    }

    fn listxattr(&self, _: &Request, _: INodeNo, _: u32, reply: ReplyXattr) {
        self.hit(Op::LISTXATTR);
        reply.error(enosys());
    }
}

/// Answer each connection with one JSON line of counts (`reset\n`: zero them as they are read).
fn serve_stats(listener: UnixListener, counts: Arc<Counts>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        let mut line = String::new();
        let _ = BufReader::new(&conn).take(64).read_line(&mut line);
        let out = counts.json(line.trim() == "reset") + "\n";
        let _ = (&conn).write_all(out.as_bytes());
    }
}

fn stats(sock: &str, reset: bool) -> io::Result<()> {
    let mut conn = UnixStream::connect(sock)?;
    conn.write_all(if reset { b"reset\n" } else { b"get\n" })?;
    let mut out = String::new();
    conn.read_to_string(&mut out)?;
    io::stdout().write_all(out.as_bytes())
}

fn serve(source: &Path, mountpoint: &Path, stats: Option<&str>, threads: usize) -> io::Result<()> {
    let root = fs::canonicalize(source)?;
    let root_ino = fs::metadata(&root)?.ino();
    sys::umask(0); // the kernel has applied the caller's umask to every mode it sends
    let counts = Arc::new(Counts(NAMES.iter().map(|_| AtomicU64::new(0)).collect()));
    let fs = Standin {
        counts: counts.clone(),
        root_ino,
        nodes: Mutex::new(HashMap::from([(
            1,
            Node {
                path: root,
                lookups: 1,
            },
        )])),
        files: Mutex::default(),
        dirs: Mutex::default(),
        next_fh: AtomicU64::new(1),
    };
    if let Some(sock) = stats {
        let _ = fs::remove_file(sock);
        let listener = UnixListener::bind(sock)?;
        std::thread::spawn(move || serve_stats(listener, counts));
    }
    // Every thread started from here on leaves SIGTERM/SIGINT/SIGHUP to the waiter below.
    sys::block_termination_signals()?;
    let mut cfg = Config::default();
    cfg.mount_options = vec![
        MountOption::FSName("virtiofs-standin".into()),
        MountOption::Subtype("virtiofs_standin".into()),
        MountOption::DefaultPermissions,
    ];
    cfg.acl = SessionACL::All; // allow_other, as the virtiofs driver mounts
    cfg.n_threads = Some(threads.max(1));
    cfg.clone_fd = true;
    let mut session = Session::new(fs, mountpoint, &cfg)?;
    let mut unmounter = session.unmount_callable();
    std::thread::spawn(move || {
        if sys::wait_signal().is_ok() {
            let _ = unmounter.unmount();
        }
    });
    let r = session.run();
    if let Some(sock) = stats {
        let _ = fs::remove_file(sock);
    }
    r
}

fn usage() -> ExitCode {
    eprintln!("usage: virtiofs_standin serve SOURCE MOUNTPOINT [--stats SOCK] [--threads N]");
    eprintln!("       virtiofs_standin stats SOCK [--reset]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = match args.as_slice() {
        ["stats", sock] => stats(sock, false),
        ["stats", sock, "--reset"] => stats(sock, true),
        ["serve", source, mp, rest @ ..] => {
            let (mut sock, mut threads) = (None, 2);
            for pair in rest.chunks(2) {
                match pair {
                    ["--stats", s] => sock = Some(*s),
                    ["--threads", n] => match n.parse() {
                        Ok(n) => threads = n,
                        Err(_) => return usage(),
                    },
                    _ => return usage(),
                }
            }
            serve(Path::new(source), Path::new(mp), sock, threads)
        }
        _ => return usage(),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("virtiofs_standin: {e}");
            ExitCode::FAILURE
        }
    }
}
