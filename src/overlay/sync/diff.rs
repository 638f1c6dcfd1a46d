//! The pure part of a rescan: a folder's last view and its new one become [`Change`]s, which are
//! then paired (renames, replacements, hard links) and ordered. No I/O here.
//!
//! Telling a content change from an attribute change: a write sets mtime and ctime to the same
//! instant; `utimes` to an explicit time sets an mtime that differs from the new ctime. So, for a
//! regular file whose size, mode and owner did not change, a moved mtime is an attribute change
//! (`IN_ATTRIB`) when the new mtime differs from the new ctime, and new content (`IN_MODIFY`)
//! otherwise. A size change is always content; when mode or owner changed as well, a moved mtime
//! is taken as content too (a write and a chmod in one window). What the rule cannot tell apart,
//! and how it errs: `touch` (utimes to *now*) sets mtime and ctime to one instant, like a write,
//! and comes out as content; a same-size write followed by an explicit utimes within one
//! notification (`rsync --inplace`) comes out as an attribute change. Either way the kernel's
//! cached data is dropped whenever mtime moved, so readers are fresh.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};

use super::super::inode::{EntrySnap, Ino, Key, Snapshot};

/// One change found by the diff.
#[derive(Debug, Clone)]
pub enum Change {
    Create {
        dir: Ino,
        name: OsString,
        new: EntrySnap,
    },
    Delete {
        dir: Ino,
        name: OsString,
        old: EntrySnap,
    },
    Rename {
        from: Ino,
        name: OsString,
        to: Ino,
        newname: OsString,
        old: EntrySnap,
        replaced: Option<EntrySnap>,
    },
    /// The name now holds another object of the same kind (not a folder): an atomic save, a
    /// symlink retargeted with `ln -sfn`, `ln -f`.
    Replace {
        dir: Ino,
        name: OsString,
        old: EntrySnap,
        new: EntrySnap,
    },
    /// A new name for an object that already has one (a hard link).
    Link {
        dir: Ino,
        name: OsString,
        new: EntrySnap,
    },
    Content {
        dir: Ino,
        name: OsString,
        new: EntrySnap,
    },
    Attr {
        dir: Ino,
        name: OsString,
        old: EntrySnap,
        new: EntrySnap,
    },
}

/// What kind of change (for tests).
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Create,
    Delete,
    Rename,
    Replace,
    Link,
    Content,
    Attr,
}

impl Change {
    #[cfg(test)]
    pub fn kind(&self) -> Kind {
        match self {
            Change::Create { .. } => Kind::Create,
            Change::Delete { .. } => Kind::Delete,
            Change::Rename { .. } => Kind::Rename,
            Change::Replace { .. } => Kind::Replace,
            Change::Link { .. } => Kind::Link,
            Change::Content { .. } => Kind::Content,
            Change::Attr { .. } => Kind::Attr,
        }
    }

    /// Every `(folder, name)` the change is about.
    pub fn names(&self) -> Vec<(Ino, &OsStr)> {
        match self {
            Change::Rename {
                from,
                name,
                to,
                newname,
                ..
            } => vec![(*from, name.as_os_str()), (*to, newname.as_os_str())],
            Change::Create { dir, name, .. }
            | Change::Delete { dir, name, .. }
            | Change::Replace { dir, name, .. }
            | Change::Link { dir, name, .. }
            | Change::Content { dir, name, .. }
            | Change::Attr { dir, name, .. } => vec![(*dir, name.as_os_str())],
        }
    }

    /// Folders whose listing the change alters.
    pub fn dirs(&self) -> Vec<Ino> {
        match self {
            Change::Create { dir, .. }
            | Change::Delete { dir, .. }
            | Change::Link { dir, .. }
            | Change::Replace { dir, .. } => vec![*dir],
            Change::Rename { from, to, .. } => vec![*from, *to],
            Change::Content { .. } | Change::Attr { .. } => vec![],
        }
    }
}

