//! The FUSE operations: a passthrough of SOURCE with the caching policy of the mount, plus the
//! replay view (requests from the replay thread are answered from the previous view and never
//! touch SOURCE; see [`super::sync`]).
//!
//! Every operation body returns `io::Result`; the errno the kernel sees is produced in one place,
//! [`errno`].
//!
//! This file holds the types (the replay view, the statistics, the handle table, [`Shared`],
//! [`OverlayFs`]); the bodies live by concern: `filesystem.rs` (`impl Filesystem`, what fuser
//! calls: each method calls an inherent operation and sends its reply), `reply.rs` (the replies
//! built from an operation's result), `session.rs` (INIT's negotiation, statfs), `entry.rs`
//! (lookup, create, remove, rename, link, readlink), `setattr.rs` (getattr too), `file.rs` (open
//! files: open, read, write, release, fsync, revalidation), `open_free.rs` (zero-message opens:
//! handle-less I/O), `atime.rs` (the atimes the kernel drops after reads, asked again off the
//! client's path), `dir.rs` (opendir, listings),
//! `xattr.rs`, `shared.rs` (policy, handles, resolution, attributes, local operations),
//! `export.rs` (forget, and nodes reached by handle), `client.rs` (acting as the client, backing
//! files, ownership) and `attr.rs` (conversions).

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

mod atime;
mod attr;
mod client;
mod dir;
mod entry;
mod export;
mod fdcache;
mod file;
mod filesystem;
mod fresh_views;
mod open_expiry;
mod open_free;
mod reply;
mod session;
mod setattr;
mod shared;
mod xattr;

pub use atime::Expiries;
pub use attr::*;
use client::Made;
pub use fresh_views::FRESH_VIEW;
use reply::{Answer, Opened, Xattr};
pub use session::{READ_AHEAD_KB, raise_readahead};

