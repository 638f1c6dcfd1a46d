//! The new mount API where the overlay needs it: detached private copies of mounts
//! (`open_tree(OPEN_TREE_CLONE)`), reached only through the fd that holds them, and their atime
//! flags (`mount_setattr`).

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `open_tree(AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC [| AT_RECURSIVE])`: a private
/// copy of the mount at `path` (with the mounts below it when `recursive`), attached nowhere,
/// that lives as long as the returned fd (Linux 5.2). Its per-mount flags start as those of the
/// original and then change on their own (a `remount,ro` of the original leaves the copy
/// writable). Needs `CAP_SYS_ADMIN`. Looking the path up sends no request to a FUSE filesystem
/// mounted there.
pub fn open_tree_clone(path: &CStr, recursive: bool) -> io::Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: path is a valid C string; on success the returned fd is new and owned by us.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// How a mount updates access times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Atime {
    Relatime,
    NoAtime,
    StrictAtime,
}

/// The atime flags of the mount `fd` is on, from `fstatvfs` (`ST_NOATIME`, `ST_RELATIME`,
/// `ST_NODIRATIME`).
pub fn atime_of(fd: BorrowedFd<'_>) -> io::Result<(Atime, bool)> {
    let v = super::fstatvfs(fd)?;
    let atime = if v.f_flag & libc::ST_NOATIME != 0 {
        Atime::NoAtime
    } else if v.f_flag & libc::ST_RELATIME != 0 {
        Atime::Relatime
    } else {
        Atime::StrictAtime
    };
    Ok((atime, v.f_flag & libc::ST_NODIRATIME != 0))
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, ...)`: set the atime flags of the
/// mounts of the tree `fd` is the root of (Linux 5.12).
pub fn set_atime(fd: BorrowedFd<'_>, atime: Atime, nodiratime: bool) -> io::Result<()> {
    /// `struct mount_attr` (include/uapi/linux/mount.h).
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_NOATIME: u64 = 0x10;
    const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
    const MOUNT_ATTR_ATIME_MASK: u64 = 0x70;
    const MOUNT_ATTR_NODIRATIME: u64 = 0x80;
    let mut set = match atime {
        Atime::Relatime => 0,
        Atime::NoAtime => MOUNT_ATTR_NOATIME,
        Atime::StrictAtime => MOUNT_ATTR_STRICTATIME,
    };
    if nodiratime {
        set |= MOUNT_ATTR_NODIRATIME;
    }
    let attr = MountAttr {
        attr_set: set,
        attr_clr: MOUNT_ATTR_ATIME_MASK | MOUNT_ATTR_NODIRATIME,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: the path is an empty C string, `attr` a complete mount_attr whose size is passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
