//! The atimes the kernel drops after a read, asked again off the client's path.
//!
//! After every `READ` it sends (and every `READDIR`), the kernel marks the object's atime stale
//! in its attribute cache (fs/fuse `fuse_invalidate_atime`), so that its next stat asks the
//! server for the atime the read may have moved, whatever the attribute timeout. Where the
//! overlay answers that `GETATTR` from the attributes it told the kernel (a folder's under
//! `cache=always`, a file's under trusted zero-message opens: [`OverlayFs::told_attr`]), the
//! ask is a round trip to this server for an answer it already holds: on a warm `grep -r` right
//! after a cold one, one per file and folder, most of that pass's time. So once the reply is
//! sent, the object goes into [`AtimeRefresh`], and a thread of the sync module
//! (`sync/atime.rs`) stats it through the mount ([`OverlayFs::after_read_reply`]): the kernel's
//! cache holds the attributes again (with the atime [`note_read`] set), and the client's next
//! stat is answered by the kernel. Bounded: past [`MOST_PENDING`] waiting objects, more are
//! dropped and counted (`atime_refresh_dropped`); the client then asks itself.
//!
//! The same thread expires the attributes of the folders a client's operation changed the
//! entries of (and of objects whose xattrs it changed), once the overlay recorded their new
//! attributes ([`LocalChange`]). The kernel takes a `GETATTR` reply in the asking thread, after
//! the server wrote it, and refuses it only if the inode's attribute version moved since the
//! ask; a folder's entries changing does not move it (fs/fuse `fuse_dir_changed` only marks the
//! attributes stale; nor does the ctime a rename or an xattr change gives). So a `GETATTR`
//! answered just before a guest's `mkdir` in the folder (link count 2), and taken after the
//! `mkdir`'s reply, would stay cached for the whole timeout (the link count 3 never seen; a stat
//! this thread makes after a `READDIR` is such a `GETATTR` at any moment). Expiring after the change closes it either way: a reply taken
//! before the expiry is dropped by it, one taken after is refused for the version it moved.
//!
//! A file's data written back from the page cache (a shared mapping's pages, `msync`) is such a
//! change too: `fuse_writepage_end` only marks mtime and ctime stale. The fault that let the
//! page be written read it first, and this thread's stat after that `READ` races the writeback;
//! taken after it, the old times would stay. Those writes, and fallocates, are expired the same
//! way ([`Shared::data_changed_unversioned`]), and an `FSYNC` (which the kernel sends once the
//! writeback is done) is answered once the expiries queued before it are sent, so a stat after
//! `msync` or `fsync` shows the file as SOURCE has it.
//!
//! [`note_read`]: OverlayFs::note_read

use std::collections::HashSet;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use fuser::INodeNo;

use super::{Ino, Node, OverlayFs, Shared, Stats};
use crate::overlay::local_ops::LocalGuard;
use crate::overlay::options::CachePolicy;

/// Objects waiting at most, of each kind (8 bytes each, twice).
pub const MOST_PENDING: usize = 8192;

/// How long an FSYNC waits at most for the expiries queued before it
/// ([`Shared::expiries_before_fsync`]): the thread sends them between two stats, each a round
/// trip through the mount; a stat held up (every handler busy) must not hold the FSYNC longer.
pub const MOST_EXPIRY_WAIT: Duration = Duration::from_millis(100);

/// The objects whose atime the kernel dropped, in the order of their reads, and those whose
/// attributes are to be expired (see [`LocalChange`]).
#[derive(Default)]
pub struct AtimeRefresh {
    pending: Mutex<Pending>,
    wake: Condvar,
    /// Signalled when the thread has sent the expiries it took ([`Self::expired`]).
    sent: Condvar,
    /// The object the thread stats now (0: none), and whether a `GETATTR` of it was answered
    /// since: see [`AtimeRefresh::ask`].
    asking: AtomicU64,
    answered: AtomicBool,
}

#[derive(Default)]
struct Pending {
    stat: Queue,
    expire: Queue,
    closed: bool,
    /// The thread waits between rounds of stats ([`AtimeRefresh::wait_expiries`]).
    pausing: bool,
    /// Expiries queued so far, and how many of them the thread has sent
    /// ([`AtimeRefresh::wait_sent`]).
    expiries_queued: u64,
    expiries_sent: u64,
}

impl Pending {
    fn take_expiries(&mut self) -> Expiries {
        Expiries {
            inos: self.expire.take(),
            upto: self.expiries_queued,
        }
    }
}

/// Objects in order, each once while it waits.
#[derive(Default)]
struct Queue {
    order: Vec<Ino>,
    queued: HashSet<Ino>,
}