/// Compare one name's old and new entries (see the module documentation).
pub fn diff_entry(
    dir: Ino,
    name: &OsStr,
    old: Option<&EntrySnap>,
    new: Option<&EntrySnap>,
    out: &mut Vec<Change>,
) {
    let name = name.to_owned();
    match (old, new) {
        (Some(o), Some(n)) if n.same_object(o) && n.file_type() == o.file_type() => {
            let meta = (o.mode, o.uid, o.gid) != (n.mode, n.uid, n.gid);
            if o.is_dir() {
                // A folder's own size, times and link count move with its content, which its own
                // diff reports.
                if meta {
                    out.push(Change::Attr {
                        dir,
                        name,
                        old: *o,
                        new: *n,
                    });
                }
                return;
            }
            let mtime_moved = o.mtime != n.mtime;
            let times_set = !meta && o.size == n.size && mtime_moved && n.mtime != n.ctime;
            let content = o.size != n.size || (mtime_moved && !times_set);
            if content {
                out.push(Change::Content {
                    dir,
                    name: name.clone(),
                    new: *n,
                });
            }
            if meta || times_set || (!content && o.ctime != n.ctime) {
                out.push(Change::Attr {
                    dir,
                    name,
                    old: *o,
                    new: *n,
                });
            }
        }
        (Some(o), Some(n)) => {
            out.push(Change::Delete {
                dir,
                name: name.clone(),
                old: *o,
            });
            out.push(Change::Create { dir, name, new: *n });
        }
        (Some(o), None) => out.push(Change::Delete { dir, name, old: *o }),
        (None, Some(n)) => out.push(Change::Create { dir, name, new: *n }),
        (None, None) => {}
    }
}

/// Compare a folder's old and new views.
pub fn diff(dir: Ino, old: &Snapshot, new: &Snapshot, out: &mut Vec<Change>) {
    for (name, o) in old {
        diff_entry(dir, name, Some(o), new.get(name), out);
    }
    for (name, n) in new {
        if !old.contains_key(name) {
            diff_entry(dir, name, None, Some(n), out);
        }
    }
}

