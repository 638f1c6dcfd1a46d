//! inotify: a non-blocking instance, its watches and its events.

use super::*;

/// One inotify event.
#[derive(Debug, Clone)]
pub struct InotifyEvent {
    pub wd: i32,
    pub mask: u32,
    pub cookie: u32,
    pub name: OsString,
}

/// A non-blocking inotify instance.
pub struct Inotify {
    pub(super) fd: OwnedFd,
}

impl Inotify {
    pub fn new() -> io::Result<Inotify> {
        // SAFETY: inotify_init1 takes flags only; a non-negative result is a new fd we own.
        let fd = cvt(unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) })?;
        // SAFETY: fd is fresh and owned by no one else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Inotify { fd })
    }

    /// Watch `path` for `mask`; returns the watch descriptor.
    pub fn add_watch(&self, path: &std::path::Path, mask: u32) -> io::Result<i32> {
        let c = cstr(path.as_os_str())?;
        // SAFETY: valid fd and C string.
        cvt(unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), mask) })
    }

    /// Events available within `timeout_ms` (none if the time passes).
    pub fn read(&self, timeout_ms: i32) -> io::Result<Vec<InotifyEvent>> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.raw_os_error() == Some(libc::EINTR) {
                Ok(Vec::new())
            } else {
                Err(e)
            };
        }
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: buf is writable for its length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return Ok(out);
            }
            let n = n as usize;
            let mut off = 0;
            while off + 16 <= n {
                let word = |i: usize| {
                    u32::from_ne_bytes([
                        buf[off + i],
                        buf[off + i + 1],
                        buf[off + i + 2],
                        buf[off + i + 3],
                    ])
                };
                let (wd, mask, cookie, len) = (word(0) as i32, word(4), word(8), word(12) as usize);
                let end = (off + 16 + len).min(n);
                let raw = &buf[off + 16..end];
                let name = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
                out.push(InotifyEvent {
                    wd,
                    mask,
                    cookie,
                    name: OsString::from_vec(name.to_vec()),
                });
                off = end;
            }
        }
    }
}
