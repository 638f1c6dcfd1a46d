//! The atimes the kernel drops after a read, asked again off the client's path.
//!
//! After every `READ` it sends (and every `READDIR`), the kernel marks the object's atime stale
//! in its attribute cache (fs/fuse `fuse_invalidate_atime`), so that its next stat asks the
//! server for the atime the read may have moved, whatever the attribute timeout. Where the
//! overlay answers that `GETATTR` from the attributes it told the kernel (a file's under
//! trusted zero-message opens: [`OverlayFs::told_file_attr`]), the ask is a round trip
//! to this server for an answer it already holds: on a warm `grep -r` right after a cold one,
//! one per file, most of that pass's time. So once the reply is sent, the object goes into
//! [`AtimeRefresh`], and a thread of the sync module (`sync/atime.rs`) stats it through the
//! mount (files only: [`OverlayFs::after_read_reply`]): the kernel's cache holds the attributes
//! again (with the atime [`note_read`] set), and the client's next stat is answered by the
//! kernel. Bounded: past [`MOST_PENDING`] waiting objects, more are dropped and counted
//! (`atime_refresh_dropped`); the client then asks itself.
//!
//! The same thread expires the attributes of objects whose `GETATTR` was answered while a
//! client changed something ([`OverlayFs::after_getattr_reply`]): such an answer, taken by the
//! kernel after the change, would be cached for the whole timeout.
//!
//! [`note_read`]: OverlayFs::note_read

use std::collections::HashSet;
use std::sync::{Condvar, Mutex};

use fuser::INodeNo;

use super::{Ino, OverlayFs, Stats};
use crate::overlay::options::CachePolicy;

/// Objects waiting at most, of each kind (8 bytes each, twice).
pub const MOST_PENDING: usize = 8192;

/// The objects whose atime the kernel dropped, in the order of their reads, and those whose
/// attributes are to be expired again (see [`OverlayFs::after_getattr_reply`]).
#[derive(Default)]
pub struct AtimeRefresh {
    pending: Mutex<Pending>,
    wake: Condvar,
}

#[derive(Default)]
struct Pending {
    stat: Queue,
    expire: Queue,
    closed: bool,
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

/// What the thread is to do next.
pub struct Batch {
    /// Expire these objects' attributes in the kernel (first).
    pub expire: Vec<Ino>,
    /// Stat these through the mount.
    pub stat: Vec<Ino>,
}

impl AtimeRefresh {
    fn push(&self, ino: Ino, expire: bool) -> Option<bool> {
        let mut p = crate::util::lock(&self.pending);
        let was_idle = p.stat.order.is_empty() && p.expire.order.is_empty();
        let r = if expire {
            p.expire.push(ino)
        } else {
            p.stat.push(ino)
        };
        if was_idle && r == Some(true) {
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
                    expire: p.expire.take(),
                    stat: p.stat.take(),
                });
            }
            p = self.wake.wait(p).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// End [`Self::wait_batch`] for good (the mount is gone).
    pub fn close(&self) {
        crate::util::lock(&self.pending).closed = true;
        self.wake.notify_all();
    }
}

impl OverlayFs {
    /// After a `READ` of file `ino` was answered: queue its stat where the overlay would answer
    /// it from what it told the kernel (elsewhere the client's own stat asks SOURCE, and one
    /// made here would only move that request).
    ///
    /// Files only, for now: with folders too (the kernel drops a folder's atime after each
    /// `READDIR`), the model test's `regression_a_name_made_in_a_new_folder_then_removed_by_the_host`
    /// failed about one run in seven (the folder's nlink from before the guest's mkdir in it,
    /// after the notification), with or without [`Self::after_getattr_reply`]; not yet
    /// understood, so a warm pass still asks once for each folder a cold one listed.
    pub(super) fn after_read_reply(&self, ino: INodeNo) {
        let s = &self.s;
        let Ok(node) = s.node(ino) else { return };
        if self.told_file_attr(&node).is_none() {
            return;
        }
        match s.atime_refresh.push(node.ino, false) {
            Some(true) => Stats::bump(&s.stats.atime_refresh_queued),
            Some(false) => {}
            None => Stats::bump(&s.stats.atime_refresh_dropped),
        }
    }

    /// After a `GETATTR` of `ino` answered from the attributes the overlay holds: if a client
    /// operation was under way at any moment since `mark` (taken before they were read), the
    /// answer may predate a change it recorded, and the kernel may take it after the change's
    /// own reply. The kernel refuses an answer asked before the inode's attribute version moved,
    /// but a folder's entries changing does not move it (fs/fuse `fuse_dir_changed` only marks
    /// the attributes stale; nor does a rename's new ctime): the old nlink and mtime would stay
    /// cached for the whole timeout. So the object's attributes are expired again, by the
    /// thread (never a request handler), which moves the version: whichever of the two the
    /// kernel sees first, the next stat asks again.
    pub(super) fn after_getattr_reply(&self, ino: INodeNo, mark: Option<u64>) {
        let s = &self.s;
        if mark.is_some_and(|g| s.local.still(g)) {
            return;
        }
        Stats::bump(&s.stats.getattr_raced);
        if s.atime_refresh.push(ino.0, true).is_none() {
            Stats::bump(&s.stats.atime_refresh_dropped);
        }
    }

    /// The attributes a `GETATTR` of `node` is answered from without SOURCE, if any: a
    /// folder's under `cache=always`, a file's under trusted zero-message opens.
    pub(super) fn told_attr(&self, node: &super::Node) -> Option<super::EntrySnap> {
        if node.is_dir {
            if self.s.policy() == CachePolicy::Always {
                return node.state().attr;
            }
            return None;
        }
        self.told_file_attr(node)
    }
}
