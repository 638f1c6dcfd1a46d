//! The watch-stream records of a notification's changes (what `handled` reports to the daemon
//! for `vfnotify watch`), with paths relative to the mount.

use std::ffi::OsStr;
use std::path::PathBuf;

use super::diff::Change;
use super::{ChangeKind, ChangeRecord, Worker};
use crate::overlay::inode::Ino;

impl Worker {
    /// The watch-stream records of the changes, in order. Folders created in this notification
    /// are not known to the kernel yet: their paths come from the creates before them.
    pub(super) fn records(&self, changes: &[Change]) -> Vec<ChangeRecord> {
        let mut new_dirs: std::collections::HashMap<Ino, PathBuf> = Default::default();
        let mut out = Vec::with_capacity(changes.len());
        let rel =
            |known: &std::collections::HashMap<Ino, PathBuf>, dir: Ino, name: &OsStr| match known
                .get(&dir)
            {
                Some(p) => p.join(name),
                None => self.s.path_of(dir, Some(name)),
            };
        for c in changes {
            out.push(self.record(c, |d, n| rel(&new_dirs, d, n)));
            if let Change::Create { dir, name, new } = c {
                if new.is_dir() {
                    let p = rel(&new_dirs, *dir, name);
                    new_dirs.insert(self.s.table.ino_for(new.key), p);
                }
            }
        }
        out
    }

    /// The watch-stream record of a change.
    fn record(&self, c: &Change, path: impl Fn(Ino, &OsStr) -> PathBuf) -> ChangeRecord {
        let rel = |dir: Ino, name: &OsStr| path(dir, name).to_string_lossy().into_owned();
        let (kind, path, to) = match c {
            Change::Create { dir, name, .. } | Change::Link { dir, name, .. } => {
                (ChangeKind::Create, rel(*dir, name), None)
            }
            Change::Delete { dir, name, .. } => (ChangeKind::Delete, rel(*dir, name), None),
            // The same path, another object: what a reader cares about is the new content.
            Change::Replace { dir, name, .. } | Change::Content { dir, name, .. } => {
                (ChangeKind::Modify, rel(*dir, name), None)
            }
            Change::Attr { dir, name, .. } => (ChangeKind::Attrib, rel(*dir, name), None),
            Change::Rename {
                from,
                name,
                to,
                newname,
                ..
            } => (
                ChangeKind::Rename,
                rel(*from, name),
                Some(rel(*to, newname)),
            ),
        };
        ChangeRecord { kind, path, to }
    }
}
