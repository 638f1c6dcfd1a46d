//! Extended attributes of a name in a directory, through its `/proc/self/fd` path.

use super::*;

/// The `/proc/self/fd/N/NAME` path that reaches `name` in `dir` (works for O_PATH directory fds).
/// With a name, the `l*xattr` calls act on it without following a final symlink; without one,
/// the following calls act on the directory `dir` itself through its magic link.
/// `cwd()` (AT_FDCWD) has no `/proc` link: the name is then used as it is (a path).
fn proc_path(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<CString> {
    if dir.as_raw_fd() == libc::AT_FDCWD {
        return Ok(name.to_owned());
    }
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
