//! The watcher's part of the barrier (`vfnotify host sync`): publish every change the kernel
//! queued before the request.
//!
//! Proof that the queue is drained, without a cookie file: inotify and fanotify (notification
//! class) queue an event inside the system call that made the change, before it returns, so
//! every change completed before the request is in the queue when the watcher thread takes the
//! request. `FIONREAD` then says how many bytes the queue holds; the watcher reads (and handles)
//! at least that many more bytes, or until the queue is empty, whichever comes first. A merged
//! event stays where the first one was, so nothing queued before is left behind, and a change
//! stream that never pauses cannot keep the barrier waiting. Files held while being written
//! ([`super::WRITE_HOLD`]) are told at once, and a channel not fully watched (the inotify watch
//! limit) is sent whole, since a change in an unwatched folder leaves no event to drain. (A
//! cookie file, as watchman writes, would be seen by the guests through the share: their caches
//! would have to be told about it too.)

use std::os::fd::{AsFd, BorrowedFd};

use super::{Bases, Emitter, Watcher};
use crate::host::state::{ChannelState, Hub};
use crate::sys::queue::{poll_two, queued_bytes};

/// Bytes one inotify event took in the read buffer: the header and the name padded with NULs
/// to a multiple of the header size (the kernel's `round_event_name_len`).
pub fn inotify_record_len(e: &crate::sys::InotifyEvent) -> u64 {
    const HDR: u64 = 16;
    let name = e.name.len() as u64;
    if name == 0 {
        HDR
    } else {
        HDR + (name + 1).div_ceil(HDR) * HDR
    }
}

impl Watcher {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Watcher::Fanotify(w) => w.fd(),
            Watcher::Inotify(w) => w.fd(),
        }
    }

    fn consumed(&self) -> u64 {
        match self {
            Watcher::Fanotify(w) => w.consumed,
            Watcher::Inotify(w) => w.consumed,
        }
    }

    /// Wait up to `timeout_ms` for kernel events or a drain request; returns whether a drain
    /// was asked for.
    pub(super) fn wait_events(&self, hub: &Hub, timeout_ms: i32) -> bool {
        let wake = hub.drain.fd();
        match poll_two(self.fd(), wake, timeout_ms) {
            Ok((_, asked)) => asked || hub.drain.waiting(),
            Err(e) => {
                tracing::warn!(error = %e, "poll failed");
                std::thread::sleep(std::time::Duration::from_millis(timeout_ms.max(1) as u64));
                hub.drain.waiting()
            }
        }
    }

    /// Publish everything queued now, then release the waiting requests.
    pub(super) fn drain(&mut self, hub: &Hub, em: &mut Emitter<'_>, bases: &mut Bases) {
        let requests = hub.drain.take();
        if requests.is_empty() {
            return;
        }
        // On an error, read until the queue is empty.
        let mut left = queued_bytes(self.fd()).map_or(u64::MAX, |n| n as u64);
        while left > 0 {
            let before = self.consumed();
            self.step(em, 0);
            let read = self.consumed() - before;
            if read == 0 {
                break;
            }
            left = left.saturating_sub(read);
        }
        if self.take_base_hint() {
            bases.check(hub, em, self);
        }
        for ch in 0..hub.channels.len() {
            if matches!(hub.channel_state(ch), Some(ChannelState::Degraded(_))) {
                em.whole(ch);
            }
        }
        em.release_all();
        em.flush();
        for r in requests {
            let _ = r.send(());
        }
    }
}

impl Emitter<'_> {
    /// Tell every held file now.
    fn release_all(&mut self) {
        let held: Vec<_> = self.held.keys().cloned().collect();
        for p in held {
            self.path(&p);
        }
    }
}

impl super::fanotify::FanWatcher {
    fn fd(&self) -> BorrowedFd<'_> {
        self.fan.as_fd()
    }
}

impl super::inotify::InoWatcher {
    fn fd(&self) -> BorrowedFd<'_> {
        self.ino.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inotify_record_lengths_are_the_kernels() {
        let ev = |name: &str| crate::sys::InotifyEvent {
            wd: 1,
            mask: 0,
            cookie: 0,
            name: name.into(),
        };
        assert_eq!(inotify_record_len(&ev("")), 16);
        assert_eq!(inotify_record_len(&ev("abc")), 32);
        assert_eq!(inotify_record_len(&ev(&"x".repeat(15))), 32);
        assert_eq!(inotify_record_len(&ev(&"x".repeat(16))), 48);
    }
}
