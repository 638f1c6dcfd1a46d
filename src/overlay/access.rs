//! Revalidation on open: the overlay's own access check, for when the kernel's was made against
//! stale attributes.
//!
//! Permission checks are the kernel's (`default_permissions`), made against the attributes it
//! caches; the overlay then opens the backing file with its own (root) credentials. A host change
//! that was not notified (yet) — `chmod 600`, `chown` — would therefore not be enforced until the
//! cached attributes expire (24 h with `cache=always`). So every open compares the attributes of
//! the file it just opened with those the kernel was told ([`attrs_differ`]); only when they
//! differ (the slow path) does it check the caller against the fresh ones ([`permits`]), with the
//! caller's supplementary groups read from `/proc` ([`caller_groups`]), and ask the sync worker
//! to rescan the file so the kernel's view is refreshed ([`Pending`] keeps a burst of opens to
//! one rescan per change).

use std::collections::HashMap;
use std::sync::Mutex;

use super::inode::{EntrySnap, Ino};

/// `__FMODE_EXEC`: set in the open flags of an `execve` (the kernel passes `f_flags` on).
const FMODE_EXEC: i32 = 0o40;

/// What an open asks for, as the VFS computes it (`build_open_flags`): read and/or write by the
/// access mode, write for `O_TRUNC`, execute for an `execve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
}

impl Want {
    /// From the flags of a FUSE OPEN or CREATE.
    pub fn of_open(flags: i32) -> Want {
        let acc = flags & libc::O_ACCMODE;
        Want {
            read: acc == libc::O_RDONLY || acc == libc::O_RDWR,
            write: acc == libc::O_WRONLY || acc == libc::O_RDWR || flags & libc::O_TRUNC != 0,
            exec: flags & FMODE_EXEC != 0,
        }
    }
}

/// Who asks: the request's (fs)uid and (fs)gid and the caller's supplementary groups.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub uid: u32,
    pub gid: u32,
    pub groups: &'a [u32],
}

/// Whether `caller` may access an object of `mode`, owned by `owner`:`group`, as `want` asks, by
/// the kernel's rules for mode bits (`generic_permission` without ACLs). uid 0 stands for a
/// caller with `CAP_DAC_OVERRIDE`, as the kernel treats root: it may read and write anything,
/// and execute a file that has any execute bit (a folder always). Anyone else gets the owner's
/// bits if it owns the object, else the group's if the object's group is its own or one of its
/// supplementary groups, else the others' bits.
pub fn permits(mode: u32, owner: u32, group: u32, caller: &Caller<'_>, want: Want) -> bool {
    if caller.uid == 0 {
        let is_dir = mode & libc::S_IFMT == libc::S_IFDIR;
        return !want.exec || is_dir || mode & 0o111 != 0;
    }
    let bits = if caller.uid == owner {
        (mode >> 6) & 7
    } else if caller.gid == group || caller.groups.contains(&group) {
        (mode >> 3) & 7
    } else {
        mode & 7
    };
    (!want.read || bits & 4 != 0) && (!want.write || bits & 2 != 0) && (!want.exec || bits & 1 != 0)
}

/// Whether SOURCE's attributes `fresh` differ from those the kernel was told (`None`: nothing
/// recorded) in what decides access or shows a change: type and mode, owner, group, size, mtime,
/// ctime. (Not atime, which reads change, nor the link count, whose changes move ctime.)
pub fn attrs_differ(told: Option<&EntrySnap>, fresh: &EntrySnap) -> bool {
    told.is_none_or(|t| {
        (t.mode, t.uid, t.gid, t.size, t.mtime, t.ctime)
            != (
                fresh.mode,
                fresh.uid,
                fresh.gid,
                fresh.size,
                fresh.mtime,
                fresh.ctime,
            )
    })
}

/// The supplementary groups in the text of `/proc/PID/status` (its `Groups:` line).
pub fn parse_groups(status: &str) -> Option<Vec<u32>> {
    let line = status.lines().find_map(|l| l.strip_prefix("Groups:"))?;
    line.split_whitespace().map(|g| g.parse().ok()).collect()
}