/// The one place an `io::Error` becomes the errno the kernel sees.
pub fn errno(e: &io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn err(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// ESTALE unless `st` is the object `key` names (a name that now stands for another).
fn check_key(st: &libc::stat, key: Key) -> io::Result<()> {
    if Key::of(st) == key {
        Ok(())
    } else {
        Err(err(libc::ESTALE))
    }
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
    /// The object each name a replay is making right now stands for (as the rescan found it).
    making: Mutex<HashMap<(Ino, OsString), EntrySnap>>,
    /// Folders where a replay made a name for an object SOURCE no longer had there (see
    /// [`Shared::enter_replayed`]): to be read again before the notification is answered.
    moved_on: Mutex<Vec<Ino>>,
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
        lock(&self.making).clear();
    }
    /// `tmp` in `parent` stands for `real` (the same folder) during a replay.
    pub fn set_standin(&self, parent: Ino, tmp: &OsStr, real: &OsStr) {
        lock(&self.standins).insert((parent, tmp.to_owned()), real.to_owned());
    }
    /// A replay is about to make `name` in `parent` for `snap` (`None`: it is done).
    pub fn set_making(&self, parent: Ino, name: &OsStr, snap: Option<EntrySnap>) {
        let mut m = lock(&self.making);
        match snap {
            Some(snap) => m.insert((parent, name.to_owned()), snap),
            None => m.remove(&(parent, name.to_owned())),
        };
    }
    fn making(&self, parent: Ino, name: &OsStr) -> Option<EntrySnap> {
        lock(&self.making).get(&(parent, name.to_owned())).copied()
    }
    fn note_moved_on(&self, parent: Ino) {
        let mut m = lock(&self.moved_on);
        if !m.contains(&parent) {
            m.push(parent);
        }
    }
    /// The folders noted since the last call (see [`ReplayView::moved_on`]).
    pub fn take_moved_on(&self) -> Vec<Ino> {
        std::mem::take(&mut *lock(&self.moved_on))
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
    /// `GETATTR`s answered (each a round trip from the kernel).
    pub getattrs: AtomicU64,
    pub negative_cached: AtomicU64,
    pub opens: AtomicU64,
    pub passthrough_opens: AtomicU64,
    pub passthrough_failed: AtomicU64,
    /// Opens served by the overlay without asking the kernel for passthrough, because it
    /// refused before.
    pub passthrough_skipped: AtomicU64,
    pub notifications: AtomicU64,
    pub rescans: AtomicU64,
    pub dirs_scanned: AtomicU64,
    /// Of those, folders a whole rescan statted by the names of their last view without listing
    /// them (their times proved the names: see [`crate::overlay::inode::ListedAt`]).
    pub dirs_unlisted: AtomicU64,
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
    /// New names replayed for an object SOURCE had moved or removed since the rescan found it
    /// (their folder is read again before the notification is answered).
    pub replay_moved_on: AtomicU64,
    /// Content replays whose open for writing was refused (no IN_CLOSE_WRITE).
    pub replay_no_close: AtomicU64,
    /// New names not expired before their replay (the kernel held no negative entry of them).
    pub expire_skipped: AtomicU64,
    /// Runs of new files whose names were made with the FUSE readers on the replay's CPU.
    pub burst_pins: AtomicU64,
    pub baselines_uncertain: AtomicU64,
    /// Files whose first view in their folder kept what a racing lookup told the kernel, not
    /// SOURCE's newer attributes (see `Worker::keep_told`).
    pub baselines_told: AtomicU64,
    /// Files a first view over a FUSE SOURCE took as the kernel was told of them, without a
    /// stat at SOURCE (see `first_view` in sync/scan.rs).
    pub baselines_unstatted: AtomicU64,
    /// Files a first view over a FUSE SOURCE took as `O_PATH` fds and kept in the fd cache.
    pub baseline_paths_kept: AtomicU64,
    /// LOOKUPs answered from the folder's view, with no request to SOURCE (trusted
    /// notifications; see `OverlayFs::lookup_in_view`).
    pub lookups_from_view: AtomicU64,
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
    /// 1 once opens are no longer sent (see [`open_free`]).
    pub open_free: AtomicU64,
    /// OPENs answered with ENOSYS (the kernel sends one: more means it did not stop).
    pub opens_declined: AtomicU64,
    /// Files whose last name went while the kernel held them, kept open for its clients.
    pub orphans_kept: AtomicU64,
    /// I/O on a file whose last name went, with no fd kept to do it through (failed).
    pub orphans_lost: AtomicU64,
    /// Objects read whose stat was asked again through the mount after the read's reply (the
    /// kernel drops their atime: see [`atime`]): queued, asked, not queued or expired (no
    /// room), and not asked (no name known, or the stat failed).
    pub atime_refresh_queued: AtomicU64,
    pub atime_refreshed: AtomicU64,
    pub atime_refresh_dropped: AtomicU64,
    pub atime_refresh_failed: AtomicU64,
    /// Stats the thread made again because no `GETATTR` came of them: the kernel had not yet
    /// dropped the atime (it does so in the reader's thread, after the reply); and of those
    /// refreshed, the ones still without a `GETATTR` after the last round (counted refreshed too).
    pub atime_refresh_early: AtomicU64,
    pub atime_refresh_unconfirmed: AtomicU64,
    /// Objects whose attributes were queued for expiry in the kernel after a client's operation
    /// changed their entries or xattrs (see [`atime::LocalChange`]), or their data by writeback
    /// or fallocate ([`Shared::data_changed_unversioned`]).
    pub attr_expired_after_change: AtomicU64,
    /// FSYNCs answered before the expiries queued ahead of them were sent (waited for at most
    /// [`atime::MOST_EXPIRY_WAIT`]: the thread was held up).
    pub fsync_expiry_timeouts: AtomicU64,
    /// Opens that found the file changed on SOURCE answered before the expiry of its attributes
    /// was sent (waited for at most [`open_expiry::MOST_OPEN_EXPIRY_WAIT`]) or could be queued.
    pub open_expiry_timeouts: AtomicU64,
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
            getattrs,
            negative_cached,
            opens,
            passthrough_opens,
            passthrough_failed,
            passthrough_skipped,
            notifications,
            rescans,
            dirs_scanned,
            dirs_unlisted,
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
            replay_moved_on,
            replay_no_close,
            expire_skipped,
            burst_pins,
            baselines_uncertain,
            baselines_told,
            baselines_unstatted,
            baseline_paths_kept,
            lookups_from_view,
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
            handles_dropped,
            open_free,
            opens_declined,
            orphans_kept,
            orphans_lost,
            atime_refresh_queued,
            atime_refreshed,
            atime_refresh_dropped,
            atime_refresh_failed,
            atime_refresh_early,
            atime_refresh_unconfirmed,
            attr_expired_after_change,
            fsync_expiry_timeouts,
            open_expiry_timeouts
        )
    }
}

