//! The only home of `unsafe`: thin, documented wrappers over Linux system calls.
//!
//! Every function returns `io::Result` with the OS error preserved (callers turn it into an errno
//! in exactly one place). Path arguments are C strings relative to a directory fd; nothing here
//! follows a symlink in the last component unless its name says so.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

pub mod fanotify;
pub mod fs_struct;
pub mod handle;
pub mod mmap;
pub mod mount_api;
pub mod queue;

/// `-1` → the thread's errno, anything else → Ok.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_isize(ret: isize) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// A name or path as a C string (names from the kernel never hold NUL; others get EINVAL).
pub fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// The calling thread's id (what the kernel puts in a FUSE request's `pid`).
pub fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() as u32 }
}

/// `fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW)`; an empty name stats `dirfd` itself.
pub fn fstatat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    let flags = if name.is_empty() {
        libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH
    } else {
        libc::AT_SYMLINK_NOFOLLOW
    };
    // SAFETY: name is a valid C string, st points to writable memory of the right size; on
    // success the kernel has filled it completely.
    unsafe {
        cvt(libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            flags,
        ))?;
        Ok(st.assume_init())
    }
}

/// `fstat(fd)`.
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    fstatat(fd, c"")
}

/// `openat(dirfd, name, flags | O_CLOEXEC, mode)`.
pub fn openat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: u32,
) -> io::Result<OwnedFd> {
    // SAFETY: name is a valid C string; on success the returned fd is new and owned by us.
    unsafe {
        let fd = cvt(libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        ))?;
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// `openat2(AT_FDCWD, path, flags, RESOLVE_NO_SYMLINKS)`: open an absolute path whose every
/// component must be a real directory or file, no symlink (nor /proc magic link) anywhere.
/// `Ok(None)` where the kernel has no openat2 (before 5.6).
pub fn open_no_symlinks(path: &CStr, flags: libc::c_int) -> io::Result<Option<OwnedFd>> {
    /// `struct open_how` (include/uapi/linux/openat2.h); libc's is non-exhaustive.
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_NO_SYMLINKS,
    };
    // SAFETY: `path` is a valid C string and `how` a fully initialised open_how whose size is
    // passed along; on success the returned fd is new and owned by us.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if ret < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOSYS) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: the syscall returned a new descriptor that nothing else owns.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(ret as libc::c_int) }))
}

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

/// `mkdirat`.
pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: name is a valid C string.
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

/// `mknodat`.
pub fn mknodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32, rdev: u64) -> io::Result<()> {
    // SAFETY: name is a valid C string.
    cvt(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, rdev) }).map(drop)
}

/// `symlinkat(target, dirfd, name)`.
pub fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: both are valid C strings.
    cvt(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

/// `linkat(olddir, oldname, newdir, newname, 0)` (never follows a symlink).
pub fn linkat(
    olddir: BorrowedFd<'_>,
    oldname: &CStr,
    newdir: BorrowedFd<'_>,
    newname: &CStr,
) -> io::Result<()> {
    // SAFETY: both names are valid C strings.
    cvt(unsafe {
        libc::linkat(
            olddir.as_raw_fd(),
            oldname.as_ptr(),
            newdir.as_raw_fd(),
            newname.as_ptr(),
            0,
        )
    })
    .map(drop)
}

/// `unlinkat(dirfd, name, flags)` (`AT_REMOVEDIR` for directories).
pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: name is a valid C string.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

/// `renameat2(olddir, oldname, newdir, newname, flags)`.
pub fn renameat2(
    olddir: BorrowedFd<'_>,
    oldname: &CStr,
    newdir: BorrowedFd<'_>,
    newname: &CStr,
    flags: u32,
) -> io::Result<()> {
    // SAFETY: both names are valid C strings.
    cvt(unsafe {
        libc::renameat2(
            olddir.as_raw_fd(),
            oldname.as_ptr(),
            newdir.as_raw_fd(),
            newname.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// `readlinkat`.
pub fn readlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: buf is writable for buf.len() bytes; the kernel writes at most that many.
    let n = cvt_isize(unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    buf.truncate(n);
    Ok(buf)
}

/// `fchownat(dirfd, name, uid, gid, AT_SYMLINK_NOFOLLOW)`; `u32::MAX` leaves an id unchanged.
pub fn fchownat(dir: BorrowedFd<'_>, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    let flags = if name.is_empty() {
        libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH
    } else {
        libc::AT_SYMLINK_NOFOLLOW
    };
    // SAFETY: name is a valid C string.
    cvt(unsafe { libc::fchownat(dir.as_raw_fd(), name.as_ptr(), uid, gid, flags) }).map(drop)
}

/// `fchmod` through `/proc/self/fd` is avoided: this is `fchmodat(dirfd, name, mode, 0)`, which
/// follows a final symlink, so callers must not use it on symlinks.
pub fn fchmodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: name is a valid C string.
    cvt(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) }).map(drop)
}

/// chmod of `name` in `dir` without ever following a symlink, even one swapped in at the last
/// moment: open it `O_PATH | O_NOFOLLOW`, refuse a symlink (EOPNOTSUPP, as Linux does for
/// lchmod), and change the mode of exactly the opened inode through its `/proc` link.
pub fn fchmodat_nofollow(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    let fd = openat(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
    if fstat(fd.as_fd())?.st_mode & libc::S_IFMT == libc::S_IFLNK {
        return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
    }
    let p = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    fchmodat(cwd(), &p, mode)
}

/// `fchmod(fd, mode)`.
pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd.
    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode) }).map(drop)
}

