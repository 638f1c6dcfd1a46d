//! Telling the kernel what changed: FUSE invalidation messages, sent only from the sync worker.
//!
//! With precise events, every name and inode a notification's changes touch is expired first —
//! so readers see SOURCE at once, however many replays follow — and the replays then produce the
//! events. (A new name is expired only where the kernel can hold it wrongly: as a negative entry.) Without events (or when a replay fails) the invalidation is the whole answer.

use std::ffi::{OsStr, OsString};

use fuser::INodeNo;
use tracing::{debug, info};

use super::Worker;
use super::diff::Change;
use crate::overlay::fs::Stats;
use crate::overlay::inode::{Ino, Key, Node, ROOT_INO};

impl Worker {
    /// Before replays: drop what the kernel may hold of the change's names and inodes.
    pub(super) fn expire(&self, c: &Change) {
        let s = &self.s;
        match c {
            Change::Content { new, .. } => self.inval_inode(s.table.ino_for(new.key), 0, 0),
            Change::Attr { old, new, .. } => self.inval_attr(old, new),
            // A new name: the kernel can only hold it wrongly as a negative entry, and the
            // overlay records every one it gives with a timeout (`negatives`); that goes now.
            // A positive entry a client got since is SOURCE's answer (right), and the replay's
            // create revalidates it (LOOKUP_EXCL) before it makes the name. Skipping the rest
            // saves a message per name of a burst before its first replay (counted:
            // `expire_skipped`).
            Change::Create { dir, name, .. } | Change::Link { dir, name, .. } => {
                if let Change::Link { new, .. } = c {
                    // Its link count and ctime moved (the replay's link tells the kernel).
                    if let Some(node) = s.table.get(s.table.ino_for(new.key)) {
                        s.file_attr_changed(&node);
                    }
                }
                let negative = s
                    .table
                    .get(*dir)
                    .is_some_and(|n| n.state().negatives.remove(name.as_os_str()));
                if negative {
                    self.inval_entry(*dir, name);
                } else {
                    Stats::bump(&s.stats.expire_skipped);
                }
            }
            _ => self.expire_names(c),
        }
    }

    /// Drop the kernel's entries (positive or negative) for every name of the change.
    pub(super) fn expire_names(&self, c: &Change) {
        for (dir, name) in c.names() {
            if let Some(node) = self.s.table.get(dir) {
                node.state().negatives.remove(name);
            }
            self.inval_entry(dir, name);
        }
    }

    /// Every name the kernel holds in a folder (used when the folder's view may miss names the
    /// kernel was told of): the folder's own entry goes, and with it its cached children; for the
    /// mount's root, every cached name of the mount (one epoch step where the kernel has it).
    pub(super) fn expire_folder(&self, node: &Node) {
        if node.ino == ROOT_INO {
            if self.raw.inc_epoch().is_ok() {
                Stats::bump(&self.s.stats.epoch_bumps);
            }
            return;
        }
        let links = node.state().links.clone();
        for (parent, name) in links {
            self.inval_entry(parent, &name);
        }
    }

    /// Tell the kernel what changed without an event.
    pub(super) fn invalidate(&self, c: &Change) {
        let s = &self.s;
        match c {
            Change::Create { dir, name, .. } => self.inval_entry(*dir, name),
            Change::Link { dir, name, new } => {
                self.inval_entry(*dir, name);
                // The object's link count and ctime moved.
                self.inval_inode(s.table.ino_for(new.key), -1, 0);
            }
            Change::Delete { dir, name, old } => self.delete_entry(*dir, name, old.key),
            Change::Replace { dir, name, old, .. } => {
                self.delete_entry(*dir, name, old.key);
                self.inval_entry(*dir, name);
            }
            Change::Rename {
                from,
                name,
                to,
                newname,
                old,
                replaced,
            } => {
                self.delete_entry(*from, name, old.key);
                if let Some(r) = replaced {
                    self.delete_entry(*to, newname, r.key);
                }
                self.inval_entry(*to, newname);
                if let Some(node) = s.table.get(s.table.ino_for(old.key)) {
                    let mut st = node.state();
                    st.links.retain(|(p, n)| !(*p == *from && n == name));
                    st.links.push((*to, newname.clone()));
                    drop(st);
                    // A rename moves the ctime.
                    s.file_attr_changed(&node);
                }
            }
            Change::Content { new, .. } => self.inval_inode(s.table.ino_for(new.key), 0, 0),
            Change::Attr { old, new, .. } => self.inval_attr(old, new),
        }
    }

    /// An attribute change: the attributes go, and the cached data too when mtime moved (the
    /// rule that calls a moved mtime an attribute change can be wrong; see `diff.rs`).
    fn inval_attr(
        &self,
        old: &crate::overlay::inode::EntrySnap,
        new: &crate::overlay::inode::EntrySnap,
    ) {
        let ino = self.s.table.ino_for(new.key);
        if old.mtime != new.mtime {
            self.inval_inode(ino, 0, 0);
        } else {
            self.inval_inode(ino, -1, 0);
        }
    }