/// The supplementary groups of the calling thread `pid` (FUSE requests carry the caller's thread
/// id); `None` when they cannot be read (the caller is gone, or not visible in our pid namespace:
/// pid 0). Read only on the slow path of an open.
pub fn caller_groups(pid: u32) -> Option<Vec<u32>> {
    if pid == 0 {
        return None;
    }
    parse_groups(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// Most nodes remembered by [`Pending`]; beyond that it starts afresh (a rescan too many costs a
/// few `fstatat`s).
const PENDING_MAX: usize = 4096;

/// The rescans already asked for by opens that found a node's attributes changed, with the
/// attributes they found: a burst of opens of a changed file asks once per change, not once per
/// open, while the worker has not yet told the kernel.
#[derive(Debug, Default)]
pub struct Pending(Mutex<HashMap<Ino, EntrySnap>>);

impl Pending {
    /// Whether a rescan of `ino` with attributes `fresh` is still to be asked for (and note that
    /// it is asked for now).
    pub fn first(&self, ino: Ino, fresh: &EntrySnap) -> bool {
        let mut m = crate::util::lock(&self.0);
        if m.get(&ino) == Some(fresh) {
            return false;
        }
        if m.len() >= PENDING_MAX {
            m.clear();
        }
        m.insert(ino, *fresh);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Want = Want {
        read: true,
        write: false,
        exec: false,
    };
    const W: Want = Want {
        read: false,
        write: true,
        exec: false,
    };
    const RW: Want = Want {
        read: true,
        write: true,
        exec: false,
    };
    const X: Want = Want {
        read: false,
        write: false,
        exec: true,
    };

    fn caller(uid: u32, gid: u32, groups: &[u32]) -> Caller<'_> {
        Caller { uid, gid, groups }
    }

    #[test]
    fn open_flags_say_what_is_wanted() {
        assert_eq!(Want::of_open(libc::O_RDONLY), R);
        assert_eq!(Want::of_open(libc::O_WRONLY | libc::O_APPEND), W);
        assert_eq!(Want::of_open(libc::O_RDWR), RW);
        assert_eq!(Want::of_open(libc::O_RDONLY | libc::O_TRUNC), RW);
        let exec = Want::of_open(libc::O_RDONLY | libc::O_LARGEFILE | FMODE_EXEC);
        assert!(exec.exec && exec.read && !exec.write);
    }

    #[test]
    fn mode_bits_by_owner_group_and_others() {
        let f = libc::S_IFREG;
        // Owner bits decide for the owner, even when the group's would allow more.
        assert!(permits(f | 0o600, 1000, 100, &caller(1000, 100, &[]), RW));
        assert!(!permits(f | 0o066, 1000, 100, &caller(1000, 100, &[]), R));
        // Group: primary or supplementary.
        assert!(permits(f | 0o640, 0, 100, &caller(1000, 100, &[]), R));
        assert!(permits(
            f | 0o640,
            0,
            100,
            &caller(1000, 1000, &[5, 100]),
            R
        ));
        assert!(!permits(
            f | 0o640,
            0,
            100,
            &caller(1000, 1000, &[5, 100]),
            W
        ));
        assert!(!permits(f | 0o640, 0, 100, &caller(1000, 1000, &[5]), R));
        // Others.
        assert!(permits(f | 0o604, 0, 100, &caller(1000, 1000, &[]), R));
        assert!(!permits(f | 0o600, 0, 100, &caller(1000, 1000, &[]), R));
        assert!(!permits(f | 0o644, 0, 0, &caller(1000, 1000, &[]), W));
        assert!(permits(f | 0o755, 0, 0, &caller(1000, 1000, &[]), X));
        assert!(!permits(f | 0o644, 0, 0, &caller(1000, 1000, &[]), X));
    }

    #[test]
    fn root_reads_and_writes_anything_and_executes_what_has_an_x_bit() {
        let root = caller(0, 0, &[]);
        assert!(permits(libc::S_IFREG, 1000, 1000, &root, RW));
        assert!(!permits(libc::S_IFREG | 0o644, 1000, 1000, &root, X));
        assert!(permits(libc::S_IFREG | 0o010, 1000, 1000, &root, X));
        assert!(permits(libc::S_IFDIR, 1000, 1000, &root, X));
    }

    #[test]
    fn differences_that_matter() {
        let st = {
            let mut st = crate::sys::zeroed_stat();
            st.st_mode = libc::S_IFREG | 0o644;
            st.st_size = 5;
            st.st_mtime = 100;
            st.st_ctime = 100;
            st
        };
        let told = EntrySnap::from_stat(&st);
        assert!(attrs_differ(None, &told));
        assert!(!attrs_differ(Some(&told), &told));
        let mut read = told;
        read.atime = (200, 0);
        read.nlink = 3;
        assert!(!attrs_differ(Some(&told), &read), "atime, nlink");
        for change in [
            |e: &mut EntrySnap| e.mode = libc::S_IFREG | 0o600,
            |e: &mut EntrySnap| e.uid = 7,
            |e: &mut EntrySnap| e.gid = 7,
            |e: &mut EntrySnap| e.size = 6,
            |e: &mut EntrySnap| e.mtime = (100, 1),
            |e: &mut EntrySnap| e.ctime = (101, 0),
        ] {
            let mut fresh = told;
            change(&mut fresh);
            assert!(attrs_differ(Some(&told), &fresh), "{fresh:?}");
        }
    }

    #[test]
    fn groups_from_proc_status() {
        let status = "Name:\tcat\nUid:\t1000\t1000\t1000\t1000\nGroups:\t4 24 27 \nNgid:\t0\n";
        assert_eq!(parse_groups(status), Some(vec![4, 24, 27]));
        assert_eq!(parse_groups("Groups:\t\n"), Some(vec![]));
        assert_eq!(parse_groups("Name:\tx\n"), None);
        assert_eq!(parse_groups("Groups:\t4 x\n"), None);
        assert!(caller_groups(std::process::id()).is_some());
        assert_eq!(caller_groups(0), None);
    }

    #[test]
    fn a_burst_asks_once_per_change() {
        let p = Pending::default();
        let mut st = crate::sys::zeroed_stat();
        st.st_mode = libc::S_IFREG | 0o600;
        let a = EntrySnap::from_stat(&st);
        st.st_mode = libc::S_IFREG | 0o640;
        let b = EntrySnap::from_stat(&st);
        assert!(p.first(5, &a));
        assert!(!p.first(5, &a));
        assert!(p.first(6, &a));
        assert!(p.first(5, &b), "a later change asks again");
        assert!(p.first(5, &a));
    }
}