/// A time for [`utimensat`].
#[derive(Debug, Clone, Copy)]
pub enum SetTime {
    Omit,
    Now,
    At(i64, i64),
}

fn timespec(t: SetTime) -> libc::timespec {
    match t {
        SetTime::Omit => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        SetTime::Now => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        SetTime::At(s, ns) => libc::timespec {
            tv_sec: s,
            tv_nsec: ns,
        },
    }
}

/// `utimensat(dirfd, name, [atime, mtime], AT_SYMLINK_NOFOLLOW)`.
pub fn utimensat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    atime: SetTime,
    mtime: SetTime,
) -> io::Result<()> {
    let times = [timespec(atime), timespec(mtime)];
    let flags = if name.is_empty() {
        libc::AT_EMPTY_PATH
    } else {
        libc::AT_SYMLINK_NOFOLLOW
    };
    // SAFETY: name is a valid C string and times an array of two timespecs.
    cvt(unsafe { libc::utimensat(dir.as_raw_fd(), name.as_ptr(), times.as_ptr(), flags) }).map(drop)
}

/// `ftruncate`.
pub fn ftruncate(fd: BorrowedFd<'_>, size: u64) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd.
    cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) }).map(drop)
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

/// The `/proc/self/fd/N/NAME` path that reaches `name` in `dir` (works for O_PATH directory fds).
/// With a name, the `l*xattr` calls act on it without following a final symlink; without one,
/// the following calls act on the directory `dir` itself through its magic link.
fn proc_path(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<CString> {
    let mut p = format!("/proc/self/fd/{}", dir.as_raw_fd()).into_bytes();
    if !name.is_empty() {
        p.push(b'/');
        p.extend_from_slice(name.to_bytes());
    }
    CString::new(p).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `lgetxattr`; with `size == 0` returns the needed size and an empty buffer.
pub fn getxattr(
    dir: BorrowedFd<'_>,
    name: &CStr,
    attr: &CStr,
    size: usize,
) -> io::Result<(usize, Vec<u8>)> {
    let path = proc_path(dir, name)?;
    let mut buf = vec![0u8; size];
    // SAFETY: path and attr are valid C strings; buf is writable for size bytes (null when 0,
    // which asks for the size only).
    let n = cvt_isize(unsafe {
        (if name.is_empty() {
            libc::getxattr
        } else {
            libc::lgetxattr
        })(
            path.as_ptr(),
            attr.as_ptr(),
            if size == 0 {
                std::ptr::null_mut()
            } else {
                buf.as_mut_ptr().cast()
            },
            size,
        )
    })?;
    buf.truncate(n.min(size));
    Ok((n, buf))
}

/// `llistxattr`; with `size == 0` returns the needed size.
pub fn listxattr(dir: BorrowedFd<'_>, name: &CStr, size: usize) -> io::Result<(usize, Vec<u8>)> {
    let path = proc_path(dir, name)?;
    let mut buf = vec![0u8; size];
    // SAFETY: as in getxattr.
    let n = cvt_isize(unsafe {
        (if name.is_empty() {
            libc::listxattr
        } else {
            libc::llistxattr
        })(
            path.as_ptr(),
            if size == 0 {
                std::ptr::null_mut()
            } else {
                buf.as_mut_ptr().cast()
            },
            size,
        )
    })?;
    buf.truncate(n.min(size));
    Ok((n, buf))
}

/// `lsetxattr`.
pub fn setxattr(
    dir: BorrowedFd<'_>,
    name: &CStr,
    attr: &CStr,
    value: &[u8],
    flags: i32,
) -> io::Result<()> {
    let path = proc_path(dir, name)?;
    // SAFETY: valid C strings; value readable for its length.
    cvt(unsafe {
        (if name.is_empty() {
            libc::setxattr
        } else {
            libc::lsetxattr
        })(
            path.as_ptr(),
            attr.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(drop)
}

/// `lremovexattr`.
pub fn removexattr(dir: BorrowedFd<'_>, name: &CStr, attr: &CStr) -> io::Result<()> {
    let path = proc_path(dir, name)?;
    // SAFETY: valid C strings.
    cvt(unsafe {
        (if name.is_empty() {
            libc::removexattr
        } else {
            libc::lremovexattr
        })(path.as_ptr(), attr.as_ptr())
    })
    .map(drop)
}

/// One directory entry from [`read_dir`].
#[derive(Debug, Clone)]
pub struct RawDirent {
    pub name: OsString,
    pub ino: u64,
    pub kind: u8,
}

/// Read every entry of the directory open at `fd` (from its start), skipping `.` and `..`.
pub fn read_dir(fd: BorrowedFd<'_>) -> io::Result<Vec<RawDirent>> {
    lseek(fd, 0, libc::SEEK_SET)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: buf is writable for its length; getdents64 fills at most that many bytes.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                fd.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Ok(out);
        }
        let n = n as usize;
        let mut off = 0;
        while off + 19 <= n {
            // linux_dirent64: u64 d_ino, i64 d_off, u16 d_reclen, u8 d_type, char d_name[].
            let ino = u64::from_ne_bytes(buf[off..off + 8].try_into().unwrap_or([0; 8]));
            let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            let kind = buf[off + 18];
            if reclen == 0 || off + reclen > n {
                break;
            }
            let name_bytes = &buf[off + 19..off + reclen];
            let len = name_bytes
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(name_bytes.len());
            let name = &name_bytes[..len];
            if name != b"." && name != b".." {
                out.push(RawDirent {
                    name: OsString::from_vec(name.to_vec()),
                    ino,
                    kind,
                });
            }
            off += reclen;
        }
    }
}

/// Result of [`fork`].
pub enum Fork {
    Parent(i32),
    Child,
}

/// `fork()`. Call only while the process has a single thread.
pub fn fork() -> io::Result<Fork> {
    // SAFETY: the caller guarantees the process is single-threaded, so the child inherits a
    // consistent address space (no lock held by another thread).
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Fork::Child),
        pid => Ok(Fork::Parent(pid)),
    }
}

/// `setsid()`.
pub fn setsid() -> io::Result<()> {
    // SAFETY: no preconditions.
    cvt(unsafe { libc::setsid() }).map(drop)
}

/// `dup2(from, to)`.
pub fn dup2(from: BorrowedFd<'_>, to: RawFd) -> io::Result<()> {
    // SAFETY: dup2 on a valid source fd; `to` is replaced atomically.
    cvt(unsafe { libc::dup2(from.as_raw_fd(), to) }).map(drop)
}

/// `umask(mask)`, returning the previous mask.
pub fn umask(mask: u32) -> u32 {
    // SAFETY: no preconditions.
    unsafe { libc::umask(mask) }
}

/// The effective uid.
pub fn geteuid() -> u32 {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() }
}