impl Queue {
    /// `Some(true)` queued, `Some(false)` waiting already, `None` no room.
    fn push(&mut self, ino: Ino) -> Option<bool> {
        if self.queued.contains(&ino) {
            return Some(false);
        }
        if self.order.len() >= MOST_PENDING {
            return None;
        }
        self.queued.insert(ino);
        self.order.push(ino);
        Some(true)
    }

    fn take(&mut self) -> Vec<Ino> {
        self.queued.clear();
        std::mem::take(&mut self.order)
    }
}

/// Objects whose attributes the thread is to expire in the kernel, and the count of expiries
/// queued to tell [`AtimeRefresh::expired`] once they are sent.
pub struct Expiries {
    pub inos: Vec<Ino>,
    pub upto: u64,
}

/// What the thread is to do next.
pub struct Batch {
    /// Expire these objects' attributes in the kernel (first).
    pub expire: Expiries,
    /// Stat these through the mount.
    pub stat: Vec<Ino>,
}

impl AtimeRefresh {
    /// Queue `ino` for a stat or an expiry, counted in `stats` (queued, or dropped for want of
    /// room; one already waiting is not counted again).
    fn push(&self, ino: Ino, expire: bool, stats: &Stats) {
        let r = self.push_one(ino, expire);
        match (r, expire) {
            (Some(true), false) => Stats::bump(&stats.atime_refresh_queued),
            (Some(true), true) => Stats::bump(&stats.attr_expired_after_change),
            (Some(false), _) => {}
            (None, _) => Stats::bump(&stats.atime_refresh_dropped),
        }
    }

    fn push_one(&self, ino: Ino, expire: bool) -> Option<bool> {
        let mut p = crate::util::lock(&self.pending);
        let was_idle = p.stat.order.is_empty() && p.expire.order.is_empty();
        let r = if expire {
            let r = p.expire.push(ino);
            if r == Some(true) {
                p.expiries_queued += 1;
            }
            r
        } else {
            p.stat.push(ino)
        };
        if r == Some(true) && (was_idle || (expire && p.pausing)) {
            self.wake.notify_one();
        }
        r
    }

    /// What waits, once something does; `None` once [`Self::close`] was called.
    pub fn wait_batch(&self) -> Option<Batch> {
        let mut p = crate::util::lock(&self.pending);
        loop {
            if p.closed {
                return None;
            }
            if !p.stat.order.is_empty() || !p.expire.order.is_empty() {
                return Some(Batch {
                    expire: p.take_expiries(),
                    stat: p.stat.take(),
                });
            }
            p = self.wake.wait(p).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The expiries queued now (the thread takes them between two stats).
    pub fn take_expiries(&self) -> Expiries {
        crate::util::lock(&self.pending).take_expiries()
    }

    /// The thread has sent the expiries taken with `upto` ([`Expiries::upto`]).
    pub fn expired(&self, upto: u64) {
        let mut p = crate::util::lock(&self.pending);
        if upto > p.expiries_sent {
            p.expiries_sent = upto;
            self.sent.notify_all();
        }
    }

    /// Wait (at most `most`) until every expiry queued before this call has been sent; whether
    /// they were (also when the queue was closed: nothing is left to expire).
    pub fn wait_sent(&self, most: Duration) -> bool {
        let p = crate::util::lock(&self.pending);
        let target = p.expiries_queued;
        crate::util::wait_until(&self.sent, p, Instant::now() + most, |p| {
            p.expiries_sent >= target || p.closed
        })
        .1
    }

    /// The expiries queued before `until`, as soon as there are any; `None` at `until` (or
    /// once closed). Between rounds of stats: an expiry closes a window in which the kernel may
    /// show a folder's old attributes, so it does not wait behind them.
    pub fn wait_expiries(&self, until: Instant) -> Option<Expiries> {
        let mut p = crate::util::lock(&self.pending);
        loop {
            if p.closed {
                return None;
            }
            if !p.expire.order.is_empty() {
                return Some(p.take_expiries());
            }
            let left = until.checked_duration_since(Instant::now())?;
            p.pausing = true;
            p = self
                .wake
                .wait_timeout(p, left)
                .map_or_else(|e| e.into_inner().0, |(g, _)| g);
            p.pausing = false;
        }
    }

    /// The thread is about to stat `ino` through the mount. The kernel drops the atime after a
    /// `READDIR` (and a synchronous `READ`) in the reader's thread once it has the reply, so the
    /// stat may come first and be answered from the kernel's cache: [`Self::asked`] says
    /// whether a `GETATTR` of `ino` came of it ([`Self::answering`]).
    pub fn ask(&self, ino: Ino) {
        self.answered.store(false, Ordering::SeqCst);
        self.asking.store(ino, Ordering::SeqCst);
    }

    /// A `GETATTR` of `ino` is answered (before its reply is written).
    pub fn answering(&self, ino: Ino) {
        if self.asking.load(Ordering::SeqCst) == ino {
            self.answered.store(true, Ordering::SeqCst);
        }
    }

    /// Whether a `GETATTR` of the object [`Self::ask`] named was answered since.
    pub fn asked(&self) -> bool {
        self.asking.store(0, Ordering::SeqCst);
        self.answered.load(Ordering::SeqCst)
    }

    /// End [`Self::wait_batch`] for good (the mount is gone).
    pub fn close(&self) {
        crate::util::lock(&self.pending).closed = true;
        self.wake.notify_all();
        self.sent.notify_all();
    }
}

/// A client operation under way whose change the kernel's attribute version of an object does
/// not show: on folders' entries (made, removed, renamed, linked: the folders' link count,
/// mtime and ctime) or on an object's xattrs (its ctime). It holds the operation's names in
/// [`Shared::local`], and when it ends (after the overlay recorded the new attributes from
/// SOURCE) the attributes of those objects, and of any it names with [`Self::also`], are queued
/// for expiry in the kernel (see the module's docs).
pub struct LocalChange<'a> {
    s: &'a Shared,
    expire: Vec<Ino>,
    _names: LocalGuard<'a>,
}

impl LocalChange<'_> {
    /// Expire `ino`'s attributes too once the operation ends (a renamed object: its ctime),
    /// once however often it is named.
    pub fn also(&mut self, ino: Ino) {
        if !self.expire.contains(&ino) {
            self.expire.push(ino);
        }
    }
}

