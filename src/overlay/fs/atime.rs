//! The atimes the kernel drops after a read, asked again off the client's path.
//!
//! After every `READ` it sends (and every `READDIR`), the kernel marks the object's atime stale
//! in its attribute cache (fs/fuse `fuse_invalidate_atime`), so that its next stat asks the
//! server for the atime the read may have moved, whatever the attribute timeout. Where the
//! overlay answers that `GETATTR` from the attributes it told the kernel (a file's, under
//! trusted zero-message opens: [`OverlayFs::told_file_attr`]), the ask is a round trip
//! to this server for an answer it already holds: on a warm `grep -r` right after a cold one,
//! one per file, most of that pass's time. So once the reply is sent, the object goes into
//! [`AtimeRefresh`], and a thread of the sync module (`sync/atime.rs`) stats it through the
//! mount (files only: [`OverlayFs::after_read_reply`] says why): the kernel's cache holds the
//! attributes again (with the atime [`note_read`] set), and
//! the client's next stat is answered by the kernel. Bounded: past [`MOST_PENDING`] waiting
//! objects, more are dropped and counted (`atime_refresh_dropped`); the client then asks itself.
//!
//! [`note_read`]: OverlayFs::note_read

use std::collections::HashSet;
use std::sync::{Condvar, Mutex};

use fuser::INodeNo;

use super::{Ino, OverlayFs, Stats};
use crate::overlay::options::CachePolicy;

/// Objects waiting at most (8 bytes each, twice).
pub const MOST_PENDING: usize = 8192;

/// The objects whose atime the kernel dropped, in the order of their reads.
#[derive(Default)]
pub struct AtimeRefresh {
    pending: Mutex<Pending>,
    wake: Condvar,
}

#[derive(Default)]
struct Pending {
    order: Vec<Ino>,
    queued: HashSet<Ino>,
    closed: bool,
}

impl AtimeRefresh {
    /// Queue `ino` once while it waits: `Some(true)` queued, `Some(false)` waiting already,
    /// `None` no room.
    fn push(&self, ino: Ino) -> Option<bool> {
        let mut p = crate::util::lock(&self.pending);
        if p.queued.contains(&ino) {
            return Some(false);
        }
        if p.order.len() >= MOST_PENDING {
            return None;
        }
        p.queued.insert(ino);
        p.order.push(ino);
        if p.order.len() == 1 {
            self.wake.notify_one();
        }
        Some(true)
    }

    /// What waits, in order, once something does; `None` once [`Self::close`] was called.
    pub fn wait_batch(&self) -> Option<Vec<Ino>> {
        let mut p = crate::util::lock(&self.pending);
        loop {
            if p.closed {
                return None;
            }
            if !p.order.is_empty() {
                p.queued.clear();
                return Some(std::mem::take(&mut p.order));
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
    /// Files only. The answer to that stat is read before the reply goes, and the kernel
    /// takes it unless the inode's attribute version moved since it asked: what a client
    /// changes in a file through the overlay (a write, a setattr, a link or unlink) moves it,
    /// and so does a notification's invalidation. A folder's entries changing does not (fs/fuse
    /// `fuse_dir_changed` only marks the attributes stale), so a stat answered just before a
    /// client's mkdir in the folder and taken just after it would leave the folder's old nlink
    /// and mtime cached for the whole timeout: such stats are left to clients.
    pub(super) fn after_read_reply(&self, ino: INodeNo) {
        let s = &self.s;
        let Ok(node) = s.node(ino) else { return };
        if self.told_file_attr(&node).is_none() {
            return;
        }
        match s.atime_refresh.push(node.ino) {
            Some(true) => Stats::bump(&s.stats.atime_refresh_queued),
            Some(false) => {}
            None => Stats::bump(&s.stats.atime_refresh_dropped),
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
