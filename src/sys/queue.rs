//! What the host's barrier (`vfnotify host sync`) needs from the kernel: how many bytes of
//! events a notification descriptor holds right now (`FIONREAD`, which inotify and fanotify both
//! answer), an eventfd to wake the watcher thread, and a poll over two descriptors.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::cvt;

/// Bytes of events queued on an inotify or fanotify descriptor (`ioctl(FIONREAD)`).
pub fn queued_bytes(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: valid fd; FIONREAD writes one int to the pointer, which is valid and writable.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n as *mut libc::c_int) })?;
    Ok(n.max(0) as usize)
}

/// A non-blocking eventfd: [`EventFd::signal`] makes it readable until [`EventFd::clear`].
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd takes an initial value and flags; a non-negative result is ours.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        Ok(EventFd {
            // SAFETY: fd is fresh and owned by no one else.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Make the descriptor readable (adds 1 to its counter).
    pub fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64. A full counter (EAGAIN) is readable anyway.
        let _ = unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    /// Reset the counter (not readable any more until the next signal).
    pub fn clear(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64; EAGAIN (not signalled) is fine.
        let _ = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut v as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `poll` for input on `a` and, when given, `b`, up to `timeout_ms`: which are readable (EINTR
/// counts as a timeout).
pub fn poll_two(
    a: BorrowedFd<'_>,
    b: Option<BorrowedFd<'_>>,
    timeout_ms: i32,
) -> io::Result<(bool, bool)> {
    let mut pfds = [
        libc::pollfd {
            fd: a.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: b.map_or(-1, |b| b.as_raw_fd()),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: two valid pollfds for the length of the call (a negative fd is ignored by poll).
    match cvt(unsafe { libc::poll(pfds.as_mut_ptr(), 2, timeout_ms) }) {
        Ok(_) => Ok((pfds[0].revents != 0, pfds[1].revents != 0)),
        Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok((false, false)),
        Err(e) => Err(e),
    }
}

impl AsFd for super::Inotify {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventfd_wakes_poll_and_inotify_reports_queued_bytes() {
        let e = EventFd::new().unwrap();
        let ino = crate::sys::Inotify::new().unwrap();
        let dir = std::env::temp_dir().join(format!("vfnotify-queue-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        ino.add_watch(&dir, libc::IN_CREATE).unwrap();
        let fd = inotify_fd(&ino);
        assert_eq!(poll_two(fd, Some(e.as_fd()), 0).unwrap(), (false, false));
        e.signal();
        assert_eq!(poll_two(fd, Some(e.as_fd()), 0).unwrap(), (false, true));
        e.clear();
        assert_eq!(poll_two(fd, Some(e.as_fd()), 0).unwrap(), (false, false));
        assert_eq!(queued_bytes(fd).unwrap(), 0);
        std::fs::write(dir.join("abc"), b"").unwrap();
        // One event: the 16-byte header and the name padded to 16 bytes.
        assert_eq!(queued_bytes(fd).unwrap(), 32);
        assert_eq!(poll_two(fd, None, 0).unwrap(), (true, false));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn inotify_fd(i: &crate::sys::Inotify) -> BorrowedFd<'_> {
        i.as_fd()
    }
}