impl Drop for LocalChange<'_> {
    fn drop(&mut self) {
        for ino in self.expire.drain(..) {
            self.s.atime_refresh.push(ino, true, &self.s.stats);
        }
    }
}

impl Shared {
    /// A client operation on the entries `names` (folder, name) begins: see [`LocalChange`].
    pub(super) fn entries_change<'a>(&'a self, names: &[(Ino, &OsStr)]) -> LocalChange<'a> {
        let mut change = LocalChange {
            s: self,
            expire: Vec::with_capacity(names.len()),
            _names: self.local.begin(names),
        };
        for (dir, _) in names {
            change.also(*dir);
        }
        change
    }

    /// A client changed `ino`'s data where the kernel does not move the inode's attribute
    /// version: a writeback `WRITE` (fs/fuse `fuse_writepage_end` only marks mtime and ctime
    /// stale) or a fallocate that keeps the size. A `GETATTR` answered before the change (a stat
    /// this module's thread makes after the `READ` of a page about to be written through a
    /// mapping, at any moment) and taken after it would stay cached for the whole timeout: its
    /// attributes are queued for expiry, now that the change is recorded (see the module's
    /// docs), and an FSYNC waits for it ([`Shared::expiries_before_fsync`]).
    pub(super) fn data_changed_unversioned(&self, ino: Ino) {
        self.atime_refresh.push(ino, true, &self.stats);
    }

    /// Before an FSYNC's reply: the expiries queued so far are sent (at most
    /// [`MOST_EXPIRY_WAIT`]), so that a stat after `msync` or `fsync` shows what the writeback
    /// left on SOURCE. A wait cut short is counted (`fsync_expiry_timeouts`).
    pub(super) fn expiries_before_fsync(&self) {
        if !self.atime_refresh.wait_sent(MOST_EXPIRY_WAIT) {
            Stats::bump(&self.stats.fsync_expiry_timeouts);
        }
    }

    /// A client operation on `node`'s xattrs begins: see [`LocalChange`] (fs/fuse
    /// `fuse_update_ctime` only marks the ctime stale).
    pub(super) fn xattr_change<'a>(&'a self, node: &Node) -> LocalChange<'a> {
        LocalChange {
            s: self,
            expire: vec![node.ino],
            _names: self.local_node(node),
        }
    }
}

impl OverlayFs {
    /// After a `READ` of file `ino` (or a `READDIR` of folder `ino`) was answered: queue its
    /// stat where the overlay would answer it from what it told the kernel (elsewhere the
    /// client's own stat asks SOURCE, and one made here would only move that request).
    pub(super) fn after_read_reply(&self, ino: INodeNo) {
        let s = &self.s;
        let Ok(node) = s.node(ino) else { return };
        if self.told_attr(&node).is_none() {
            return;
        }
        s.atime_refresh.push(node.ino, false, &s.stats);
    }

    /// The attributes a `GETATTR` of `node` is answered from without SOURCE, if any: a
    /// folder's under `cache=always`, a file's under trusted zero-message opens.
    pub(super) fn told_attr(&self, node: &Node) -> Option<super::EntrySnap> {
        if node.is_dir {
            if self.s.policy() == CachePolicy::Always {
                return node.state().attr;
            }
            return None;
        }
        self.told_file_attr(node)
    }
}
