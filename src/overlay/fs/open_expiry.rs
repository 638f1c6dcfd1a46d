//! Attribute expiries an OPEN waits for: a file the open found changed on SOURCE since the
//! kernel was told its attributes (no notification told it) has them expired before the open's
//! reply, so the kernel asks for them again before it reads (a cached read goes no further than
//! the size it holds) or shows them. The handler queues the file and waits, bounded, for the
//! expiry thread (`sync/open_expiry.rs`) to send it: kernel notifications are sent from worker
//! threads only, and this one does nothing else (it never waits on the mount, so every handler
//! waiting at once cannot hold it up; the atime thread, which stats through the mount between
//! its expiries, could be).

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::overlay::inode::Ino;
use crate::util::{lock, wait_until};

/// Most expiries waiting at once (a handler past it is answered without one, counted).
const MOST_PENDING: usize = 4096;

/// How long an open waits at most for its expiry to be sent.
pub const MOST_OPEN_EXPIRY_WAIT: Duration = Duration::from_millis(100);

#[derive(Default)]
pub struct OpenExpiries {
    pending: Mutex<Pending>,
    wake: Condvar,
    sent: Condvar,
}

#[derive(Default)]
struct Pending {
    inos: Vec<Ino>,
    queued: u64,
    sent: u64,
    closed: bool,
}

impl OpenExpiries {
    /// Queue `ino`'s expiry; its ticket for [`Self::wait_sent`], `None` when the queue is full
    /// or closed.
    pub fn push(&self, ino: Ino) -> Option<u64> {
        let mut p = lock(&self.pending);
        if p.closed || p.inos.len() >= MOST_PENDING {
            return None;
        }
        p.inos.push(ino);
        p.queued += 1;
        self.wake.notify_one();
        Some(p.queued)
    }

    /// Wait (at most `most`) until the expiry of `ticket` was sent; whether it was.
    pub fn wait_sent(&self, ticket: u64, most: Duration) -> bool {
        let p = lock(&self.pending);
        let (p, _) = wait_until(&self.sent, p, Instant::now() + most, |p| {
            p.sent >= ticket || p.closed
        });
        p.sent >= ticket
    }

    /// For the expiry thread: what waits, and the ticket it ends at, once there is any; `None`
    /// once closed.
    pub fn wait_batch(&self) -> Option<(Vec<Ino>, u64)> {
        let mut p = lock(&self.pending);
        loop {
            if p.closed {
                return None;
            }
            if !p.inos.is_empty() {
                return Some((std::mem::take(&mut p.inos), p.queued));
            }
            p = self.wake.wait(p).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// For the expiry thread: every expiry up to `upto` was sent.
    pub fn expired(&self, upto: u64) {
        let mut p = lock(&self.pending);
        if upto > p.sent {
            p.sent = upto;
            self.sent.notify_all();
        }
    }

    /// No more expiries: the thread ends and waiting handlers return.
    pub fn close(&self) {
        lock(&self.pending).closed = true;
        self.wake.notify_all();
        self.sent.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn an_open_waits_for_its_own_expiry_only() {
        let q = Arc::new(OpenExpiries::default());
        let t1 = q.push(7).unwrap();
        let t2 = q.push(8).unwrap();
        assert!(
            !q.wait_sent(t1, Duration::from_millis(1)),
            "nothing sent yet"
        );
        let worker = {
            let q = q.clone();
            std::thread::spawn(move || {
                let (inos, upto) = q.wait_batch().unwrap();
                assert_eq!(inos, vec![7, 8]);
                q.expired(upto);
            })
        };
        assert!(q.wait_sent(t2, Duration::from_secs(10)));
        assert!(
            q.wait_sent(t1, Duration::ZERO),
            "an earlier ticket is sent too"
        );
        worker.join().unwrap();
        q.close();
        assert_eq!(q.push(9), None, "closed");
        assert!(q.wait_batch().is_none());
    }

    #[test]
    fn a_full_queue_refuses() {
        let q = OpenExpiries::default();
        for i in 0..MOST_PENDING as u64 {
            assert!(q.push(i).is_some());
        }
        assert_eq!(q.push(1), None);
    }
}