    pub(super) fn inval_entry(&self, dir: Ino, name: &OsStr) {
        Stats::bump(&self.s.stats.inval_entry);
        if let Err(e) = self.notifier.inval_entry(INodeNo(dir), name) {
            // ENOENT: the kernel did not hold it.
            if e.raw_os_error() != Some(libc::ENOENT) {
                Stats::bump(&self.s.stats.inval_failed);
                debug!("inval_entry({dir}, {name:?}): {e}");
            }
        }
    }

    fn delete_entry(&self, dir: Ino, name: &OsStr, key: Key) {
        let child = self
            .s
            .table
            .get(self.s.table.ino_for(key))
            .filter(|n| n.key == key);
        match child {
            Some(c) => {
                c.state().links.retain(|(p, n)| !(*p == dir && n == name));
                self.s.lost_a_name(&c);
                self.s.fd_cache.forget(c.ino);
                Stats::bump(&self.s.stats.inval_delete);
                if let Err(e) = self.notifier.delete(INodeNo(dir), INodeNo(c.ino), name) {
                    debug!(
                        "delete({dir}, {}, {name:?}): {e}; falling back to inval_entry",
                        c.ino
                    );
                    self.inval_entry(dir, name);
                }
            }
            None => self.inval_entry(dir, name),
        }
    }

    pub(super) fn inval_inode(&self, ino: Ino, off: i64, len: i64) {
        // Its next open goes to SOURCE (which revalidates its own caches at an open).
        self.s.fd_cache.forget(ino);
        let Some(node) = self.s.table.get(ino) else {
            return;
        };
        self.s.file_attr_changed(&node);
        Stats::bump(&self.s.stats.inval_inode);
        if let Err(e) = self.notifier.inval_inode(INodeNo(ino), off, len) {
            Stats::bump(&self.s.stats.inval_failed);
            debug!("inval_inode({ino}): {e}");
        }
    }

    /// The link to the daemon is back: what the kernel was told while degraded (short
    /// timeouts) may be stale for up to a timeout, and the rescan that follows can only report
    /// what the overlay's views recorded. Expire every cached name and attribute now, so nothing
    /// stale remains once the rescan is acknowledged.
    pub(super) fn relinked(&self) {
        let s = &self.s;
        let nodes = s.table.all();
        match self.raw.inc_epoch() {
            Ok(()) => Stats::bump(&s.stats.epoch_bumps),
            Err(e) => {
                debug!("FUSE_NOTIFY_INC_EPOCH unavailable ({e}); expiring names one by one");
                for n in &nodes {
                    let links = n.state().links.clone();
                    for (p, name) in links {
                        self.inval_entry(p, &name);
                    }
                }
            }
        }
        for n in &nodes {
            n.state().negatives.clear();
            self.inval_inode(n.ino, -1, 0);
        }
        info!(
            nodes = nodes.len(),
            "daemon link up: every cached name and attribute expired before the rescan"
        );
    }

    /// The link to the daemon went down: drop every long-lived name, attribute and negative
    /// entry, so that from now on the short (degraded) timeouts apply.
    pub(super) fn degrade(&self) {
        let s = &self.s;
        let dirs = s.table.dirs();
        // One message expires every cached name, positive and negative (Linux 6.16+).
        match self.raw.inc_epoch() {
            Ok(()) => {
                Stats::bump(&s.stats.epoch_bumps);
                for d in &dirs {
                    d.state().negatives.clear();
                    self.inval_inode(d.ino, 0, 0);
                }
                info!(
                    dirs = dirs.len(),
                    "daemon link down: kernel caches expired (epoch), short timeouts until it is back"
                );
                return;
            }
            Err(e) => debug!("FUSE_NOTIFY_INC_EPOCH unavailable ({e}); expiring names one by one"),
        }
        let mut n = 0;
        for d in &dirs {
            let (names, negatives): (Vec<OsString>, Vec<OsString>) = {
                let st = d.state();
                (
                    st.snapshot
                        .as_ref()
                        .map(|s| s.keys().cloned().collect())
                        .unwrap_or_default(),
                    st.negatives.iter().cloned().collect(),
                )
            };
            d.state().negatives.clear();
            for name in names.iter().chain(negatives.iter()) {
                if let Err(e) = self.notifier.inval_entry(INodeNo(d.ino), name) {
                    debug!("degrade inval_entry: {e}");
                }
                n += 1;
            }
            self.inval_inode(d.ino, 0, 0);
        }
        info!(
            entries = n,
            "daemon link down: kernel caches expired, short timeouts until it is back"
        );
    }
}
