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

/// The previous view, consulted only for requests from the replay thread, and the names a
/// notification is being replayed for.
///
/// While a name is *pending* (from the moment the rescan found its change until its replay is
/// done), other clients still get SOURCE's current answer for it, but with no entry or attribute
/// timeout and never as a cached negative entry: the kernel then asks again, and the replay
/// thread's own lookups (answered from the previous view) find the name as it was before the
/// change, whatever other clients looked at meanwhile.
#[derive(Default)]
pub struct ReplayView {
    tid: AtomicU32,
    /// Threads that help the replay thread with independent replays of one notification.
    helpers: [AtomicU32; REPLAY_HELPERS],
    entries: Mutex<HashMap<(Ino, OsString), ViewEntry>>,
    /// Temporary names a replay creates through the mount (a replaced object is replayed as a
    /// rename of a temporary name over the target): temporary name → the real name on SOURCE.
    standins: Mutex<HashMap<(Ino, OsString), OsString>>,
    pending: Mutex<HashMap<Ino, std::collections::HashSet<OsString>>>,
    /// How many names are pending (a lock-free check for the common case: none).
    pending_count: AtomicU64,
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
        lock(&self.standins).clear();
    }
    /// `tmp` in `parent` stands for `real` (the same folder) during a replay.
    pub fn set_standin(&self, parent: Ino, tmp: &OsStr, real: &OsStr) {
        lock(&self.standins).insert((parent, tmp.to_owned()), real.to_owned());
    }
    fn standin(&self, parent: Ino, name: &OsStr) -> Option<OsString> {
        lock(&self.standins)
            .get(&(parent, name.to_owned()))
            .cloned()
    }
    fn get(&self, parent: Ino, name: &OsStr) -> Option<ViewEntry> {
        self.lock().get(&(parent, name.to_owned())).copied()
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(Ino, OsString), ViewEntry>> {
        lock(&self.entries)
    }
    pub fn is_replay(&self, req: &Request) -> bool {
        let t = self.tid.load(Ordering::Relaxed);
        (t != 0 && req.pid() == t)
            || self
                .helpers
                .iter()
                .any(|h| h.load(Ordering::Relaxed) == req.pid())
    }
    /// Make the calling thread a replay helper (slot `i`) until the guard is dropped.
    pub fn claim_helper(&self, i: usize) -> HelperGuard<'_> {
        self.helpers[i].store(sys::gettid(), Ordering::SeqCst);
        HelperGuard(&self.helpers[i])
    }
    /// Mark names as pending (see the type's documentation).
    pub fn mark<'a>(&self, names: impl IntoIterator<Item = (Ino, &'a OsStr)>) {
        let mut p = lock(&self.pending);
        for (dir, name) in names {
            if p.entry(dir).or_default().insert(name.to_owned()) {
                self.pending_count.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    /// No name is pending any more.
    pub fn unmark_all(&self) {
        lock(&self.pending).clear();
        self.pending_count.store(0, Ordering::SeqCst);
    }
    /// Whether `(dir, name)` is pending.
    pub fn is_pending(&self, dir: Ino, name: &OsStr) -> bool {
        self.pending_count.load(Ordering::SeqCst) != 0
            && lock(&self.pending)
                .get(&dir)
                .is_some_and(|s| s.contains(name))
    }
}

/// Most replay helper threads (see [`ReplayView::claim_helper`]).
pub const REPLAY_HELPERS: usize = 3;

/// Releases a replay helper's slot.
pub struct HelperGuard<'a>(&'a AtomicU32);

impl Drop for HelperGuard<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::SeqCst);
    }
}

use crate::util::lock;

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
    pub replay_retries: AtomicU64,
    /// Changes a rescan found on names a client was changing at that moment (the client's).
    pub local_raced: AtomicU64,
    /// Replays skipped because the kernel had forgotten the folder (no watch can be on it).
    pub replay_unheld: AtomicU64,
    /// Content replays whose open for writing was refused (no IN_CLOSE_WRITE).
    pub replay_no_close: AtomicU64,
    pub baselines_uncertain: AtomicU64,
    pub tree_collapsed: AtomicU64,
    pub reach_entries: AtomicU64,
    pub reach_truncated: AtomicU64,
    pub scope_rejected: AtomicU64,
    pub scan_errors: AtomicU64,
    /// Opens that found SOURCE's attributes changed from those the kernel was told.
    pub open_revalidated: AtomicU64,
    /// Of those, opens refused (EACCES) because the fresh attributes deny the caller.
    pub open_refused: AtomicU64,
    /// Of those, changes whose rescan could not be asked for (no trustworthy path).
    pub revalidate_unqueued: AtomicU64,
    /// Reports of such rescans dropped before they reached watch subscribers (too many held).
    pub revalidate_unreported: AtomicU64,
    /// Changes of the mount's own flags seen (`mount -o remount,...`).
    pub remounts: AtomicU64,
    /// Creates whose umask this server applied itself (no per-thread umask available).
    pub umask_fallbacks: AtomicU64,
    /// Handles of forgotten objects kept for `open_by_handle_at`, found again by one, and
    /// dropped to stay within the budget.
    pub handles_kept: AtomicU64,
    pub handles_found: AtomicU64,
    pub handles_dropped: AtomicU64,
}

