//! The FUSE operations: a passthrough of SOURCE with the caching policy of the mount, plus the
//! replay view (requests from the replay thread are answered from the previous view and never
//! touch SOURCE; see [`super::sync`]).
//!
//! Every operation body returns `io::Result`; the errno the kernel sees is produced in one place,
//! [`errno`].

use std::collections::HashMap;
use std::ffi::{CStr, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType,
    Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};
use tracing::{debug, info, warn};

use super::inode::{EntrySnap, Ino, Key, NEGATIVE_BUDGET, Node, ROOT_INO, Table};
use super::options::{CachePolicy, MountConfig};
use crate::sys;

/// The one place an `io::Error` becomes the errno the kernel sees.
pub fn errno(e: &io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn err(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// What the replay thread is to be told about one name.
#[derive(Debug, Clone, Copy)]
pub enum ViewEntry {
    /// The name did not exist before the change.
    Absent,
    /// The name existed with these attributes before the change.
    Present(EntrySnap),
    /// The virtual trigger file (toggle mode): exists only for the replay.
    Virtual,
}

/// The previous view, consulted only for requests from the replay thread.
#[derive(Default)]
pub struct ReplayView {
    tid: AtomicU32,
    entries: Mutex<HashMap<(Ino, OsString), ViewEntry>>,
}

impl ReplayView {
    /// Make the calling thread the replay thread.
    pub fn claim(&self) {
        self.tid.store(sys::gettid(), Ordering::SeqCst);
    }
    pub fn set(&self, parent: Ino, name: &OsStr, entry: ViewEntry) {
        self.lock().insert((parent, name.to_owned()), entry);
    }
    pub fn clear(&self) {
        self.lock().clear();
    }
    fn get(&self, parent: Ino, name: &OsStr) -> Option<ViewEntry> {
        self.lock().get(&(parent, name.to_owned())).copied()
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(Ino, OsString), ViewEntry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn is_replay(&self, req: &Request) -> bool {
        let t = self.tid.load(Ordering::Relaxed);
        t != 0 && req.pid() == t
    }
}

/// Counters, reported by `vfnotify status` and the benchmark.
#[derive(Default)]
pub struct Stats {
    pub lookups: AtomicU64,
    pub negative_cached: AtomicU64,
    pub opens: AtomicU64,
    pub passthrough_opens: AtomicU64,
    pub passthrough_failed: AtomicU64,
    pub notifications: AtomicU64,
    pub rescans: AtomicU64,
    pub dirs_scanned: AtomicU64,
    pub entries_scanned: AtomicU64,
    pub inval_entry: AtomicU64,
    pub inval_inode: AtomicU64,
    pub inval_delete: AtomicU64,
    pub inval_failed: AtomicU64,
    pub events_replayed: AtomicU64,
    pub replay_failed: AtomicU64,
    pub baselines: AtomicU64,
    pub epoch_bumps: AtomicU64,
    pub local_writes: AtomicU64,
    pub replay_known: AtomicU64,
    pub scope_rejected: AtomicU64,
    pub scan_errors: AtomicU64,
}

macro_rules! stats_json {
    ($s:expr, $($f:ident),*) => { serde_json::json!({ $(stringify!($f): $s.$f.load(Ordering::Relaxed)),* }) };
}

impl Stats {
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    pub fn to_json(&self) -> serde_json::Value {
        stats_json!(
            self,
            lookups,
            negative_cached,
            opens,
            passthrough_opens,
            passthrough_failed,
            notifications,
            rescans,
            dirs_scanned,
            entries_scanned,
            inval_entry,
            inval_inode,
            inval_delete,
            inval_failed,
            events_replayed,
            replay_failed,
            baselines,
            epoch_bumps,
            local_writes,
            replay_known,
            scope_rejected,
            scan_errors
        )
    }
}

/// An open file.
struct OpenFile {
    node: Arc<Node>,
    /// The backing file (none for replay opens).
    fd: Option<OwnedFd>,
    /// Whether this handle counts towards the node's passthrough backing.
    backing: bool,
    writable: bool,
}

/// An open directory; entries are read at the first `readdir` (so a warm `opendir` costs nothing).
struct OpenDir {
    entries: Mutex<Option<Arc<Vec<sys::RawDirent>>>>,
}

enum Handle {
    File(OpenFile),
    Dir(OpenDir),
}

const HANDLE_SHARDS: usize = 16;
type HandleShard = Mutex<HashMap<u64, Arc<Handle>>>;

/// A live name of a node: its parent's fd, the name, and the current attributes.
pub type Resolved = (Arc<OwnedFd>, OsString, libc::stat);

/// State shared by the request handlers and the sync worker.
pub struct Shared {
    pub cfg: MountConfig,
    pub table: Table,
    pub root_fd: Arc<OwnedFd>,
    pub replay: ReplayView,
    pub stats: Stats,
    /// Whether notifications can arrive (a daemon link is up). `cache=always` is honoured only then.
    pub linked: AtomicBool,
    /// When `linked` last changed (seconds since the epoch).
    pub state_since: AtomicU64,
    /// Kernel passthrough negotiated at INIT.
    pub passthrough: AtomicBool,
    /// The kernel's FUSE minor version, from INIT.
    pub kernel_minor: AtomicU32,
    /// SOURCE is itself FUSE (virtiofs): its own name cache may hold a removed or renamed name,
    /// so scoped rescans list the folder instead of looking names up.
    pub source_is_fuse: bool,
    handles: Box<[HandleShard]>,
    next_fh: AtomicU64,
    /// Directory nodes that need a baseline snapshot (drained by the sync worker).
    pub baseline_tx: Mutex<Option<std::sync::mpsc::Sender<super::sync::Job>>>,
}

impl Shared {
    pub fn new(cfg: MountConfig, root_fd: OwnedFd) -> io::Result<Self> {
        let st = sys::fstat(root_fd.as_fd())?;
        let source_is_fuse = sys::is_fuse(root_fd.as_fd()).unwrap_or(false);
        let root_fd = Arc::new(root_fd);
        let linked = cfg.channel.is_none();
        Ok(Shared {
            table: Table::new(
                Key {
                    dev: st.st_dev,
                    ino: st.st_ino,
                },
                root_fd.clone(),
            ),
            root_fd,
            cfg,
            replay: ReplayView::default(),
            stats: Stats::default(),
            linked: AtomicBool::new(linked),
            state_since: AtomicU64::new(unix_now()),
            passthrough: AtomicBool::new(false),
            kernel_minor: AtomicU32::new(0),
            source_is_fuse,
            handles: (0..HANDLE_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            next_fh: AtomicU64::new(1),
            baseline_tx: Mutex::new(None),
        })
    }

    /// The caching policy in force now: `always` falls back to `auto` while unlinked.
    pub fn policy(&self) -> CachePolicy {
        match self.cfg.cache {
            CachePolicy::Always if !self.linked.load(Ordering::Relaxed) => CachePolicy::Auto,
            p => p,
        }
    }

    fn ttl(&self) -> Duration {
        self.policy().ttl()
    }

    fn add_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles[fh as usize % HANDLE_SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, Arc::new(h));
        fh
    }
    fn handle(&self, fh: FileHandle) -> io::Result<Arc<Handle>> {
        self.handles[fh.0 as usize % HANDLE_SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh.0)
            .cloned()
            .ok_or_else(|| err(libc::EBADF))
    }
    fn take_handle(&self, fh: FileHandle) -> Option<Arc<Handle>> {
        self.handles[fh.0 as usize % HANDLE_SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh.0)
    }

    fn node(&self, ino: INodeNo) -> io::Result<Arc<Node>> {
        self.table.get(ino.0).ok_or_else(|| err(libc::ESTALE))
    }

    /// An `O_PATH` fd for a directory node, cached while the budget allows.
    pub fn dir_fd(&self, node: &Node) -> io::Result<Arc<OwnedFd>> {
        if let Some(fd) = node.state().dirfd.clone() {
            return Ok(fd);
        }
        if !node.is_dir {
            return Err(err(libc::ENOTDIR));
        }
        let links = node.state().links.clone();
        let mut last = err(libc::ESTALE);
        for (parent, name) in links {
            let Some(pnode) = self.table.get(parent) else {
                continue;
            };
            let res = self.dir_fd(&pnode).and_then(|pfd| {
                let fd = sys::openat(
                    pfd.as_fd(),
                    &sys::cstr(&name)?,
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                )?;
                let st = sys::fstat(fd.as_fd())?;
                if (Key {
                    dev: st.st_dev,
                    ino: st.st_ino,
                }) != node.key
                {
                    return Err(err(libc::ESTALE));
                }
                Ok(Arc::new(fd))
            });
            match res {
                Ok(fd) => {
                    self.table.cache_dirfd(node, &fd);
                    return Ok(fd);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Find a live name of a node: its parent's fd, the name, and the current attributes.
    pub fn resolve(&self, node: &Node) -> io::Result<Resolved> {
        let links = node.state().links.clone();
        let mut last = err(libc::ESTALE);
        for (parent, name) in links {
            let Some(pnode) = self.table.get(parent) else {
                continue;
            };
            let res = self.dir_fd(&pnode).and_then(|pfd| {
                let st = sys::fstatat(pfd.as_fd(), &sys::cstr(&name)?)?;
                if (Key {
                    dev: st.st_dev,
                    ino: st.st_ino,
                }) != node.key
                {
                    return Err(err(libc::ESTALE));
                }
                Ok((pfd, st))
            });
            match res {
                Ok((pfd, st)) => return Ok((pfd, name, st)),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Current attributes of a node (of an open handle when its last name is gone).
    pub fn stat_node(&self, node: &Node) -> io::Result<libc::stat> {
        if node.is_dir {
            sys::fstat(self.dir_fd(node)?.as_fd())
        } else {
            match self.resolve(node) {
                Ok(r) => Ok(r.2),
                Err(e) => match self.open_fd_of(node) {
                    Some(fd) => sys::fstat(fd.as_fd()),
                    None => Err(e),
                },
            }
        }
    }

    /// Whether a client holds `ino` open for writing (its writes are not host changes).
    pub fn has_writer(&self, ino: Ino) -> bool {
        self.handles.iter().any(|shard| {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            shard
                .values()
                .any(|h| matches!(&**h, Handle::File(f) if f.writable && f.node.ino == ino))
        })
    }

    /// A duplicate of the fd of any open handle of `node` (for files whose names are gone).
    fn open_fd_of(&self, node: &Node) -> Option<OwnedFd> {
        self.handles.iter().find_map(|shard| {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            shard.values().find_map(|h| match &**h {
                Handle::File(OpenFile {
                    node: n,
                    fd: Some(fd),
                    ..
                }) if n.ino == node.ino => fd.try_clone().ok(),
                _ => None,
            })
        })
    }

    /// The FUSE attributes for `st` under node id `ino`.
    pub fn attr(&self, ino: Ino, st: &libc::stat) -> FileAttr {
        // Set-ID bits are shown as they are; `nosuid` (the default) makes the kernel ignore them.
        let perm = (st.st_mode & 0o7777) as u16;
        FileAttr {
            ino: INodeNo(ino),
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            atime: time(st.st_atime, st.st_atime_nsec),
            mtime: time(st.st_mtime, st.st_mtime_nsec),
            ctime: time(st.st_ctime, st.st_ctime_nsec),
            crtime: UNIX_EPOCH,
            kind: kind(st.st_mode),
            perm,
            nlink: st.st_nlink as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev as u32,
            blksize: st.st_blksize as u32,
            flags: 0,
        }
    }

    /// Record a lookup of `(parent, name)` → `st` and build the entry reply's attributes.
    fn enter(&self, parent: Ino, name: &OsStr, st: &libc::stat) -> (Arc<Node>, FileAttr) {
        let snap = EntrySnap::from_stat(st);
        let (node, created) = self
            .table
            .lookup(snap.key, snap.is_dir(), parent, name, Some(snap));
        if created && node.is_dir && self.cfg.channel.is_some() {
            self.request_baseline(node.ino);
        }
        let attr = self.attr(node.ino, st);
        (node, attr)
    }

    fn request_baseline(&self, ino: Ino) {
        if let Some(tx) = self
            .baseline_tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            let _ = tx.send(super::sync::Job::Baseline(ino));
        }
    }

    /// Keep a directory's snapshot in step with a change made through the overlay, so the next
    /// rescan does not report it again as a host change.
    fn note_local(&self, parent: Ino, name: &OsStr, st: Option<&libc::stat>) {
        let Some(pnode) = self.table.get(parent) else {
            return;
        };
        let dir_st = self
            .dir_fd(&pnode)
            .and_then(|fd| sys::fstat(fd.as_fd()))
            .ok();
        let mut ps = pnode.state();
        ps.negatives.remove(name);
        if let Some(d) = dir_st {
            ps.attr = Some(EntrySnap::from_stat(&d));
        }
        if let Some(snap) = ps.snapshot.as_mut() {
            match st {
                Some(st) => {
                    snap.insert(name.to_owned(), EntrySnap::from_stat(st));
                }
                None => {
                    snap.remove(name);
                }
            }
        }
    }

    /// After a local change to a node's attributes or data, refresh its snapshot entries.
    fn note_local_node(&self, node: &Node, st: &libc::stat) {
        let links = node.state().links.clone();
        for (parent, name) in links {
            if let Some(pnode) = self.table.get(parent) {
                if let Some(snap) = pnode.state().snapshot.as_mut() {
                    if let Some(e) = snap.get_mut(&name) {
                        *e = EntrySnap::from_stat(st);
                    }
                }
            }
        }
        node.state().attr = Some(EntrySnap::from_stat(st));
    }

    fn unlink_child(&self, child: Option<Arc<Node>>, parent: Ino, name: &OsStr) {
        if let Some(c) = child {
            c.state()
                .links
                .retain(|(p, n)| !(*p == parent && n == name));
        }
    }

    /// The child node currently known under `(parent, name)`, found through the parent's snapshot
    /// or by statting SOURCE.
    fn child_of(&self, parent: &Node, name: &OsStr) -> Option<Arc<Node>> {
        let key = parent
            .state()
            .snapshot
            .as_ref()
            .and_then(|s| s.get(name).map(|e| e.key));
        let key = match key {
            Some(k) => k,
            None => {
                let pfd = self.dir_fd(parent).ok()?;
                let st = sys::fstatat(pfd.as_fd(), &sys::cstr(name).ok()?).ok()?;
                Key {
                    dev: st.st_dev,
                    ino: st.st_ino,
                }
            }
        };
        let node = self.table.get(self.table.ino_for(key))?;
        (node.key == key
            && node
                .state()
                .links
                .iter()
                .any(|(p, n)| *p == parent.ino && n == name))
        .then_some(node)
    }

    fn fopen_flags(&self, dir: bool) -> FopenFlags {
        match self.policy() {
            CachePolicy::Always if dir => {
                FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR
            }
            CachePolicy::Always => FopenFlags::FOPEN_KEEP_CACHE | NOFLUSH,
            _ if dir => FopenFlags::empty(),
            _ => NOFLUSH,
        }
    }

    /// Write audit record (`-o audit`).
    fn audit(&self, req: &Request, op: &str, parent: Ino, name: Option<&OsStr>) {
        if !self.cfg.audit {
            return;
        }
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", req.pid())).unwrap_or_default();
        let path = self.path_of(parent, name);
        info!(target: "vfnotify::audit", op, uid = req.uid(), gid = req.gid(), pid = req.pid(),
            process = comm.trim_end(), path = %path.display(), "audit");
    }

    /// A best-effort relative path for a node (and an optional child name), for logs and audit:
    /// where the chain of names is broken (a folder forgotten meanwhile), the part that is known,
    /// under `?`.
    pub fn path_of(&self, ino: Ino, name: Option<&OsStr>) -> std::path::PathBuf {
        self.try_path_of(ino, name)
            .unwrap_or_else(|partial| std::path::Path::new("?").join(partial))
    }

    /// The relative path of a node (and an optional child name) through the mount, from the
    /// names the kernel was told; `Err(partial)` when a folder on the way is no longer known
    /// (forgotten by the kernel) or has no name, so the path cannot be trusted.
    pub fn try_path_of(
        &self,
        ino: Ino,
        name: Option<&OsStr>,
    ) -> Result<std::path::PathBuf, std::path::PathBuf> {
        self.table.path_of(ino, name)
    }

    fn check_writable(&self, req: &Request) -> io::Result<()> {
        if self.cfg.read_only && !self.replay.is_replay(req) {
            Err(err(libc::EROFS))
        } else {
            Ok(())
        }
    }

    /// Kernel passthrough for an open of `node`: the backing id every open handle of the inode
    /// shares (registered from `fd` by the first open), counted per handle. `None`: serve the
    /// data here (passthrough off or refused; a refusal is counted).
    fn attach_backing(
        &self,
        node: &Node,
        fd: Option<&OwnedFd>,
        register: impl FnOnce(&OwnedFd) -> io::Result<fuser::BackingId>,
    ) -> Option<Arc<fuser::BackingId>> {
        if !self.passthrough.load(Ordering::Relaxed) {
            return None;
        }
        let existing = node.state().backing.as_ref().map(|(b, _)| b.clone());
        let b = match existing {
            Some(b) => b,
            None => match register(fd?) {
                Ok(b) => Arc::new(b),
                Err(e) => {
                    Stats::bump(&self.stats.passthrough_failed);
                    debug!("passthrough unavailable for {}: {e}", node.ino);
                    return None;
                }
            },
        };
        let mut st = node.state();
        let b = match st.backing.as_mut() {
            // A concurrent open registered first: every handle must use the same id.
            Some((shared, n)) => {
                *n += 1;
                shared.clone()
            }
            None => {
                st.backing = Some((b.clone(), 1));
                b
            }
        };
        drop(st);
        Stats::bump(&self.stats.passthrough_opens);
        Some(b)
    }

    /// Give a newly created object the requester's ownership (as the kernel would for a local
    /// filesystem): uid of the caller; gid of the caller unless the parent is set-group-ID.
    fn own(
        &self,
        req: &Request,
        pfd: BorrowedFd<'_>,
        name: &CStr,
        parent_st: &libc::stat,
        mode: u32,
    ) -> io::Result<libc::stat> {
        let gid = if parent_st.st_mode & libc::S_ISGID != 0 {
            u32::MAX
        } else {
            req.gid()
        };
        let st = sys::fstatat(pfd, name)?;
        if (req.uid() != st.st_uid) || (gid != u32::MAX && gid != st.st_gid) {
            sys::fchownat(pfd, name, req.uid(), gid)?;
            // chown clears set-user/group-ID bits: restore what was asked for.
            if mode & 0o6000 != 0 && st.st_mode & libc::S_IFMT != libc::S_IFLNK {
                sys::fchmodat_nofollow(pfd, name, st.st_mode & 0o7777)?;
            }
            return sys::fstatat(pfd, name);
        }
        Ok(st)
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn time(s: i64, ns: i64) -> SystemTime {
    if s >= 0 {
        UNIX_EPOCH + Duration::new(s as u64, ns as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(s.unsigned_abs()) + Duration::from_nanos(ns as u64)
    }
}

fn set_time(t: Option<TimeOrNow>) -> sys::SetTime {
    match t {
        None => sys::SetTime::Omit,
        Some(TimeOrNow::Now) => sys::SetTime::Now,
        Some(TimeOrNow::SpecificTime(t)) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => sys::SetTime::At(d.as_secs() as i64, d.subsec_nanos() as i64),
            // fuser 0.18 decodes a time before the epoch, (secs < 0, nsecs), as
            // -(|secs| + nsecs) instead of secs + nsecs; undo that to get the kernel's fields
            // back (Cargo.lock pins the version; `pre_epoch_times_round_trip` checks it).
            Err(e) => {
                let d = e.duration();
                sys::SetTime::At(-(d.as_secs() as i64), d.subsec_nanos() as i64)
            }
        },
    }
}

/// The FUSE file type of a mode.
pub fn kind(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn dtype_kind(t: u8) -> FileType {
    match t {
        libc::DT_DIR => FileType::Directory,
        libc::DT_LNK => FileType::Symlink,
        libc::DT_FIFO => FileType::NamedPipe,
        libc::DT_SOCK => FileType::Socket,
        libc::DT_CHR => FileType::CharDevice,
        libc::DT_BLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

/// A negative entry: node id 0 with a timeout, which the kernel caches until `inval_entry`.
fn negative() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

/// Replies built from an operation's `io::Result`: the value, or the errno from [`errno`].
trait Answer<T> {
    fn answer(self, s: &Shared, res: io::Result<T>);
}

macro_rules! answer {
    ($reply:ty, $t:ty, |$r:ident, $s:ident, $v:ident| $ok:expr) => {
        impl Answer<$t> for $reply {
            fn answer(self, $s: &Shared, res: io::Result<$t>) {
                let $r = self;
                match res {
                    Ok($v) => $ok,
                    Err(e) => $r.error(errno(&e)),
                }
            }
        }
    };
}

answer!(ReplyEntry, FileAttr, |r, s, a| r.entry(&s.ttl(), &a, GEN));
answer!(ReplyAttr, FileAttr, |r, s, a| r.attr(&s.ttl(), &a));
answer!(ReplyEmpty, (), |r, _s, _v| r.ok());
answer!(ReplyData, Vec<u8>, |r, _s, d| r.data(&d));
answer!(ReplyWrite, usize, |r, _s, n| r.written(n as u32));
answer!(ReplyLseek, i64, |r, _s, o| r.offset(o));

/// An xattr reply: the size asked for (a zero-size request) or the bytes.
enum Xattr {
    Size(usize),
    Data(Vec<u8>),
}

answer!(ReplyXattr, Xattr, |r, _s, x| match x {
    Xattr::Size(n) => r.size(n as u32),
    Xattr::Data(d) => r.data(&d),
});

/// The filesystem handed to fuser.
pub struct OverlayFs {
    pub s: Arc<Shared>,
}

const GEN: Generation = Generation(0);
/// Every file open: the kernel skips FLUSH on close. `flush` has nothing to do here (writes are
/// written through or passed through, POSIX locks stay in the kernel), and the round trip was a
/// fifth of the cost of creating a file.
const NOFLUSH: FopenFlags = FopenFlags::FOPEN_NOFLUSH;

impl OverlayFs {
    fn do_lookup(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
    ) -> io::Result<Option<FileAttr>> {
        let s = &self.s;
        Stats::bump(&s.stats.lookups);
        let pnode = s.node(parent)?;
        if s.replay.is_replay(req) {
            match s.replay.get(parent.0, name) {
                Some(ViewEntry::Absent) => return Err(err(libc::ENOENT)),
                Some(ViewEntry::Present(snap)) => {
                    let (node, _) = s
                        .table
                        .lookup(snap.key, snap.is_dir(), parent.0, name, None);
                    return Ok(Some(s.attr(node.ino, &snap_stat(&snap))));
                }
                Some(ViewEntry::Virtual) => return Err(err(libc::ENOENT)),
                None => {}
            }
        }
        let pfd = s.dir_fd(&pnode)?;
        match sys::fstatat(pfd.as_fd(), &sys::cstr(name)?) {
            Ok(st) => Ok(Some(s.enter(parent.0, name, &st).1)),
            Err(e)
                if e.raw_os_error() == Some(libc::ENOENT) && s.policy() == CachePolicy::Always =>
            {
                let mut ps = pnode.state();
                if ps.negatives.len() < NEGATIVE_BUDGET {
                    ps.negatives.insert(name.to_owned());
                    Stats::bump(&s.stats.negative_cached);
                    Ok(None)
                } else {
                    Err(e)
                }
            }
            Err(e) => Err(e),
        }
    }

    #[allow(clippy::too_many_arguments)] // mirrors the FUSE SETATTR fields
    fn do_setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<FileHandle>,
    ) -> io::Result<FileAttr> {
        let s = &self.s;
        let node = s.node(ino)?;
        if s.replay.is_replay(req) {
            // Replays change nothing: answer with SOURCE's current attributes.
            let st = s.stat_node(&node).or_else(|_| {
                node.state()
                    .attr
                    .map(|a| snap_stat(&a))
                    .ok_or(err(libc::ESTALE))
            })?;
            return Ok(s.attr(node.ino, &st));
        }
        s.check_writable(req)?;
        s.audit(req, "setattr", ino.0, None);
        // Where to act: an open file, the directory itself, or the name in its parent — and for
        // an open file whose last name is gone, any open handle of it.
        let handle_fd: Option<OwnedFd> =
            fh.and_then(|fh| s.handle(fh).ok()).and_then(|h| match &*h {
                Handle::File(OpenFile { fd: Some(fd), .. }) => fd.try_clone().ok(),
                _ => None,
            });
        let (self_fd, at): (Option<OwnedFd>, Option<Resolved>) = if let Some(fd) = handle_fd {
            (Some(fd), None)
        } else if node.is_dir {
            (Some(s.dir_fd(&node)?.as_fd().try_clone_to_owned()?), None)
        } else {
            match s.resolve(&node) {
                Ok(r) => (None, Some(r)),
                Err(e) => (Some(s.open_fd_of(&node).ok_or(e)?), None),
            }
        };
        let cname = sys::cstr(
            at.as_ref()
                .map(|(_, n, _)| n.as_os_str())
                .unwrap_or_default(),
        )?;
        let (target, name): (BorrowedFd<'_>, &CStr) = match (&self_fd, &at) {
            (Some(fd), _) => (fd.as_fd(), c""),
            (None, Some((pfd, _, _))) => (pfd.as_fd(), &cname),
            (None, None) => return Err(err(libc::ESTALE)),
        };
        let on_self = self_fd.is_some();
        let is_link = at
            .as_ref()
            .is_some_and(|(_, _, st)| st.st_mode & libc::S_IFMT == libc::S_IFLNK);
        if uid.is_some() || gid.is_some() {
            sys::fchownat(
                target,
                name,
                uid.unwrap_or(u32::MAX),
                gid.unwrap_or(u32::MAX),
            )?;
        }
        let chmod = |mode: u32| -> io::Result<()> {
            if is_link {
                return Err(err(libc::EOPNOTSUPP));
            }
            if on_self {
                // Reach the object itself through its /proc magic link (works for O_PATH fds).
                let p = std::ffi::CString::new(format!(
                    "/proc/self/fd/{}",
                    std::os::fd::AsRawFd::as_raw_fd(&target)
                ))?;
                sys::fchmodat(sys::cwd(), &p, mode & 0o7777)
            } else {
                sys::fchmodat_nofollow(target, name, mode & 0o7777)
            }
        };
        if let Some(mode) = mode {
            chmod(mode)?;
        }
        if let Some(size) = size {
            if node.is_dir {
                return Err(err(libc::EISDIR));
            }
            if on_self {
                sys::ftruncate(target, size)?;
            } else {
                // truncate(2), not a write open of its own: its close would show on SOURCE as a
                // write session of its own (an IN_CLOSE_WRITE of the emptied file, before the
                // client's write of an O_TRUNC open), which a host watcher would pass on.
                let mut p = format!(
                    "/proc/self/fd/{}/",
                    std::os::fd::AsRawFd::as_raw_fd(&target)
                )
                .into_bytes();
                p.extend_from_slice(name.to_bytes());
                sys::truncate_nofollow(&std::ffi::CString::new(p)?, size)?;
            }
        }
        if atime.is_some() || mtime.is_some() {
            // With an empty name this acts on the fd itself (AT_EMPTY_PATH), O_PATH included.
            sys::utimensat(target, name, set_time(atime), set_time(mtime))?;
        }
        let stat = || {
            if on_self {
                sys::fstat(target)
            } else {
                sys::fstatat(target, &cname)
            }
        };
        let mut st = stat()?;
        // FUSE_HANDLE_KILLPRIV_V2 makes set-user/group-ID clearing ours (see `init`). The kernel
        // asks for it with a SETATTR that carries nothing (file_remove_privs before a write by a
        // caller without CAP_FSETID, and chown(-1, -1)), or with FATTR_KILL_SUIDGID on a
        // truncate, a bit fuser does not pass on: a truncate by anyone but root stands for it.
        let asks_kill = mode.is_none()
            && uid.is_none()
            && gid.is_none()
            && atime.is_none()
            && mtime.is_none()
            && (size.is_none() || req.uid() != 0);
        if asks_kill && !is_link {
            if let Some(m) = without_suid_sgid(st.st_mode) {
                chmod(m)?;
                st = stat()?;
            }
        }
        s.note_local_node(&node, &st);
        Ok(s.attr(node.ino, &st))
    }

    /// mknod / mkdir / symlink: create on SOURCE (or, for the replay thread, only report the
    /// object that already exists there) and enter it.
    fn do_create_node(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        op: &str,
        make: impl FnOnce(BorrowedFd<'_>, &CStr) -> io::Result<()>,
        mode: u32,
    ) -> io::Result<FileAttr> {
        let s = &self.s;
        let pnode = s.node(parent)?;
        if s.replay.is_replay(req) {
            if let Some(ViewEntry::Virtual) = s.replay.get(parent.0, name) {
                let node = s.table.insert_virtual(parent.0, name);
                let mut st = snap_stat(&EntrySnap::from_stat(&sys::fstat(s.root_fd.as_fd())?));
                st.st_mode = libc::S_IFREG | 0o644;
                st.st_size = 0;
                st.st_nlink = 1;
                return Ok(s.attr(node.ino, &st));
            }
            let pfd = s.dir_fd(&pnode)?;
            let st = sys::fstatat(pfd.as_fd(), &sys::cstr(name)?)?;
            return Ok(s.enter(parent.0, name, &st).1);
        }
        s.check_writable(req)?;
        s.audit(req, op, parent.0, Some(name));
        let pfd = s.dir_fd(&pnode)?;
        let cname = sys::cstr(name)?;
        make(pfd.as_fd(), &cname)?;
        let pst = sys::fstat(pfd.as_fd())?;
        let st = s.own(req, pfd.as_fd(), &cname, &pst, mode)?;
        s.note_local(parent.0, name, Some(&st));
        Ok(s.enter(parent.0, name, &st).1)
    }

    fn do_remove(&self, req: &Request, parent: INodeNo, name: &OsStr, dir: bool) -> io::Result<()> {
        let s = &self.s;
        let pnode = s.node(parent)?;
        let child = s.child_of(&pnode, name);
        if !s.replay.is_replay(req) {
            s.check_writable(req)?;
            s.audit(
                req,
                if dir { "rmdir" } else { "unlink" },
                parent.0,
                Some(name),
            );
            let pfd = s.dir_fd(&pnode)?;
            sys::unlinkat(
                pfd.as_fd(),
                &sys::cstr(name)?,
                if dir { libc::AT_REMOVEDIR } else { 0 },
            )?;
            s.note_local(parent.0, name, None);
        }
        if let Some(c) = &child {
            if dir {
                s.table.drop_dirfd(c);
            }
        }
        s.unlink_child(child, parent.0, name);
        Ok(())
    }

    fn do_rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> io::Result<()> {
        let s = &self.s;
        let pnode = s.node(parent)?;
        let npnode = s.node(newparent)?;
        let moved = s.child_of(&pnode, name);
        let replaced = s.child_of(&npnode, newname);
        let exchange = flags.contains(RenameFlags::RENAME_EXCHANGE);
        if !s.replay.is_replay(req) {
            s.check_writable(req)?;
            s.audit(req, "rename", parent.0, Some(name));
            let pfd = s.dir_fd(&pnode)?;
            let npfd = s.dir_fd(&npnode)?;
            sys::renameat2(
                pfd.as_fd(),
                &sys::cstr(name)?,
                npfd.as_fd(),
                &sys::cstr(newname)?,
                flags.bits(),
            )?;
            let st_new = sys::fstatat(npfd.as_fd(), &sys::cstr(newname)?).ok();
            s.note_local(newparent.0, newname, st_new.as_ref());
            // A rename changes the ctime of what moved (a directory's attributes are served
            // from the overlay's view under cache=always, so refresh it).
            if let (Some(m), Some(st)) = (&moved, &st_new) {
                s.note_local_node(m, st);
            }
            if exchange {
                let st_old = sys::fstatat(pfd.as_fd(), &sys::cstr(name)?).ok();
                s.note_local(parent.0, name, st_old.as_ref());
                if let (Some(r), Some(st)) = (&replaced, &st_old) {
                    s.note_local_node(r, st);
                }
            } else {
                s.note_local(parent.0, name, None);
            }
        }
        if let Some(m) = &moved {
            let mut st = m.state();
            st.links.retain(|(p, n)| !(*p == parent.0 && n == name));
            st.links.push((newparent.0, newname.to_owned()));
        }
        if let Some(r) = &replaced {
            let mut st = r.state();
            st.links
                .retain(|(p, n)| !(*p == newparent.0 && n == newname));
            if exchange {
                st.links.push((parent.0, name.to_owned()));
            }
        }
        Ok(())
    }

    fn do_link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
    ) -> io::Result<FileAttr> {
        let s = &self.s;
        let node = s.node(ino)?;
        let npnode = s.node(newparent)?;
        let npfd = s.dir_fd(&npnode)?;
        if !s.replay.is_replay(req) {
            s.check_writable(req)?;
            s.audit(req, "link", newparent.0, Some(newname));
            let (pfd, name, _) = s.resolve(&node)?;
            sys::linkat(
                pfd.as_fd(),
                &sys::cstr(&name)?,
                npfd.as_fd(),
                &sys::cstr(newname)?,
            )?;
        }
        let st = sys::fstatat(npfd.as_fd(), &sys::cstr(newname)?)?;
        if !s.replay.is_replay(req) {
            s.note_local(newparent.0, newname, Some(&st));
            s.note_local_node(&node, &st);
        }
        Ok(s.enter(newparent.0, newname, &st).1)
    }

    /// Open the backing file for a client.
    fn open_backing(&self, node: &Node, flags: i32) -> io::Result<OwnedFd> {
        let strip = libc::O_CREAT
            | libc::O_EXCL
            | libc::O_NOCTTY
            | libc::O_TRUNC
            | libc::O_APPEND
            | libc::O_DIRECT;
        let flags = (flags & !strip) | libc::O_NOFOLLOW;
        let (pfd, name, _) = self.s.resolve(node)?;
        sys::openat(pfd.as_fd(), &sys::cstr(&name)?, flags, 0)
    }

    fn do_read(&self, fh: FileHandle, offset: u64, size: u32) -> io::Result<Vec<u8>> {
        let h = self.s.handle(fh)?;
        let Handle::File(f) = &*h else {
            return Err(err(libc::EISDIR));
        };
        let fd = f.fd.as_ref().ok_or_else(|| err(libc::EBADF))?;
        let mut buf = vec![0u8; size as usize];
        let mut done = 0;
        while done < buf.len() {
            let n = sys::pread(fd.as_fd(), &mut buf[done..], offset + done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        buf.truncate(done);
        Ok(buf)
    }

    fn file_fd(&self, fh: FileHandle) -> io::Result<(Arc<Handle>, ())> {
        let h = self.s.handle(fh)?;
        match &*h {
            Handle::File(f) if f.fd.is_some() => Ok((h.clone(), ())),
            _ => Err(err(libc::EBADF)),
        }
    }

    fn with_fd<T>(
        &self,
        fh: FileHandle,
        f: impl FnOnce(BorrowedFd<'_>) -> io::Result<T>,
    ) -> io::Result<T> {
        let (h, ()) = self.file_fd(fh)?;
        match &*h {
            Handle::File(OpenFile { fd: Some(fd), .. }) => f(fd.as_fd()),
            _ => Err(err(libc::EBADF)),
        }
    }

    fn dir_entries(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
    ) -> io::Result<(Arc<Node>, Arc<Vec<sys::RawDirent>>)> {
        let s = &self.s;
        let node = s.node(ino)?;
        let read = || -> io::Result<Arc<Vec<sys::RawDirent>>> {
            let pathfd = s.dir_fd(&node)?;
            let fd = sys::openat(pathfd.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
            Ok(Arc::new(sys::read_dir(fd.as_fd())?))
        };
        if fh.0 == 0 {
            // No OPENDIR (see `opendir`): the listing lives in the node until it is read out.
            let cached = node.state().listing.clone();
            let entries = match cached {
                Some(l) if offset != 0 => l,
                _ => {
                    let l = read()?;
                    node.state().listing = Some(l.clone());
                    l
                }
            };
            return Ok((node, entries));
        }
        let h = s.handle(fh)?;
        let Handle::Dir(d) = &*h else {
            return Err(err(libc::ENOTDIR));
        };
        let mut slot = d.entries.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() || offset == 0 {
            *slot = Some(read()?);
        }
        Ok((node, slot.clone().unwrap_or_default()))
    }

    /// A listing read without a handle was read to its end: let it go.
    fn listing_done(&self, node: &Node, fh: FileHandle, end: bool) {
        if fh.0 == 0 && end {
            node.state().listing = None;
        }
    }

    fn dot_entries(&self, node: &Node) -> [(Ino, &'static str); 2] {
        let parent = node
            .state()
            .links
            .first()
            .map(|(p, _)| *p)
            .unwrap_or(ROOT_INO);
        [(node.ino, "."), (parent, "..")]
    }

    fn xattr_target(&self, node: &Node) -> io::Result<(Arc<OwnedFd>, OsString)> {
        if node.is_dir {
            Ok((self.s.dir_fd(node)?, OsString::new()))
        } else {
            let (pfd, name, _) = self.s.resolve(node)?;
            Ok((pfd, name))
        }
    }
}

/// A `stat` built from a snapshot (for replies about objects SOURCE no longer has).
pub fn snap_stat(e: &EntrySnap) -> libc::stat {
    let mut st = sys::zeroed_stat();
    st.st_dev = e.key.dev;
    st.st_ino = e.key.ino;
    st.st_mode = e.mode;
    st.st_size = e.size as i64;
    st.st_mtime = e.mtime.0;
    st.st_mtime_nsec = e.mtime.1;
    st.st_ctime = e.ctime.0;
    st.st_ctime_nsec = e.ctime.1;
    st.st_atime = e.atime.0;
    st.st_atime_nsec = e.atime.1;
    st.st_uid = e.uid;
    st.st_gid = e.gid;
    st.st_rdev = e.rdev;
    st.st_nlink = e.nlink;
    st.st_blksize = 4096;
    st
}

/// The mode a write, truncate or chown leaves behind, as the VFS computes it
/// (`should_remove_suid`): set-user-ID goes, set-group-ID goes with group execute. `None`: no
/// change (not a regular file, or neither bit set).
fn without_suid_sgid(mode: u32) -> Option<u32> {
    if mode & libc::S_IFMT != libc::S_IFREG {
        return None;
    }
    let mut m = mode & 0o7777;
    m &= !libc::S_ISUID;
    if m & libc::S_IXGRP != 0 {
        m &= !libc::S_ISGID;
    }
    (m != mode & 0o7777).then_some(m)
}

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
            Ok(Some(attr)) => reply.entry(&self.s.ttl(), &attr, GEN),
            Ok(None) => reply.entry(&self.s.ttl(), &negative(), GEN),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.s.table.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let s = &self.s;
        let res = s.node(ino).and_then(|node| {
            if node.is_virtual {
                let mut st = snap_stat(&EntrySnap::from_stat(&sys::fstat(s.root_fd.as_fd())?));
                st.st_mode = libc::S_IFREG | 0o644;
                st.st_size = 0;
                return Ok(s.attr(node.ino, &st));
            }
            // With long caching, a directory's attributes change only on notification (or a
            // change made through the overlay): the kernel drops a listing's cache whenever it
            // sees a new mtime, and it refetches attributes after every read (atime).
            if node.is_dir && s.policy() == CachePolicy::Always {
                if let Some(a) = node.state().attr {
                    return Ok(s.attr(node.ino, &snap_stat(&a)));
                }
            }
            let st = match fh.and_then(|fh| s.handle(fh).ok()) {
                Some(h) => match &*h {
                    Handle::File(OpenFile { fd: Some(fd), .. }) => sys::fstat(fd.as_fd())?,
                    _ => s.stat_node(&node)?,
                },
                None => s.stat_node(&node)?,
            };
            node.state().attr = Some(EntrySnap::from_stat(&st));
            Ok(s.attr(node.ino, &st))
        });
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
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let res = self.do_create_node(
            req,
            parent,
            name,
            "mknod",
            |pfd, n| sys::mknodat(pfd, n, mode, rdev as u64),
            mode,
        );
        reply.answer(&self.s, res);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let res = self.do_create_node(
            req,
            parent,
            name,
            "mkdir",
            |pfd, n| sys::mkdirat(pfd, n, mode),
            mode,
        );
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
                |pfd, n| sys::symlinkat(&t, pfd, n),
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
        let fd = if node.is_virtual {
            None
        } else if replay {
            // Never a cached open next to passthrough ones (the kernel refuses to mix the two
            // on an inode): register the backing file too; the replay does no I/O through it.
            if s.passthrough.load(Ordering::Relaxed) {
                self.open_backing(&node, libc::O_RDONLY).ok()
            } else {
                None
            }
        } else {
            match self.open_backing(&node, flags.0) {
                Ok(fd) => Some(fd),
                Err(e) => return reply.error(errno(&e)),
            }
        };
        let fopen = s.fopen_flags(false);
        if !node.is_virtual {
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
        _req: &Request,
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
                if let Some(m) = without_suid_sgid(sys::fstat(fd)?.st_mode) {
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
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let s = &self.s;
        let res = (|| -> io::Result<(Arc<Node>, FileAttr, OwnedFd)> {
            s.check_writable(req)?;
            s.audit(req, "create", parent.0, Some(name));
            let pnode = s.node(parent)?;
            let pfd = s.dir_fd(&pnode)?;
            let cname = sys::cstr(name)?;
            let strip = libc::O_NOCTTY | libc::O_APPEND | libc::O_DIRECT | libc::O_TRUNC;
            let base = (flags & !strip) | libc::O_NOFOLLOW;
            // Create exclusively: only a file made here gets the requester's ownership. The name
            // may exist on SOURCE although the kernel was told it does not (a host change not
            // notified yet): then open it as an open(2) without O_EXCL would, truncating if asked.
            let (fd, created) = match sys::openat(
                pfd.as_fd(),
                &cname,
                base | libc::O_CREAT | libc::O_EXCL,
                mode,
            ) {
                Ok(fd) => (fd, true),
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) && flags & libc::O_EXCL == 0 => {
                    let keep = flags & libc::O_TRUNC;
                    (sys::openat(pfd.as_fd(), &cname, base | keep, 0)?, false)
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_epoch_times_round_trip() {
        // What fuser 0.18 hands over for the kernel's (-1, 500_000_000), i.e. -0.5 s.
        let from_fuser = UNIX_EPOCH - Duration::new(1, 500_000_000);
        match set_time(Some(TimeOrNow::SpecificTime(from_fuser))) {
            sys::SetTime::At(s, ns) => assert_eq!((s, ns), (-1, 500_000_000)),
            other => panic!("{other:?}"),
        }
        let whole = UNIX_EPOCH - Duration::from_secs(3);
        assert!(matches!(
            set_time(Some(TimeOrNow::SpecificTime(whole))),
            sys::SetTime::At(-3, 0)
        ));
        let after = UNIX_EPOCH + Duration::new(5, 7);
        assert!(matches!(
            set_time(Some(TimeOrNow::SpecificTime(after))),
            sys::SetTime::At(5, 7)
        ));
    }
}
