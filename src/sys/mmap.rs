//! Shared file mappings (`mmap(MAP_SHARED)`, `msync`), for tests of writes made through a
//! mapping rather than `write(2)`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// A read-write `MAP_SHARED` mapping of the first `len` bytes of a file; unmapped on drop.
pub struct SharedMap {
    ptr: *mut u8,
    len: usize,
}

impl SharedMap {
    /// Map `len` (> 0) bytes of the file open read-write at `fd`.
    pub fn new(fd: BorrowedFd<'_>, len: usize) -> io::Result<SharedMap> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: a fresh mapping chosen by the kernel (no address hint), of a valid fd; the
        // result is checked against MAP_FAILED before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(SharedMap { ptr: p.cast(), len })
    }

    /// The mapped bytes.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: ptr..ptr+len is a live read-write mapping owned by self, borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// `msync(MS_SYNC)`: write the dirty pages back to the file.
    pub fn sync(&self) -> io::Result<()> {
        // SAFETY: the range is exactly the live mapping.
        let r = unsafe { libc::msync(self.ptr.cast(), self.len, libc::MS_SYNC) };
        if r == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours and no slice of it outlives self.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// A read-only `MAP_SHARED` mapping of the first `len` bytes of a file, to see what a reader
/// through the page cache sees; unmapped on drop.
pub struct ReadMap {
    ptr: *const u8,
    len: usize,
}

impl ReadMap {
    /// Map `len` (> 0) bytes of the file open for reading at `fd`.
    pub fn new(fd: BorrowedFd<'_>, len: usize) -> io::Result<ReadMap> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: as in SharedMap::new, read-only.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(ReadMap {
            ptr: p.cast_const().cast(),
            len,
        })
    }

    /// A copy of the mapped bytes as they are now.
    pub fn to_vec(&self) -> Vec<u8> {
        // SAFETY: ptr..ptr+len is a live readable mapping owned by self; copied at once.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len).to_vec() }
    }
}

impl Drop for ReadMap {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours and no slice of it outlives self.
        unsafe {
            libc::munmap(self.ptr.cast_mut().cast(), self.len);
        }
    }
}