/// `mount(source, target, fstype, flags, data)`.
pub fn mount(
    source: &CStr,
    target: &CStr,
    fstype: &CStr,
    flags: libc::c_ulong,
    data: &CStr,
) -> io::Result<()> {
    // SAFETY: all arguments are valid C strings.
    cvt(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    })
    .map(drop)
}

/// `umount2(target, flags)` (`MNT_DETACH` for a lazy unmount).
pub fn umount2(target: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: target is a valid C string.
    cvt(unsafe { libc::umount2(target.as_ptr(), flags) }).map(drop)
}

/// Block SIGTERM, SIGINT and SIGHUP in the calling thread (and threads it starts later), so a
/// dedicated thread can take them with [`wait_signal`].
pub fn block_termination_signals() -> io::Result<()> {
    termination_mask(libc::SIG_BLOCK)
}

/// `pthread_sigmask(how, {SIGTERM, SIGINT, SIGHUP})` for the calling thread.
fn termination_mask(how: libc::c_int) -> io::Result<()> {
    let set = termination_set();
    // SAFETY: set is an initialised sigset_t; a null old-set pointer is allowed.
    let r = unsafe { libc::pthread_sigmask(how, &set, std::ptr::null_mut()) };
    if r != 0 {
        Err(io::Error::from_raw_os_error(r))
    } else {
        Ok(())
    }
}

