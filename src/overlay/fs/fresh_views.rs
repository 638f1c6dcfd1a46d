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

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::overlay::inode::Ino;
use crate::util::lock;

/// How long after it was read a view answers lookups without trust.
pub const FRESH_VIEW: Duration = Duration::from_secs(1);

/// Most folders remembered (the oldest is forgotten first): a walk reads a folder's files
/// shortly after its view, so only the last few matter.
const FRESH_VIEWS: usize = 64;

/// The folders whose view was read last, and when (bounded: [`FRESH_VIEWS`]).
#[derive(Default)]
pub struct FreshViews(Mutex<VecDeque<(Ino, Instant)>>);

impl FreshViews {
    /// `ino`'s view was read from SOURCE, the reading begun at `read_from`.
    pub fn note(&self, ino: Ino, read_from: Instant) {
        let mut q = lock(&self.0);
        q.retain(|(i, _)| *i != ino);
        if q.len() == FRESH_VIEWS {
            q.pop_front();
        }
        q.push_back((ino, read_from));
    }

    /// Whether `ino`'s view was read within [`FRESH_VIEW`].
    pub fn is_fresh(&self, ino: Ino) -> bool {
        lock(&self.0)
            .iter()
            .rev()
            .find(|(i, _)| *i == ino)
            .is_some_and(|(_, at)| at.elapsed() <= FRESH_VIEW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_aged() {
        let f = FreshViews::default();
        let now = Instant::now();
        for i in 0..(FRESH_VIEWS as u64 + 1) {
            f.note(i + 10, now);
        }
        assert!(!f.is_fresh(10), "the oldest is forgotten past the bound");
        assert!(f.is_fresh(11) && f.is_fresh(FRESH_VIEWS as u64 + 10));
        f.note(11, now);
        assert_eq!(
            lock(&f.0).len(),
            FRESH_VIEWS,
            "a folder noted again is one entry"
        );
        assert!(!f.is_fresh(3), "never noted");
        if let Some(old) = now.checked_sub(FRESH_VIEW + Duration::from_millis(1)) {
            f.note(12, old);
            assert!(!f.is_fresh(12), "a view read longer ago than FRESH_VIEW");
        }
    }
}