/// An open file.
struct OpenFile {
    node: Arc<Node>,
    /// The backing file (none for replay opens); read-only ones shared with the fd cache.
    fd: Option<Arc<OwnedFd>>,
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

/// The filesystems (`f_type`) whose folders' times prove their names unchanged while they stay
/// (see [`Shared::times_prove_names`]): tmpfs, ext2/3/4, XFS, Btrfs, F2FS. Not FUSE, NFS, 9p or
/// SMB: their times come from another machine's clock.
pub const TIMES_PROVE_NAMES: [i64; 5] =
    [0x0102_1994, 0xEF53, 0x5846_5342, 0x9123_683E, 0xF2F5_2010];

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
    /// Whether a `vfnotify host` feeds the daemon, so every host change is notified (told by
    /// the daemon; `revalidate=auto` trusts the notifications then).
    pub exact_feed: AtomicBool,
    /// When `linked` last changed (seconds since the epoch).
    pub state_since: AtomicU64,
    /// Kernel passthrough negotiated at INIT.
    pub passthrough: AtomicBool,
    /// The kernel refused to register a backing file (ELOOP over a SOURCE that uses
    /// passthrough itself): no new registrations for the rest of the mount's life.
    pub passthrough_refused: AtomicBool,
    /// Backing fds of recently opened files (see [`fdcache`]).
    pub fd_cache: fdcache::FdCache,
    /// An OPEN was answered with ENOSYS: the kernel sends no more opens, flushes or releases of
    /// files, and file I/O comes with handle 0 (see [`open_free`]).
    pub open_free: AtomicBool,
    /// Files whose last name went while the kernel held them, under zero-message opens: the fd
    /// their clients' I/O goes through and the flags it was opened with, until the kernel
    /// forgets them (see [`open_free`]).
    orphans: Mutex<HashMap<Ino, (Arc<OwnedFd>, i32)>>,
    /// `FUSE_DONT_MASK` negotiated at INIT: creates carry the client's umask for us to apply.
    pub dont_mask: AtomicBool,
    /// The kernel's FUSE minor version, from INIT.
    pub kernel_minor: AtomicU32,
    /// SOURCE is itself FUSE (virtiofs): its own name cache may hold a removed or renamed name,
    /// so scoped rescans list the folder instead of looking names up.
    pub source_is_fuse: bool,
    /// SOURCE is a local filesystem whose folders' modification and change times come from
    /// this kernel's clock and move with every change to their names (see
    /// [`TIMES_PROVE_NAMES`]): a whole rescan may stat a folder's entries by the names of its
    /// last view instead of listing it again, while its times prove the names unchanged.
    pub times_prove_names: bool,
    /// SOURCE's root's device: a folder on another (a filesystem mounted below SOURCE) is
    /// always listed.
    pub source_dev: u64,
    /// SOURCE's last statfs answer, and when it came (see [`STATFS_REUSE`]).
    statfs_reused: Mutex<Option<(std::time::Instant, libc::statvfs)>>,
    handles: Box<[HandleShard]>,
    next_fh: AtomicU64,
    /// Moves by one as the sync worker starts a job that may replace folders' views or expire
    /// what the kernel holds (a notification, a degrade), and by one as it ends it: odd while
    /// one runs. A LOOKUP answered from a view reads it before and after (see
    /// `OverlayFs::lookup_in_view`).
    pub views_epoch: AtomicU64,
    /// Folders whose view was read a moment ago (lookups from a view without trust).
    pub fresh_views: fresh_views::FreshViews,
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
    /// Objects whose atime the kernel dropped after a read, for the sync module's thread to
    /// stat again through the mount, and the folders whose attributes it is to expire after a
    /// client changed their entries (see [`atime`]).
    pub atime_refresh: atime::AtimeRefresh,
    /// The attribute expiries opens that found their file changed wait for.
    pub open_expiries: open_expiry::OpenExpiries,
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

pub use crate::util::unix_now;

/// The filesystem handed to fuser.
pub struct OverlayFs {
    pub s: Arc<Shared>,
}

const GEN: Generation = Generation(0);
/// Every file open: the kernel skips FLUSH on close. `flush` has nothing to do here (writes are
/// written through or passed through, POSIX locks stay in the kernel), and the round trip was a
/// fifth of the cost of creating a file.
const NOFLUSH: FopenFlags = FopenFlags::FOPEN_NOFLUSH;

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