fn termination_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set before sigaddset uses it.
    unsafe {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(set.as_mut_ptr());
        let mut set = set.assume_init();
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}

/// Undo [`block_termination_signals`] in the calling thread (and threads it starts later).
pub fn unblock_termination_signals() -> io::Result<()> {
    termination_mask(libc::SIG_UNBLOCK)
}

/// Wait for one of the signals blocked by [`block_termination_signals`]; returns its number.
pub fn wait_signal() -> io::Result<i32> {
    let set = termination_set();
    let mut sig: libc::c_int = 0;
    // SAFETY: set is initialised, sig is writable.
    let r = unsafe { libc::sigwait(&set, &mut sig) };
    if r != 0 {
        Err(io::Error::from_raw_os_error(r))
    } else {
        Ok(sig)
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

/// An all-zero `struct stat`, to be filled field by field.
pub fn zeroed_stat() -> libc::stat {
    // SAFETY: struct stat is plain old data (integers only); all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

/// `AT_FDCWD` as a borrowed fd, for `*at` calls on absolute paths.
pub fn cwd() -> BorrowedFd<'static> {
    // SAFETY: AT_FDCWD is a special value every *at system call accepts; it is never closed.
    unsafe { BorrowedFd::borrow_raw(libc::AT_FDCWD) }
}

/// `truncate(path, size)`.
fn truncate(path: &CStr, size: u64) -> io::Result<()> {
    // SAFETY: path is a valid C string.
    cvt(unsafe { libc::truncate(path.as_ptr(), size as libc::off_t) }).map(drop)
}

/// `truncate(2)` of the regular file at `path` without following a final symlink, even one
/// swapped in at the last moment: open it `O_PATH | O_NOFOLLOW`, refuse anything but a regular
/// file (EINVAL, as truncate does), and truncate exactly that inode through its `/proc` link
/// (no write open needed, like truncate).
pub fn truncate_nofollow(path: &CStr, size: u64) -> io::Result<()> {
    let fd = openat(cwd(), path, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
    if fstat(fd.as_fd())?.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let link = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    truncate(&link, size)
}

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
    fd: OwnedFd,
}

impl Inotify {
    pub fn new() -> io::Result<Inotify> {
        // SAFETY: inotify_init1 takes flags only; a non-negative result is a new fd we own.
        let fd = cvt(unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) })?;
        // SAFETY: fd is fresh and owned by no one else.
        Ok(Inotify {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
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

/// Raise the soft open-files limit to the hard limit (a server started with a low soft limit
/// would otherwise give its clients EMFILE). Returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid, writable rlimit.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: lim is a valid rlimit.
    cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) })?;
    Ok(lim.rlim_cur)
}

