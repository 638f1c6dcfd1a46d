//! The `*at` family: stat, open, create, link, rename, read a link, change owner, mode and
//! times, truncate; relative to a directory fd, never following a final symlink unless named so.

use super::*;

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

/// `fchmodat(dirfd, name, mode, 0)`, which follows a final symlink: callers must not use it on
/// symlinks; [`fchmodat_nofollow`] is the form that never follows one (through `/proc/self/fd`).
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
    fchmod_any(fd.as_fd(), mode)
}

/// An `O_PATH` fd of exactly the object `fd` stands for, opened through its `/proc/self/fd`
/// link: no path is walked (on a FUSE filesystem, no request), and it holds the object without
/// holding it open (no write session of its own, nothing to flush at its close).
pub fn reopen_path(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    reopen(fd, libc::O_PATH)
}

/// Exactly the object `fd` stands for, opened anew with `flags`, through its `/proc/self/fd`
/// link: no path is walked (on a FUSE filesystem, no `LOOKUP`), and nothing can have replaced
/// it. The link is followed whatever `flags` say (`O_NOFOLLOW` is dropped): the caller makes
/// sure the object is not a symlink.
pub fn reopen(fd: BorrowedFd<'_>, flags: libc::c_int) -> io::Result<OwnedFd> {
    let p = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    openat(cwd(), &p, flags & !libc::O_NOFOLLOW, 0)
}

/// chmod of exactly the object `fd` stands for, whatever the fd's kind (`O_PATH` included:
/// `fchmod` refuses those), through its `/proc/self/fd` link. The caller makes sure the object
/// is not a symlink (the link would be followed).
pub fn fchmod_any(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
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

/// `truncate(2)` by path exactly as a program calls it: a final symlink is followed and a
/// directory gives EISDIR. For tests of what the overlay answers to that call; code acting on
/// names it did not choose uses [`truncate_nofollow`].
pub fn truncate_following(path: &CStr, size: u64) -> io::Result<()> {
    truncate(path, size)
}

/// `faccessat(dirfd, name, mode, flags)` (`access(2)` is `faccessat(cwd(), path, mode, 0)`).
pub fn faccessat(dir: BorrowedFd<'_>, name: &CStr, mode: i32, flags: i32) -> io::Result<()> {
    // SAFETY: name is a valid C string.
    cvt(unsafe { libc::faccessat(dir.as_raw_fd(), name.as_ptr(), mode, flags) }).map(drop)
}
