//! I/O on open fds: read, write, seek, sync, allocate, advise, copy ranges, poll, statvfs, dup.

use super::*;

/// Wait up to `timeout_ms` for a priority event on `fd` (for /proc/self/mountinfo: the mount
/// table changed). Ok(true) on an event, Ok(false) on timeout; EINTR counts as a timeout.
pub fn poll_pri(fd: BorrowedFd<'_>, timeout_ms: i32) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLPRI,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the length of the call.
    match cvt(unsafe { libc::poll(&mut pfd, 1, timeout_ms) }) {
        Ok(n) => Ok(n > 0),
        Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `ftruncate`.
pub fn ftruncate(fd: BorrowedFd<'_>, size: u64) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd.
    cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) }).map(drop)
}

/// `posix_fadvise(POSIX_FADV_DONTNEED)` over the whole file: its clean cached pages go.
pub fn fadvise_dontneed(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd; it returns the error number instead of setting errno.
    let rc = unsafe { libc::posix_fadvise(fd.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// `fallocate`.
pub fn fallocate(fd: BorrowedFd<'_>, mode: i32, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd.
    cvt(unsafe {
        libc::fallocate(
            fd.as_raw_fd(),
            mode,
            offset as libc::off_t,
            len as libc::off_t,
        )
    })
    .map(drop)
}

/// `lseek` (SEEK_DATA / SEEK_HOLE included).
pub fn lseek(fd: BorrowedFd<'_>, offset: i64, whence: i32) -> io::Result<i64> {
    // SAFETY: plain syscall on a valid fd.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), offset, whence) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `copy_file_range`.
pub fn copy_file_range(
    fd_in: BorrowedFd<'_>,
    off_in: u64,
    fd_out: BorrowedFd<'_>,
    off_out: u64,
    len: usize,
) -> io::Result<usize> {
    let mut oi = off_in as libc::loff_t;
    let mut oo = off_out as libc::loff_t;
    // SAFETY: both offsets point to valid loff_t values we own; fds are valid.
    cvt_isize(unsafe {
        libc::copy_file_range(
            fd_in.as_raw_fd(),
            &mut oi,
            fd_out.as_raw_fd(),
            &mut oo,
            len,
            0,
        )
    })
}

/// `fsync` or `fdatasync`.
pub fn fsync(fd: BorrowedFd<'_>, datasync: bool) -> io::Result<()> {
    // SAFETY: plain syscalls on a valid fd.
    cvt(unsafe {
        if datasync {
            libc::fdatasync(fd.as_raw_fd())
        } else {
            libc::fsync(fd.as_raw_fd())
        }
    })
    .map(drop)
}

/// `pread` into `buf`; returns the bytes read.
pub fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    // SAFETY: buf is writable for buf.len() bytes.
    cvt_isize(unsafe {
        libc::pread(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            offset as libc::off_t,
        )
    })
}

/// `pwrite` from `buf`; returns the bytes written.
pub fn pwrite(fd: BorrowedFd<'_>, buf: &[u8], offset: u64) -> io::Result<usize> {
    // SAFETY: buf is readable for buf.len() bytes.
    cvt_isize(unsafe {
        libc::pwrite(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            offset as libc::off_t,
        )
    })
}

/// `fstatvfs`.
pub fn fstatvfs(fd: BorrowedFd<'_>) -> io::Result<libc::statvfs> {
    let mut st = MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: st is writable memory of the right size, filled on success.
    unsafe {
        cvt(libc::fstatvfs(fd.as_raw_fd(), st.as_mut_ptr()))?;
        Ok(st.assume_init())
    }
}

/// Write one raw message (a FUSE notification built by the caller) to the FUSE device `fd`.
pub fn write_fuse(fd: BorrowedFd<'_>, msg: &[u8]) -> io::Result<usize> {
    // SAFETY: msg is readable for its length.
    cvt_isize(unsafe { libc::write(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len()) })
}

/// `dup(fd)` with close-on-exec.
pub fn dup(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    fd.try_clone_to_owned()
}

/// `statvfs(path)` (follows a final symlink, as statfs does).
pub fn statvfs(path: &CStr) -> io::Result<libc::statvfs> {
    let mut st = MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: path is a valid C string; st is writable memory of the right size, filled on
    // success.
    unsafe {
        cvt(libc::statvfs(path.as_ptr(), st.as_mut_ptr()))?;
        Ok(st.assume_init())
    }
}

/// `flock(fd, op)` (LOCK_SH / LOCK_EX / LOCK_UN, optionally | LOCK_NB).
pub fn flock(fd: BorrowedFd<'_>, op: i32) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd.
    cvt(unsafe { libc::flock(fd.as_raw_fd(), op) }).map(drop)
}

/// A whole-file `struct flock` of type `ltype` (F_RDLCK / F_WRLCK / F_UNLCK) for [`fcntl_lock`];
/// `l_pid` is 0, as OFD locks require.
pub fn whole_file_lock(ltype: i32) -> libc::flock {
    // SAFETY: struct flock is plain old data; all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = ltype as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl
}

/// `fcntl(fd, cmd, &mut fl)` for the record-lock commands (F_SETLK, F_GETLK, F_OFD_SETLK,
/// F_OFD_GETLK, ...); a GETLK command fills `fl` in.
pub fn fcntl_lock(fd: BorrowedFd<'_>, cmd: i32, fl: &mut libc::flock) -> io::Result<()> {
    // SAFETY: fl is a valid, writable struct flock, as the lock commands take.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), cmd, fl as *mut libc::flock) }).map(drop)
}
