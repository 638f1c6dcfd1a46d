//! mount(2), umount2(2), and whether an fd is on a FUSE filesystem.

use super::*;

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

/// The filesystem type of `fd`: `fstatfs`'s `f_type` (a `*_SUPER_MAGIC` number).
pub fn fs_magic(fd: BorrowedFd<'_>) -> io::Result<i64> {
    let mut st = MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: st is writable memory of the right size, filled on success.
    let st = unsafe {
        cvt(libc::fstatfs(fd.as_raw_fd(), st.as_mut_ptr()))?;
        st.assume_init()
    };
    Ok(st.f_type as i64)
}

/// `FUSE_SUPER_MAGIC` (virtiofs included).
pub const FUSE_MAGIC: i64 = 0x6573_5546;

/// Whether the filesystem of `fd` is FUSE-based (virtiofs included).
pub fn is_fuse(fd: BorrowedFd<'_>) -> io::Result<bool> {
    fs_magic(fd).map(|m| m == FUSE_MAGIC)
}
