//! The only home of `unsafe`: thin, documented wrappers over Linux system calls.
//!
//! Every function returns `io::Result` with the OS error preserved (callers turn it into an errno
//! in exactly one place). Path arguments are C strings relative to a directory fd; nothing here
//! follows a symlink in the last component unless its name says so.
//!
//! One file per topic: [`at`] (the `*at` family), [`fdio`] (I/O on open fds), [`xattr`],
//! [`dirent`], [`statx`], [`process`] (ids, fork, signals, limits), [`mount`], [`mount_api`],
//! [`inotify`], [`fanotify`], [`handle`] (file handles), [`fs_struct`], [`mmap`]. The common
//! calls are re-exported here (`sys::openat`, ...).

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

pub mod at;
pub mod dirent;
pub mod fanotify;
pub mod fdio;
pub mod fs_struct;
pub mod handle;
pub mod inotify;
pub mod mmap;
pub mod mount;
pub mod mount_api;
pub mod process;
pub mod queue;
pub mod sched;
pub mod statx;
pub mod xattr;

pub use at::*;
pub use dirent::*;
pub use fdio::*;
pub use inotify::*;
pub use mount::*;
pub use process::*;
pub use sched::*;
pub use statx::*;
pub use xattr::*;

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
