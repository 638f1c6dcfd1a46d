//! File handles (`name_to_handle_at(2)`, `open_by_handle_at(2)`): how the overlay finds an object
//! of SOURCE again after the guest kernel forgot its inode, so that handles the guest encoded for
//! overlay files (`open_by_handle_at`, NFS export, fanotify FIDs) keep working.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// The largest handle the kernel hands out (`MAX_HANDLE_SZ`).
const MAX_HANDLE_SZ: usize = 128;

/// `struct file_handle` with room for the largest handle.
#[repr(C)]
struct RawHandle {
    handle_bytes: libc::c_uint,
    handle_type: libc::c_int,
    f_handle: [u8; MAX_HANDLE_SZ],
}

/// An opaque handle of one object of a filesystem, as its exporting code encoded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHandle {
    kind: i32,
    bytes: Box<[u8]>,
}

impl FileHandle {
    /// Bytes held (for memory accounting).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// The handle of `name` in `dir` (of `dir` itself when `name` is empty), never following a final
/// symlink. `EOPNOTSUPP` where the filesystem cannot export handles.
pub fn name_to_handle_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<FileHandle> {
    let mut raw = RawHandle {
        handle_bytes: MAX_HANDLE_SZ as libc::c_uint,
        handle_type: 0,
        f_handle: [0; MAX_HANDLE_SZ],
    };
    let mut mount_id: libc::c_int = 0;
    let flags = if name.is_empty() {
        libc::AT_EMPTY_PATH
    } else {
        0
    };
    // SAFETY: `raw` is a file_handle followed by MAX_HANDLE_SZ writable bytes, as its
    // handle_bytes says; name is a valid C string and mount_id writable.
    let r = unsafe {
        libc::name_to_handle_at(
            dir.as_raw_fd(),
            name.as_ptr(),
            (&mut raw as *mut RawHandle).cast::<libc::file_handle>(),
            &mut mount_id,
            flags,
        )
    };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    let n = (raw.handle_bytes as usize).min(MAX_HANDLE_SZ);
    Ok(FileHandle {
        kind: raw.handle_type,
        bytes: raw.f_handle[..n].into(),
    })
}

/// Open the object `handle` names on the filesystem of `mount` (any fd on it), with `flags`
/// (`O_PATH` included) and close-on-exec. Needs `CAP_DAC_READ_SEARCH`. `ESTALE` when the object
/// is gone.
pub fn open_by_handle_at(
    mount: BorrowedFd<'_>,
    handle: &FileHandle,
    flags: libc::c_int,
) -> io::Result<OwnedFd> {
    let n = handle.bytes.len().min(MAX_HANDLE_SZ);
    let mut raw = RawHandle {
        handle_bytes: n as libc::c_uint,
        handle_type: handle.kind,
        f_handle: [0; MAX_HANDLE_SZ],
    };
    raw.f_handle[..n].copy_from_slice(&handle.bytes[..n]);
    // SAFETY: `raw` is a complete file_handle whose handle_bytes does not exceed its buffer; on
    // success the returned fd is new and owned by us.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount.as_raw_fd(),
            (&mut raw as *mut RawHandle).cast::<libc::file_handle>(),
            flags | libc::O_CLOEXEC,
        )
    };
    if fd == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_handle_opens_the_same_file_and_goes_stale_with_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        let d = std::fs::File::open(dir.path()).unwrap();
        let h = match name_to_handle_at(d.as_fd(), c"f") {
            Ok(h) => h,
            // A temporary folder on a filesystem without export support: nothing to check.
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return,
            Err(e) => panic!("{e}"),
        };
        assert!(!h.is_empty());
        let fd = open_by_handle_at(d.as_fd(), &h, libc::O_PATH).unwrap();
        let a = crate::sys::fstat(fd.as_fd()).unwrap();
        let b = crate::sys::fstatat(d.as_fd(), c"f").unwrap();
        assert_eq!((a.st_dev, a.st_ino), (b.st_dev, b.st_ino));
        drop(fd);
        std::fs::remove_file(dir.path().join("f")).unwrap();
        let e = open_by_handle_at(d.as_fd(), &h, libc::O_PATH).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESTALE));
    }
}