macro_rules! stats_json {
    // A map built field by field (`json!` with this many fields exceeds the recursion limit).
    ($s:expr, $($f:ident),*) => {{
        let mut m = serde_json::Map::new();
        $(m.insert(stringify!($f).into(), $s.$f.load(Ordering::Relaxed).into());)*
        serde_json::Value::Object(m)
    }};
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
            replay_retries,
            local_raced,
            replay_unheld,
            replay_no_close,
            baselines_uncertain,
            tree_collapsed,
            reach_entries,
            reach_truncated,
            scope_rejected,
            scan_errors,
            open_revalidated,
            open_refused,
            revalidate_unqueued,
            revalidate_unreported,
            remounts,
            umask_fallbacks,
            handles_kept,
            handles_found,
            handles_dropped
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
    /// `FUSE_DONT_MASK` negotiated at INIT: creates carry the client's umask for us to apply.
    pub dont_mask: AtomicBool,
    /// The kernel's FUSE minor version, from INIT.
    pub kernel_minor: AtomicU32,
    /// SOURCE is itself FUSE (virtiofs): its own name cache may hold a removed or renamed name,
    /// so scoped rescans list the folder instead of looking names up.
    pub source_is_fuse: bool,
    handles: Box<[HandleShard]>,
    next_fh: AtomicU64,
    /// Directory nodes that need a baseline snapshot (drained by the sync worker).
    pub baseline_tx: Mutex<Option<std::sync::mpsc::Sender<super::sync::Job>>>,
    /// Client operations under way (see [`super::local_ops`]).
    pub local: super::local_ops::LocalOps,
    /// Rescans asked for by opens that found a file changed (see [`super::access`]).
    pub revalidating: super::access::Pending,
    /// Their reports, in order: the changes they found go to watch subscribers with the next
    /// notification's (see [`Shared::take_revalidation_records`]).
    revalidation_reports: Mutex<std::collections::VecDeque<RevalidationReport>>,
    /// The per-mount flags of MOUNTPOINT as they are now (they change with `remount`).
    pub flags: MountFlagsNow,
    /// Where the overlay is mounted (for reading its flags back from the mount table).
    pub mountpoint: std::sync::OnceLock<std::path::PathBuf>,
    /// What is needed to find objects again by the handles the guest kernel encoded for them.
    export: Export,
    /// The original atime flags of the private copy of SOURCE's mount that `root_fd` is on;
    /// unset when SOURCE is reached directly (see `overlay::private_source`).
    pub source_atime: std::sync::OnceLock<(sys::mount_api::Atime, bool)>,
}

/// Handles of forgotten objects kept at most (about 100 bytes each).
pub const KEPT_HANDLES: usize = 65_536;

/// Finding objects again by the handles the guest kernel encodes for overlay files
/// (`FUSE_EXPORT_SUPPORT`: `name_to_handle_at`, NFS export, fanotify FIDs). The kernel's handle
/// is (node id, generation 0); while it holds the inode it needs nothing from us, and once it
/// has forgotten it, it asks `LOOKUP(id, ".")` (and `LOOKUP(dir, "..")` to reconnect folders).
/// Node ids are SOURCE's inode numbers, which cannot be opened as such: so when the kernel
/// forgets a node, SOURCE's own handle for it is kept (for a file: its folder's handle and its
/// name), bounded by [`KEPT_HANDLES`], oldest dropped first (counted). Handles therefore do not
/// outlive the server (a new mount starts with none), as on filesystems without stable handles.
#[derive(Default)]
struct Export {
    kept: Mutex<KeptHandles>,
    /// Nodes found again by a handle, reached through it until the kernel forgets them.
    found: Mutex<HashMap<Ino, Kept>>,
    /// SOURCE cannot encode handles (EOPNOTSUPP once): keep nothing.
    unsupported: AtomicBool,
    /// An fd on SOURCE that `open_by_handle_at` takes as its mount (not `O_PATH`).
    mount_fd: std::sync::OnceLock<OwnedFd>,
}

/// How to reach a forgotten object of SOURCE again.
#[derive(Debug, Clone)]
enum Kept {
    Dir {
        key: Key,
        handle: sys::handle::FileHandle,
    },
    /// A non-directory by the folder it was in and its name there: that also shows it is still
    /// inside SOURCE.
    File {
        key: Key,
        folder_key: Key,
        folder: sys::handle::FileHandle,
        name: OsString,
    },
}

impl Kept {
    fn key(&self) -> Key {
        match self {
            Kept::Dir { key, .. } | Kept::File { key, .. } => *key,
        }
    }
}

#[derive(Default)]
struct KeptHandles {
    map: HashMap<Ino, (u64, Kept)>,
    order: std::collections::VecDeque<(Ino, u64)>,
    seq: u64,
}

impl KeptHandles {
    /// Keep `k` for `ino`; returns how many older ones were dropped for room.
    fn insert(&mut self, ino: Ino, k: Kept) -> u64 {
        self.seq += 1;
        self.map.insert(ino, (self.seq, k));
        self.order.push_back((ino, self.seq));
        let mut dropped = 0;
        while self.map.len() > KEPT_HANDLES {
            let Some((old, seq)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|(s, _)| *s == seq) {
                self.map.remove(&old);
                dropped += 1;
            }
        }
        // Stale positions (an id kept again later) are skipped when they come up; bound them too.
        if self.order.len() > 2 * KEPT_HANDLES {
            let map = &self.map;
            self.order
                .retain(|(i, s)| map.get(i).is_some_and(|(cur, _)| cur == s));
        }
        dropped
    }
}

/// MOUNTPOINT's per-mount flags that change what the server does, following `remount`.
#[derive(Default)]
pub struct MountFlagsNow {
    pub read_only: AtomicBool,
    pub noatime: AtomicBool,
    pub nodiratime: AtomicBool,
}

impl MountFlagsNow {
    /// Take the flags mountinfo shows now; whether they changed.
    pub fn apply(&self, f: &super::options::PerMount) -> bool {
        let a = self.read_only.swap(f.read_only, Ordering::SeqCst) != f.read_only;
        let b = self.noatime.swap(f.noatime, Ordering::SeqCst) != f.noatime;
        let c = self.nodiratime.swap(f.nodiratime, Ordering::SeqCst) != f.nodiratime;
        a || b || c
    }
}

type RevalidationReport = std::sync::mpsc::Receiver<super::sync::NotifyReport>;

/// Most revalidation reports held for watch subscribers (the oldest go first, counted).
const REVALIDATION_REPORTS: usize = 1024;

