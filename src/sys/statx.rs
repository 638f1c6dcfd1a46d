//! `statx` that asks the filesystem for fresh attributes (`AT_STATX_FORCE_SYNC`), and birth times.

use super::*;

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
    statx_at(dir, name, libc::AT_STATX_FORCE_SYNC)
}

/// The attributes of `fd`'s object as the kernel holds them (`AT_STATX_DONT_SYNC`), with the
/// birth time where the filesystem reports it. On a local filesystem the same as `fstat`; on a
/// FUSE or network filesystem no request: for the overlay's calls right after an operation
/// whose reply carried the object's attributes (a create, a `SETATTR`), which the kernel under
/// SOURCE took as they were, so asking again would be a round trip to the host for the same.
pub fn fstat_held(fd: BorrowedFd<'_>) -> io::Result<(libc::stat, Option<(i64, i64)>)> {
    statx_at(fd, c"", libc::AT_STATX_DONT_SYNC)
}

/// `fstatat` answered from what the kernel holds (`AT_STATX_DONT_SYNC`; `dir` itself for an
/// empty name): for identity checks (device and inode number never change, so no fresher copy
/// is needed), which on a FUSE or network filesystem then cost no `GETATTR`. The path walk to
/// `name` is the kernel's as always (a `LOOKUP` where the entry's timeout ran out).
pub fn fstatat_held(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat> {
    fstatat_held_btime(dir, name).map(|(st, _)| st)
}

/// [`fstatat_held`], with the birth time where the filesystem reports it. Over a FUSE
/// filesystem whose entry timeout is 0 (virtiofs under `--cache=never`) the walk to `name`
/// sends a `LOOKUP`, whose reply the kernel takes as the object's attributes: what this returns
/// is then as fresh as a `GETATTR` would have been, one round trip fewer.
pub fn fstatat_held_btime(
    dir: BorrowedFd<'_>,
    name: &CStr,
) -> io::Result<(libc::stat, Option<(i64, i64)>)> {
    statx_at(dir, name, libc::AT_STATX_DONT_SYNC)
}

fn statx_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    sync: libc::c_int,
) -> io::Result<(libc::stat, Option<(i64, i64)>)> {
    let mut stx = MaybeUninit::<libc::statx>::uninit();
    let mut flags = libc::AT_SYMLINK_NOFOLLOW | sync;
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
