//! Changes guest clients make through the overlay, while they are made: the rule that a change a
//! guest client made itself is not replayed (its watchers saw it happen) must hold when a
//! notification is handled at the same moment — a host watcher sees the client's change on the
//! share at once and notifies. A client's operation marks its names before it touches SOURCE and
//! records the result in the folder's view after; a notification handled meanwhile neither
//! reports those names (it may have read SOURCE between the two) nor overwrites what the
//! operation recorded in the view.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::inode::Ino;

/// The names client operations touch, with the generation of their last touch.
#[derive(Default)]
pub struct LocalOps {
    generation: AtomicU64,
    /// `(folder, name)` → (generation of the last operation that began on it, operations on it
    /// in flight).
    names: Mutex<HashMap<(Ino, OsString), (u64, u32)>>,
}

/// Ends a client operation's claim on its names when dropped.
pub struct LocalGuard<'a> {
    ops: &'a LocalOps,
    names: Vec<(Ino, OsString)>,
}

impl Drop for LocalGuard<'_> {
    fn drop(&mut self) {
        let mut m = lock(&self.ops.names);
        for n in self.names.drain(..) {
            if let Some(e) = m.get_mut(&n) {
                e.1 = e.1.saturating_sub(1);
            }
        }
    }
}

use crate::util::lock;

impl LocalOps {
    /// A client operation on these names begins (before it touches SOURCE).
    pub fn begin<'a>(&'a self, names: &[(Ino, &OsStr)]) -> LocalGuard<'a> {
        let g = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let mut m = lock(&self.names);
        let names: Vec<(Ino, OsString)> = names
            .iter()
            .map(|(d, n)| {
                let k = (*d, n.to_os_string());
                let e = m.entry(k.clone()).or_insert((0, 0));
                *e = (g, e.1 + 1);
                k
            })
            .collect();
        LocalGuard { ops: self, names }
    }

    /// The generation now (a notification's start).
    pub fn now(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Whether a client operation on `(dir, name)` began after generation `since` or is in
    /// flight.
    pub fn touched(&self, dir: Ino, name: &OsStr, since: u64) -> bool {
        lock(&self.names)
            .get(&(dir, name.to_os_string()))
            .is_some_and(|(g, n)| *g > since || *n > 0)
    }

    /// The names of `dir` touched since `since` (or in flight).
    pub fn touched_in(&self, dir: Ino, since: u64) -> Vec<OsString> {
        lock(&self.names)
            .iter()
            .filter(|((d, _), (g, n))| *d == dir && (*g > since || *n > 0))
            .map(|((_, name), _)| name.clone())
            .collect()
    }

    /// Forget names whose operations ended at or before `since`.
    pub fn forget_before(&self, since: u64) {
        lock(&self.names).retain(|_, (g, n)| *g > since || *n > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_touched_while_in_flight_and_after_a_start() {
        let ops = LocalOps::default();
        let a = OsStr::new("a");
        let since = ops.now();
        assert!(!ops.touched(1, a, since));
        let g = ops.begin(&[(1, a)]);
        assert!(ops.touched(1, a, since));
        drop(g);
        // Ended, but after `since`: still touched for that notification.
        assert!(ops.touched(1, a, since));
        assert_eq!(ops.touched_in(1, since), vec![OsString::from("a")]);
        let later = ops.now();
        assert!(!ops.touched(1, a, later));
        ops.forget_before(later);
        assert!(ops.touched_in(1, 0).is_empty());
    }
}