impl Shared {
    pub fn new(cfg: MountConfig, root_fd: OwnedFd) -> io::Result<Self> {
        let st = sys::fstat(root_fd.as_fd())?;
        let source_is_fuse = sys::is_fuse(root_fd.as_fd()).unwrap_or(false);
        let root_fd = Arc::new(root_fd);
        let linked = cfg.channel.is_none();
        let (cfg_read_only, cfg_noatime, cfg_nodiratime) =
            (cfg.read_only, cfg.noatime, cfg.nodiratime);
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
            dont_mask: AtomicBool::new(false),
            kernel_minor: AtomicU32::new(0),
            source_is_fuse,
            handles: (0..HANDLE_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            next_fh: AtomicU64::new(1),
            baseline_tx: Mutex::new(None),
            local: Default::default(),
            revalidating: super::access::Pending::default(),
            revalidation_reports: Mutex::default(),
            flags: MountFlagsNow {
                read_only: AtomicBool::new(cfg_read_only),
                noatime: AtomicBool::new(cfg_noatime),
                nodiratime: AtomicBool::new(cfg_nodiratime),
            },
            mountpoint: std::sync::OnceLock::new(),
            export: Export::default(),
            source_atime: std::sync::OnceLock::new(),
        })
    }

    /// The changes found by the rescans that opens asked for and the worker has done, in order
    /// (for watch subscribers: the link reports them with the next notification's; a rescan
    /// queued after that notification's is reported with the following one).
    pub fn take_revalidation_records(&self) -> Vec<super::sync::ChangeRecord> {
        let mut q = lock(&self.revalidation_reports);
        let mut out = Vec::new();
        while let Some(rx) = q.front() {
            match rx.try_recv() {
                Ok(report) => out.extend(report.records),
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {}
            }
            q.pop_front();
        }
        out
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

    /// The entry timeout for telling the kernel about `(parent, name)`: none while a replay for
    /// that name is pending (see [`ReplayView`]), unless the replay thread itself asks.
    fn entry_ttl(&self, req: &Request, parent: Ino, name: &OsStr) -> Duration {
        if !self.replay.is_replay(req) && self.replay.is_pending(parent, name) {
            Duration::ZERO
        } else {
            self.ttl()
        }
    }

    /// How long the kernel may keep the attributes of `node` just read. A file open for writing
    /// with kernel passthrough may be written through a shared mapping, which changes its times
    /// on SOURCE without a request reaching us (nor, after `msync`, any invalidation): its
    /// attributes are not cached while a writer has it open.
    fn attr_ttl(&self, node: &Node) -> Duration {
        if !node.is_dir && node.state().backing.is_some() && self.has_writer(node.ino) {
            Duration::ZERO
        } else {
            self.ttl()
        }
    }

    fn add_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles[fh as usize % HANDLE_SHARDS]).insert(fh, Arc::new(h));
        fh
    }
    fn handle(&self, fh: FileHandle) -> io::Result<Arc<Handle>> {
        lock(&self.handles[fh.0 as usize % HANDLE_SHARDS])
            .get(&fh.0)
            .cloned()
            .ok_or_else(|| err(libc::EBADF))
    }
    fn take_handle(&self, fh: FileHandle) -> Option<Arc<Handle>> {
        lock(&self.handles[fh.0 as usize % HANDLE_SHARDS]).remove(&fh.0)
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
        // A folder found again by its handle and not named since.
        if let Some(k @ Kept::Dir { .. }) = self.found_of(node.ino) {
            let fd = Arc::new(self.reach(&k)?.0);
            self.table.cache_dirfd(node, &fd);
            return Ok(fd);
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
        // A file found again by its handle: through the folder and name it had then.
        if let Some(k @ Kept::File { .. }) = self.found_of(node.ino) {
            let (pfd, name) = self.reach(&k)?;
            let st = sys::fstatat(pfd.as_fd(), &sys::cstr(&name)?)?;
            return Ok((Arc::new(pfd), name, st));
        }
        Err(last)
    }

    /// Current attributes of a node (of an open handle when its last name is gone).
    pub fn stat_node(&self, node: &Node) -> io::Result<libc::stat> {
        if node.is_dir {
            match self.dir_fd(node) {
                Ok(fd) => sys::fstat(fd.as_fd()),
                // A folder removed through the overlay (rmdir, or replaced by a rename) that a
                // client still holds open: what was seen of it when it went (link count 0).
                Err(e) => {
                    let st = node.state();
                    match st.attr {
                        Some(a) if st.links.is_empty() && a.nlink == 0 => Ok(snap_stat(&a)),
                        _ => Err(e),
                    }
                }
            }
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
            let shard = lock(shard);
            shard
                .values()
                .any(|h| matches!(&**h, Handle::File(f) if f.writable && f.node.ino == ino))
        })
    }

    /// A duplicate of the fd of any open handle of `node` (for files whose names are gone).
    fn open_fd_of(&self, node: &Node) -> Option<OwnedFd> {
        self.handles.iter().find_map(|shard| {
            let shard = lock(shard);
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
        if let Some(tx) = lock(&self.baseline_tx).as_ref() {
            let _ = tx.send(super::sync::Job::Baseline(ino));
        }
    }

    /// Keep a directory's snapshot in step with a change made through the overlay, so the next
    /// rescan does not report it again as a host change.
    fn note_local(&self, parent: Ino, name: &OsStr, st: Option<&libc::stat>) {
        let Some(pnode) = self.table.get(parent) else {
            return;
        };
        let dir_fd = self.dir_fd(&pnode).ok();
        let dir_st = dir_fd.as_ref().and_then(|fd| sys::fstat(fd.as_fd()).ok());
        // With its birth time, as rescans record entries: a number SOURCE frees and reuses
        // at once (ext4) must not pass for the object made here.
        let btime = match (st, &dir_fd) {
            (Some(st), Some(fd)) => sys::cstr(name)
                .and_then(|n| sys::fstatat_fresh_btime(fd.as_fd(), &n))
                .ok()
                .filter(|(now, _)| (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino))
                .and_then(|(_, b)| b),
            _ => None,
        };
        let mut ps = pnode.state();
        ps.negatives.remove(name);
        if let Some(d) = dir_st {
            ps.attr = Some(EntrySnap::from_stat(&d));
        }
        if let Some(snap) = ps.snapshot.as_mut() {
            match st {
                Some(st) => {
                    snap.insert(name.to_owned(), EntrySnap::from_stat(st).with_btime(btime));
                }
                None => {
                    snap.remove(name);
                }
            }
        }
    }

    /// A client operation on a node's names (attributes, xattrs) begins.
    fn local_node(&self, node: &Node) -> super::local_ops::LocalGuard<'_> {
        let links = node.state().links.clone();
        let names: Vec<(Ino, &OsStr)> = links.iter().map(|(p, n)| (*p, n.as_os_str())).collect();
        self.local.begin(&names)
    }

    /// Record `entry` for `(parent, name)` in the parent's view as it is.
    fn note_local_entry(&self, parent: Ino, name: &OsStr, entry: EntrySnap) {
        if let Some(pnode) = self.table.get(parent) {
            let mut ps = pnode.state();
            ps.negatives.remove(name);
            if let Some(snap) = ps.snapshot.as_mut() {
                snap.insert(name.to_owned(), entry);
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
                        // The same object: its birth time stays.
                        let btime = (e.key == EntrySnap::from_stat(st).key).then_some(e.btime);
                        *e = EntrySnap::from_stat(st).with_btime(btime);
                    }
                }
            }
        }
        node.state().attr = Some(EntrySnap::from_stat(st));
    }

    /// A folder removed through the overlay: the attributes it has now (link count 0, a new
    /// ctime), read through an fd taken before it went, are what a client holding it open sees
    /// (under `cache=always` a folder's attributes are answered from `attr`).
    fn note_removed_dir(&self, node: &Node, fd: &OwnedFd) {
        if let Ok(st) = sys::fstat(fd.as_fd()) {
            node.state().attr = Some(EntrySnap::from_stat(&st));
        }
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
        if !self.flags.read_only.load(Ordering::Relaxed) || self.replay.is_replay(req) {
            return Ok(());
        }
        // The flag follows the mount table from a thread of its own; a `remount,rw` that has
        // just returned may not have reached it yet: look at the table itself before refusing.
        if let Some(now) = self.per_mount_now() {
            if self.flags.apply(&now) {
                Stats::bump(&self.stats.remounts);
                self.apply_source_atime();
            }
            if !now.read_only {
                return Ok(());
            }
        }
        Err(err(libc::EROFS))
    }

    /// Give the private copy of SOURCE's mount the atime flags MOUNTPOINT has now: `noatime`
    /// and `nodiratime` are added to what SOURCE's mount had, never taken from it. A refusal is
    /// logged (atime then moves on passthrough reads).
    pub fn apply_source_atime(&self) {
        let Some(&(orig, orig_nodir)) = self.source_atime.get() else {
            return;
        };
        let f = &self.flags;
        let atime = if f.noatime.load(Ordering::SeqCst) {
            sys::mount_api::Atime::NoAtime
        } else {
            orig
        };
        let nodir = orig_nodir || f.nodiratime.load(Ordering::SeqCst);
        if let Err(e) = sys::mount_api::set_atime(self.root_fd.as_fd(), atime, nodir) {
            warn!("atime flags of the private SOURCE mount: {e}");
        }
    }

    /// MOUNTPOINT's per-mount flags as /proc/self/mountinfo shows them now (a procfs read, never
    /// a request to this filesystem, so handlers may call it).
    pub fn per_mount_now(&self) -> Option<super::options::PerMount> {
        let mp = self.mountpoint.get()?;
        let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        crate::mountinfo::parse_mountinfo_options(&info, "fuse.vfnotify", mp)
            .map(|o| super::options::PerMount::parse(&o))
    }

    /// Extra open flags for reading SOURCE on a client's behalf: `O_NOATIME` while the mount is
    /// `noatime` (or `nodiratime`, for folders), so the atime the guest sees does not move.
    fn atime_flags(&self, dir: bool) -> i32 {
        let f = &self.flags;
        if f.noatime.load(Ordering::Relaxed) || (dir && f.nodiratime.load(Ordering::Relaxed)) {
            libc::O_NOATIME
        } else {
            0
        }
    }

    /// The kernel is about to forget `node`: what will find it again (see [`Export`]).
    fn keep_for_export(&self, node: &Node) -> Option<Kept> {
        if node.is_virtual
            || node.ino == ROOT_INO
            || node.ino != node.key.ino
            || self.export.unsupported.load(Ordering::Relaxed)
        {
            return None;
        }
        let res = if node.is_dir {
            self.dir_fd(node).and_then(|fd| {
                Ok(Kept::Dir {
                    key: node.key,
                    handle: sys::handle::name_to_handle_at(fd.as_fd(), c"")?,
                })
            })
        } else {
            self.resolve(node).and_then(|(pfd, name, _)| {
                let fst = sys::fstat(pfd.as_fd())?;
                Ok(Kept::File {
                    key: node.key,
                    folder_key: Key {
                        dev: fst.st_dev,
                        ino: fst.st_ino,
                    },
                    folder: sys::handle::name_to_handle_at(pfd.as_fd(), c"")?,
                    name,
                })
            })
        };
        match res {
            Ok(k) => Some(k),
            Err(e) => {
                if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                    info!(
                        "SOURCE cannot encode file handles: open_by_handle_at on the overlay works only while the kernel holds the inode"
                    );
                    self.export.unsupported.store(true, Ordering::Relaxed);
                }
                None
            }
        }
    }

    /// The kernel forgot `ino` (the node is gone from the table): keep `kept` for it.
    fn forgotten(&self, ino: Ino, kept: Option<Kept>) {
        lock(&self.export.found).remove(&ino);
        if let Some(k) = kept {
            let dropped = lock(&self.export.kept).insert(ino, k);
            Stats::bump(&self.stats.handles_kept);
            self.stats
                .handles_dropped
                .fetch_add(dropped, Ordering::Relaxed);
        }
    }

    /// Open a folder of SOURCE by `handle` (`O_PATH`), checking it is `key` and inside SOURCE.
    fn open_kept_dir(&self, handle: &sys::handle::FileHandle, key: Key) -> io::Result<OwnedFd> {
        let mount = match self.export.mount_fd.get() {
            Some(fd) => fd,
            None => {
                let fd = sys::openat(
                    self.root_fd.as_fd(),
                    c".",
                    libc::O_RDONLY | libc::O_DIRECTORY,
                    0,
                )?;
                self.export.mount_fd.get_or_init(|| fd)
            }
        };
        let fd = sys::handle::open_by_handle_at(
            mount.as_fd(),
            handle,
            libc::O_PATH | libc::O_DIRECTORY,
        )?;
        let st = sys::fstat(fd.as_fd())?;
        if (Key {
            dev: st.st_dev,
            ino: st.st_ino,
        }) != key
        {
            return Err(err(libc::ESTALE));
        }
        self.inside_source(&fd)?;
        Ok(fd)
    }

    /// Whether the folder `fd` is SOURCE or below it: its `..` chain reaches SOURCE's root
    /// (handles are for the whole filesystem, and the host may have moved a folder out of the
    /// share since). ESTALE otherwise.
    fn inside_source(&self, fd: &OwnedFd) -> io::Result<()> {
        let root = sys::fstat(self.root_fd.as_fd())?;
        let mut cur = fd.try_clone()?;
        for _ in 0..4096 {
            let st = sys::fstat(cur.as_fd())?;
            if (st.st_dev, st.st_ino) == (root.st_dev, root.st_ino) {
                return Ok(());
            }
            let up = sys::openat(cur.as_fd(), c"..", libc::O_PATH | libc::O_DIRECTORY, 0)?;
            let ust = sys::fstat(up.as_fd())?;
            if (ust.st_dev, ust.st_ino) == (st.st_dev, st.st_ino) {
                break;
            }
            cur = up;
        }
        Err(err(libc::ESTALE))
    }

    /// Reach what `k` names: a folder's own fd (and no name), or a non-directory's folder fd
    /// and its name there, checked to be the same object.
    fn reach(&self, k: &Kept) -> io::Result<(OwnedFd, OsString)> {
        match k {
            Kept::Dir { key, handle } => Ok((self.open_kept_dir(handle, *key)?, OsString::new())),
            Kept::File {
                key,
                folder_key,
                folder,
                name,
            } => {
                let fd = self.open_kept_dir(folder, *folder_key)?;
                let st = sys::fstatat(fd.as_fd(), &sys::cstr(name)?)?;
                if (Key {
                    dev: st.st_dev,
                    ino: st.st_ino,
                }) != *key
                {
                    return Err(err(libc::ESTALE));
                }
                Ok((fd, name.clone()))
            }
        }
    }

    /// How a node found again by a handle (and not by a name since) is reached.
    fn found_of(&self, ino: Ino) -> Option<Kept> {
        lock(&self.export.found).get(&ino).cloned()
    }

    /// LOOKUP(ino, "."): the kernel lost the inode of a handle it decoded. The node if the
    /// overlay still has it (a FORGET in flight), else found again by what was kept; the kernel
    /// takes a reference on success.
    fn lookup_self(&self, ino: Ino) -> io::Result<FileAttr> {
        let node = match self.table.get(ino) {
            Some(n) => n,
            None => self.revive(ino)?,
        };
        let st = self.stat_node(&node)?;
        node.state().nlookup += 1;
        Ok(self.attr(node.ino, &st))
    }

    fn revive(&self, ino: Ino) -> io::Result<Arc<Node>> {
        let kept = lock(&self.export.kept)
            .map
            .get(&ino)
            .map(|(_, k)| k.clone())
            .ok_or_else(|| err(libc::ESTALE))?;
        let is_dir = matches!(kept, Kept::Dir { .. });
        // Reachable first, then entered with no name (the kernel reconnects folders by
        // LOOKUP(dir, "..") and a listing of the parent, which names them again).
        let (fd, _) = self.reach(&kept)?;
        lock(&self.export.found).insert(ino, kept.clone());
        let (node, created) = self.table.node_for(kept.key(), is_dir);
        if is_dir {
            self.table.cache_dirfd(&node, &Arc::new(fd));
        }
        if created && is_dir && self.cfg.channel.is_some() {
            self.request_baseline(node.ino);
        }
        Stats::bump(&self.stats.handles_found);
        Ok(node)
    }

    /// LOOKUP(dir, ".."): the parent of a folder the kernel holds without its path (found by a
    /// handle); the kernel takes a reference on success.
    fn lookup_parent(&self, ino: Ino) -> io::Result<FileAttr> {
        let node = self.table.get(ino).ok_or_else(|| err(libc::ESTALE))?;
        if !node.is_dir {
            return Err(err(libc::ENOTDIR));
        }
        let known = match node.ino {
            ROOT_INO => Some(node.clone()),
            _ => node
                .state()
                .links
                .first()
                .and_then(|(p, _)| self.table.get(*p)),
        };
        let parent = match known {
            Some(p) => p,
            None => {
                let fd = self.dir_fd(&node)?;
                let up = sys::openat(fd.as_fd(), c"..", libc::O_PATH | libc::O_DIRECTORY, 0)?;
                self.inside_source(&up)?;
                let st = sys::fstat(up.as_fd())?;
                let key = Key {
                    dev: st.st_dev,
                    ino: st.st_ino,
                };
                let (p, created) = self.table.node_for(key, true);
                if p.ino != ROOT_INO && p.state().links.is_empty() {
                    let handle = sys::handle::name_to_handle_at(up.as_fd(), c"")?;
                    lock(&self.export.found).insert(p.ino, Kept::Dir { key, handle });
                    self.table.cache_dirfd(&p, &Arc::new(up));
                }
                if created && self.cfg.channel.is_some() {
                    self.request_baseline(p.ino);
                }
                p
            }
        };
        let st = self.stat_node(&parent)?;
        parent.state().nlookup += 1;
        Ok(self.attr(parent.ino, &st))
    }

    /// Run the system call that creates an object for a client, under the client's `umask`.
    /// With `FUSE_DONT_MASK` the kernel leaves the umask to the server, because a default ACL on
    /// the parent folder replaces it; so the worker thread takes a umask of its own (see
    /// [`sys::fs_struct`]), sets the client's for this one call, and the kernel under SOURCE
    /// applies it or the default ACL exactly as it would have for the client. Where a thread
    /// cannot have its own umask, the mode is masked here (default ACLs then lose to the umask,
    /// as before; counted).
    fn as_client<T>(
        &self,
        umask: u32,
        mode: u32,
        f: impl FnOnce(u32) -> io::Result<T>,
    ) -> io::Result<T> {
        if !self.dont_mask.load(Ordering::Relaxed) {
            return f(mode);
        }
        match sys::fs_struct::own_fs_struct() {
            Ok(true) => sys::fs_struct::with_umask(umask, || f(mode)),
            _ => {
                Stats::bump(&self.stats.umask_fallbacks);
                f(mode & !(umask & 0o777))
            }
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

pub use crate::util::unix_now;

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
        // Only decoding a file handle makes the kernel look these up (fuse_get_dentry,
        // fuse_get_parent); path walks resolve them themselves.
        if name == "." {
            return s.lookup_self(parent.0).map(Some);
        }
        if name == ".." {
            return s.lookup_parent(parent.0).map(Some);
        }
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
                if e.raw_os_error() == Some(libc::ENOENT)
                    && s.policy() == CachePolicy::Always
                    && !s.replay.is_pending(parent.0, name) =>
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
            // Replays change nothing: answer with SOURCE's current attributes (and remember
            // them as told, so the next open does not find them changed again).
            let st = match s.stat_node(&node) {
                Ok(st) => {
                    node.state().attr = Some(EntrySnap::from_stat(&st));
                    st
                }
                Err(_) => node
                    .state()
                    .attr
                    .map(|a| snap_stat(&a))
                    .ok_or(err(libc::ESTALE))?,
            };
            return Ok(s.attr(node.ino, &st));
        }
        s.check_writable(req)?;
        s.audit(req, "setattr", ino.0, None);
        let _local = s.local_node(&node);
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
            if let Some(m) = without_suid_sgid(st.st_mode, || in_group(req, st.st_gid)) {
                chmod(m)?;
                st = stat()?;
            }
        }
        s.note_local_node(&node, &st);
        Ok(s.attr(node.ino, &st))
    }

    /// mknod / mkdir / symlink: create on SOURCE (or, for the replay thread, only report the
    /// object that already exists there) and enter it. `make` gets the mode to create with,
    /// under the client's `umask` (see [`Shared::as_client`]).
    #[allow(clippy::too_many_arguments)]
    fn do_create_node(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        op: &str,
        make: impl FnOnce(BorrowedFd<'_>, &CStr, u32) -> io::Result<()>,
        mode: u32,
        umask: u32,
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
            // A temporary name stands for an object SOURCE has under its real name.
            let pfd = s.dir_fd(&pnode)?;
            let real = s.replay.standin(parent.0, name);
            let st = sys::fstatat(pfd.as_fd(), &sys::cstr(real.as_deref().unwrap_or(name))?)?;
            let (node, attr) = s.enter(parent.0, name, &st);
            if let Some(real) = real {
                let mut ns = node.state();
                if !ns.links.iter().any(|(p, n)| *p == parent.0 && *n == real) {
                    ns.links.push((parent.0, real));
                }
            }
            return Ok(attr);
        }
        s.check_writable(req)?;
        s.audit(req, op, parent.0, Some(name));
        let _local = s.local.begin(&[(parent.0, name)]);
        let pfd = s.dir_fd(&pnode)?;
        let cname = sys::cstr(name)?;
        s.as_client(umask, mode, |m| make(pfd.as_fd(), &cname, m))?;
        let pst = sys::fstat(pfd.as_fd())?;
        let st = s.own(req, pfd.as_fd(), &cname, &pst, mode)?;
        s.note_local(parent.0, name, Some(&st));
        let (node, attr) = s.enter(parent.0, name, &st);
        if node.is_dir {
            // A folder made here is empty: that is its first view, at once. Left to the
            // baseline job, what the guest made in it first would be left out of the view (as
            // changed after the kernel learned the folder), and a host removal of it then never
            // reported.
            let mut ns = node.state();
            if ns.snapshot.is_none() {
                ns.snapshot = Some(Box::default());
            }
        }
        Ok(attr)
    }

    fn do_remove(&self, req: &Request, parent: INodeNo, name: &OsStr, dir: bool) -> io::Result<()> {
        let s = &self.s;
        let pnode = s.node(parent)?;
        let child = s.child_of(&pnode, name);
        let _local = (!s.replay.is_replay(req)).then(|| s.local.begin(&[(parent.0, name)]));
        if !s.replay.is_replay(req) {
            s.check_writable(req)?;
            s.audit(
                req,
                if dir { "rmdir" } else { "unlink" },
                parent.0,
                Some(name),
            );
            let pfd = s.dir_fd(&pnode)?;
            let held = child
                .as_ref()
                .filter(|_| dir)
                .and_then(|c| s.dir_fd(c).ok());
            sys::unlinkat(
                pfd.as_fd(),
                &sys::cstr(name)?,
                if dir { libc::AT_REMOVEDIR } else { 0 },
            )?;
            s.note_local(parent.0, name, None);
            if let (Some(c), Some(fd)) = (&child, held) {
                s.note_removed_dir(c, &fd);
            }
        }
        if let Some(c) = &child {
            if dir {
                if s.replay.is_replay(req) {
                    // Removed by the host: the same for a client holding it open.
                    let held = c.state().dirfd.clone();
                    if let Some(fd) = held {
                        s.note_removed_dir(c, &fd);
                    }
                }
                s.table.drop_dirfd(c);
                // A removed folder's attributes are served from the view under cache=always: it
                // has no links from now on (a GETATTR after this, from a client holding it
                // open, must not revive it: its cached entry's end is its watchers'
                // IN_DELETE_SELF).
                let mut st = c.state();
                if let Some(a) = st.attr.as_mut() {
                    a.nlink = 0;
                }
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
        // A replay's temporary name: its node is known under the real name too.
        let standin = s
            .replay
            .is_replay(req)
            .then(|| s.replay.standin(parent.0, name))
            .flatten();
        let moved = match &standin {
            // SOURCE has the object under the real name (the parent's view still has the old one
            // there); the node is the one known by the temporary name.
            Some(real) => sys::cstr(real)
                .and_then(|c| sys::fstatat(s.dir_fd(&pnode)?.as_fd(), &c))
                .ok()
                .and_then(|st| {
                    let key = Key {
                        dev: st.st_dev,
                        ino: st.st_ino,
                    };
                    s.table.get(s.table.ino_for(key)).filter(|n| n.key == key)
                }),
            None => s.child_of(&pnode, name),
        };
        let replaced = s.child_of(&npnode, newname);
        let exchange = flags.contains(RenameFlags::RENAME_EXCHANGE);
        let _local = (!s.replay.is_replay(req))
            .then(|| s.local.begin(&[(parent.0, name), (newparent.0, newname)]));
        if !s.replay.is_replay(req) {
            s.check_writable(req)?;
            s.audit(req, "rename", parent.0, Some(name));
            let pfd = s.dir_fd(&pnode)?;
            let npfd = s.dir_fd(&npnode)?;
            // A folder replaced by the rename is removed by it: its attributes change (link count
            // 0, ctime) for whoever still holds it open.
            let held = replaced
                .as_ref()
                .filter(|r| r.is_dir && !exchange)
                .and_then(|r| s.dir_fd(r).ok());
            // What the guest was told `name` is (a host change not notified yet may have put
            // another object there).
            let believed = pnode
                .state()
                .snapshot
                .as_ref()
                .and_then(|v| v.get(name).copied());
            sys::renameat2(
                pfd.as_fd(),
                &sys::cstr(name)?,
                npfd.as_fd(),
                &sys::cstr(newname)?,
                flags.bits(),
            )?;
            let st_new = sys::fstatat(npfd.as_fd(), &sys::cstr(newname)?).ok();
            let other = believed.filter(|b| {
                st_new
                    .as_ref()
                    .is_some_and(|st| (b.key.dev, b.key.ino) != (st.st_dev, st.st_ino))
            });
            if let Some(b) = other {
                // The guest moved another object than it believed (and its watchers saw move):
                // the view keeps what they saw there, so the next rescan tells them of the host's
                // object in its place.
                s.note_local_entry(newparent.0, newname, b);
            } else {
                s.note_local(newparent.0, newname, st_new.as_ref());
                // A rename changes the ctime of what moved (a directory's attributes are served
                // from the overlay's view under cache=always, so refresh it).
                if let (Some(m), Some(st)) = (&moved, &st_new) {
                    s.note_local_node(m, st);
                }
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
            if let (Some(r), Some(fd)) = (&replaced, held) {
                s.note_removed_dir(r, &fd);
                s.table.drop_dirfd(r);
            }
        }
        if let Some(m) = &moved {
            let mut st = m.state();
            st.links.retain(|(p, n)| !(*p == parent.0 && n == name));
            if !st
                .links
                .iter()
                .any(|(p, n)| *p == newparent.0 && n == newname)
            {
                st.links.push((newparent.0, newname.to_owned()));
            }
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
        let _local = (!s.replay.is_replay(req)).then(|| s.local.begin(&[(newparent.0, newname)]));
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
        let flags = (flags & !strip) | libc::O_NOFOLLOW | self.s.atime_flags(false);
        let (pfd, name, _) = self.s.resolve(node)?;
        openat_atime(pfd.as_fd(), &sys::cstr(&name)?, flags, 0)
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

    /// Revalidate an open (see [`super::access`]): compare the attributes of the backing file
    /// just opened with those the kernel was told, and checked permissions against. When they
    /// differ (a host change not notified yet), refuse the open with EACCES if the fresh ones
    /// deny the caller, and ask the sync worker to rescan the file, which tells the kernel (and
    /// replays the event). Returns whether they differed.
    fn revalidate_open(
        &self,
        req: &Request,
        node: &Node,
        fd: &OwnedFd,
        flags: i32,
    ) -> io::Result<bool> {
        let s = &self.s;
        let st = sys::fstat(fd.as_fd())?;
        let fresh = EntrySnap::from_stat(&st);
        if fresh.key != node.key {
            // Replaced on SOURCE between the name's lookup and the open.
            return Err(err(libc::ESTALE));
        }
        let told = node.state().attr;
        if !super::access::attrs_differ(told.as_ref(), &fresh) {
            return Ok(false);
        }
        Stats::bump(&s.stats.open_revalidated);
        self.queue_revalidation(node, &fresh);
        let groups = super::access::caller_groups(req.pid());
        let caller = super::access::Caller {
            uid: req.uid(),
            gid: req.gid(),
            groups: groups.as_deref().unwrap_or_default(),
        };
        let want = super::access::Want::of_open(flags);
        if !super::access::permits(fresh.mode, fresh.uid, fresh.gid, &caller, want) {
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
    fn queue_revalidation(&self, node: &Node, fresh: &EntrySnap) {
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
            let job = super::sync::Job::Notify {
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
    fn replay_backing(&self, node: &Node) -> (Option<OwnedFd>, bool) {
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
    /// in one request fewer than mknod and open. SOURCE is not touched.
    fn replay_create(&self, parent: INodeNo, name: &OsStr, reply: ReplyCreate) {
        let s = &self.s;
        let res = (|| -> io::Result<(Arc<Node>, FileAttr)> {
            let pnode = s.node(parent)?;
            let pfd = s.dir_fd(&pnode)?;
            let real = s.replay.standin(parent.0, name);
            let st = sys::fstatat(pfd.as_fd(), &sys::cstr(real.as_deref().unwrap_or(name))?)?;
            let (node, attr) = s.enter(parent.0, name, &st);
            if let Some(real) = real {
                let mut ns = node.state();
                if !ns.links.iter().any(|(p, n)| *p == parent.0 && *n == real) {
                    ns.links.push((parent.0, real));
                }
            }
            Ok((node, attr))
        })();
        let (node, attr) = match res {
            Ok(x) => x,
            Err(e) => return reply.error(errno(&e)),
        };
        Stats::bump(&s.stats.opens);
        let ttl = s.ttl();
        let (fd, direct) = self.replay_backing(&node);
        if !direct {
            if let Some(b) = s.attach_backing(&node, fd.as_ref(), |fd| reply.open_backing(fd)) {
                let fh = s.add_handle(Handle::File(OpenFile {
                    node,
                    fd,
                    backing: true,
                    writable: false,
                }));
                return reply.created_passthrough(&ttl, &attr, GEN, FileHandle(fh), NOFLUSH, &b);
            }
        }
        let fh = s.add_handle(Handle::File(OpenFile {
            node,
            fd,
            backing: false,
            writable: false,
        }));
        reply.created(
            &ttl,
            &attr,
            GEN,
            FileHandle(fh),
            FopenFlags::FOPEN_DIRECT_IO | NOFLUSH,
        );
    }

    /// `create` found the name on SOURCE although the kernel was told it does not exist (a host
    /// change not notified yet): open it as open(2) without O_EXCL would, but the kernel checked
    /// only the folder, so check the caller against the file's own attributes first (EACCES),
    /// and truncate only then if asked.
    fn open_existing(
        &self,
        req: &Request,
        pfd: BorrowedFd<'_>,
        name: &CStr,
        base: i32,
        flags: i32,
    ) -> io::Result<OwnedFd> {
        let fd = sys::openat(pfd, name, base, 0)?;
        let st = sys::fstat(fd.as_fd())?;
        let groups = super::access::caller_groups(req.pid());
        let caller = super::access::Caller {
            uid: req.uid(),
            gid: req.gid(),
            groups: groups.as_deref().unwrap_or_default(),
        };
        let want = super::access::Want::of_open(flags);
        if !super::access::permits(st.st_mode, st.st_uid, st.st_gid, &caller, want) {
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
            let flags = libc::O_RDONLY | libc::O_DIRECTORY | s.atime_flags(true);
            let fd = openat_atime(pathfd.as_fd(), c".", flags, 0)?;
            let entries = Arc::new(sys::read_dir(fd.as_fd())?);
            // Reading the listing may have moved the folder's atime on SOURCE, as a local listing
            // would; the attributes answered for it under cache=always follow (only the atime: a
            // host change waits for its notification).
            if let Ok(st) = sys::fstat(fd.as_fd()) {
                if let Some(a) = node.state().attr.as_mut() {
                    a.atime = (st.st_atime, st.st_atime_nsec);
                }
            }
            Ok(entries)
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
        let mut slot = lock(&d.entries);
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

/// `openat`, dropping `O_NOATIME` where the kernel refuses it (EPERM: neither owner nor
/// CAP_FOWNER, as in a user namespace).
fn openat_atime(dir: BorrowedFd<'_>, name: &CStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    match sys::openat(dir, name, flags, mode) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && flags & libc::O_NOATIME != 0 => {
            sys::openat(dir, name, flags & !libc::O_NOATIME, mode)
        }
        r => r,
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

/// The mode a write, truncate, fallocate or hole punch by a caller without CAP_FSETID leaves
/// behind, as the VFS computes it (`setattr_should_drop_suidgid`): set-user-ID goes;
/// set-group-ID goes with group execute, and without it too when the caller is not in the
/// file's group (`caller_in_group`, asked only then). `None`: no change (not a regular file, or
/// nothing to drop).
fn without_suid_sgid(mode: u32, caller_in_group: impl FnOnce() -> bool) -> Option<u32> {
    if mode & libc::S_IFMT != libc::S_IFREG {
        return None;
    }
    let mut m = mode & 0o7777;
    m &= !libc::S_ISUID;
    if m & libc::S_ISGID != 0 && (m & libc::S_IXGRP != 0 || !caller_in_group()) {
        m &= !libc::S_ISGID;
    }
    (m != mode & 0o7777).then_some(m)
}

/// Whether the caller of `req` is in group `gid`: its fs group, or one of its supplementary
/// groups (from /proc; a caller gone meanwhile counts as not in it).
fn in_group(req: &Request, gid: u32) -> bool {
    if req.gid() == gid {
        return true;
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", req.pid())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .is_some_and(|g| g.split_whitespace().any(|x| x.parse() == Ok(gid)))
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

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let s = &self.s;
        let res = s.node(ino).and_then(|node| {
            if node.is_virtual {
                let mut st = snap_stat(&EntrySnap::from_stat(&sys::fstat(s.root_fd.as_fd())?));
                st.st_mode = libc::S_IFREG | 0o644;
                st.st_size = 0;
                return Ok((s.attr(node.ino, &st), s.ttl()));
            }
            // With long caching, a directory's attributes change only on notification (or a
            // change made through the overlay): the kernel drops a listing's cache whenever it
            // sees a new mtime, and it refetches attributes after every read (atime).
            if node.is_dir && s.policy() == CachePolicy::Always {
                if let Some(a) = node.state().attr {
                    return Ok((s.attr(node.ino, &snap_stat(&a)), s.ttl()));
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
            Ok((s.attr(node.ino, &st), s.attr_ttl(&node)))
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The handles kept for forgotten objects stay within their budget, oldest out first, and
    /// an id kept again counts as new.
    #[test]
    fn kept_handles_are_bounded_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let d = std::fs::File::open(dir.path()).unwrap();
        let Ok(handle) = sys::handle::name_to_handle_at(d.as_fd(), c"") else {
            return; // no export support where the temporary folder is
        };
        let k = |ino| Kept::Dir {
            key: Key { dev: 1, ino },
            handle: handle.clone(),
        };
        let mut kept = KeptHandles::default();
        let mut dropped = 0;
        for ino in 0..KEPT_HANDLES as u64 + 10 {
            dropped += kept.insert(ino, k(ino));
        }
        // Id 5 kept again: now the newest.
        dropped += kept.insert(5, k(5));
        assert_eq!(kept.map.len(), KEPT_HANDLES);
        assert_eq!(dropped, 11);
        assert!(kept.map.contains_key(&5) && !kept.map.contains_key(&4));
        assert!(kept.map.contains_key(&(KEPT_HANDLES as u64 + 9)));
        assert!(kept.order.len() <= 2 * KEPT_HANDLES + 1);
    }

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