/// Pair and order the changes of one notification:
/// - a delete and a create of the same object are a rename (within or across folders; a
///   destination that existed goes with it);
/// - a delete and a create under the same name, of the same kind and not folders, are a
///   [`Change::Replace`];
/// - a create of an object with more than one link that is present elsewhere (`known_elsewhere`:
///   the kernel knows it under another name; or it changed elsewhere, or was created earlier, in
///   this notification) is a hard link.
///
/// Order: deletes of names renames go to, renames, other deletes, creates (replacements and
/// links among them, in diff order), then content and attribute changes. Attribute changes that only say a rename or link count moved
/// the ctime are dropped, as a local change gives no separate event for them.
pub fn pair(changes: Vec<Change>, known_elsewhere: impl Fn(&Key) -> bool) -> Vec<Change> {
    let mut deleted: HashMap<Key, usize> = HashMap::new();
    let mut present_keys: HashSet<Key> = HashSet::new();
    for (i, c) in changes.iter().enumerate() {
        match c {
            Change::Delete { old, .. } => {
                deleted.entry(old.key).or_insert(i);
            }
            Change::Content { new, .. } | Change::Attr { new, .. } => {
                present_keys.insert(new.key);
            }
            _ => {}
        }
    }
    let mut used = vec![false; changes.len()];
    let mut renames = Vec::new();
    // Deleted names, for rename destinations that existed and for replacements.
    let mut deleted_at: HashMap<(Ino, OsString), (usize, EntrySnap)> = HashMap::new();
    for (i, c) in changes.iter().enumerate() {
        if let Change::Delete { dir, name, old } = c {
            deleted_at.insert((*dir, name.clone()), (i, *old));
        }
    }
    for (i, c) in changes.iter().enumerate() {
        let Change::Create { dir, name, new } = c else {
            continue;
        };
        let Some(&j) = deleted.get(&new.key) else {
            continue;
        };
        // Not when the number was freed and reused by another object: a delete and a create.
        let Change::Delete {
            dir: from,
            name: oldname,
            old,
        } = &changes[j]
        else {
            continue;
        };
        if used[j] || !old.same_object(new) {
            continue;
        }
        used[j] = true;
        used[i] = true;
        renames.push(Change::Rename {
            from: *from,
            name: oldname.clone(),
            to: *dir,
            newname: name.clone(),
            old: *old,
            replaced: None,
        });
    }
    // A rename's destination that existed goes with it — unless it moved away itself (a delete
    // another rename took).
    for r in &mut renames {
        if let Change::Rename {
            to,
            newname,
            old,
            replaced,
            ..
        } = r
        {
            if let Some(&(k, d)) = deleted_at.get(&(*to, newname.clone())) {
                // Only what a rename can replace: a folder an empty folder, anything else
                // anything else (`rm a; mv d a` with a file `a` and a folder `d` is a delete,
                // then the rename).
                if !used[k] && !d.same_object(old) && d.is_dir() == old.is_dir() {
                    used[k] = true;
                    *replaced = Some(d);
                }
            }
        }
    }
    // A name a rename goes to that was deleted on its own goes first.
    let destinations: HashSet<(Ino, OsString)> = renames
        .iter()
        .filter_map(|r| match r {
            Change::Rename { to, newname, .. } => Some((*to, newname.clone())),
            _ => None,
        })
        .collect();
    let mut out = Vec::with_capacity(changes.len());
    for (i, c) in changes.iter().enumerate() {
        if let Change::Delete { dir, name, .. } = c {
            if !used[i] && destinations.contains(&(*dir, name.clone())) {
                used[i] = true;
                out.push(c.clone());
            }
        }
    }
    out.extend(order_renames(renames));
    for (i, c) in changes.iter().enumerate() {
        if !used[i] && matches!(c, Change::Delete { .. }) {
            // A delete that is half of a replacement is emitted with the create.
            let Change::Delete { dir, name, old } = c else {
                unreachable!()
            };
            let replaced_by = changes.iter().enumerate().find(|(k, c)| {
                !used[*k]
                    && matches!(c, Change::Create { dir: d, name: n, new }
                        if d == dir && n == name && replaceable(old, new))
            });
            if replaced_by.is_none() {
                used[i] = true;
                out.push(c.clone());
            }
        }
    }
    let mut created: HashSet<Key> = HashSet::new();
    for (i, c) in changes.iter().enumerate() {
        if used[i] {
            continue;
        }
        let Change::Create { dir, name, new } = c else {
            continue;
        };
        used[i] = true;
        if let Some(&(k, old)) = deleted_at.get(&(*dir, name.clone())) {
            if !used[k] && replaceable(&old, new) {
                used[k] = true;
                out.push(Change::Replace {
                    dir: *dir,
                    name: name.clone(),
                    old,
                    new: *new,
                });
                created.insert(new.key);
                continue;
            }
        }
        let linked = new.nlink > 1
            && !new.is_dir()
            && (present_keys.contains(&new.key)
                || created.contains(&new.key)
                || known_elsewhere(&new.key));
        created.insert(new.key);
        out.push(if linked {
            Change::Link {
                dir: *dir,
                name: name.clone(),
                new: *new,
            }
        } else {
            c.clone()
        });
    }
    let involved: HashSet<Key> = out
        .iter()
        .filter_map(|c| match c {
            Change::Rename { old, .. } | Change::Delete { old, .. } => Some(old.key),
            Change::Create { new, .. } | Change::Link { new, .. } | Change::Replace { new, .. } => {
                Some(new.key)
            }
            _ => None,
        })
        .collect();
    for (i, c) in changes.iter().enumerate() {
        if used[i] {
            continue;
        }
        match c {
            Change::Content { .. } => out.push(c.clone()),
            Change::Attr { old, new, .. }
                if !involved.contains(&new.key)
                    || (old.mode, old.uid, old.gid) != (new.mode, new.uid, new.gid) =>
            {
                out.push(c.clone())
            }
            _ => {}
        }
    }
    out
}

