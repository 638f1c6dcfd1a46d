//! Folders whose view was read from SOURCE a moment ago: without trusted notifications a
//! first `LOOKUP` in one of them is answered from that view (`OverlayFs::lookup_in_view`) for
//! [`FRESH_VIEW`] after it was read.
//!
//! Why that is as fresh as asking: without trust the kernel is told to keep what a lookup
//! answers for a day (`cache=always`), and every open checks the file against SOURCE before it
//! is used, so what a lookup answers is the file's state at the lookup's moment, kept. A view
//! read within the last [`FRESH_VIEW`] is that state a moment earlier: the window a client of
//! `cache=auto` accepts for every attribute. A cold tree walk (grep -r, a build) reads a folder
//! and then each of its files; the folder's first view, read in the background as the kernel
//! lists it, has just stat'ed every entry, and asking SOURCE again per file is a round trip to
//! the host each.
//!
//! A folder is noted only when its first view read every entry from SOURCE (none taken as the
//! kernel was told of it, which may be older) and its names did not change while it was listed,
//! with its modification and change times: a lookup checks them against the folder's as the
//! kernel was told, so another folder that took the same inode number (and node) since is not
//! taken for it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::overlay::inode::{EntrySnap, Ino};
use crate::util::lock;

/// How long after it was read a view answers lookups without trust.
pub const FRESH_VIEW: Duration = Duration::from_secs(1);

/// Most folders remembered (the oldest is forgotten first): a walk reads a folder's files
/// shortly after its view, so only the last few matter.
const FRESH_VIEWS: usize = 64;

/// A noted folder: its node, its times then, when its view began to be read.
#[derive(Clone, Copy)]
struct Noted {
    ino: Ino,
    times: Times,
    at: Instant,
}

/// A folder's modification and change times.
type Times = ((i64, i64), (i64, i64));

fn times(e: &EntrySnap) -> Times {
    (e.mtime, e.ctime)
}

/// The folders whose view was read last, and when (bounded: [`FRESH_VIEWS`]).
#[derive(Default)]
pub struct FreshViews(Mutex<VecDeque<Noted>>);

impl FreshViews {
    /// `ino`'s view was read whole from SOURCE, the reading begun at `read_from`; `folder`:
    /// its attributes after the reading.
    pub fn note(&self, ino: Ino, folder: &EntrySnap, read_from: Instant) {
        let mut q = lock(&self.0);
        q.retain(|n| n.ino != ino);
        if q.len() == FRESH_VIEWS {
            q.pop_front();
        }
        q.push_back(Noted {
            ino,
            times: times(folder),
            at: read_from,
        });
    }

    /// Whether `ino`'s view was read within [`FRESH_VIEW`], of the folder whose attributes the
    /// kernel was told are `told`.
    pub fn is_fresh(&self, ino: Ino, told: Option<&EntrySnap>) -> bool {
        let Some(told) = told else {
            return false;
        };
        lock(&self.0)
            .iter()
            .rev()
            .find(|n| n.ino == ino)
            .is_some_and(|n| n.times == times(told) && n.at.elapsed() <= FRESH_VIEW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(mtime: i64) -> EntrySnap {
        let mut st = crate::sys::zeroed_stat();
        st.st_mode = libc::S_IFDIR | 0o755;
        st.st_mtime = mtime;
        st.st_ctime = mtime;
        EntrySnap::from_stat(&st)
    }

    #[test]
    fn bounded_aged_and_checked_against_the_folder() {
        let f = FreshViews::default();
        let now = Instant::now();
        let d = folder(100);
        for i in 0..(FRESH_VIEWS as u64 + 1) {
            f.note(i + 10, &d, now);
        }
        assert!(
            !f.is_fresh(10, Some(&d)),
            "the oldest is forgotten past the bound"
        );
        assert!(f.is_fresh(11, Some(&d)) && f.is_fresh(FRESH_VIEWS as u64 + 10, Some(&d)));
        f.note(11, &d, now);
        assert_eq!(
            lock(&f.0).len(),
            FRESH_VIEWS,
            "a folder noted again is one entry"
        );
        assert!(!f.is_fresh(3, Some(&d)), "never noted");
        assert!(!f.is_fresh(11, None), "nothing told of the folder");
        assert!(
            !f.is_fresh(11, Some(&folder(101))),
            "another folder under the same number, or this one changed since"
        );
        if let Some(old) = now.checked_sub(FRESH_VIEW + std::time::Duration::from_millis(1)) {
            f.note(12, &d, old);
            assert!(
                !f.is_fresh(12, Some(&d)),
                "a view read longer ago than FRESH_VIEW"
            );
        }
    }
}