/// `fstatat` that bypasses the attribute cache of a network or FUSE filesystem underneath
/// (`statx` with `AT_STATX_FORCE_SYNC`; on local filesystems the same as [`fstatat`]). The
/// overlay's rescans use it: on a virtiofs SOURCE with caching, a plain stat may still return what
/// the guest saw before the host's change.
pub fn fstatat_fresh(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat> {
    fstatat_fresh_btime(dir, name).map(|(st, _)| st)
}

/// [`fstatat_fresh`], with the birth time where the filesystem reports it.
pub fn fstatat_fresh_btime(
    dir: BorrowedFd<'_>,
    name: &CStr,
) -> io::Result<(libc::stat, Option<(i64, i64)>)> {
    let mut stx = MaybeUninit::<libc::statx>::uninit();
    let mut flags = libc::AT_SYMLINK_NOFOLLOW | libc::AT_STATX_FORCE_SYNC;
    if name.is_empty() {
        flags |= libc::AT_EMPTY_PATH;
    }
    // SAFETY: name is a valid C string and stx writable memory of the right size, filled by the
    // kernel on success.
    let stx = unsafe {
        cvt(libc::statx(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags,
            libc::STATX_BASIC_STATS | libc::STATX_BTIME,
            stx.as_mut_ptr(),
        ))?;
        stx.assume_init()
    };
    let mut st = zeroed_stat();
    st.st_dev = libc::makedev(stx.stx_dev_major, stx.stx_dev_minor);
    st.st_ino = stx.stx_ino;
    st.st_mode = stx.stx_mode as u32;
    st.st_nlink = stx.stx_nlink as _;
    st.st_uid = stx.stx_uid;
    st.st_gid = stx.stx_gid;
    st.st_rdev = libc::makedev(stx.stx_rdev_major, stx.stx_rdev_minor);
    st.st_size = stx.stx_size as i64;
    st.st_blksize = stx.stx_blksize as _;
    st.st_blocks = stx.stx_blocks as i64;
    st.st_atime = stx.stx_atime.tv_sec;
    st.st_atime_nsec = stx.stx_atime.tv_nsec as i64;
    st.st_mtime = stx.stx_mtime.tv_sec;
    st.st_mtime_nsec = stx.stx_mtime.tv_nsec as i64;
    st.st_ctime = stx.stx_ctime.tv_sec;
    st.st_ctime_nsec = stx.stx_ctime.tv_nsec as i64;
    let btime = (stx.stx_mask & libc::STATX_BTIME != 0)
        .then_some((stx.stx_btime.tv_sec, stx.stx_btime.tv_nsec as i64));
    Ok((st, btime))
}

/// Whether the filesystem of `fd` is FUSE-based (virtiofs included): `fstatfs` type
/// `FUSE_SUPER_MAGIC`.
pub fn is_fuse(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut st = MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: st is writable memory of the right size, filled on success.
    let st = unsafe {
        cvt(libc::fstatfs(fd.as_raw_fd(), st.as_mut_ptr()))?;
        st.assume_init()
    };
    Ok(st.f_type as i64 == 0x6573_5546)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_stat_matches_fstatat() {
        let dir = std::fs::File::open(env!("CARGO_MANIFEST_DIR")).unwrap();
        let a = fstatat(dir.as_fd(), c"Cargo.toml").unwrap();
        let b = fstatat_fresh(dir.as_fd(), c"Cargo.toml").unwrap();
        assert_eq!(
            (a.st_dev, a.st_ino, a.st_mode, a.st_size),
            (b.st_dev, b.st_ino, b.st_mode, b.st_size)
        );
        assert_eq!(
            (a.st_mtime, a.st_mtime_nsec, a.st_ctime, a.st_nlink),
            (b.st_mtime, b.st_mtime_nsec, b.st_ctime, b.st_nlink)
        );
        let d = fstatat_fresh(dir.as_fd(), c"").unwrap();
        assert_eq!(d.st_mode & libc::S_IFMT, libc::S_IFDIR);
    }

    #[test]
    fn chmod_never_follows_a_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"t").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("link")).unwrap();
        let d = std::fs::File::open(dir.path()).unwrap();
        let err = fchmodat_nofollow(d.as_fd(), c"link", 0o666).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EOPNOTSUPP));
        assert_eq!(
            std::fs::metadata(&target).unwrap().permissions().mode() & 0o777,
            0o600
        );
        fchmodat_nofollow(d.as_fd(), c"target", 0o640).unwrap();
        assert_eq!(
            std::fs::metadata(&target).unwrap().permissions().mode() & 0o777,
            0o640
        );
    }

    #[test]
    fn truncate_never_follows_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"0123456789").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = truncate_nofollow(&cstr(link.as_os_str()).unwrap(), 2).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        assert_eq!(std::fs::metadata(&target).unwrap().len(), 10);
        truncate_nofollow(&cstr(target.as_os_str()).unwrap(), 4).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"0123");
    }
}