/// Renames in an order the kernel can take them one by one: one whose destination is another's
/// source comes after that one (`mv d b; mv a d`). Renames in a cycle (`a` and `b` swapped) are
/// left in their order, at the end: see `Worker::break_rename_cycles`.
pub fn order_renames(renames: Vec<Change>) -> Vec<Change> {
    let key = |dir: Ino, name: &OsStr| (dir, name.to_owned());
    let sources: HashMap<(Ino, OsString), usize> = renames
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            Change::Rename { from, name, .. } => Some((key(*from, name), i)),
            _ => None,
        })
        .collect();
    // blocked_by[i]: the rename that must vacate i's destination first.
    let blocked_by: Vec<Option<usize>> = renames
        .iter()
        .enumerate()
        .map(|(i, r)| match r {
            Change::Rename { to, newname, .. } => {
                sources.get(&key(*to, newname)).copied().filter(|&j| j != i)
            }
            _ => None,
        })
        .collect();
    let mut done = vec![false; renames.len()];
    let mut order = Vec::with_capacity(renames.len());
    loop {
        let before = order.len();
        for i in 0..renames.len() {
            if !done[i] && blocked_by[i].is_none_or(|j| done[j]) {
                done[i] = true;
                order.push(i);
            }
        }
        if order.len() == before {
            break;
        }
    }
    order.extend((0..renames.len()).filter(|i| !done[*i]));
    let mut slots: Vec<Option<Change>> = renames.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

/// Whether `new` under a name replaces `old` as one step (a rename over it, locally): same kind,
/// and not a folder (a folder cannot be renamed over a non-empty one).
fn replaceable(old: &EntrySnap, new: &EntrySnap) -> bool {
    old.file_type() == new.file_type() && !old.is_dir()
}

#[cfg(test)]
mod tests {
    use super::super::super::inode::ROOT_INO;
    use super::*;
    use crate::sys;

    fn file(ino: u64, btime: (i64, i64)) -> EntrySnap {
        let mut st = sys::zeroed_stat();
        st.st_dev = 7;
        st.st_ino = ino;
        st.st_mode = libc::S_IFREG | 0o644;
        st.st_nlink = 1;
        EntrySnap::from_stat(&st).with_btime(Some(btime))
    }

    fn kinds(changes: &[Change]) -> Vec<Kind> {
        changes.iter().map(Change::kind).collect()
    }

    fn changes(old: EntrySnap, new: EntrySnap) -> Vec<Change> {
        let (a, b): (Snapshot, Snapshot) = (
            [(OsString::from("A"), old)].into(),
            [(OsString::from("B"), new)].into(),
        );
        let mut out = Vec::new();
        diff(ROOT_INO, &a, &b, &mut out);
        pair(out, |_| false)
    }

    fn entry(old: EntrySnap, new: EntrySnap) -> Vec<Kind> {
        let mut out = Vec::new();
        diff_entry(ROOT_INO, OsStr::new("A"), Some(&old), Some(&new), &mut out);
        kinds(&pair(out, |_| false))
    }

    /// A name gone and another with the same inode number is a rename only when it is the same
    /// object: a number freed and reused (another birth time) is a delete and a create.
    #[test]
    fn a_reused_number_is_not_a_rename() {
        assert_eq!(
            kinds(&changes(file(12, (5, 1)), file(12, (5, 1)))),
            [Kind::Rename]
        );
        assert_eq!(
            kinds(&changes(file(12, (5, 1)), file(12, (9, 0)))),
            [Kind::Delete, Kind::Create]
        );
        // Birth time unknown on either side: the number decides.
        assert_eq!(
            kinds(&changes(file(12, (0, 0)), file(12, (9, 0)))),
            [Kind::Rename]
        );
    }

    /// The same name, another object of the same kind: replaced (an atomic save), not rewritten.
    #[test]
    fn another_object_under_the_same_name_is_a_replacement() {
        assert_eq!(entry(file(12, (5, 1)), file(12, (9, 0))), [Kind::Replace]);
        assert_eq!(entry(file(12, (5, 1)), file(13, (5, 1))), [Kind::Replace]);
        let mut grown = file(12, (5, 1));
        grown.size = 10;
        assert_eq!(entry(file(12, (5, 1)), grown), [Kind::Content]);
        // A file replaced by a folder: a delete and a create.
        let mut dir = file(13, (5, 1));
        dir.mode = libc::S_IFDIR | 0o755;
        assert_eq!(entry(file(12, (5, 1)), dir), [Kind::Delete, Kind::Create]);
    }

    /// A write moves mtime and ctime together; utimes sets an mtime of its own; touch sets atime
    /// and mtime to one instant.
    #[test]
    fn utimes_is_an_attribute_change_and_a_write_is_content() {
        let old = file(12, (5, 1));
        let mut write = old;
        write.mtime = (100, 5);
        write.ctime = (100, 5);
        assert_eq!(entry(old, write), [Kind::Content]);
        let mut utimes = old;
        utimes.mtime = (3, 0);
        utimes.atime = (3, 0);
        utimes.ctime = (100, 5);
        assert_eq!(entry(old, utimes), [Kind::Attr]);
        // utimes to now looks like a write (and a write followed by a read in the same clock
        // tick, which gives atime the same value, must stay content).
        let mut touch = old;
        touch.mtime = (100, 5);
        touch.atime = (100, 5);
        touch.ctime = (100, 5);
        assert_eq!(entry(old, touch), [Kind::Content]);
        // A write, then a chmod: both.
        let mut both = write;
        both.ctime = (101, 0);
        both.mode = libc::S_IFREG | 0o600;
        assert_eq!(entry(old, both), [Kind::Content, Kind::Attr]);
        // An xattr or link count: ctime alone.
        let mut ctime = old;
        ctime.ctime = (100, 5);
        assert_eq!(entry(old, ctime), [Kind::Attr]);
        // A read on the host (atime alone): nothing.
        let mut read = old;
        read.atime = (100, 5);
        assert_eq!(entry(old, read), []);
    }

    /// `mv d b; mv a d`: the folder moves first, and the file's rename replaces nothing.
    #[test]
    fn chained_renames_are_ordered() {
        let mut dir = file(30, (5, 1));
        dir.mode = libc::S_IFDIR | 0o755;
        let a = file(31, (5, 1));
        let old: Snapshot = [(OsString::from("a"), a), (OsString::from("d"), dir)].into();
        let new: Snapshot = [(OsString::from("b"), dir), (OsString::from("d"), a)].into();
        let mut out = Vec::new();
        diff(ROOT_INO, &old, &new, &mut out);
        let out = pair(out, |_| false);
        let names: Vec<(String, String, bool)> = out
            .iter()
            .map(|c| match c {
                Change::Rename {
                    name,
                    newname,
                    replaced,
                    ..
                } => (
                    name.to_string_lossy().into_owned(),
                    newname.to_string_lossy().into_owned(),
                    replaced.is_some(),
                ),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            names,
            [
                ("d".into(), "b".into(), false),
                ("a".into(), "d".into(), false)
            ]
        );
    }

    /// A second name of an object the kernel knows, or that was created in the same
    /// notification, is a hard link.
    #[test]
    fn hard_links() {
        let mut linked = file(20, (5, 1));
        linked.nlink = 2;
        let mut out = Vec::new();
        diff_entry(ROOT_INO, OsStr::new("g"), None, Some(&linked), &mut out);
        assert_eq!(kinds(&pair(out.clone(), |_| false)), [Kind::Create]);
        assert_eq!(kinds(&pair(out.clone(), |k| k.ino == 20)), [Kind::Link]);
        diff_entry(ROOT_INO, OsStr::new("h"), None, Some(&linked), &mut out);
        assert_eq!(
            kinds(&pair(out, |_| false)),
            [Kind::Create, Kind::Link],
            "the first name is the create, the second a link to it"
        );
    }
}
